"""The extension's live stream with the Jupyter login cookie (issue 19, item 5): a page of
another origin cannot open it — Jupyter's own origin rule and settings decide — while the
Jupyter UI's own origin is served."""

from __future__ import annotations

import asyncio
import json
import re
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any, cast

import pytest
import requests
import tornado.websocket
from jupyter_helpers import JupyterServer
from tornado.httpclient import HTTPClientError, HTTPRequest

pytestmark = pytest.mark.timeout(300)

CALL = {
    "name": "call",
    "works": [
        {"name": "f", "function": "idds_jupyter.worker.job:sleep", "parameters": {"seconds": 0}}
    ],
}


@pytest.fixture(scope="module")
def jupyter(tmp_path_factory: pytest.TempPathFactory) -> Iterator[JupyterServer]:
    server = JupyterServer(
        tmp_path_factory.mktemp("jupyter"),
        args=("--ServerApp.allow_origin_pat=https://.*\\.trusted\\.example",),
    )
    try:
        yield server
    finally:
        server.stop()


def login_cookie(server: JupyterServer) -> str:
    """Log in as a browser does (the login form with the token): the session cookie header."""
    s = requests.Session()
    page = s.get(server.url + "login", timeout=30)
    xsrf = s.cookies.get("_xsrf") or re.search(r'name="_xsrf" value="([^"]+)"', page.text).group(1)  # type: ignore[union-attr]
    r = s.post(
        server.url + "login",
        data={"password": server.token, "_xsrf": xsrf},
        allow_redirects=False,
        timeout=30,
    )
    assert r.status_code in (302, 303), r.text[:300]
    assert any(c.name.startswith("username-") for c in s.cookies), list(s.cookies)
    # the cookie alone is a valid login: the API answers it
    assert s.get(server.url + "idds/api/v1/auth/whoami", timeout=30).status_code == 200
    return "; ".join(f"{c.name}={c.value}" for c in s.cookies)


def _stream(
    server: JupyterServer, headers: dict[str, str], submit: bool
) -> int | list[dict[str, Any]]:
    """Open the stream; the refusal's status, or the messages (with a run submitted meanwhile)."""
    url = server.url.replace("http://", "ws://") + "idds/api/v1/stream"

    async def go() -> int | list[dict[str, Any]]:
        try:
            conn = await tornado.websocket.websocket_connect(HTTPRequest(url, headers=headers))
        except HTTPClientError as exc:
            return exc.code
        conn.write_message(json.dumps({"subscribe": "*"}))
        first: Any = await asyncio.wait_for(cast(Any, conn.read_message()), 10)
        got = [json.loads(first or "{}")]
        if submit:
            r = server.api("POST", "requests", json={"template": CALL})
            assert r.status_code == 201, r.text
            deadline = time.monotonic() + 60
            while not any(g.get("type") == "workflow.terminal" for g in got):
                msg = await asyncio.wait_for(conn.read_message(), deadline - time.monotonic())
                if msg is None:
                    break
                got.append(json.loads(msg))
        conn.close()
        return got

    return asyncio.run(go())


def test_cookie_stream_from_another_origin_is_refused(jupyter: JupyterServer) -> None:
    cookie = login_cookie(jupyter)
    own = f"http://127.0.0.1:{jupyter.port}"
    # the attack: a page on evil.example, riding the user's login cookie
    for origin in ("http://evil.example", "null", "https://trusted.example.evil.example"):
        assert _stream(jupyter, {"Cookie": cookie, "Origin": origin}, False) == 403, origin
    # Jupyter's own UI (the same origin) gets the user's events
    got = _stream(jupyter, {"Cookie": cookie, "Origin": own}, True)
    assert isinstance(got, list) and got[0]["type"] == "subscribed", got
    assert any(g.get("type") == "job.result" for g in got), got
    # an origin the Jupyter server allows (ServerApp.allow_origin_pat) is allowed here too
    ok = _stream(jupyter, {"Cookie": cookie, "Origin": "https://lab.trusted.example"}, False)
    assert isinstance(ok, list) and ok[0]["type"] == "subscribed", ok
    # as for Jupyter's own websockets: a token (no ambient credential) skips the origin check
    tok = _stream(
        jupyter, {"Authorization": f"token {jupyter.token}", "Origin": "http://evil.example"}, False
    )
    assert isinstance(tok, list) and tok[0]["type"] == "subscribed", tok
    # and nothing at all without credentials
    assert _stream(jupyter, {"Origin": own}, False) == 403


def test_log_mentions_the_blocked_origin(jupyter: JupyterServer) -> None:
    log = Path(jupyter.tmp / "jupyter.log").read_text(errors="replace")
    assert "Blocking Cross Origin WebSocket Attempt" in log and "evil.example" in log


def test_revoked_idds_token_stream_is_closed(jupyter: JupyterServer) -> None:
    """A stream the extension opened on an idds token (as kernels of a server without a
    Jupyter token carry) closes with 1008 when that token is revoked; the token is refused."""
    r = jupyter.api("POST", "auth/tokens", json={"name": "kernel"})
    assert r.status_code == 201, r.text
    tid, token = r.json()["id"], r.json()["token"]
    url = jupyter.url.replace("http://", "ws://") + "idds/api/v1/stream"

    async def go() -> tuple[Any, Any, float]:
        conn = await tornado.websocket.websocket_connect(
            HTTPRequest(url, headers={"Authorization": f"Bearer {token}"})
        )
        conn.write_message(json.dumps({"subscribe": "*"}))
        first: Any = await asyncio.wait_for(cast(Any, conn.read_message()), 10)
        assert json.loads(first)["type"] == "subscribed"
        loop = asyncio.get_running_loop()
        gone = await loop.run_in_executor(None, lambda: jupyter.api("DELETE", f"auth/tokens/{tid}"))
        assert gone.json()["revoked"] is True
        t0 = time.monotonic()
        msg: Any = await asyncio.wait_for(cast(Any, conn.read_message()), 15)
        return msg, (conn.close_code, conn.close_reason), time.monotonic() - t0

    msg, (code, reason), after = asyncio.run(go())
    assert msg is None and code == 1008 and "revoked" in (reason or ""), (msg, code, reason)
    assert after < 6.0
    r = requests.get(
        jupyter.url + "idds/api/v1/auth/whoami",
        headers={"Authorization": f"Bearer {token}"},
        timeout=30,
    )
    assert r.status_code in (401, 403), r.text
