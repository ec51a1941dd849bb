"""The Jupyter server extension of idds-jupyter: the REST API, the live stream and the core's agents."""

from __future__ import annotations

from typing import Any

from idds_jupyter_server.app import IddsExtension

__all__ = ["IddsExtension"]


def _jupyter_server_extension_points() -> list[dict[str, Any]]:
    return [{"module": "idds_jupyter_server", "app": IddsExtension}]
