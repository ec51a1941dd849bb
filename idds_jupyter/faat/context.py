"""Which workflow run the current code is the body of (a context variable).

Set in the thread that runs a ``@workflow`` body, so that ``@work`` calls made
there add works to that run instead of running as workflows of their own.
Threads started by the body do not inherit it: run them with
``contextvars.copy_context().run(...)`` or call ``with run.active(): ...``.
"""

from __future__ import annotations

import contextvars
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from idds_jupyter.faat.workflow import Run

__all__ = ["current_run"]

_CURRENT: contextvars.ContextVar[Run | None] = contextvars.ContextVar(
    "idds_current_run", default=None
)


def current_run() -> Run | None:
    """The run whose body is executing in this context, or None."""
    return _CURRENT.get()
