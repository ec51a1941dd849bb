"""Hostile input costs little: each attack of issue 19 ("Limits") against a real running server.

Every refusal is a 4xx naming the setting (``idds_jupyter.config.Config``), comes
back promptly, and other clients' ``/ping`` is answered within a second meanwhile.
"""

from __future__ import annotations

import json
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psutil
import pytest
from api_helpers import Served
from apiclient import Api

from idds_jupyter.api.server import ServerHandle, start_server
from idds_jupyter.config import Config

BOMB = """name: bomb
parameters:
  a: &a ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]
  b: &b [*a,*a,*a,*a,*a,*a,*a,*a,*a]
  c: &c [*b,*b,*b,*b,*b,*b,*b,*b,*b]
  d: &d [*c,*c,*c,*c,*c,*c,*c,*c,*c]
  e: &e [*d,*d,*d,*d,*d,*d,*d,*d,*d]
  f: &f [*e,*e,*e,*e,*e,*e,*e,*e,*e]
  g: &g [*f,*f,*f,*f,*f,*f,*f,*f,*f]
works: [{name: x, command: "true"}]
"""


def raw_post(
    port: int, path: str, length: int, token: str | None = None, send: int = 4096
) -> socket.socket:
    """A POST declaring ``length`` bytes of body, of which only ``send`` are sent."""
    sock = socket.create_connection(("127.0.0.1", port), timeout=10)
    head = (
        f"POST /idds/api/v1/{path} HTTP/1.1\r\nHost: 127.0.0.1\r\n"
        f"Content-Type: application/json\r\nContent-Length: {length}\r\n"
    )
    if token:
        head += f"Authorization: Bearer {token}\r\n"
    sock.sendall(head.encode() + b"\r\n" + b"x" * send)
    return sock


def read_answer(sock: socket.socket, timeout: float = 5) -> tuple[int, dict[str, Any]]:
    """Status and JSON body of the answer on ``sock`` (within ``timeout`` seconds)."""
    sock.settimeout(timeout)
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(65536)
        assert chunk, f"connection closed before an answer: {data!r}"
        data += chunk
    head, body = data.split(b"\r\n\r\n", 1)
    length = next(
        int(h.split(b":")[1])
        for h in head.split(b"\r\n")
        if h.lower().startswith(b"content-length")
    )
    while len(body) < length:
        body += sock.recv(65536)
    return int(head.split()[1]), json.loads(body[:length])


class Pinger(threading.Thread):
    """Another client: ``/ping`` over and over; the slowest answer is kept."""

    def __init__(self, api: Api) -> None:
        super().__init__(daemon=True)
        self.api, self.worst, self.count = api, 0.0, 0
        self.halt = threading.Event()

    def run(self) -> None:
        while not self.halt.is_set():
            t0 = time.monotonic()
            r = self.api.get("/ping", timeout=30)
            assert r.status == 200
            self.worst = max(self.worst, time.monotonic() - t0)
            self.count += 1
            time.sleep(0.05)

    def __enter__(self) -> Pinger:
        self.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self.halt.set()
        self.join(30)
        assert self.count > 0
        assert self.worst < 1.0, f"/ping waited {self.worst:.2f} s"


def template(*works: dict[str, Any], **more: Any) -> dict[str, Any]:
    return {"template": {"name": "limits", "works": list(works), **more}}


# ------------------------------------------------------------------------- bodies
def test_unauthenticated_400mb_posts_get_401_before_their_body_is_read(served: Served) -> None:
    port = served.handle.port
    proc = psutil.Process()
    before = proc.memory_info().rss
    with Pinger(served.anon):
        socks = [raw_post(port, "requests", 400_000_000) for _ in range(3)]
        t0 = time.monotonic()
        answers = [read_answer(s) for s in socks]
        took = time.monotonic() - t0
        # the connection is closed with the answer: the 400 MB are never read
        for s in socks:
            s.settimeout(5)
            assert s.recv(65536) == b""
            s.close()
    assert [a[0] for a in answers] == [401, 401, 401]
    assert "authentication required" in answers[0][1]["error"]
    assert took < 5
    grown = proc.memory_info().rss - before
    assert grown < 50 * 2**20, f"server RSS grew by {grown / 2**20:.0f} MB"


