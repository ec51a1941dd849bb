"""The client's HTTP transport: one keep-alive ``http.client`` connection per thread.

One stack for every case: plain HTTP (the usual local server), HTTPS (a
JupyterHub service: the CA bundle of ``REQUESTS_CA_BUNDLE``/``CURL_CA_BUNDLE``/
``SSL_CERT_FILE``, else certifi's, else the system's), and either through the
proxy the environment names (``http_proxy``/``https_proxy``, ``no_proxy``
honoured; HTTPS through a ``CONNECT`` tunnel). Errors are raised as
:class:`IddsError`; a database busy answer (503 with ``Retry-After``) is waited
out and tried again.
"""

from __future__ import annotations

import base64
import contextlib
import json
import os
import threading
import time
from collections.abc import Iterable, Mapping
from typing import Any
from urllib.parse import unquote, urlencode, urlsplit

from idds_jupyter.client.errors import IddsError

__all__ = ["API_PREFIX", "Transport"]

API_PREFIX = "/idds/api/v1/"


class Transport:
    """HTTP calls to ``{url}/idds/api/v1/``, bearer ``token``, one connection per thread."""

    #: how long in all a call waits out "database busy" answers (503 with Retry-After: the
    #: service stored nothing and asks to try again) before it raises them
    busy_retry_s = 60.0

    def __init__(self, url: str, token: str, timeout: float = 60.0) -> None:
        self.url = url.rstrip("/")
        self.token = token
        self.api = self.url + API_PREFIX
        self.timeout = timeout
        self._local = threading.local()

    @property
    def connection(self) -> _Connection:
        """This thread's keep-alive connection, made on first use."""
        conn: _Connection | None = getattr(self._local, "conn", None)
        if conn is None:
            conn = self._local.conn = _Connection.for_url(self.api, self.token, self.timeout)
        return conn

    def request(self, method: str, path: str, **kw: Any) -> Any:
        """One REST call.

        Returns the response (``status_code``, ``content``, ``text``, ``json()``,
        ``headers``) or raises :class:`IddsError`. A database busy answer
        (503 with ``Retry-After``: nothing was changed) is tried again after the wait it
        names, for up to :attr:`busy_retry_s` seconds in all.
        """
        waited = 0.0
        while True:
            try:
                return self._request_once(method, path, **kw)
            except IddsError as exc:
                pause = exc.retry_after
                if exc.status != 503 or pause is None or waited + pause > self.busy_retry_s:
                    raise
            time.sleep(pause)
            waited += pause

    def _request_once(
        self,
        method: str,
        path: str,
        *,
        json_body: Any = None,
        data: bytes | None = None,
        params: Mapping[str, Any] | None = None,
        ok: Iterable[int] = (200, 201, 204),
        headers: Mapping[str, str] | None = None,
    ) -> Any:
        import http.client

        body = data
        hdrs = dict(headers or {})
        if json_body is not None:
            body = json.dumps(json_body, separators=(",", ":")).encode()
            hdrs.setdefault("Content-Type", "application/json")
        elif data is not None:
            hdrs.setdefault("Content-Type", "application/octet-stream")
        try:
            resp = self.connection.request(method, path.lstrip("/"), body, params, hdrs)
        except OSError as exc:  # refused, timed out, TLS verification
            raise IddsError(0, f"cannot reach the iDDS service at {self.url}: {exc}") from None
        except http.client.HTTPException as exc:
            raise IddsError(0, f"{method} {self.api}{path.lstrip('/')}: {exc!r}") from None
        if resp.status_code not in tuple(ok):
            raise IddsError(
                resp.status_code, _error_message(resp, method, path), _retry_after(resp)
            )
        return resp

    def close(self) -> None:
        """Close this thread's connection."""
        conn = getattr(self._local, "conn", None)
        if conn is not None:
            conn.close()


class _Response:
    """What callers read of a response (the names ``requests`` uses)."""

    def __init__(
        self, status: int, reason: str, headers: Mapping[str, str], content: bytes
    ) -> None:
        self.status_code = status
        self.reason = reason
        self.headers = headers
        self.content = content

    @property
    def text(self) -> str:
        return self.content.decode("utf-8", "replace")

    def json(self) -> Any:
        return json.loads(self.content)


