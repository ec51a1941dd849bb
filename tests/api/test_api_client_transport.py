"""The client's plain keep-alive transport: when it is used, and that it survives closed connections."""

from __future__ import annotations

import json
import socket
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from idds_jupyter.client import Client
from idds_jupyter.client.transport import _Direct


def test_plain_http_uses_the_direct_transport(monkeypatch: pytest.MonkeyPatch) -> None:
    for var in ("http_proxy", "HTTP_PROXY", "no_proxy", "NO_PROXY"):
        monkeypatch.delenv(var, raising=False)
    assert _Direct.for_url("http://127.0.0.1:8888/idds/api/v1/", "t", 5) is not None
    assert _Direct.for_url("https://hub.example.org/user/a/idds/api/v1/", "t", 5) is None
    monkeypatch.setenv("http_proxy", "http://proxy.example.org:3128")
    assert _Direct.for_url("http://idds.example.org/idds/api/v1/", "t", 5) is None  # via requests
    monkeypatch.setenv("no_proxy", "idds.example.org")
    assert _Direct.for_url("http://idds.example.org/idds/api/v1/", "t", 5) is not None


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive unless the server drops the socket
    seen: list[tuple[str, str, str, bytes]] = []
    drop_after_reply = True

    def log_message(self, *args: object) -> None:
        pass

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        self.seen.append(("POST", self.path, self.headers.get("Authorization", ""), body))
        out = json.dumps({"id": len(self.seen)}).encode()
        self.send_response(201)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(out)))
        self.end_headers()
        self.wfile.write(out)
        self.wfile.flush()
        if self.drop_after_reply:  # an idle keep-alive connection the server closed
            self.connection.shutdown(socket.SHUT_RDWR)
            self.close_connection = True


@pytest.fixture
def http_server() -> Iterator[str]:
    _Handler.seen = []
    srv = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    t = threading.Thread(target=srv.serve_forever, daemon=True)
    t.start()
    try:
        yield f"http://127.0.0.1:{srv.server_address[1]}"
    finally:
        srv.shutdown()
        srv.server_close()


def test_requests_go_through_after_the_server_closed_the_connection(http_server: str) -> None:
    client = Client(http_server, "secret")
    ids = [client._json("POST", "requests", {"template": {"n": i}}) for i in range(3)]
    assert ids == [{"id": 1}, {"id": 2}, {"id": 3}]  # each sent once, none lost or repeated
    assert [(m, p, a) for m, p, a, _ in _Handler.seen] == [
        ("POST", "/idds/api/v1/requests", "Bearer secret")] * 3
    assert [json.loads(b)["template"]["n"] for *_, b in _Handler.seen] == [0, 1, 2]