def test_513_mib_bodies_get_413_naming_the_limit(served: Served) -> None:
    proc = psutil.Process()
    before = proc.memory_info().rss
    with Pinger(served.anon):
        sock = raw_post(served.handle.port, "requests", 513 * 2**20, token=served.alice.token)
        status, body = read_answer(sock)
        sock.close()
        assert status == 413
        assert body["setting"] == "max_body_size" and body["limit"] == 8 * 2**20
        assert "max_body_size" in body["error"]
        # cache uploads have their own limit, refused the same way
        sock = raw_post(served.handle.port, "cache/" + "0" * 64, 2**40, token=served.alice.token)
        status, body = read_answer(sock)
        sock.close()
        assert status == 413 and body["limit"] == served.handle.ctx.cache.limit
        assert "cache limit" in body["error"]
    assert proc.memory_info().rss - before < 50 * 2**20


def test_public_ping_takes_no_body(served: Served) -> None:
    sock = socket.create_connection(("127.0.0.1", served.handle.port), timeout=10)
    sock.sendall(
        b"GET /idds/api/v1/ping HTTP/1.1\r\nHost: x\r\nContent-Length: 8000000\r\n\r\n"
        + b"x" * 4096
    )
    status, body = read_answer(sock)
    sock.close()
    assert status == 413 and body["limit"] == 0


def test_chunked_body_over_the_limit_is_not_kept(served: Served) -> None:
    """No Content-Length to check up front: the connection stops reading at the limit."""
    sock = socket.create_connection(("127.0.0.1", served.handle.port), timeout=10)
    sock.sendall(
        b"POST /idds/api/v1/requests HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n"
        + f"Authorization: Bearer {served.alice.token}\r\n\r\n".encode()
    )
    chunk = b"x" * 2**20
    try:
        for _ in range(40):  # 40 MiB, five times the limit
            sock.sendall(b"%x\r\n" % len(chunk) + chunk + b"\r\n")
        sock.sendall(b"0\r\n\r\n")
        status = read_answer(sock, timeout=10)[0]
    except (OSError, AssertionError):
        status = None  # the server closed the connection on the oversized body
    finally:
        sock.close()
    assert status is None or 400 <= status < 500
    assert served.admin.get("/ping").status == 200


# -------------------------------------------------------------- JSON, YAML, paths
def test_json_nested_100k_deep_is_400_naming_max_json_depth(served: Served) -> None:
    for depth in (100_000, 65):
        raw = ('{"params": {"a": ' + "[" * depth + "]" * depth + "}}").encode()
        r = served.alice.call(
            "POST", "/requests", raw=raw, headers={"Content-Type": "application/json"}
        )
        assert r.status == 400, r
        assert r.json["setting"] == "max_json_depth" and "max_json_depth" in r.json["error"]


def test_yaml_alias_bomb_is_refused_unexpanded(served: Served) -> None:
    assert len(BOMB) < 500
    before = served.alice.get("/requests").json["requests"]
    with Pinger(served.anon):
        t0 = time.monotonic()
        r = served.alice.post("/requests", {"yaml": BOMB})
        assert time.monotonic() - t0 < 2
    assert r.status == 413, r
    assert r.json["setting"] == "max_template_nodes" and "max_template_nodes" in r.json["error"]
    # many aliases, each small: refused by their count
    many = (
        "name: m\nparameters:\n  a: &a 1\n  b: ["
        + ",".join(["*a"] * 101)
        + "]\nworks: [{name: x, command: 'true'}]\n"
    )
    r = served.alice.post("/requests", {"yaml": many})
    assert r.status == 400 and r.json["setting"] == "max_yaml_aliases", r
    # a few aliases are fine
    ok = "name: ok\nparameters:\n  a: &a [1, 2]\n  b: *a\nworks: [{name: x, command: 'true'}]\n"
    r = served.alice.post("/requests", {"yaml": ok})
    assert r.status == 201, r
    assert len(served.alice.get("/requests").json["requests"]) == len(before) + 1


