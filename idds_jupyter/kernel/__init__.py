"""The kernel side: ``%idds`` / ``%%idds`` magics and the live widgets."""

from __future__ import annotations

from typing import Any


def load_ipython_extension(ipython: Any) -> None:
    from idds_jupyter.kernel.display import register
    from idds_jupyter.kernel.magics import IddsMagics

    ipython.register_magics(IddsMagics(ipython))
    register(ipython)


def unload_ipython_extension(ipython: Any) -> None:
    return None
