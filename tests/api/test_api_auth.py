"""Authentication: ping is public; every other route and method refuses a missing or bad token."""

from __future__ import annotations

import asyncio
import re
from typing import Any, cast

import pytest
import tornado.web
import tornado.websocket
from api_helpers import Served
from apiclient import Api
from tornado.httpclient import HTTPClientError, HTTPRequest

from idds_jupyter.api import PARAMS, handlers, make_app, openapi_path

SAMPLE = {
    "id": "1",
    "job_id": "1",
    "token_id": "1",
    "action": "abort",
    "name": "a",
    "sha256": "0" * 64,
    "dataset": "ds",
    "idx": "0",
}


def implemented_methods(cls: type[Any]) -> list[str]:
    if issubclass(cls, tornado.websocket.WebSocketHandler):
        return ["WEBSOCKET"]
    return [
        m
        for m in cls.SUPPORTED_METHODS
        if getattr(cls, m.lower(), None) is not getattr(tornado.web.RequestHandler, m.lower(), None)
    ]


def app_routes(served: Served) -> list[tuple[str, type[Any], list[str]]]:
    """(concrete path under the API, handler class, methods) for every rule of the application."""
    app = make_app(served.handle.ctx)
    out = []
    for rule in app.wildcard_router.rules:
        pattern = cast(Any, rule.matcher).regex.pattern
        path = openapi_path(pattern)
        assert path is not None, pattern
        concrete = re.sub(r"\{(\w+)\}", lambda m: SAMPLE[m.group(1)], path)
        out.append((concrete, rule.target, implemented_methods(rule.target)))
    return out


def test_route_table_is_complete(served: Served) -> None:
    rules = handlers(served.handle.ctx, "/")
    assert len(rules) >= 20 and all(isinstance(r[2]["ctx"], object) for r in rules)
    assert set(PARAMS) >= set(SAMPLE)


def test_ping_is_public(served: Served) -> None:
    r = served.anon.get("/ping")
    assert r.status == 200 and r.json["status"] == "ok" and r.json["version"]


async def _ws_status(url: str, headers: dict[str, str]) -> int:
    try:
        conn = await tornado.websocket.websocket_connect(HTTPRequest(url, headers=headers))
    except HTTPClientError as exc:
        return exc.code
    conn.close()
    return 101


@pytest.mark.parametrize("token", [None, "not-a-valid-token"])
def test_every_route_refuses_without_a_valid_token(served: Served, token: str | None) -> None:
    api = Api(served.handle.url, token)
    checked = 0
    for path, _cls, methods in app_routes(served):
        for method in methods:
            if path == "/ping":
                continue
            if method == "WEBSOCKET":
                url = api.base.replace("http://", "ws://") + path
                hdrs = {"Authorization": f"Bearer {token}"} if token else {}
                assert asyncio.run(_ws_status(url, hdrs)) == 401, path
                if token:
                    assert asyncio.run(_ws_status(url + f"?token={token}", {})) == 401
                checked += 1
                continue
            raw = b"{}" if method in ("POST", "PUT", "PATCH") else None
            r = api.call(method, path, raw=raw, token=token)
            assert r.status == 401, (method, path, r)
            if method != "HEAD":
                assert "token" in r.json["error"]
            checked += 1
    assert checked >= 25


def walk_with_job_token(served: Any, token: str, job_id: int) -> int:
    """Every route with a (genuine) job token: refused (401) unless it is a route of that job."""
    api = Api(served.handle.url, token)
    checked = 0
    for path, _cls, methods in app_routes(served):
        for method in methods:
            if path == "/ping":
                continue
            if method == "WEBSOCKET":
                url = api.base.replace("http://", "ws://") + path
                assert asyncio.run(_ws_status(url, {"Authorization": f"Bearer {token}"})) == 401
                assert asyncio.run(_ws_status(url + f"?token={token}", {})) == 401
                checked += 1
                continue
            raw = b"{}" if method in ("POST", "PUT", "PATCH") else None
            r = api.call(method, path, raw=raw, token=token)
            if path.startswith("/jobs/"):  # job routes of another job (SAMPLE job 1)
                assert r.status == 403, (method, path, r)
                assert f"is for job {job_id}, not job 1" in r.json["error"]
            else:
                assert r.status == 401, (method, path, r)
                if method != "HEAD":
                    assert "token" in r.json["error"]
            checked += 1
    return checked


def test_every_other_route_refuses_a_job_token(served: Served) -> None:
    """A job token (transfer http) opens its own job's /jobs routes only: nothing else."""
    from idds_jupyter.store.job_tokens import JobTokens

    tokens = JobTokens.for_home(served.handle.ctx.config.home)
    token = tokens.mint(999_999, 1, "0" * 64)
    assert tokens.verify(token).job_id == 999_999  # genuine, signed by this server
    assert walk_with_job_token(served, token, 999_999) >= 28


