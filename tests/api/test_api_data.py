"""Cache uploads, the server never unpickling bodies, the live stream, and `idds-jupyter serve`."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import json
import os
import pickle
import re
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
import tornado.websocket
from api_helpers import DEMO_YAML, Served
from apiclient import Api
from test_api_auth import SAMPLE, app_routes
from tornado.httpclient import HTTPRequest
from waiting import holds_for, wait_for

ROOT = Path(__file__).resolve().parents[2]


class Evil:
    """Unpickling this creates the marker file."""

    def __init__(self, marker: Path) -> None:
        self.marker = str(marker)

    def __reduce__(self) -> tuple[Any, ...]:
        return (open, (self.marker, "w"))


def test_cache_roundtrip_and_refusals(served: Served) -> None:
    api = served.alice
    data = os.urandom(3000)
    sha = hashlib.sha256(data).hexdigest()
    assert api.call("HEAD", f"/cache/{sha}").status == 404
    r = api.call("PUT", f"/cache/{sha}", raw=data)
    assert r.status == 201 and r.json == {"sha256": sha, "size": 3000, "created": True}, r
    assert api.call("PUT", f"/cache/{sha}", raw=data).json["created"] is False
    h = api.call("HEAD", f"/cache/{sha}")
    assert h.status == 200 and h.headers["X-Blob-Size"] == "3000"
    g = api.get(f"/cache/{sha}")
    assert g.status == 200 and g.body == data
    assert g.headers["Content-Type"] == "application/octet-stream"
    stats = api.get("/cache").json
    assert stats["count"] >= 1 and stats["bytes"] >= 3000 and stats["limit"] > 0
    # the content must match its name
    r = api.call("PUT", f"/cache/{sha}", raw=data + b"x")
    assert r.status == 400 and "does not match" in r.json["error"]
    # names are digests only: traversal and junk are refused, nothing touches the filesystem
    for bad in ("..%2F..%2Fetc%2Fpasswd", "ABC", "0" * 63, "%2Fetc%2Fpasswd" + "0" * 60):
        for method in ("GET", "HEAD", "PUT"):
            r = api.call(method, f"/cache/{bad}", raw=b"x" if method == "PUT" else None)
            assert r.status == 400, (method, bad, r)
    assert api.get("/cache/../../etc/passwd").status == 404  # normalised away: no route
    assert api.get(f"/cache/{'0' * 64}").status == 404
    # over the limit: 413 from Content-Length before the body is read, and when streamed
    cache = served.handle.ctx.cache
    old = cache.limit
    cache.limit = 1000
    try:
        big = os.urandom(5000)
        bsha = hashlib.sha256(big).hexdigest()
        r = api.call("PUT", f"/cache/{bsha}", raw=big)
        assert r.status == 413 and "exceeds" in r.json["error"], r
        chunks = iter([big[:2000], big[2000:]])
        r = api.call("PUT", f"/cache/{bsha}", raw=chunks, headers={"Transfer-Encoding": "chunked"})
        assert r.status == 413, r
        assert api.call("HEAD", f"/cache/{bsha}").status == 404
    finally:
        cache.limit = old


def test_server_never_unpickles_a_body(served: Served, tmp_path: Path) -> None:
    marker = tmp_path / "unpickled"
    payload = pickle.dumps(Evil(marker))
    b64 = base64.b64encode(payload).decode()
    wid = served.alice.post("/requests", {"yaml": DEMO_YAML}).json["id"]
    sample = dict(SAMPLE, id=str(wid), sha256=hashlib.sha256(payload).hexdigest())
    wrapped: dict[str, Any] = {
        k: b64
        for k in (
            "template",
            "yaml",
            "params",
            "backend",
            "work",
            "works",
            "result",
            "result_blob",
            "error",
            "traceback",
            "name",
            "files",
            "user",
            "workflow_id",
            "action",
            "meta",
            "data",
            "pickle",
        )
    }
    bodies = [
        payload,
        json.dumps(b64).encode(),
        json.dumps(wrapped).encode(),
        json.dumps(
            {
                "works": [{"name": "w", "function": b64, "args": b64}],
                "template": {"name": "p", "works": [{"name": "w", "function": b64}]},
                "result": {"py/pickle": b64},
            }
        ).encode(),
    ]
    sent = 0
    for path, _cls, methods in app_routes(served):
        path = re.sub(r"/requests/1(/|$)", f"/requests/{wid}\\1", path)
        path = path.replace("0" * 64, sample["sha256"])
        for method in methods:
            if method not in ("POST", "PUT"):
                continue
            for body in bodies:
                for ctype in (
                    "application/octet-stream",
                    "application/python-pickle",
                    "application/json",
                ):
                    r = served.alice.call(method, path, raw=body, headers={"Content-Type": ctype})
                    assert r.status < 500, (method, path, r)
                    sent += 1
    assert sent >= 9 * len(bodies) * 3  # every POST/PUT route
    assert served.alice.get(f"/cache/{sample['sha256']}").body == payload  # stored as opaque bytes
    holds_for(lambda: not marker.exists(), 0.5, message="a body was executed")
    assert served.anon.get("/ping").status == 200


async def _collect(
    url: str, token: str, subscribe: Any, until: Any, timeout: float
) -> list[dict[str, Any]]:
    conn = await tornado.websocket.websocket_connect(
        HTTPRequest(url, headers={"Authorization": f"Bearer {token}"})
    )
    conn.write_message(json.dumps({"subscribe": subscribe}))
    got: list[dict[str, Any]] = []
    deadline = time.monotonic() + timeout
    try:
        while time.monotonic() < deadline:
            try:
                msg = await asyncio.wait_for(conn.read_message(), deadline - time.monotonic())
            except TimeoutError:
                break
            if msg is None:
                break
            got.append(json.loads(msg))
            if until(got):
                break
    finally:
        conn.close()
    return got


def test_stream_leaves_out_the_end_of_a_work_whose_run_ends_with_it(served: Served) -> None:
    """A function call's one work and its run end in one record: the run's end is sent,
    not the work's too (one message less per call for every watching client)."""
    alice = served.alice
    url = alice.base.replace("http://", "ws://") + "/stream"
    call = {
        "name": "call",
        "works": [
            {"name": "f", "function": "idds_jupyter.worker.job:sleep", "parameters": {"seconds": 0}}
        ],
    }

    async def scenario() -> tuple[int, list[dict[str, Any]]]:
        ids: list[int] = []

        def done(got: list[dict[str, Any]]) -> bool:
            if got and got[-1].get("type") == "subscribed" and not ids:
                ids.append(alice.post("/requests", {"template": call}).json["id"])
            return any(
                g.get("type") == "workflow.terminal" and g.get("workflow_id") in ids for g in got
            )

        got = await _collect(url, alice.token or "", "*", done, 60)
        return ids[0], got

    wid, got = asyncio.run(scenario())
    types = [g["type"] for g in got if g.get("workflow_id") == wid]
    assert "job.result" in types and types[-1] == "workflow.terminal", types
    assert "work.terminal" not in types, types


