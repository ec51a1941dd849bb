"""The API's handlers as Jupyter handlers: each API class combined with Jupyter's.

For every handler class of the API (``idds_jupyter.api.ROUTES``) the extension
builds a subclass whose bases are, in MRO order: :class:`JupyterApi` (what
Jupyter must decide: the user, the identity provider, the response's content
type), the API class, then ``jupyter_server.base.handlers.APIHandler``. The
API's ``prepare`` first calls the next ``prepare`` in the MRO
(``ApiHandler.host_checks``), which is ``APIHandler.prepare``: the ``Host``
check, the identity provider, CORS headers, the XSRF check of
cookie-authenticated writes and the origin check all run, unchanged, before
the API authenticates the request and checks its ``Content-Length`` — all
before a byte of its body is read. The request methods carry
``@tornado.web.authenticated`` and jupyter_server's ``@authorized`` (resource
``idds``, the class's ``auth_resource``); ``ping`` and the job-token routes of
batch jobs are ``@allow_unauthenticated`` (the latter check their job token
themselves and take no cookie, so no XSRF token is asked of them).

The live stream is a websocket: Jupyter's origin check
(``WebSocketMixin.check_origin``: same origin or ``ServerApp.allow_origin``;
a token-authenticated stream skips it, as Jupyter's kernel websockets do),
Jupyter's ``prepare`` without the login redirect, and a ``get`` that is
``@ws_authenticated`` and ``@authorized``.

The standalone server (``idds-jupyter serve``) uses the API classes as they are.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

import tornado.web
import tornado.websocket
from jupyter_server.auth.decorator import allow_unauthenticated, authorized, ws_authenticated
from jupyter_server.base.handlers import APIHandler, JupyterHandler
from jupyter_server.base.websocket import WebSocketMixin

from idds_jupyter.api import handlers
from idds_jupyter.api.jobs import JobApiHandler
from idds_jupyter_server.auth import RESOURCE

METHODS = ("get", "head", "post", "put", "patch", "delete")

_made: dict[type[Any], type[Any]] = {}


class JupyterIdentity:
    """What Jupyter decides for the API's handlers (first in their MRO): who the user is."""

    auth_resource = RESOURCE
    # Jupyter's: ``current_user`` is the identity provider's user (set in prepare)
    get_current_user = JupyterHandler.get_current_user

    @property
    def identity_provider(self) -> Any:
        """The server's identity provider, plus the API's idds tokens (``IddsIdentity``)."""
        return self.ctx.auth.identity  # type: ignore[attr-defined]


class JupyterApi(JupyterIdentity):
    """JupyterIdentity, and the response's content type for HTTP routes."""

    def finish(self, *args: Any, **kwargs: Any) -> Any:
        # APIHandler.finish sets application/json: keep the type the API chose
        # (YAML, octet-stream downloads)
        kwargs.setdefault("set_content_type", self._headers.get("Content-Type", "application/json"))  # type: ignore[attr-defined]
        return super().finish(*args, **kwargs)  # type: ignore[misc]


class JobTokenRoutes:
    """Job-token routes: a batch job's bearer token, never a cookie — no XSRF exposure."""

    def check_xsrf_cookie(self) -> None:
        return None


class JupyterWebSocket(JupyterHandler):
    """Jupyter's ``prepare`` for a websocket: no redirect to the login page."""

    async def prepare(self, *, _redirect_to_login: bool = False) -> None:
        await super().prepare(_redirect_to_login=False)


class JupyterOriginCheck:
    """Jupyter's ``WebSocketMixin.check_origin`` for the API's websocket handlers."""

    def check_origin(self, origin: str | None = None) -> bool:
        return bool(WebSocketMixin.check_origin(self, origin))


def _guarded(fn: Callable[..., Any], public: bool, websocket: bool) -> Callable[..., Any]:
    if public:
        return allow_unauthenticated(fn)
    if websocket:
        return ws_authenticated(authorized(fn))
    return tornado.web.authenticated(authorized(fn))


def as_jupyter(cls: type[Any]) -> type[Any]:
    """The Jupyter handler class of API handler class ``cls`` (made once)."""
    if cls in _made:
        return _made[cls]
    websocket = issubclass(cls, tornado.websocket.WebSocketHandler)
    public = bool(getattr(cls, "public", False)) or issubclass(cls, JobApiHandler)
    ns: dict[str, Any] = {"__module__": __name__, "__doc__": cls.__doc__}
    for name in METHODS:
        fn = getattr(cls, name, None)
        # the methods the class (or an API base) defines, not tornado's "405" stubs
        if fn is None or getattr(tornado.web.RequestHandler, name, None) is fn:
            continue
        ns[name] = functools.wraps(fn)(_guarded(fn, public, websocket))
    if websocket:
        bases: tuple[type[Any], ...] = (JupyterOriginCheck, JupyterIdentity, cls, JupyterWebSocket)
    elif issubclass(cls, JobApiHandler):
        bases = (JobTokenRoutes, JupyterApi, cls, APIHandler)
    else:
        bases = (JupyterApi, cls, APIHandler)
    _made[cls] = type(cls.__name__, bases, ns)
    return _made[cls]


def jupyter_handlers(ctx: Any) -> list[tuple[str, type[Any], dict[str, Any]]]:
    """The API's routes for the extension's ``handlers`` (patterns under the server's
    ``base_url``, which the extension machinery prepends)."""
    return [(pattern, as_jupyter(cls), kw) for pattern, cls, kw in handlers(ctx, "/")]


__all__ = ["JupyterApi", "JupyterIdentity", "as_jupyter", "jupyter_handlers"]