def test_whoami_and_tokens(served: Served) -> None:
    assert served.alice.get("/auth/whoami").json == {"user": "alice", "admin": False}
    assert served.admin.get("/auth/whoami").json["admin"] is True
    # a user cannot mint admin tokens or tokens for others
    assert served.alice.post("/auth/tokens", {"name": "x", "admin": True}).status == 403
    assert served.alice.post("/auth/tokens", {"name": "x", "user": "bob"}).status == 403
    r = served.alice.post("/auth/tokens", {"name": "second"})
    assert r.status == 201 and r.json["user"] == "alice" and r.json["token"]
    new = Api(served.handle.url, r.json["token"])
    assert new.get("/auth/whoami").json["user"] == "alice"
    listed = served.alice.get("/auth/tokens").json["tokens"]
    assert {t["user"] for t in listed} == {"alice"}
    assert all("token" not in t and "token_hash" not in t for t in listed)
    assert {t["user"] for t in served.admin.get("/auth/tokens").json["tokens"]} >= {"alice", "bob"}
    # bob cannot revoke alice's token; alice can
    assert served.bob.call("DELETE", f"/auth/tokens/{r.json['id']}").status == 404
    assert served.alice.call("DELETE", f"/auth/tokens/{r.json['id']}").json["revoked"] is True
    assert new.get("/auth/whoami").status == 401


def test_bad_bodies_are_clear_400s(served: Served) -> None:
    r = served.alice.post(
        "/requests", raw=b"{not json", headers={"Content-Type": "application/json"}
    )
    assert r.status == 400 and "not valid JSON" in r.json["error"]
    r = served.alice.post("/requests", [1, 2])
    assert r.status == 400 and "JSON object" in r.json["error"]
    r = served.alice.post("/requests", {"template": {"name": "x", "works": [{"name": "a"}]}})
    assert r.status == 400 and "field" in r.json and "work" in r.json, r
    r = served.alice.post("/requests", {"yaml": "name: [unclosed"})
    assert r.status == 400 and "YAML" in r.json["error"]
    r = served.alice.post("/requests", {"yaml": "/etc/passwd.yaml"})
    assert r.status == 400  # YAML text only: never read as a file name
    r = served.alice.get("/requests?limit=abc")
    assert r.status == 400 and "limit" in r.json["error"]


def test_unknown_route_is_a_json_404(served: Served) -> None:
    r = served.alice.get("/no/such/thing")
    assert r.status == 404 and "no such API route" in r.json["error"]


def test_where_a_token_may_travel(served: Served) -> None:
    """In the Authorization header as ``Bearer`` or ``token`` (Jupyter's word); in the query
    only for the stream (a browser's websocket cannot set headers), never for REST routes,
    whose URLs end up in logs and browser history."""
    tok = served.alice.token
    for scheme in ("Bearer", "token", "bearer", "TOKEN"):
        r = served.anon.get("/auth/whoami", headers={"Authorization": f"{scheme} {tok}"})
        assert r.status == 200 and r.json["user"] == "alice", (scheme, r)
    for header in (f"Basic {tok}", "Bearer", "Bearer   ", f"{tok}", f"Bearer{tok}"):
        r = served.anon.get("/auth/whoami", headers={"Authorization": header})
        assert r.status == 401, (header, r)
    assert served.anon.get(f"/auth/whoami?token={tok}").status == 401
    [stream] = [p for p, _c, m in app_routes(served) if "WEBSOCKET" in m]
    url = served.anon.base.replace("http://", "ws://") + stream
    assert asyncio.run(_ws_status(url + f"?token={tok}", {})) == 101
    assert asyncio.run(_ws_status(url, {"Authorization": f"token {tok}"})) == 101


def test_an_expiring_token_holds_until_its_expiry_then_says_so(served: Served) -> None:
    import time

    r = served.alice.post("/auth/tokens", {"name": "short", "expires_in": 2})
    assert r.status == 201, r
    short = Api(served.handle.url, r.json["token"])
    for _ in range(3):  # the first from the store, the next from the verified-token cache
        got = short.get("/auth/whoami")
        assert got.status == 200 and got.json["user"] == "alice", got
    time.sleep(max(0.0, r.json["expires_at"] - time.time()) + 0.3)
    gone = short.get("/auth/whoami")
    assert gone.status == 401 and "token expired at" in gone.json["error"], gone
    assert served.alice.get("/auth/whoami").status == 200  # the user's other tokens hold
