"""The job-token routes (``transfer: http``): spec, blobs, result — and the scope of a job token.

A real API server (Clerk and Transformer run, no Carrier: the test claims the
jobs itself, as a Carrier would, so that they stay in flight as long as needed).
"""

from __future__ import annotations

import hashlib
import json
import os
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from apiclient import Api, Resp
from sqlalchemy import select, update

from idds_jupyter.api.server import ServerHandle, start_server
from idds_jupyter.backends.transfer import inbox_name
from idds_jupyter.config import Config
from idds_jupyter.store.job_tokens import JobTokens
from idds_jupyter.store.jobs import claim_ready
from idds_jupyter.store.tables import jobs


class Env:
    def __init__(self, handle: ServerHandle) -> None:
        self.handle = handle
        self.admin = Api(handle.url, handle.token)
        self.ctx = handle.ctx
        self.engine = handle.ctx.orch.engine
        self.config: Config = handle.ctx.config
        self.tokens = JobTokens.for_home(self.config.home)

    def put_blob(self, data: bytes, owner: str) -> str:
        """A blob ``owner`` uploaded (a job reads only what its run's owner may read)."""
        sha, _ = self.ctx.cache.put(data, owner=owner)
        return sha

    def token(
        self, job: dict[str, Any], spec: dict[str, Any] | None = None, ttl: float = 600
    ) -> str:
        """What a backend does: the spec as a cache blob, a token naming it."""
        spec = spec or {"job_id": job["id"], "attempt": job["attempt"], "kind": "function"}
        sha, _ = self.ctx.cache.put(json.dumps(spec).encode())
        return self.tokens.mint(job["id"], job["attempt"], sha, ttl)

    def claim(self) -> None:
        with self.engine.begin() as conn:
            claim_ready(conn, "test-carrier", ["local"], 1000, 600)

    def job_rows(self, wid: int) -> list[dict[str, Any]]:
        with self.engine.begin() as conn:
            return [
                dict(r)
                for r in conn.execute(
                    select(jobs.c.id, jobs.c.attempt, jobs.c.status, jobs.c.idx)
                    .where(jobs.c.workflow_id == wid)
                    .order_by(jobs.c.idx)
                ).mappings()
            ]


def job_api(env: Env, token: str | None) -> Api:
    return Api(env.handle.url, token)


def multipart(parts: dict[str, bytes]) -> tuple[bytes, str]:
    boundary = uuid.uuid4().hex
    body = b""
    for name, data in parts.items():
        body += (
            f'--{boundary}\r\nContent-Disposition: form-data; name="{name}"; '
            f'filename="{name}"\r\nContent-Type: application/octet-stream\r\n\r\n'
        ).encode()
        body += data + b"\r\n"
    body += f"--{boundary}--\r\n".encode()
    return body, f"multipart/form-data; boundary={boundary}"


def post_result(api: Api, job_id: int, parts: dict[str, bytes]) -> Resp:
    body, ctype = multipart(parts)
    return api.call("POST", f"/jobs/{job_id}/result", raw=body, headers={"Content-Type": ctype})


@pytest.fixture(scope="module")
def env(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Env]:
    tmp = tmp_path_factory.mktemp("jobs")
    cfg = Config.load(
        None, home=tmp / "home", db_url=f"sqlite:///{tmp / 'idds.db'}", poll_interval=0.3
    )
    handle = start_server(cfg, "127.0.0.1", 0, "/", roles=("clerk", "transformer"))
    try:
        yield Env(handle)
    finally:
        handle.stop()


