"""Job functions of the chaos tests (imported by the worker processes through PYTHONPATH)."""

from __future__ import annotations

import os
import time


def record(path: str, delay: float = 0.0) -> None:
    """Append "job-id agent-pid" to ``path``: one line per execution (O_APPEND writes are atomic)."""
    from idds_jupyter.worker import context

    if delay:
        time.sleep(delay)
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, f"{context().job_id} {os.getppid()}\n".encode())
    finally:
        os.close(fd)
