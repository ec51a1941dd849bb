"""Finding the iDDS service: ``IDDS_URL``/``IDDS_TOKEN``, else the newest live connection file.

A running server (the Jupyter extension or ``idds-jupyter serve``) writes
``idds-<port>.json`` (url, token, pid) into the Jupyter runtime dir; the files of
servers whose process is gone are skipped.
"""

from __future__ import annotations

import glob
import json
import os
from typing import Any

from idds_jupyter.client.errors import IddsError

__all__ = ["find_server"]


def _pid_alive(pid: Any) -> bool:
    try:
        pid = int(pid)
    except (TypeError, ValueError):
        return False
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _runtime_dir() -> str | None:
    try:
        from jupyter_core.paths import jupyter_runtime_dir
    except ImportError:
        return None
    return str(jupyter_runtime_dir())


def find_server(runtime_dir: str | None = None) -> tuple[str, str]:
    """``(url, token)`` from ``IDDS_URL``/``IDDS_TOKEN`` or the newest live connection file."""
    url = os.environ.get("IDDS_URL")
    if url:
        token = os.environ.get("IDDS_TOKEN")
        if token is None:
            raise IddsError(
                0,
                "IDDS_URL is set but IDDS_TOKEN is not: set both, or neither to use "
                "the connection file of a running server",
            )
        return url, token
    rdir = runtime_dir or _runtime_dir()
    if rdir is None:
        raise IddsError(
            0,
            "no iDDS server: IDDS_URL/IDDS_TOKEN are not set and jupyter_core is "
            "not installed to find a connection file",
        )
    files = sorted(glob.glob(os.path.join(rdir, "idds-*.json")), key=_mtime, reverse=True)
    stale = 0
    for path in files:
        try:
            with open(path, encoding="utf-8") as fh:
                info = json.load(fh)
        except (OSError, ValueError):
            continue
        if not _pid_alive(info.get("pid")):
            stale += 1
            continue
        if info.get("url") and info.get("token") is not None:
            return str(info["url"]), str(info["token"])
    extra = f" ({stale} stale file(s) of stopped servers)" if stale else ""
    raise IddsError(
        0,
        f"no iDDS server: IDDS_URL/IDDS_TOKEN are not set and no connection file "
        f"idds-*.json of a running server is in {rdir}{extra}; start one with "
        f"'idds-jupyter serve' or 'jupyter lab'",
    )


def _mtime(path: str) -> float:
    try:
        return os.path.getmtime(path)
    except OSError:
        return 0.0
