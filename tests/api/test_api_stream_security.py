"""The live stream and tokens (issue 19, item 5), against a real standalone server: a page of
another origin cannot open a stream, a revoked or expired token's open stream is closed
(1008) within the token cache's period, and tokens can expire (401 naming the expiry)."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import time
from typing import Any

import pytest
import tornado.websocket
from api_helpers import Served
from apiclient import Api
from tornado.httpclient import HTTPClientError, HTTPRequest

from idds_jupyter.auth import TokenAuthenticator

pytestmark = pytest.mark.timeout(300)

CALL = {
    "name": "call",
    "works": [
        {"name": "f", "function": "idds_jupyter.worker.job:sleep", "parameters": {"seconds": 0}}
    ],
}


def _ws_url(api: Api) -> str:
    return api.base.replace("http://", "ws://") + "/stream"


async def _connect(api: Api, token: str, origin: str | None) -> Any:
    headers = {"Authorization": f"Bearer {token}"}
    if origin is not None:
        headers["Origin"] = origin
    return await tornado.websocket.websocket_connect(HTTPRequest(_ws_url(api), headers=headers))


def _origin_result(api: Api, token: str, origin: str | None) -> int | str:
    """101 when the stream opened (and delivered its subscription), else the refusal's status."""

    async def go() -> int | str:
        try:
            conn = await _connect(api, token, origin)
        except HTTPClientError as exc:
            return exc.code
        conn.write_message(json.dumps({"subscribe": "*"}))
        msg = await asyncio.wait_for(conn.read_message(), 10)
        conn.close()
        return 101 if msg and json.loads(msg)["type"] == "subscribed" else str(msg)

    return asyncio.run(go())


def test_cross_origin_stream_is_refused(served: Served) -> None:
    alice = served.alice
    assert alice.token
    own = served.handle.url.rstrip("/")  # http://127.0.0.1:PORT
    # the attack: a page of another origin (with a token it got) opens the user's stream
    assert _origin_result(alice, alice.token, "http://evil.example") == 403
    assert _origin_result(alice, alice.token, "null") == 403
    # the same origin, and clients that are no browser (no Origin), are served
    assert _origin_result(alice, alice.token, own) == 101
    assert _origin_result(alice, alice.token, None) == 101
    # an allowed origin, when configured (allow_origin, or the pattern allow_origin_pat)
    cfg = served.handle.ctx.config
    try:
        cfg.allow_origin = "http://evil.example"
        assert _origin_result(alice, alice.token, "http://evil.example") == 101
        assert _origin_result(alice, alice.token, "http://other.example") == 403
        cfg.allow_origin, cfg.allow_origin_pat = "", r"https?://.*\.trusted\.example$"
        assert _origin_result(alice, alice.token, "https://lab.trusted.example") == 101
        assert _origin_result(alice, alice.token, "http://evil.example") == 403
    finally:
        cfg.allow_origin = cfg.allow_origin_pat = ""


async def _watch(
    api: Api, token: str, then: Any, timeout: float
) -> tuple[list[dict[str, Any]], float | None, Any]:
    """Open a stream on ``token``, subscribe to all, run ``then()`` (blocking, in a thread);
    returns the messages, when the server closed it (s after ``then`` returned), and its code."""
    conn = await _connect(api, token, None)
    conn.write_message(json.dumps({"subscribe": "*"}))
    got = [json.loads(await asyncio.wait_for(conn.read_message(), 10))]
    assert got[0]["type"] == "subscribed"
    await asyncio.get_running_loop().run_in_executor(None, then)
    start = time.monotonic()
    closed_after = None
    deadline = start + timeout
    while time.monotonic() < deadline:
        try:
            msg = await asyncio.wait_for(conn.read_message(), deadline - time.monotonic())
        except TimeoutError:
            break
        if msg is None:
            closed_after = time.monotonic() - start
            break
        got.append(json.loads(msg))
    code, reason = conn.close_code, conn.close_reason
    conn.close()
    return got, closed_after, (code, reason)


def _new_token(api: Api, **extra: Any) -> tuple[int, str]:
    r = api.post("/auth/tokens", {"name": "stream", **extra})
    assert r.status == 201, r
    return r.json["id"], r.json["token"]


