"""Client mode's API route: ``<base_url>idds/api/v1/…`` of a hub single-user server,
forwarded to the hub's shared iDDS service with the server's hub token.

The JupyterLab extension (sidebar, DAG and HPO views, the live stream) calls its
own server's ``idds/api/v1`` with Jupyter's credentials; in client mode these
handlers authenticate the caller as every Jupyter handler does (the server's
identity provider and authorizer, the XSRF check on cookie-authenticated
writes) and pass the request on to the shared service as the server's user. So
the labextension works unchanged on a hub. Nothing blocks the event loop: the
requests go out with tornado's async HTTP client and websocket.
"""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any

import tornado.web
import tornado.websocket
from jupyter_server.base.handlers import JupyterHandler
from jupyter_server.base.websocket import WebSocketMixin
from tornado.httpclient import AsyncHTTPClient, HTTPClientError, HTTPRequest

API_PREFIX = "idds/api/v1/"
#: headers passed on (either way); everything else (cookies, Jupyter's auth) stays here
REQUEST_HEADERS = ("Content-Type", "Accept", "If-None-Match")
RESPONSE_HEADERS = ("Content-Type", "ETag", "Cache-Control", "Content-Disposition", "Retry-After")


class ForwardHandler(JupyterHandler):
    """Any method under ``idds/api/v1/`` (but the stream) to the shared service."""

    auth_resource = "idds"

    def initialize(self, service: Any) -> None:
        self.service = service

    async def _forward(self, path: str) -> None:
        user = self.current_user
        if user is None:
            raise tornado.web.HTTPError(403, "forbidden: log in to the Jupyter server")
        action = "read" if self.request.method in ("GET", "HEAD", "OPTIONS") else "write"
        if not self.authorizer.is_authorized(self, user, action, self.auth_resource):
            raise tornado.web.HTTPError(403)
        url = self.service.url + API_PREFIX + path
        if self.request.query:
            url += "?" + self.request.query
        headers = {k: self.request.headers[k] for k in REQUEST_HEADERS if k in self.request.headers}
        headers["Authorization"] = f"Bearer {self.service.token}"
        body = (
            self.request.body if self.request.method in ("POST", "PUT", "PATCH", "DELETE") else None
        )
        if body is not None and not body and self.request.method == "DELETE":
            body = None
        req = HTTPRequest(
            url,
            method=self.request.method,
            headers=headers,
            body=body,
            allow_nonstandard_methods=True,
            follow_redirects=False,
            request_timeout=300,
        )
        try:
            resp = await AsyncHTTPClient().fetch(req, raise_error=False)
        except (OSError, HTTPClientError) as exc:
            self.set_status(502)
            self.set_header("Content-Type", "application/json")
            self.finish(
                {"error": f"the shared iDDS service at {self.service.url} is unreachable: {exc}"}
            )
            return
        if resp.code == 599:  # no answer (connection refused, timeout)
            self.set_status(502)
            self.finish(
                {
                    "error": f"the shared iDDS service at {self.service.url} did not answer: "
                    f"{resp.error}"
                }
            )
            return
        self.set_status(resp.code, resp.reason)
        for k in RESPONSE_HEADERS:
            if k in resp.headers:
                self.set_header(k, resp.headers[k])
        if resp.code not in (204, 304) and resp.body:
            self.write(resp.body)
        self.finish()

    async def get(self, path: str) -> None:
        await self._forward(path)

    async def head(self, path: str) -> None:
        await self._forward(path)

    async def post(self, path: str) -> None:
        await self._forward(path)

    async def put(self, path: str) -> None:
        await self._forward(path)

    async def patch(self, path: str) -> None:
        await self._forward(path)

    async def delete(self, path: str) -> None:
        await self._forward(path)


class ForwardStreamHandler(WebSocketMixin, tornado.websocket.WebSocketHandler, JupyterHandler):
    """The live stream: one websocket to the service per browser websocket, messages
    copied both ways (Jupyter's origin check and identity on this side)."""

    def initialize(self, service: Any) -> None:
        self.service = service
        self.upstream: tornado.websocket.WebSocketClientConnection | None = None
        self._pump: asyncio.Task[None] | None = None

    async def get(self, *args: Any, **kwargs: Any) -> None:
        user = self.current_user
        if user is None or not self.authorizer.is_authorized(self, user, "read", "idds"):
            raise tornado.web.HTTPError(403)
        ws_url = "ws" + self.service.url[len("http") :] + API_PREFIX + "stream"
        try:
            self.upstream = await tornado.websocket.websocket_connect(
                HTTPRequest(
                    ws_url,
                    headers={"Authorization": f"Bearer {self.service.token}"},
                    request_timeout=30,
                )
            )
        except (OSError, tornado.websocket.WebSocketError, HTTPClientError) as exc:
            raise tornado.web.HTTPError(502, f"the shared iDDS service's stream: {exc}") from None
        await super().get(*args, **kwargs)

    def open(self, *args: Any, **kwargs: Any) -> None:
        self._pump = asyncio.ensure_future(self._downstream())

    async def _downstream(self) -> None:
        assert self.upstream is not None
        while True:
            msg = await self.upstream.read_message()
            if msg is None:
                with contextlib.suppress(tornado.websocket.WebSocketClosedError):
                    self.close(self.upstream.close_code or 1011, self.upstream.close_reason)
                return
            try:
                await self.write_message(msg, binary=isinstance(msg, bytes))
            except tornado.websocket.WebSocketClosedError:
                return

    async def on_message(self, message: str | bytes) -> None:
        if self.upstream is not None:
            await self.upstream.write_message(message, binary=isinstance(message, bytes))

    def on_close(self) -> None:
        if self.upstream is not None:
            self.upstream.close()
        if self._pump is not None:
            self._pump.cancel()


def forward_handlers(service: Any, base_url: str) -> list[tuple[str, type[Any], dict[str, Any]]]:
    from idds_jupyter.api import url_join

    prefix = url_join(base_url, API_PREFIX).rstrip("/") + "/"
    return [
        (prefix + "stream", ForwardStreamHandler, {"service": service}),
        (prefix + "(.*)", ForwardHandler, {"service": service}),
    ]


__all__ = ["ForwardHandler", "ForwardStreamHandler", "forward_handlers"]
