"""The backend interface: where jobs run (local processes, Dask, later Slurm/HTCondor/PanDA).

A backend takes job specs (see :mod:`idds_jupyter.worker.job`) and gives back
result dicts. The Carrier's Submitter keeps about ``capacity`` jobs in flight,
the Receiver drains :meth:`Backend.results`, the Poller asks :meth:`Backend.status`.

Waking: :meth:`Backend.results` blocks up to ``timeout`` for the first result
and returns early when :meth:`Backend.wake` is called (e.g. at shutdown). An
agent that prefers not to block a thread can instead register a callback with
:meth:`Backend.set_waker`; it is called (from a backend thread, must be cheap
and must not call back into the backend) whenever new results arrive, and the
agent then calls ``results(0)``.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterable
from typing import Any

# the one helper that builds every backend's job environment (an allow-list)
from idds_jupyter.worker.env import job_environment

log = logging.getLogger(__name__)

__all__ = [
    "Backend",
    "ResultQueue",
    "failed_result",
    "job_environment",
    "make_backend",
    "register_backend",
    "backend_names",
]


def failed_result(
    job_id: int,
    attempt: int,
    error: str,
    *,
    exc_type: str | None = None,
    traceback: str | None = None,
    exit_code: int | None = None,
) -> dict[str, Any]:
    """A result dict for a job that the backend (not the job) failed: died, cancelled, lost."""
    now = time.time()
    return {
        "job_id": job_id,
        "attempt": attempt,
        "ok": False,
        "result": None,
        "summary": None,
        "error": error,
        "exc_type": exc_type,
        "traceback": traceback,
        "exit_code": exit_code,
        "wall_s": 0.0,
        "max_rss_kb": 0,
        "log_path": None,
        "started_at": now,
        "finished_at": now,
    }


class ResultQueue:
    """Thread-safe queue of result dicts, pushed in lists, drained in one go; wakeable."""

    def __init__(self) -> None:
        self._cond = threading.Condition(threading.Lock())
        self._chunks: list[list[dict[str, Any]]] = []
        self._woken = False
        self._waker: Callable[[], None] | None = None
        self._listener: Callable[[list[dict[str, Any]]], None] | None = None

    def set_waker(self, waker: Callable[[], None] | None) -> None:
        self._waker = waker

    def set_listener(self, listener: Callable[[list[dict[str, Any]]], None] | None) -> None:
        self._listener = listener

    def push(self, results: Iterable[dict[str, Any]]) -> None:
        chunk = results if isinstance(results, list) else list(results)
        if not chunk:
            return
        listener = self._listener
        if listener is not None:
            try:
                listener(chunk)
            except Exception:  # a broken listener must not lose the results
                log.exception("result listener failed")
        with self._cond:
            self._chunks.append(chunk)
            self._cond.notify_all()
        waker = self._waker
        if waker is not None:
            # a broken waker must not kill a reader thread
            with contextlib.suppress(Exception):
                waker()

    def wake(self) -> None:
        with self._cond:
            self._woken = True
            self._cond.notify_all()

    def get(self, timeout: float = 0.0) -> list[dict[str, Any]]:
        with self._cond:
            if not self._chunks and timeout > 0 and not self._woken:
                deadline = time.monotonic() + timeout
                while not self._chunks and not self._woken:
                    left = deadline - time.monotonic()
                    if left <= 0:
                        break
                    self._cond.wait(left)
            self._woken = False
            chunks, self._chunks = self._chunks, []
        if len(chunks) == 1:
            return chunks[0]
        out: list[dict[str, Any]] = []
        for chunk in chunks:
            out.extend(chunk)
        return out


class Backend(ABC):
    """Where jobs run. All methods are thread-safe; ``submit`` never blocks on execution."""

    name: str = "?"
    #: how many jobs the backend wants in flight (the Submitter keeps about this many)
    capacity: int = 1

    def __init__(self) -> None:
        self._queue = ResultQueue()

    @abstractmethod
    def submit(self, specs: list[dict[str, Any]]) -> None:
        """Hand over job specs; non-blocking."""

    def results(self, timeout: float = 0.0) -> list[dict[str, Any]]:
        """Results that arrived since the last call.

        Result dicts as produced by :func:`idds_jupyter.worker.job.run_job`, plus
        possibly ``{"job_id", "attempt", "started": True}`` notifications for jobs
        that began running (no ``"ok"`` key). Blocks up to ``timeout`` seconds for
        the first one; returns early (possibly empty) after :meth:`wake`.
        """
        return self._queue.get(timeout)

    def wake(self) -> None:
        """Make a blocked (or the next) :meth:`results` call return at once."""
        self._queue.wake()

    def set_waker(self, waker: Callable[[], None] | None) -> None:
        """Register a cheap callback invoked (from a backend thread) when results arrive."""
        self._queue.set_waker(waker)

    def set_listener(self, listener: Callable[[list[dict[str, Any]]], None] | None) -> None:
        """Register a callback that sees each batch of results, in the backend thread that
        received it, before :meth:`results` returns it (a Receiver's early word to callers)."""
        self._queue.set_listener(listener)

    @abstractmethod
    def cancel(self, job_ids: list[int]) -> None:
        """Best effort. A job whose process was killed is reported failed with error "cancelled"."""

    @abstractmethod
    def status(self, job_ids: list[int]) -> dict[int, str]:
        """``"queued" | "running" | "done" | "unknown"`` for each id (for the Poller)."""

    @abstractmethod
    def in_flight(self) -> int:
        """Jobs submitted whose result has not been produced yet."""

    @abstractmethod
    def close(self) -> None:
        """Stop; jobs still in flight are abandoned (no results for them)."""

    def __enter__(self) -> Backend:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()


# --------------------------------------------------------------------------- registry

_FACTORIES: dict[str, Callable[..., Backend]] = {}


def register_backend(name: str, factory: Callable[..., Backend]) -> None:
    """Register a backend factory under ``name`` (replaces an existing one)."""
    _FACTORIES[name] = factory


def _local(**options: Any) -> Backend:
    from idds_jupyter.backends.local import LocalBackend

    return LocalBackend(**options)


def _dask(**options: Any) -> Backend:
    from idds_jupyter.backends.dask_backend import DaskBackend

    return DaskBackend(**options)


def _slurm(**options: Any) -> Backend:
    from idds_jupyter.backends.slurm import SlurmBackend

    return SlurmBackend(**options)


def _htcondor(**options: Any) -> Backend:
    from idds_jupyter.backends.htcondor import HTCondorBackend

    return HTCondorBackend(**options)


def _panda(**options: Any) -> Backend:
    from idds_jupyter.backends.panda import PandaBackend

    return PandaBackend(**options)


register_backend("local", _local)
register_backend("dask", _dask)
# batch systems (shared-directory backends, see idds_jupyter.backends.batch)
register_backend("slurm", _slurm)
register_backend("htcondor", _htcondor)
register_backend("panda", _panda)


def backend_names() -> list[str]:
    return sorted(_FACTORIES)


def make_backend(name: str, **options: Any) -> Backend:
    """Create the backend registered as ``name`` (``"local"``, ``"dask"``, …)."""
    try:
        factory = _FACTORIES[name]
    except KeyError:
        raise ValueError(
            f"unknown backend {name!r}; known backends: {', '.join(backend_names())}"
        ) from None
    return factory(**options)
