"""Shared helpers of the use-case tests: a real standalone server on a given home, functions."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

from idds_jupyter.api.server import ServerHandle, start_server
from idds_jupyter.config import Config

BRANIN_MIN = 0.397887


def branin(x1: float, x2: float) -> float:
    a, b, c, r, s, t = 1.0, 5.1 / (4 * math.pi**2), 5 / math.pi, 6.0, 10.0, 1 / (8 * math.pi)
    return a * (x2 - b * x1**2 + c * x1 - r) ** 2 + s * (1 - t) * math.cos(x1) + s


def server_on(home: Path, workers: int = 2, port: int = 0, roles: Any = None) -> ServerHandle:
    """A server (agents + REST API, local workers) whose store and cache live in ``home``."""
    cfg = Config.load(
        None,
        home=home / "home",
        db_url=f"sqlite:///{home}/idds.db",
        workers=workers,
        poll_interval=0.5,
    )
    return start_server(cfg, port=port, roles=roles)


def warm(client: Any) -> None:
    """The first request of a fresh server is slow (2 s here): pay it outside the timings."""
    client.runs(1)