def test_stream_looks_up_an_unknown_owner_and_keeps_the_order(served: Served) -> None:
    """A run this server did not submit (another process's, or from before a restart) is
    sent once its owner is read, its events in the order they came."""
    alice = served.alice
    orch = served.handle.ctx.orch
    url = alice.base.replace("http://", "ws://") + "/stream"
    two = {
        "name": "two",
        "works": [
            {
                "name": "f",
                "function": "idds_jupyter.worker.job:sleep",
                "parameters": {"seconds": 0},
            },
            {
                "name": "g",
                "function": "idds_jupyter.worker.job:sleep",
                "parameters": {"seconds": 0},
                "depends_on": ["f"],
            },
        ],
    }

    async def scenario() -> tuple[int, list[dict[str, Any]]]:
        ids: list[int] = []

        def done(got: list[dict[str, Any]]) -> bool:
            if got and got[-1].get("type") == "subscribed" and not ids:
                ids.append(orch.submit(two, owner="alice"))  # not through the API: not cached
            return any(
                g.get("type") == "workflow.terminal" and g.get("workflow_id") in ids for g in got
            )

        got = await _collect(url, alice.token or "", "*", done, 60)
        return ids[0], got

    wid, got = asyncio.run(scenario())
    seen = [
        (g["type"], g.get("name") or [j.get("work") for j in g.get("jobs") or []])
        for g in got
        if g.get("workflow_id") == wid
        and (g.get("jobs") or g.get("name") or g["type"] == "workflow.terminal")
    ]
    assert seen[0] == ("job.result", ["f"]), seen
    assert seen[-1][0] == "workflow.terminal", seen
    assert seen.index(("work.terminal", "f")) < seen.index(("job.result", ["g"])), seen


def test_without_redundant_keeps_the_end_of_a_work_whose_run_goes_on() -> None:
    from idds_jupyter.api.stream import without_redundant
    from idds_jupyter.bus import WORK_TERMINAL, WORKFLOW_TERMINAL
    from idds_jupyter.bus.event import make_event

    events = [
        make_event(WORK_TERMINAL, "1", work="a", status="finished"),
        make_event(WORK_TERMINAL, "2", work="b", status="finished"),
        make_event(WORKFLOW_TERMINAL, "2", status="finished"),
    ]
    assert [(e.type, e.key) for e in without_redundant(events)] == [
        (WORK_TERMINAL, "1"),
        (WORKFLOW_TERMINAL, "2"),
    ]


