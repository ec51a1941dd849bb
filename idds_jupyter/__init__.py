"""idds-jupyter: a Jupyter-native workflow environment built on the ideas of iDDS.

The user API is imported lazily, so that ``import idds_jupyter.worker`` (on
compute nodes) stays cheap and never pulls in the client::

    from idds_jupyter import work, workflow, get_run, runs, Client, RemoteError
"""

from __future__ import annotations

import importlib
import sys
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

_LAZY = {
    "work": "idds_jupyter.faat.work",
    "workflow": "idds_jupyter.faat.workflow",
    "get_run": "idds_jupyter.faat.workflow",
    "runs": "idds_jupyter.faat.workflow",
    "Run": "idds_jupyter.faat.workflow",
    "JobFuture": "idds_jupyter.faat.future",
    "RemoteError": "idds_jupyter.faat.remote_error",
    "Client": "idds_jupyter.client",
    "IddsError": "idds_jupyter.client",
    "get_client": "idds_jupyter.client",
}

__all__ = [
    "Client",
    "IddsError",
    "JobFuture",
    "RemoteError",
    "Run",
    "get_client",
    "get_run",
    "runs",
    "work",
    "workflow",
]

if TYPE_CHECKING:
    from idds_jupyter.client import Client, IddsError, get_client
    from idds_jupyter.faat.future import JobFuture
    from idds_jupyter.faat.remote_error import RemoteError
    from idds_jupyter.faat.work import work
    from idds_jupyter.faat.workflow import Run, get_run, runs, workflow


def load_ipython_extension(ipython: Any) -> None:
    """``%load_ext idds_jupyter``: the ``%idds``/``%%idds`` magics (the server is found by itself)."""
    from idds_jupyter.kernel import load_ipython_extension as load

    load(ipython)


def _register_display() -> None:
    """Inside IPython, show runs and views as the kernel's live widgets.

    See :mod:`idds_jupyter.kernel.display`; nothing heavy is imported until one is shown.
    """
    ipython = sys.modules.get("IPython")
    shell = getattr(ipython, "get_ipython", lambda: None)() if ipython is not None else None
    if shell is not None:
        from idds_jupyter.kernel.display import register

        register(shell)


_register_display()


def __getattr__(name: str) -> Any:
    mod = _LAZY.get(name)
    if mod is None:
        raise AttributeError(f"module 'idds_jupyter' has no attribute {name!r}")
    value = getattr(importlib.import_module(mod), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_LAZY))