@pytest.fixture(scope="module")
def two_works(env: Env) -> dict[str, Any]:
    """Work "a" (2 jobs: function + calls + sandbox) and, in another run, work "b" (1 job)."""
    fa, ca, sa = (env.put_blob(os.urandom(64), "alice") for _ in range(3))
    fb = env.put_blob(os.urandom(64), "bob")
    other = env.put_blob(b"someone else's blob", "carol")
    wa = env.ctx.orch.submit(
        {
            "name": "wa",
            "works": [
                {"name": "a", "payload": {"function": fa, "calls": ca, "sandbox": sa}, "n_jobs": 2}
            ],
        },
        owner="alice",
    )
    wb = env.ctx.orch.submit(
        {"name": "wb", "works": [{"name": "b", "payload": {"function": fb}, "n_jobs": 1}]},
        owner="bob",
    )
    deadline = time.monotonic() + 60
    while len(env.job_rows(wa)) + len(env.job_rows(wb)) < 3 or any(
        r["status"] != "ready" for r in env.job_rows(wa) + env.job_rows(wb)
    ):
        assert time.monotonic() < deadline, (env.job_rows(wa), env.job_rows(wb))
        time.sleep(0.1)
    env.claim()
    a0, a1 = env.job_rows(wa)
    [b0] = env.job_rows(wb)
    assert {a0["status"], a1["status"], b0["status"]} == {"submitted"}
    return {
        "a0": a0,
        "a1": a1,
        "b0": b0,
        "fa": fa,
        "ca": ca,
        "sa": sa,
        "fb": fb,
        "other": other,
        "wa": wa,
        "wb": wb,
    }


def test_spec_and_own_blobs(env: Env, two_works: dict[str, Any]) -> None:
    a0 = two_works["a0"]
    spec = {
        "job_id": a0["id"],
        "attempt": a0["attempt"],
        "kind": "function",
        "payload": {"sha256": two_works["fa"]},
    }
    api = job_api(env, env.token(a0, spec))
    r = api.get(f"/jobs/{a0['id']}/spec")
    assert r.status == 200 and r.json == spec, r
    for key in ("fa", "ca", "sa"):
        r = api.get(f"/jobs/{a0['id']}/blobs/{two_works[key]}")
        assert r.status == 200, (key, r)
        assert hashlib.sha256(r.body).hexdigest() == two_works[key]
    r = api.get(f"/jobs/{a0['id']}/blobs/not-a-digest")
    assert r.status == 400 and "sha256" in r.json["error"]


def test_token_cannot_fetch_another_jobs_blob(env: Env, two_works: dict[str, Any]) -> None:
    a0, b0 = two_works["a0"], two_works["b0"]
    api = job_api(env, env.token(a0))
    # the blob of another work (another user's run), and any other blob in the cache
    for key in ("fb", "other"):
        r = api.get(f"/jobs/{a0['id']}/blobs/{two_works[key]}")
        assert r.status == 403 and "not an input of job" in r.json["error"], r
    # another job's routes, even of the same work: refused, whatever the blob
    for job in (two_works["a1"], b0):
        r = api.get(f"/jobs/{job['id']}/blobs/{two_works['fa']}")
        assert r.status == 403 and f"not job {job['id']}" in r.json["error"], r
        assert api.get(f"/jobs/{job['id']}/spec").status == 403
    # while b0's own token opens b0's blob
    r = job_api(env, env.token(b0)).get(f"/jobs/{b0['id']}/blobs/{two_works['fb']}")
    assert r.status == 200


def test_token_cannot_post_another_jobs_result(env: Env, two_works: dict[str, Any]) -> None:
    api = job_api(env, env.token(two_works["a0"]))
    for job in (two_works["a1"], two_works["b0"]):
        r = post_result(api, job["id"], {"result": json.dumps({"ok": True, "result": 1}).encode()})
        assert r.status == 403 and "is for job" in r.json["error"], r
        assert not (env.config.result_inbox / inbox_name(job["id"], job["attempt"])).exists()


