"""Where jobs run: one small interface (:class:`Backend`), ``local`` and ``dask`` backends.

``make_backend("local", workers=4)`` / ``make_backend("dask", address=...)``;
the batch systems ``make_backend("slurm", partition=...)``, ``"htcondor"``, ``"panda"``
(see docs/backends.md); others plug in with :func:`register_backend`.
Every implementation is imported lazily (Dask, htcondor2, pandaclient only when used).
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
    "HTCondorBackend",
    "PandaBackend",
    "LocalBackend",
    "ResultQueue",
    "backend_names",
    "failed_result",
    "make_backend",
    "register_backend",
    "SlurmBackend",
]


def __getattr__(name: str) -> Any:
    if name == "LocalBackend":
        from idds_jupyter.backends.local import LocalBackend

        return LocalBackend
    if name == "DaskBackend":
        from idds_jupyter.backends.dask_backend import DaskBackend

        return DaskBackend
    if name == "SlurmBackend":
        from idds_jupyter.backends.slurm import SlurmBackend

        return SlurmBackend
    if name == "HTCondorBackend":
        from idds_jupyter.backends.htcondor import HTCondorBackend

        return HTCondorBackend
    if name == "PandaBackend":
        from idds_jupyter.backends.panda import PandaBackend

        return PandaBackend
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