@pytest.mark.parametrize(
    "path",
    [
        "/logs/99999999999999999999999",
        "/requests/99999999999999999999999",
        "/requests/9223372036854775808/works",
        "/monitor/9223372036854775808",
        "/monitor/99999999999999999999999/dag",
        "/jobs/99999999999999999999999/spec",
    ],
)
def test_big_integers_in_paths_are_404(served: Served, path: str) -> None:
    r = served.alice.get(path)
    assert r.status == 404, r
    assert "ids are at most 9223372036854775807" in r.json["error"]


def test_big_integer_token_id_is_404(served: Served) -> None:
    r = served.alice.call("DELETE", "/auth/tokens/99999999999999999999999")
    assert r.status == 404, r


# ------------------------------------------------------------------------- jobs
def test_n_jobs_100000_in_a_small_body_is_413(served: Served) -> None:
    before = len(served.alice.get("/requests").json["requests"])
    body = template({"name": "a", "command": "true", "n_jobs": 100_000})
    assert len(json.dumps(body)) < 110
    with Pinger(served.anon):
        r = served.alice.post("/requests", body)
    assert r.status == 413, r
    assert r.json["setting"] == "max_jobs_per_work" and r.json["work"] == "a"
    assert "max_jobs_per_work" in r.json["error"]
    r = served.alice.post(
        "/requests", template({"name": "a", "command": "true", "n_jobs": 1_000_000})
    )
    assert r.status == 413 and r.json["setting"] == "max_jobs_per_work"
    r = served.alice.post(
        "/requests", template({"name": "k", "command": "true", "kwargs_list": [{}] * 50_001})
    )
    assert r.status == 413 and r.json["work"] == "k"
    three = [{"name": n, "command": "true", "n_jobs": 40_000} for n in "abc"]
    r = served.alice.post("/requests", template(*three))
    assert r.status == 413 and r.json["setting"] == "max_jobs_per_submission", r
    assert "max_jobs_per_submission" in r.json["error"]
    assert len(served.alice.get("/requests").json["requests"]) == before  # nothing stored


# ------------------------------------------------------------------ expressions
def test_expression_nested_5000_deep_is_400(served: Served) -> None:
    cond = {"name": "c", "expr": "-" * 5000 + "1", "true": ["b"]}
    r = served.alice.post(
        "/requests",
        template(
            {"name": "a", "command": "true"}, {"name": "b", "command": "true"}, conditions=[cond]
        ),
    )
    assert r.status == 400, r
    assert "expression_max_depth" in r.json["error"]


@pytest.mark.parametrize(
    "expr",
    [
        "'%0900000000d' % 0 == 'x'",
        "len(sorted(['x' * 1000000] * 1000000)) > 0",
    ],
)
def test_expression_bombs_fail_their_branch_without_stalling_the_server(
    served: Served, expr: str
) -> None:
    cond = {"name": "c", "expr": expr, "true": ["b"]}
    proc = psutil.Process()
    before = proc.memory_info().rss
    with Pinger(served.anon):
        r = served.alice.post(
            "/requests",
            template(
                {"name": "a", "command": "true"},
                {"name": "b", "command": "true"},
                conditions=[cond],
            ),
        )
        assert r.status == 201, r
        st = served.alice.wait(r.json["id"], timeout=60)
    assert st["status"] == "subfinished"
    b = next(w for w in st["works"] if w["name"] == "b")
    assert b["status"] == "skipped" and "in error" in b["reason"]
    assert proc.memory_info().rss - before < 100 * 2**20


