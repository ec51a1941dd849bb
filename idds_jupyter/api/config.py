"""``GET /config``: the settings in effect, for an administrator checking a deployment.

What the service runs with after the YAML file, the environment and (in a Jupyter server)
the extension's traitlets have been applied; see docs/configuration.md. Secrets (tokens,
a database password) are never sent back, only whether they are set.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from idds_jupyter.api.base import ApiError, ApiHandler
from idds_jupyter.config import Config, settings

_URL_PASSWORD = re.compile(r"(://[^:/@]*:)[^@]*@")


def effective_settings(cfg: Config) -> dict[str, Any]:
    """Every setting of ``cfg`` as JSON; secrets as ``"(set)"`` or null."""
    out: dict[str, Any] = {}
    for s in settings():
        value = getattr(cfg, s.name)
        if s.secret:
            value = "(set)" if value else None
        elif isinstance(value, Path):
            value = str(value)
        elif isinstance(value, tuple):
            value = list(value)
        elif isinstance(value, str):
            value = _URL_PASSWORD.sub(r"\1***@", value)
        out[s.name] = value
    return out


class ConfigHandler(ApiHandler):
    async def get(self) -> None:
        if not self.user.admin:
            raise ApiError(403, "only an admin may read the service's settings")
        self.send({"settings": effective_settings(self.ctx.config)})


__all__ = ["ConfigHandler", "effective_settings"]