def test_bad_and_forged_tokens(env: Env, two_works: dict[str, Any]) -> None:
    a0 = two_works["a0"]
    good = env.token(a0)
    forged = good[:-3] + ("AAA" if not good.endswith("AAA") else "BBB")
    other_secret = JobTokens(b"x" * 32).mint(a0["id"], a0["attempt"], "0" * 64)
    expired = env.token(a0, ttl=-5)
    for token, why in (
        (forged, "signature"),
        (other_secret, "signature"),
        (expired, "expired"),
        ("idj1.garbage", "malformed"),
    ):
        r = job_api(env, token).get(f"/jobs/{a0['id']}/spec")
        assert r.status == 401 and why in r.json["error"], (why, r)
    # a user's own API token does not open job routes
    r = env.admin.get(f"/jobs/{a0['id']}/spec")
    assert r.status == 401 and "job token" in r.json["error"]
    r = job_api(env, None).get(f"/jobs/{a0['id']}/spec")
    assert r.status == 401 and "token" in r.json["error"]


def test_post_result_lands_in_the_inbox_unpickled(env: Env, two_works: dict[str, Any]) -> None:
    a1 = two_works["a1"]
    api = job_api(env, env.token(a1))
    value = b"\x80\x05 not a pickle at all: the server must never try " + os.urandom(32)
    sha = hashlib.sha256(value).hexdigest()
    result = {
        "job_id": a1["id"],
        "attempt": a1["attempt"],
        "ok": True,
        "result": None,
        "summary": {"type": "x.Y", "repr": "Y()"},
        "blob": sha,
        "wall_s": 0.5,
        "exit_code": None,
        "started_at": time.time(),
        "finished_at": time.time(),
        "surprise": "dropped",
    }
    r = post_result(
        api,
        a1["id"],
        {"result": json.dumps(result).encode(), "blob": value, "log": b"hello from the job\n"},
    )
    assert r.status == 201 and r.json["accepted"] is True, r
    dropped = json.loads(
        (env.config.result_inbox / inbox_name(a1["id"], a1["attempt"])).read_text()
    )
    assert dropped["blob"] == sha and dropped["blob_size"] == len(value)
    assert dropped["ok"] is True and "surprise" not in dropped
    assert env.ctx.cache.get(sha) == value
    assert Path(dropped["log_path"]).read_bytes() == b"hello from the job\n"
    assert str(env.config.log_dir) in dropped["log_path"]


def test_bad_result_bodies_are_clear(env: Env, two_works: dict[str, Any]) -> None:
    a0 = two_works["a0"]
    api = job_api(env, env.token(a0))
    url = f"/jobs/{a0['id']}/result"
    ok = json.dumps({"ok": True}).encode()
    r = api.post(url, {"ok": True})
    assert r.status == 415 and "multipart/form-data" in r.json["error"]
    r = post_result(api, a0["id"], {"blob": b"x"})
    assert r.status == 400 and "'result'" in r.json["error"]
    r = post_result(api, a0["id"], {"result": b"{nope"})
    assert r.status == 400 and "not valid JSON" in r.json["error"]
    r = post_result(api, a0["id"], {"result": b"[1]"})
    assert r.status == 400 and "JSON object" in r.json["error"]
    r = post_result(api, a0["id"], {"result": json.dumps({"result": 1}).encode()})
    assert r.status == 400 and "'ok'" in r.json["error"]
    r = post_result(api, a0["id"], {"result": json.dumps({"ok": True, "attempt": 7}).encode()})
    assert r.status == 400 and "attempt" in r.json["error"]
    r = post_result(api, a0["id"], {"result": json.dumps({"ok": True, "wall_s": "x"}).encode()})
    assert r.status == 400 and "wall_s" in r.json["error"]
    r = post_result(api, a0["id"], {"result": ok, "extra": b"1"})
    assert r.status == 400 and "unknown multipart part" in r.json["error"]
    r = post_result(
        api,
        a0["id"],
        {"result": json.dumps({"ok": True, "blob": "a" * 64}).encode(), "blob": b"other bytes"},
    )
    assert r.status == 400 and "has sha256" in r.json["error"]
    r = post_result(api, a0["id"], {"result": json.dumps({"ok": True, "blob": "b" * 64}).encode()})
    assert r.status == 400 and "neither sent" in r.json["error"]
    r = post_result(api, a0["id"], {"result": json.dumps({"ok": True, "inline": "%%"}).encode()})
    assert r.status == 400 and "base64" in r.json["error"]
    # size limits: a blob over the cache limit
    cache = env.ctx.cache
    old = cache.limit
    cache.limit = 100
    try:
        r = post_result(api, a0["id"], {"result": ok, "blob": b"z" * 200})
        assert r.status == 413 and "cache limit" in r.json["error"]
    finally:
        cache.limit = old
    assert not (env.config.result_inbox / inbox_name(a0["id"], a0["attempt"])).exists()


