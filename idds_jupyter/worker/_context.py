"""The job context: which job the current code runs for (a contextvar)."""

from __future__ import annotations

import contextvars
from dataclasses import dataclass


@dataclass(frozen=True)
class JobContext:
    """Identity of the job being executed, visible to user code via :func:`context`."""

    job_id: int
    attempt: int
    work_id: int | None
    workflow_id: int | None
    log_dir: str | None = None


_CURRENT: contextvars.ContextVar[JobContext | None] = contextvars.ContextVar(
    "idds_job_context", default=None
)


def context() -> JobContext | None:
    """The :class:`JobContext` of the job running in this thread, or ``None`` outside a job."""
    return _CURRENT.get()
