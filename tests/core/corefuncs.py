"""Job functions for the core tests (imported by the worker processes through PYTHONPATH)."""

from __future__ import annotations

import os
import time
from pathlib import Path


def flaky(marker: str) -> str:
    """Fail the first time (leaving a marker), succeed after."""
    p = Path(marker)
    if not p.exists():
        p.write_text("tried")
        raise RuntimeError(f"first try fails ({p.name})")
    return "second try ok"


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