def test_stream_pushes_own_events_only(served: Served) -> None:
    alice, bob = served.alice, served.bob
    url = alice.base.replace("http://", "ws://") + "/stream"

    async def scenario() -> list[dict[str, Any]]:
        ids: dict[str, int] = {}

        def done(got: list[dict[str, Any]]) -> bool:
            if got and got[-1].get("type") == "subscribed" and not ids:
                ids["a"] = alice.post("/requests", {"yaml": DEMO_YAML}).json["id"]
                ids["b"] = bob.post("/requests", {"yaml": DEMO_YAML}).json["id"]
            return any(
                g.get("type") == "workflow.terminal" and g.get("workflow_id") == ids.get("a")
                for g in got
            )

        got = await _collect(url, alice.token or "", "*", done, 60)
        return [{"_ids": ids}, *got]

    first, *got = asyncio.run(scenario())
    mine, theirs = first["_ids"]["a"], first["_ids"]["b"]
    assert got[0] == {"type": "subscribed", "ids": "*"}
    types = {g["type"] for g in got if g.get("workflow_id") == mine}
    assert {"job.result", "workflow.terminal"} <= types, got
    assert not [g for g in got if g.get("workflow_id") == theirs]
    assert all(g.get("workflow_id") == mine for g in got[1:])
    res = [g for g in got if g["type"] == "job.result"]
    assert res and res[0]["key"] == str(mine)

    # bad subscription messages get a clear error; the query token works too
    async def bad() -> list[dict[str, Any]]:
        conn = await tornado.websocket.websocket_connect(url + f"?token={bob.token}")
        conn.write_message("nonsense")
        msg = await asyncio.wait_for(conn.read_message(), 5)
        conn.close()
        return [json.loads(msg or "{}")]

    assert asyncio.run(bad())[0]["type"] == "error"


def test_cli_serve_writes_connection_file_and_tokens(tmp_path: Path) -> None:
    runtime = tmp_path / "runtime"
    env = dict(
        os.environ,
        IDDS_HOME=str(tmp_path / "home"),
        IDDS_DB_URL=f"sqlite:///{tmp_path / 'db.sqlite'}",
        JUPYTER_RUNTIME_DIR=str(runtime),
        IDDS_WORKERS="1",
    )
    cli = [sys.executable, "-m", "idds_jupyter.cli"]
    tok = subprocess.run(
        [*cli, "token", "create", "--user", "carol", "--name", "nb"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert tok.returncode == 0, tok.stderr
    carol = tok.stdout.strip()
    proc = subprocess.Popen(
        [*cli, "serve", "--port", "0", "--base-url", "/x/"],
        env=env,
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:

        def connection_file() -> list[Path]:
            assert proc.poll() is None, proc.stdout.read() if proc.stdout else ""
            return list(runtime.glob("idds-*.json"))

        wait_for(connection_file, 60, 0.1, message="the server's connection file")
        cf = next(runtime.glob("idds-*.json"))
        assert cf.stat().st_mode & 0o777 == 0o600
        info = json.loads(cf.read_text())
        assert info["url"].endswith("/x/") and info["pid"] == proc.pid and info["token"]
        admin = Api(info["url"] + "x", info["token"])  # Api appends idds/api/v1
        admin.base = info["url"] + "idds/api/v1"
        assert admin.get("/auth/whoami").json == {"user": info["user"], "admin": True}
        user = Api(info["url"], carol)
        user.base = admin.base
        assert user.get("/auth/whoami").json == {"user": "carol", "admin": False}
    finally:
        proc.send_signal(signal.SIGTERM)
        out, _ = proc.communicate(timeout=30)
    assert proc.returncode == 0, out
    assert not cf.exists()
    listed = subprocess.run(
        [*cli, "token", "list"], env=env, capture_output=True, text=True, timeout=60
    )
    assert "carol" in listed.stdout and "serve" in listed.stdout
    tid = next(line.split()[0] for line in listed.stdout.splitlines() if "carol" in line)
    rev = subprocess.run(
        [*cli, "token", "revoke", tid], env=env, capture_output=True, text=True, timeout=60
    )
    assert rev.returncode == 0 and "revoked" in rev.stdout
    assert (
        "carol"
        not in subprocess.run(
            [*cli, "token", "list"], env=env, capture_output=True, text=True, timeout=60
        ).stdout
    )


@pytest.mark.parametrize("bad", ["abc", "-1"])
def test_log_arguments_are_checked(served: Served, bad: str) -> None:
    assert served.alice.get(f"/logs/1?tail={bad}").status in (400, 404)
