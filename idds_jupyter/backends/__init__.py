"""Where jobs run: one small interface (:class:`Backend`), ``local`` and ``dask`` backends.

``make_backend("local", workers=4)`` / ``make_backend("dask", address=...)``;
other backends (slurm, htcondor, panda) plug in with :func:`register_backend`.
``LocalBackend`` and ``DaskBackend`` are imported lazily (Dask only when used).
"""

from __future__ import annotations

from typing import Any

from idds_jupyter.backends.base import (
    Backend,
    ResultQueue,
    backend_names,
    failed_result,
    make_backend,
    register_backend,
)

__all__ = [
    "Backend",
    "DaskBackend",
    "LocalBackend",
    "ResultQueue",
    "backend_names",
    "failed_result",
    "make_backend",
    "register_backend",
]


def __getattr__(name: str) -> Any:
    if name == "LocalBackend":
        from idds_jupyter.backends.local import LocalBackend

        return LocalBackend
    if name == "DaskBackend":
        from idds_jupyter.backends.dask_backend import DaskBackend

        return DaskBackend
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