def test_revoked_token_stream_is_closed(served: Served) -> None:
    """Revoked in another process (the CLI, straight in the store): closed within the token
    cache's period, and no event of the user reaches it after; revoked through the API of
    this server: closed at once."""
    from idds_jupyter.store import tokens

    alice = served.alice
    auth = served.handle.ctx.auth
    assert isinstance(auth, TokenAuthenticator)
    period = auth.CACHE_S
    engine = served.handle.ctx.orch.engine
    tid, token = _new_token(alice)

    def revoke_elsewhere_then_run() -> None:
        assert tokens.revoke_token(engine, tid)
        time.sleep(period + 1.0)  # the stream is closed by now, before the run below
        wid = alice.post("/requests", {"template": CALL}).json["id"]
        alice.wait(wid)

    got, closed_after, (code, reason) = asyncio.run(
        _watch(alice, token, revoke_elsewhere_then_run, period + 10)
    )
    assert closed_after is not None, got  # the server closed it
    assert code == 1008 and "revoked" in (reason or ""), (code, reason)
    assert got[1:] == []  # nothing of the run started after the revocation
    assert Api(served.handle.url, token).get("/auth/whoami").status == 401

    tid, token = _new_token(alice)
    t0: list[float] = []

    def revoke_via_api() -> None:
        t0.append(time.monotonic())
        assert alice.call("DELETE", f"/auth/tokens/{tid}").json["revoked"] is True

    got, closed_after, (code, _) = asyncio.run(_watch(alice, token, revoke_via_api, period + 10))
    assert closed_after is not None and closed_after < 2.0, closed_after
    assert code == 1008


def test_tokens_expire(served: Served) -> None:
    alice = served.alice
    tid, token = _new_token(alice, expires_in=2)
    me = Api(served.handle.url, token)
    assert me.get("/auth/whoami").json["user"] == "alice"
    listed = {t["id"]: t for t in alice.get("/auth/tokens").json["tokens"]}
    assert listed[tid]["expires_at"] == pytest.approx(time.time() + 2, abs=2)

    # an open stream of it closes once it expires
    got, closed_after, (code, reason) = asyncio.run(
        _watch(alice, token, lambda: None, served.handle.ctx.auth.CACHE_S + 5)
    )
    assert closed_after is not None and code == 1008 and "expired" in (reason or ""), (code, reason)
    r = me.get("/auth/whoami")
    assert r.status == 401 and "expired at" in r.json["error"], r
    r = me.post("/requests", {"template": CALL})
    assert r.status == 401 and "expired" in r.json["error"], r

    # lifetimes as text; bad ones are refused, naming the field
    _, long = _new_token(alice, expires_in="1h")
    rows = {t["name"]: t for t in Api(served.handle.url, long).get("/auth/tokens").json["tokens"]}
    assert rows["stream"]["expires_at"] is not None
    for bad in (0, -5, "soon", "1y", True, [1]):
        r = alice.post("/auth/tokens", {"name": "x", "expires_in": bad})
        assert r.status == 400 and "expires_in" in r.json["error"], (bad, r)


def test_cli_token_create_expires(tmp_path: Any) -> None:
    env = dict(
        os.environ,
        IDDS_HOME=str(tmp_path / "home"),
        IDDS_DB_URL=f"sqlite:///{tmp_path / 'db.sqlite'}",
    )
    cli = [sys.executable, "-m", "idds_jupyter.cli"]
    r = subprocess.run(
        [*cli, "token", "create", "--user", "carol", "--expires", "1h"],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert r.returncode == 0, r.stderr
    assert "expires" in r.stderr
    listed = subprocess.run(
        [*cli, "token", "list"], env=env, capture_output=True, text=True, timeout=120
    )
    assert "carol" in listed.stdout and "expires" in listed.stdout, listed.stdout
    r = subprocess.run(
        [*cli, "token", "create", "--user", "carol", "--expires", "later"],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert r.returncode == 2 and "--expires" in r.stderr
    # the token expires for the store as it says
    from idds_jupyter.store import tokens
    from idds_jupyter.store.engine import make_engine

    engine = make_engine(env["IDDS_DB_URL"])
    [row] = tokens.list_tokens(engine, "carol")
    assert row["expires_at"] == pytest.approx(row["created_at"] + 3600, abs=1)
    engine.dispose()
