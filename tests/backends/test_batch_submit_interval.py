"""BatchBackend's submission pacing on a scripted scheduler (a test double that keeps
every task waiting): with a backlog queued, jobs released meanwhile go as one batch."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from waiting import wait_for

from idds_jupyter.backends.batch import QUEUED, BatchBackend, TaskState, _Batch


class Waiting(BatchBackend):
    name = "scripted"
    engine_label = "scripted"

    def __init__(self, *a: Any, **kw: Any) -> None:
        self.submitted: list[tuple[float, int]] = []
        super().__init__(*a, **kw)

    def _submit_batch(self, batch: _Batch) -> str:
        self.submitted.append((time.monotonic(), len(batch.jobs)))
        return str(len(self.submitted))

    def _poll(self, batches: list[_Batch]) -> dict[tuple[str, int], TaskState]:
        return {(b.key, i): TaskState(QUEUED, "idle") for b in batches for i in b.outstanding}

    def _cancel_tasks(self, tasks: list[tuple[_Batch, int]]) -> None:
        pass


def _spec(job_id: int) -> dict[str, Any]:
    return {"job_id": job_id, "attempt": 1, "kind": "function", "function": "m:f", "kwargs": {}}


def _wait_for(pred: Any, timeout: float = 10) -> None:
    wait_for(pred, timeout, 0.01)


def test_a_backlog_gathers_what_is_released_meanwhile(tmp_path: Path) -> None:
    b = Waiting(tmp_path, poll_interval=0.1, submit_interval=1.0, submit_backlog=3)
    try:
        b.submit([_spec(i) for i in range(3)])  # the first submission goes at once
        _wait_for(lambda: len(b.submitted) == 1)
        for i in range(3, 8):  # released one at a time while 3 wait in the scheduler
            b.submit([_spec(i)])
            time.sleep(0.05)
        _wait_for(lambda: len(b.submitted) == 2)
        (t0, n0), (t1, n1) = b.submitted
        assert (n0, n1) == (3, 5)  # the five went together ...
        assert t1 - t0 >= 0.95  # ... once the interval was over
    finally:
        b.close()


def test_without_a_backlog_jobs_go_at_once(tmp_path: Path) -> None:
    """A chain of jobs (nothing else waiting) is never held back."""
    b = Waiting(tmp_path, poll_interval=0.1, submit_interval=5.0, submit_backlog=3)
    try:
        for i in range(2):
            b.submit([_spec(i)])
            _wait_for(lambda i=i: len(b.submitted) == i + 1, timeout=2)
        assert [n for _, n in b.submitted] == [1, 1]
    finally:
        b.close()
