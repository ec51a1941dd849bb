"""The API's handlers as Jupyter handlers: the same classes, with JupyterHandler's identity plumbing.

Each API handler class is combined with ``JupyterHandler`` (after it in the
MRO), so Jupyter's identity provider and authorizer find on it everything they
read (base URL, cookie settings, the server token, logging), while the API's
own behaviour — JSON errors, executor, authentication hook — stays in charge.
"""

from __future__ import annotations

from typing import Any

from jupyter_server.base.handlers import JupyterHandler

from idds_jupyter.api import handlers

_made: dict[type[Any], type[Any]] = {}


def as_jupyter(cls: type[Any]) -> type[Any]:
    if cls not in _made:
        _made[cls] = type(cls.__name__, (cls, JupyterHandler), {"__module__": __name__})
    return _made[cls]


def jupyter_handlers(ctx: Any, base_url: str) -> list[tuple[str, type[Any], dict[str, Any]]]:
    return [(pattern, as_jupyter(cls), kw) for pattern, cls, kw in handlers(ctx, base_url)]