class _Connection:
    """One keep-alive ``http.client`` connection to the service: direct, or through a proxy."""

    def __init__(
        self,
        scheme: str,
        host: str,
        port: int,
        base: str,
        token: str,
        timeout: float,
        proxy: Any = None,
    ) -> None:
        self.scheme, self.host, self.port, self.base, self.timeout = (
            scheme,
            host,
            port,
            base,
            timeout,
        )
        self.auth = {"Authorization": f"Bearer {token}"} if token else {}
        self.proxy = proxy  # urlsplit() of the proxy's URL, or None
        self.proxy_auth: dict[str, str] = {}
        if proxy is not None and proxy.username:
            pair = f"{unquote(proxy.username)}:{unquote(proxy.password or '')}".encode()
            self.proxy_auth = {"Proxy-Authorization": "Basic " + base64.b64encode(pair).decode()}
        self.conn: Any = None

    @classmethod
    def for_url(cls, api: str, token: str, timeout: float) -> _Connection:
        """The connection for ``api``, through the proxy the environment names for its host."""
        from urllib.request import getproxies, proxy_bypass

        u = urlsplit(api)
        if u.scheme not in ("http", "https") or not u.hostname:
            raise IddsError(0, f"not an http(s) URL: {api!r}")
        proxy_url = getproxies().get(u.scheme)
        proxy = None
        if proxy_url and not proxy_bypass(u.hostname):
            proxy = urlsplit(proxy_url if "://" in proxy_url else "http://" + proxy_url)
            if proxy.scheme != "http" or not proxy.hostname:
                raise IddsError(
                    0,
                    f"unsupported proxy {proxy_url!r} for {u.hostname} "
                    "(an http:// proxy is needed; or list the host in no_proxy)",
                )
        port = u.port or (443 if u.scheme == "https" else 80)
        return cls(u.scheme, u.hostname, port, u.path, token, timeout, proxy)

    def _connect(self) -> Any:
        import http.client

        if self.scheme == "http":
            if self.proxy is None:
                return http.client.HTTPConnection(self.host, self.port, timeout=self.timeout)
            return http.client.HTTPConnection(
                self.proxy.hostname, self.proxy.port or 80, timeout=self.timeout
            )
        if self.proxy is None:
            return http.client.HTTPSConnection(
                self.host, self.port, timeout=self.timeout, context=_tls_context()
            )
        conn = http.client.HTTPSConnection(
            self.proxy.hostname, self.proxy.port or 80, timeout=self.timeout, context=_tls_context()
        )
        conn.set_tunnel(self.host, self.port, headers=self.proxy_auth)
        return conn

    def request(
        self,
        method: str,
        path: str,
        body: bytes | None,
        params: Mapping[str, Any] | None,
        headers: dict[str, str],
    ) -> _Response:
        import http.client
        import ssl

        target = self.base + path
        if params:
            target += "?" + urlencode({k: v for k, v in params.items() if v is not None})
        hdrs = {**self.auth, **headers}
        if self.proxy is not None and self.scheme == "http":  # a forwarding proxy: the whole URL
            target = f"http://{self.host}:{self.port}{target}"
            hdrs.update(self.proxy_auth)
        for attempt in (0, 1):
            fresh = self.conn is None
            if fresh:
                self.conn = self._connect()
            try:
                self.conn.request(method, target, body=body, headers=hdrs)
                r = self.conn.getresponse()
                content = r.read()
            except (
                http.client.RemoteDisconnected,
                ConnectionResetError,
                BrokenPipeError,
                ssl.SSLEOFError,
                ssl.SSLZeroReturnError,
            ):  # closed without a word (TLS too)
                self.close()
                if fresh or attempt:  # a reused connection the server had closed: once more
                    raise
                continue
            except BaseException:
                self.close()
                raise
            if r.will_close:
                self.close()
            return _Response(r.status, r.reason, r.headers, content)
        raise AssertionError("unreachable")  # pragma: no cover

    def close(self) -> None:
        if self.conn is not None:
            with contextlib.suppress(Exception):
                self.conn.close()
            self.conn = None


def _tls_context() -> Any:
    """Verification against the CA bundle the environment names, else certifi's, else the system's."""
    import ssl

    ca = (
        os.environ.get("REQUESTS_CA_BUNDLE")
        or os.environ.get("CURL_CA_BUNDLE")
        or os.environ.get("SSL_CERT_FILE")
    )
    if ca and os.path.isdir(ca):
        return ssl.create_default_context(capath=ca)
    if not ca:
        try:
            import certifi
        except ImportError:
            return ssl.create_default_context()
        ca = certifi.where()
    return ssl.create_default_context(cafile=ca)


def _retry_after(resp: Any) -> float | None:
    """A 503's ``Retry-After`` in seconds (None: absent, or not a number of seconds)."""
    if resp.status_code != 503:
        return None
    try:
        return max(0.0, float(resp.headers.get("Retry-After")))
    except (TypeError, ValueError):
        return None


def _error_message(resp: Any, method: str, path: str) -> str:
    text = ""
    try:
        body = resp.json()
        if isinstance(body, dict):
            text = str(body.get("message") or body.get("error") or body.get("reason") or body)
        else:
            text = str(body)
    except ValueError:
        text = (resp.text or resp.reason or "").strip()
    text = " ".join(text.split())
    return f"{method} {path}: {text}" if text else f"{method} {path}: {resp.reason}"