def test_in_flight_jobs_token_is_refused_on_every_other_route(
    env: Env, two_works: dict[str, Any]
) -> None:
    from test_api_auth import walk_with_job_token

    a0 = two_works["a0"]
    assert a0["id"] != 1 or two_works["a1"]["id"] != 1
    job = a0 if a0["id"] != 1 else two_works["a1"]
    token = env.token(job)
    assert job_api(env, token).get(f"/jobs/{job['id']}/spec").status == 200  # valid here
    assert walk_with_job_token(env, token, job["id"]) >= 28


def test_token_dies_when_the_attempt_changes(env: Env, two_works: dict[str, Any]) -> None:
    b0 = dict(two_works["b0"])
    token = env.token(b0)
    api = job_api(env, token)
    assert api.get(f"/jobs/{b0['id']}/blobs/{two_works['fb']}").status == 200
    # the Carrier resubmits the job (a retry, or a reclaim after a crash): attempt 2
    with env.engine.begin() as conn:
        conn.execute(update(jobs).where(jobs.c.id == b0["id"]).values(status="ready"))
    env.claim()
    [now] = env.job_rows(two_works["wb"])
    assert now["attempt"] == b0["attempt"] + 1 and now["status"] == "submitted"
    for r in (
        api.get(f"/jobs/{b0['id']}/spec"),
        api.get(f"/jobs/{b0['id']}/blobs/{two_works['fb']}"),
        post_result(api, b0["id"], {"result": json.dumps({"ok": True}).encode()}),
    ):
        assert r.status == 403 and "now at attempt" in r.json["error"], r
    # the new attempt's token works
    assert (
        job_api(env, env.token(now)).get(f"/jobs/{b0['id']}/blobs/{two_works['fb']}").status == 200
    )
    # and a job that ended takes every token of it down
    with env.engine.begin() as conn:
        conn.execute(update(jobs).where(jobs.c.id == b0["id"]).values(status="finished"))
    r = job_api(env, env.token(now)).get(f"/jobs/{b0['id']}/spec")
    assert r.status == 403 and "finished" in r.json["error"]


def test_job_reads_only_what_its_run_owner_may(env: Env, two_works: dict[str, Any]) -> None:
    """A run whose payload names another user's blob (the REST API refuses such a submission;
    here it is stored in-process) gets nothing through its job's token; nor may a job name
    another user's blob as its result to be granted it."""
    wc = env.ctx.orch.submit(
        {
            "name": "wc",
            "works": [{"name": "c", "payload": {"function": two_works["fa"]}, "n_jobs": 1}],
        },
        owner="mallory",
    )
    deadline = time.monotonic() + 60
    while [r["status"] for r in env.job_rows(wc)] != ["ready"]:
        assert time.monotonic() < deadline, env.job_rows(wc)
        time.sleep(0.1)
    env.claim()
    [c0] = env.job_rows(wc)
    api = job_api(env, env.token(c0))
    r = api.get(f"/jobs/{c0['id']}/blobs/{two_works['fa']}")
    assert r.status == 404 and r.json["error"] == f"no blob {two_works['fa']}", r
    result = {
        "job_id": c0["id"],
        "attempt": c0["attempt"],
        "ok": True,
        "result": None,
        "blob": two_works["fa"],
    }
    r = post_result(api, c0["id"], {"result": json.dumps(result).encode()})
    assert r.status == 400 and "neither sent" in r.json["error"], r
    assert not (env.config.result_inbox / inbox_name(c0["id"], c0["attempt"])).exists()
