"""What a worker process runs on, for the provenance of its jobs' results.

:func:`describe` returns ``{"env_id": sha256}`` for every result and, the first
time in a process, the description itself (``"environment"``: Python, platform,
host, installed package versions), which the service keeps once per digest.
Imports nothing of the service (a worker node has only this package).
"""

from __future__ import annotations

import hashlib
import json
import os
import platform
import socket
import sys
import threading
from typing import Any

__all__ = ["describe", "environment"]

_lock = threading.Lock()
_state: dict[str, Any] = {}


def environment() -> dict[str, Any]:
    """This process's environment (computed once)."""
    with _lock:
        if "info" not in _state:
            packages = _packages()
            info = {
                "python": platform.python_version(),
                "implementation": platform.python_implementation(),
                "executable": sys.executable,
                "platform": f"{platform.system()}-{platform.release()}-{platform.machine()}",
                "host": socket.gethostname(),
                "packages": packages,
            }
            _state["info"] = info
            _state["id"] = hashlib.sha256(
                json.dumps(info, sort_keys=True, separators=(",", ":")).encode()
            ).hexdigest()
        return dict(_state["info"])


def _packages() -> dict[str, str]:
    """Installed distributions by name: from the ``NAME-VERSION.dist-info`` (or
    ``.egg-info``) directory names on ``sys.path`` — a directory listing, not the
    hundreds of metadata files ``importlib.metadata`` would read."""
    out: dict[str, str] = {}
    for root in sys.path:
        try:
            names = os.listdir(root or ".")
        except OSError:
            continue
        for entry in names:
            for suffix in (".dist-info", ".egg-info"):
                if entry.endswith(suffix) and "-" in entry:
                    name, _, version = entry[: -len(suffix)].partition("-")
                    out.setdefault(name.lower().replace("_", "-"), version)
    return dict(sorted(out.items()))


def describe() -> dict[str, Any]:
    """``env_id`` for a result; the whole description with the first one of this process."""
    info = environment()
    with _lock:
        out: dict[str, Any] = {"env_id": _state["id"]}
        if not _state.get("sent"):
            _state["sent"] = True
            out["environment"] = info
    return out
