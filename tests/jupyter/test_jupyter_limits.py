"""Hostile input against the Jupyter extension: bodies refused before they are read, limits named."""

from __future__ import annotations

import json
import socket
import threading
import time
from collections.abc import Iterator
from typing import Any

import psutil
import pytest
import requests
from jupyter_helpers import JupyterServer


@pytest.fixture(scope="module")
def jupyter(tmp_path_factory: pytest.TempPathFactory) -> Iterator[JupyterServer]:
    server = JupyterServer(tmp_path_factory.mktemp("jupyter-limits"), base_url="/user/alice/")
    try:
        yield server
    finally:
        server.stop()


def raw_post(server: JupyterServer, path: str, length: int, token: bool = False) -> socket.socket:
    """A POST declaring ``length`` bytes of body, of which 4 KB are sent."""
    sock = socket.create_connection(("127.0.0.1", server.port), timeout=10)
    head = (
        f"POST {server.base_url}idds/api/v1/{path} HTTP/1.1\r\nHost: 127.0.0.1:{server.port}\r\n"
        f"Content-Type: application/json\r\nContent-Length: {length}\r\n"
    )
    if token:
        head += f"Authorization: token {server.token}\r\n"
    sock.sendall(head.encode() + b"\r\n" + b"x" * 4096)
    return sock


def read_answer(sock: socket.socket, timeout: float = 5) -> tuple[int, dict[str, Any]]:
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
    """Another client pinging the API; the slowest answer is kept."""

    def __init__(self, server: JupyterServer) -> None:
        super().__init__(daemon=True)
        self.server, self.worst, self.count = server, 0.0, 0
        self.halt = threading.Event()

    def run(self) -> None:
        while not self.halt.is_set():
            t0 = time.monotonic()
            assert self.server.api("GET", "ping", token=False).status_code == 200
            self.worst = max(self.worst, time.monotonic() - t0)
            self.count += 1
            time.sleep(0.05)

    def __enter__(self) -> Pinger:
        self.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self.halt.set()
        self.join(30)
        assert self.count > 0 and self.worst < 1.0, f"/ping waited {self.worst:.2f} s"


def test_unauthenticated_400mb_posts_are_refused_before_their_body(jupyter: JupyterServer) -> None:
    proc = psutil.Process(jupyter.proc.pid)
    before = proc.memory_info().rss
    with Pinger(jupyter):
        socks = [raw_post(jupyter, "requests", 400_000_000) for _ in range(3)]
        t0 = time.monotonic()
        answers = [read_answer(s) for s in socks]
        took = time.monotonic() - t0
        for s in socks:  # closed with the answer: the 400 MB are never read
            s.settimeout(5)
            assert s.recv(65536) == b""
            s.close()
    assert [a[0] for a in answers] == [403, 403, 403]  # Jupyter's answer to no credentials
    # Jupyter's own checks come first: a write without a token (or a cookie and its
    # XSRF token) is refused by the XSRF check, as Jupyter's own API refuses it
    assert "_xsrf" in answers[0][1]["error"]
    assert took < 5
    grown = proc.memory_info().rss - before
    assert grown < 50 * 2**20, f"server RSS grew by {grown / 2**20:.0f} MB"


def test_513_mib_body_is_413_naming_the_limit(jupyter: JupyterServer) -> None:
    proc = psutil.Process(jupyter.proc.pid)
    before = proc.memory_info().rss
    sock = raw_post(jupyter, "requests", 513 * 2**20, token=True)
    status, body = read_answer(sock)
    sock.close()
    assert status == 413 and body["setting"] == "max_body_size", body
    assert "max_body_size" in body["error"]
    assert proc.memory_info().rss - before < 50 * 2**20


def test_deep_json_and_big_ids_are_4xx(jupyter: JupyterServer) -> None:
    raw = '{"params": {"a": ' + "[" * 100_000 + "]" * 100_000 + "}}"
    r = requests.post(
        jupyter.url + "idds/api/v1/requests",
        data=raw,
        timeout=30,
        headers={**jupyter.auth, "Content-Type": "application/json"},
    )
    assert r.status_code == 400 and r.json()["setting"] == "max_json_depth", r.text
    r = jupyter.api("GET", "logs/99999999999999999999999")
    assert r.status_code == 404 and "ids are at most" in r.json()["error"], r.text
    assert requests.get(jupyter.url + "api/status", headers=jupyter.auth, timeout=10).ok
