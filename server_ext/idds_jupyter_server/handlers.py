"""The API's handlers as Jupyter handlers: the same classes, with JupyterHandler's identity plumbing.

Each API handler class is combined with ``JupyterHandler`` (after it in the
MRO), so Jupyter's identity provider and authorizer find on it everything they
read (base URL, cookie settings, the server token, logging), while the API's
own behaviour — JSON errors, executor, authentication hook — stays in charge.

Websockets (the live stream) take Jupyter's origin check instead of the
standalone server's: a cookie-authenticated stream opens only from the same
origin or one the Jupyter server allows (``ServerApp.allow_origin`` /
``allow_origin_pat``); a token-authenticated one (a script, a kernel) skips it,
exactly as Jupyter's own kernel websockets do.
"""

from __future__ import annotations

from typing import Any

import tornado.websocket
from jupyter_server.base.handlers import JupyterHandler
from jupyter_server.base.websocket import WebSocketMixin

from idds_jupyter.api import handlers

_made: dict[type[Any], type[Any]] = {}


class JupyterOriginCheck:
    """Jupyter's ``WebSocketMixin.check_origin`` for the API's websocket handlers."""

    def check_origin(self, origin: str | None = None) -> bool:
        return bool(WebSocketMixin.check_origin(self, origin))


def as_jupyter(cls: type[Any]) -> type[Any]:
    if cls not in _made:
        bases: tuple[type[Any], ...] = (cls, JupyterHandler)
        if issubclass(cls, tornado.websocket.WebSocketHandler):
            bases = (JupyterOriginCheck, *bases)
        _made[cls] = type(cls.__name__, bases, {"__module__": __name__})
    return _made[cls]


def jupyter_handlers(ctx: Any, base_url: str) -> list[tuple[str, type[Any], dict[str, Any]]]:
    return [(pattern, as_jupyter(cls), kw) for pattern, cls, kw in handlers(ctx, base_url)]
