"""The client's one HTTP stack: plain, TLS and through a proxy, keep-alive, surviving closed connections."""

from __future__ import annotations

import base64
import contextlib
import http.client
import ipaddress
import json
import pathlib
import socket
import ssl
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import urlsplit

import pytest

from idds_jupyter.client import Client, IddsError
from idds_jupyter.client.transport import _Connection


def test_the_proxy_is_chosen_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    for var in ("http_proxy", "HTTP_PROXY", "https_proxy", "HTTPS_PROXY", "no_proxy", "NO_PROXY"):
        monkeypatch.delenv(var, raising=False)
    assert _Connection.for_url("http://127.0.0.1:8888/idds/api/v1/", "t", 5).proxy is None
    assert _Connection.for_url("https://hub.example.org/user/a/idds/api/v1/", "t", 5).proxy is None
    monkeypatch.setenv("http_proxy", "http://proxy.example.org:3128")
    conn = _Connection.for_url("http://idds.example.org/idds/api/v1/", "t", 5)
    assert (conn.proxy.hostname, conn.proxy.port) == ("proxy.example.org", 3128)
    assert (
        _Connection.for_url("https://idds.example.org/idds/api/v1/", "t", 5).proxy is None
    )  # https_proxy unset
    monkeypatch.setenv("no_proxy", "idds.example.org")
    assert _Connection.for_url("http://idds.example.org/idds/api/v1/", "t", 5).proxy is None
    monkeypatch.setenv("https_proxy", "socks5://proxy.example.org:1080")
    with pytest.raises(IddsError, match="unsupported proxy"):
        _Connection.for_url("https://hub.example.org/idds/api/v1/", "t", 5)


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
        ("POST", "/idds/api/v1/requests", "Bearer secret")
    ] * 3
    assert [json.loads(b)["template"]["n"] for *_, b in _Handler.seen] == [0, 1, 2]


# -- TLS and proxies --------------------------------------------------------------------------
def _self_signed(tmp: pathlib.Path) -> tuple[str, str]:
    """A certificate for 127.0.0.1 and its key, as PEM files."""
    import datetime

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "idds test")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(hours=1))
        .add_extension(
            x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
            critical=False,
        )
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    cert_path, key_path = tmp / "cert.pem", tmp / "key.pem"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return str(cert_path), str(key_path)


@pytest.fixture
def https_server(tmp_path: pathlib.Path) -> Iterator[tuple[str, str]]:
    """``(url, CA file)`` of a TLS server answering like the service."""
    pytest.importorskip("cryptography")
    cert, key = _self_signed(tmp_path)
    _Handler.seen = []
    srv = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(cert, key)
    srv.socket = ctx.wrap_socket(srv.socket, server_side=True)
    t = threading.Thread(target=srv.serve_forever, daemon=True)
    t.start()
    try:
        yield f"https://127.0.0.1:{srv.server_address[1]}", cert
    finally:
        srv.shutdown()
        srv.server_close()


class _Proxy(BaseHTTPRequestHandler):
    """A forward proxy: CONNECT tunnels (HTTPS), absolute-URL requests forwarded (HTTP)."""

    protocol_version = "HTTP/1.1"
    seen: list[tuple[str, str, str]] = []

    def log_message(self, *args: object) -> None:
        pass

    def do_CONNECT(self) -> None:
        self.seen.append(("CONNECT", self.path, self.headers.get("Proxy-Authorization", "")))
        host, port = self.path.rsplit(":", 1)
        upstream = socket.create_connection((host, int(port)))
        self.send_response(200, "Connection established")
        self.end_headers()
        self.wfile.flush()
        pipes = [
            threading.Thread(target=_pipe, args=(a, b), daemon=True)
            for a, b in ((self.connection, upstream), (upstream, self.connection))
        ]
        for p in pipes:
            p.start()
        for p in pipes:
            p.join()
        self.close_connection = True

    def do_POST(self) -> None:
        self.seen.append(("POST", self.path, self.headers.get("Proxy-Authorization", "")))
        body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        u = urlsplit(self.path)
        headers = {
            k: v
            for k, v in self.headers.items()
            if k.lower() not in ("proxy-authorization", "host")
        }
        conn = http.client.HTTPConnection(u.hostname, u.port)
        conn.request("POST", u.path, body=body, headers=headers)
        r = conn.getresponse()
        out = r.read()
        self.send_response(r.status)
        self.send_header("Content-Type", r.getheader("Content-Type", "application/json"))
        self.send_header("Content-Length", str(len(out)))
        self.end_headers()
        self.wfile.write(out)
        conn.close()


