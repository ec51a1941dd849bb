"""The client's HTTP transport: one keep-alive connection per thread, errors as :class:`IddsError`.

Plain ``http.client`` for an ``http://`` server reached without a proxy (the
usual local case, a millisecond less per call), else a ``requests.Session``
(TLS, proxies, CA bundles). A database busy answer (503 with ``Retry-After``)
is waited out and tried again.
"""

from __future__ import annotations

import contextlib
import json
import os
import threading
import time
from collections.abc import Iterable, Mapping
from typing import Any

from idds_jupyter.client.errors import IddsError

__all__ = ["API_PREFIX", "Transport"]

API_PREFIX = "/idds/api/v1/"


class Transport:
    """HTTP calls to ``{url}/idds/api/v1/``, bearer ``token``, one connection per thread."""

    def __init__(self, url: str, token: str, timeout: float = 60.0) -> None:
        self.url = url.rstrip("/")
        self.token = token
        self.api = self.url + API_PREFIX
        self.timeout = timeout
        self._local = threading.local()

    @property
    def session(self) -> Any:
        """This thread's HTTP session (``requests.Session``), made on first use."""
        s = getattr(self._local, "session", None)
        if s is None:
            import requests

            s = requests.Session()
            # Read the proxy and CA settings of the environment once, not on every
            # request (requests re-reads os.environ per call: a millisecond each).
            s.proxies.update(requests.utils.get_environ_proxies(self.url))
            ca = os.environ.get("REQUESTS_CA_BUNDLE") or os.environ.get("CURL_CA_BUNDLE")
            if ca:
                s.verify = ca
            s.trust_env = False
            if self.token:
                s.headers["Authorization"] = f"Bearer {self.token}"
            self._local.session = s
        return s

    @property
    def _direct(self) -> _Direct | None:
        """The plain keep-alive connection of this thread, when the URL allows one."""
        if not hasattr(self._local, "direct"):
            self._local.direct = _Direct.for_url(self.api, self.token, self.timeout)
        return self._local.direct

    #: how long in all a call waits out "database busy" answers (503 with Retry-After: the
    #: service stored nothing and asks to try again) before it raises them
    busy_retry_s = 60.0

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

    def _request_once(self, method: str, path: str, *, json_body: Any = None,
                      data: bytes | None = None, params: Mapping[str, Any] | None = None,
                      ok: Iterable[int] = (200, 201, 204),
                      headers: Mapping[str, str] | None = None) -> Any:
        direct = self._direct
        if direct is not None:
            body = data
            hdrs = dict(headers or {})
            if json_body is not None:
                body = json.dumps(json_body, separators=(",", ":")).encode()
                hdrs.setdefault("Content-Type", "application/json")
            elif data is not None:
                hdrs.setdefault("Content-Type", "application/octet-stream")
            try:
                resp = direct.request(method, path.lstrip("/"), body, params, hdrs)
            except OSError as exc:
                raise IddsError(0, f"cannot reach the iDDS service at {self.url}: {exc}") from None
            if resp.status_code not in tuple(ok):
                raise IddsError(resp.status_code, _error_message(resp, method, path),
                                _retry_after(resp))
            return resp
        return self._request_session(method, path, json_body=json_body, data=data, params=params,
                                     ok=ok, headers=headers)

    def _request_session(self, method: str, path: str, *, json_body: Any, data: bytes | None,
                         params: Mapping[str, Any] | None, ok: Iterable[int],
                         headers: Mapping[str, str] | None) -> Any:
        import requests

        url = self.api + path.lstrip("/")
        kw: dict[str, Any] = {"timeout": self.timeout}
        if json_body is not None:
            kw["data"] = json.dumps(json_body, separators=(",", ":"))
            kw["headers"] = {"Content-Type": "application/json"}
        elif data is not None:
            kw["data"] = data
            kw["headers"] = {"Content-Type": "application/octet-stream"}
        if headers:
            kw["headers"] = {**kw.get("headers", {}), **headers}
        if params:
            kw["params"] = params
        try:
            resp = self.session.request(method, url, **kw)
        except requests.ConnectionError as exc:
            raise IddsError(0, f"cannot reach the iDDS service at {self.url}: {exc}") from None
        except requests.RequestException as exc:
            raise IddsError(0, f"{method} {url}: {exc}") from None
        if resp.status_code not in tuple(ok):
            raise IddsError(resp.status_code, _error_message(resp, method, path),
                            _retry_after(resp))
        return resp

    def close(self) -> None:
        """Close this thread's connections."""
        s = getattr(self._local, "session", None)
        if s is not None:
            s.close()
            self._local.session = None
        d = getattr(self._local, "direct", None)
        if d is not None:
            d.close()


class _Response:
    """What callers read of a response (the names ``requests`` uses)."""

    def __init__(self, status: int, reason: str, headers: Mapping[str, str], content: bytes) -> None:
        self.status_code = status
        self.reason = reason
        self.headers = headers
        self.content = content

    @property
    def text(self) -> str:
        return self.content.decode("utf-8", "replace")

    def json(self) -> Any:
        return json.loads(self.content)


class _Direct:
    """One keep-alive ``http.client`` connection to a plain-HTTP server (one per thread)."""

    def __init__(self, host: str, port: int, base: str, token: str, timeout: float) -> None:
        self.host, self.port, self.base, self.timeout = host, port, base, timeout
        self.auth = {"Authorization": f"Bearer {token}"} if token else {}
        self.conn: Any = None

    @classmethod
    def for_url(cls, api: str, token: str, timeout: float) -> _Direct | None:
        """None where ``requests`` must do it: HTTPS, or a proxy set for this host."""
        from urllib.parse import urlsplit
        from urllib.request import getproxies, proxy_bypass

        u = urlsplit(api)
        if u.scheme != "http" or not u.hostname:
            return None
        if getproxies().get("http") and not proxy_bypass(u.hostname):
            return None
        return cls(u.hostname, u.port or 80, u.path, token, timeout)

    def request(self, method: str, path: str, body: bytes | None,
                params: Mapping[str, Any] | None, headers: dict[str, str]) -> _Response:
        import http.client
        from urllib.parse import urlencode

        target = self.base + path
        if params:
            target += "?" + urlencode({k: v for k, v in params.items() if v is not None})
        hdrs = {**self.auth, **headers}
        for attempt in (0, 1):
            fresh = self.conn is None
            if fresh:
                self.conn = http.client.HTTPConnection(self.host, self.port, timeout=self.timeout)
            try:
                self.conn.request(method, target, body=body, headers=hdrs)
                r = self.conn.getresponse()
                content = r.read()
            except (http.client.RemoteDisconnected, ConnectionResetError, BrokenPipeError):
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
