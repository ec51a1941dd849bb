"""Errors of remote jobs, re-raised in the caller whole (with the remote traceback).

When the job's exception pickles back (``error_inline``/``error_blob``) the
original type is raised, with a note holding the remote traceback, the job id
and the log path, and a :class:`RemoteError` carrying the same as its
``__cause__``. Otherwise a :class:`RemoteError` is raised.
"""

from __future__ import annotations

import base64
from collections.abc import Callable
from typing import Any

__all__ = ["RemoteError", "error_from_job"]


class RemoteError(Exception):
    """A job failed remotely and its exception could not be rebuilt here (or as a cause)."""

    def __init__(
        self,
        message: str,
        *,
        exc_type: str | None = None,
        traceback: str | None = None,
        job_id: int | None = None,
        log_path: str | None = None,
        workflow_id: int | None = None,
        work: str | None = None,
        idx: int | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.exc_type = exc_type
        self.traceback = traceback
        self.job_id = job_id
        self.log_path = log_path
        self.workflow_id = workflow_id
        self.work = work
        self.idx = idx
        # False when it is the cause of the rebuilt original, whose note holds the traceback
        self.show_traceback = True

    def __reduce__(self) -> Any:
        return (_rebuild, (self.message, self.__dict__.copy()))

    def where(self) -> str:
        """Where the error happened: job, work and index, host."""
        bits = []
        if self.job_id is not None:
            bits.append(f"job {self.job_id}")
        if self.work is not None:
            bits.append(f"work {self.work}" + (f"[{self.idx}]" if self.idx is not None else ""))
        if self.workflow_id is not None:
            bits.append(f"workflow {self.workflow_id}")
        if self.log_path:
            bits.append(f"log {self.log_path}")
        return ", ".join(bits)

    def __str__(self) -> str:
        head = self.message
        where = self.where()
        if where:
            head = f"{head} ({where})"
        if self.traceback and self.show_traceback:
            return f"{head}\n\nRemote traceback:\n{self.traceback.rstrip()}"
        return head


def _rebuild(message: str, state: dict[str, Any]) -> RemoteError:
    err = RemoteError.__new__(RemoteError)
    Exception.__init__(err, message)
    err.__dict__.update(state)
    return err


def _unpickle(job: dict[str, Any], fetch: Callable[[str], bytes] | None) -> Any:
    import cloudpickle

    inline = job.get("error_inline")
    if inline:
        return cloudpickle.loads(base64.b64decode(inline))
    sha = job.get("error_blob")
    if sha and fetch is not None:
        return cloudpickle.loads(fetch(sha))
    return None


def error_from_job(
    job: dict[str, Any],
    fetch: Callable[[str], bytes] | None = None,
    *,
    workflow_id: int | None = None,
    work: str | None = None,
) -> BaseException:
    """The exception to raise for a failed job result (a pushed message or a REST row)."""
    message = job.get("error") or f"job {job.get('status') or 'failed'}"
    remote = RemoteError(
        str(message),
        exc_type=job.get("exc_type"),
        traceback=job.get("traceback"),
        job_id=job.get("job_id"),
        log_path=job.get("log_path"),
        workflow_id=workflow_id if workflow_id is not None else job.get("workflow_id"),
        work=work if work is not None else job.get("work"),
        idx=job.get("idx"),
    )
    try:
        original = _unpickle(job, fetch)
    except Exception:
        original = None
    if not isinstance(original, BaseException) or isinstance(original, RemoteError):
        return remote
    note = f"Remote traceback ({remote.where()}):\n{(remote.traceback or message).rstrip()}"
    try:
        original.add_note(note)
        remote.show_traceback = False
        original.__cause__ = remote
        original.__suppress_context__ = True
    except Exception:
        return remote
    return original