def _pipe(src: socket.socket, dst: socket.socket) -> None:
    try:
        while data := src.recv(65536):
            dst.sendall(data)
    except OSError:
        pass
    finally:
        with contextlib.suppress(OSError):
            dst.shutdown(socket.SHUT_WR)


@pytest.fixture
def proxy() -> Iterator[str]:
    _Proxy.seen = []
    srv = ThreadingHTTPServer(("127.0.0.1", 0), _Proxy)
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    try:
        yield f"http://user:p%40ss@127.0.0.1:{srv.server_address[1]}"
    finally:
        srv.shutdown()
        srv.server_close()


def _no_proxy_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for var in (
        "http_proxy",
        "HTTP_PROXY",
        "https_proxy",
        "HTTPS_PROXY",
        "no_proxy",
        "NO_PROXY",
        "REQUESTS_CA_BUNDLE",
        "CURL_CA_BUNDLE",
        "SSL_CERT_FILE",
    ):
        monkeypatch.delenv(var, raising=False)


def test_https_verifies_against_the_ca_bundle_of_the_environment(
    https_server: tuple[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    _no_proxy_env(monkeypatch)
    url, ca = https_server
    with pytest.raises(
        IddsError, match="cannot reach the iDDS service .*CERTIFICATE_VERIFY_FAILED"
    ):
        Client(url, "secret")._json("POST", "requests", {"template": {"n": 0}})
    monkeypatch.setenv("REQUESTS_CA_BUNDLE", ca)
    client = Client(url, "secret")
    # the refused handshake sent nothing; then two calls, the second on a new connection
    # (the server closed the first without a TLS close_notify)
    assert [client._json("POST", "requests", {"template": {"n": i}}) for i in range(2)] == [
        {"id": 1},
        {"id": 2},
    ]
    assert [(m, p, a) for m, p, a, _ in _Handler.seen] == [
        ("POST", "/idds/api/v1/requests", "Bearer secret")
    ] * 2


def test_https_through_a_proxy_tunnel(
    https_server: tuple[str, str], proxy: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    _no_proxy_env(monkeypatch)
    url, ca = https_server
    monkeypatch.setenv("REQUESTS_CA_BUNDLE", ca)
    monkeypatch.setenv("https_proxy", proxy)
    client = Client(url, "secret")
    assert client._json("POST", "requests", {"template": {"n": 7}}) == {"id": 1}
    auth = "Basic " + base64.b64encode(b"user:p@ss").decode()
    assert _Proxy.seen[0] == ("CONNECT", url.removeprefix("https://"), auth)
    assert _Handler.seen[0][:3] == (
        "POST",
        "/idds/api/v1/requests",
        "Bearer secret",
    )  # the token inside TLS


def test_http_through_a_forwarding_proxy(
    http_server: str, proxy: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    _no_proxy_env(monkeypatch)
    monkeypatch.setenv("http_proxy", proxy)
    client = Client(http_server, "secret")
    assert client._json("POST", "requests", {"template": {"n": 1}}) == {"id": 1}
    auth = "Basic " + base64.b64encode(b"user:p@ss").decode()
    assert _Proxy.seen == [("POST", f"{http_server}/idds/api/v1/requests", auth)]
    assert _Handler.seen[0][:3] == ("POST", "/idds/api/v1/requests", "Bearer secret")