# ------------------------------------------------------------- quotas (own server)
@pytest.fixture(scope="module")
def limited(
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[tuple[ServerHandle, dict[str, Api]]]:
    tmp = tmp_path_factory.mktemp("limited")
    cfg = Config.load(
        None,
        home=tmp / "home",
        db_url=f"sqlite:///{tmp / 'idds.db'}",
        workers=2,
        poll_interval=0.3,
        max_jobs_per_work=5,
        max_jobs_per_submission=10,
        max_submissions_per_minute=3,
        max_active_jobs_per_user=10,
    )
    handle = start_server(cfg, "127.0.0.1", 0, "/")
    admin = Api(handle.url, handle.token)
    users = {"admin": admin}
    for name in ("carol", "erin", "frank"):
        r = admin.post("/auth/tokens", {"name": "test", "user": name})
        assert r.status == 201, r
        users[name] = Api(handle.url, r.json["token"])
    try:
        yield handle, users
    finally:
        handle.stop()


def test_submissions_per_minute_quota_is_429(limited: tuple[ServerHandle, dict[str, Api]]) -> None:
    _, users = limited
    carol = users["carol"]
    for _ in range(3):
        assert carol.post("/requests", template({"name": "a", "command": "true"})).status == 201
    r = carol.post("/requests", template({"name": "a", "command": "true"}))
    assert r.status == 429, r
    assert (
        r.json["setting"] == "max_submissions_per_minute"
        and "max_submissions_per_minute" in r.json["error"]
    )
    assert 0 < r.json["retry_after"] <= 60
    # per user: others are not held back; admins have no quota
    assert (
        users["frank"].post("/requests", template({"name": "a", "command": "true"})).status == 201
    )
    for _ in range(4):
        assert (
            users["admin"].post("/requests", template({"name": "a", "command": "true"})).status
            == 201
        )


def test_active_jobs_quota_is_429_until_jobs_end(tmp_path: Path, db_url: str) -> None:
    """The quota counts the store's unfinished jobs of the user: on SQLite and PostgreSQL."""
    cfg = Config.load(
        None,
        home=tmp_path / "home",
        db_url=db_url,
        workers=2,
        poll_interval=0.3,
        max_active_jobs_per_user=5,
    )
    handle = start_server(cfg, "127.0.0.1", 0, "/")
    try:
        admin = Api(handle.url, handle.token)
        r = admin.post("/auth/tokens", {"name": "test", "user": "dave"})
        assert r.status == 201, r
        dave = Api(handle.url, r.json["token"])
        r = dave.post("/requests", template({"name": "s", "command": "sleep 30", "n_jobs": 4}))
        assert r.status == 201, r
        first = r.json["id"]
        r = dave.post("/requests", template({"name": "t", "command": "true", "n_jobs": 2}))
        assert r.status == 429, r
        assert r.json["setting"] == "max_active_jobs_per_user" and r.json["active"] == 4
        assert "max_active_jobs_per_user" in r.json["error"]
        # admins have no quota
        assert (
            admin.post("/requests", template({"name": "t", "command": "true", "n_jobs": 5})).status
            == 201
        )
        assert dave.post(f"/requests/{first}/abort").status == 200
        dave.wait(first, timeout=60)
        r = dave.post("/requests", template({"name": "t", "command": "true", "n_jobs": 2}))
        assert r.status == 201, r
    finally:
        handle.stop()


def test_grown_run_counts_the_jobs_it_has(limited: tuple[ServerHandle, dict[str, Api]]) -> None:
    _, users = limited
    erin = users["erin"]
    r = erin.post("/requests", {**template(), "open": True})
    assert r.status == 201, r
    wid = r.json["id"]
    r = erin.post(
        f"/requests/{wid}/works", {"works": [{"name": "big", "command": "true", "n_jobs": 6}]}
    )
    assert r.status == 413 and r.json["setting"] == "max_jobs_per_work", r
    for i in range(2):
        r = erin.post(
            f"/requests/{wid}/works", {"works": [{"name": f"w{i}", "command": "true", "n_jobs": 4}]}
        )
        assert r.status == 201, r
    r = erin.post(
        f"/requests/{wid}/works", {"works": [{"name": "w2", "command": "true", "n_jobs": 4}]}
    )
    assert r.status == 413, r
    assert r.json["setting"] == "max_jobs_per_submission" and "has 8 already" in r.json["error"]
    assert erin.post(f"/requests/{wid}/close", {}).status == 200


def test_a_refused_small_body_is_read_and_the_connection_stays_usable(served: Served) -> None:
    """A small body refused before it was read is drained: the answer, then the next
    request on the same connection (a client reusing it never meets a reset)."""
    sock = socket.create_connection(("127.0.0.1", served.handle.port), timeout=10)
    body = b'{"workflow": {}}'
    req = (
        b"POST /idds/api/v1/requests HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
        b"Content-Length: %d\r\n\r\n" % len(body)
    )
    try:
        for _ in range(3):  # the body comes after the refusal's headers were read
            sock.sendall(req)
            time.sleep(0.2)
            sock.sendall(body)
            status, answer = read_answer(sock)
            assert status == 401 and "authentication required" in answer["error"]
    finally:
        sock.close()
