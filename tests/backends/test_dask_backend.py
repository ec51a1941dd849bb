"""DaskBackend on a real distributed.LocalCluster (2 worker processes)."""

from __future__ import annotations

import os
import sys
import time
from typing import Any

import distributed
import pytest

from idds_jupyter.backends import DaskBackend, make_backend  # noqa: E402

NOOP = "idds_jupyter.worker.job:noop"


def spec(job_id: int, function: str = NOOP, **kwargs: Any) -> dict[str, Any]:
    return {
        "job_id": job_id,
        "attempt": 0,
        "work_id": 1,
        "workflow_id": 1,
        "kind": "function",
        "function": function,
        "command": None,
        "kwargs": kwargs,
        "payload": None,
        "env": {},
        "timeout_s": None,
        "log_dir": None,
        "cwd": None,
    }


def drain(b: Any, n: int, timeout: float = 60.0) -> dict[int, dict[str, Any]]:
    out: dict[int, dict[str, Any]] = {}
    deadline = time.monotonic() + timeout
    while len(out) < n:
        left = deadline - time.monotonic()
        assert left > 0, f"only {len(out)} of {n} results"
        for r in b.results(min(left, 1.0)):
            assert r["job_id"] not in out
            out[r["job_id"]] = r
    return out


@pytest.fixture(scope="module")
def cluster() -> Any:
    old = os.environ.get("PYTHONPATH")
    os.environ["PYTHONPATH"] = os.pathsep.join(sys.path)  # workers import idds_jupyter
    try:
        c = distributed.LocalCluster(
            n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None
        )
    finally:
        if old is None:
            os.environ.pop("PYTHONPATH", None)
        else:
            os.environ["PYTHONPATH"] = old
    yield c
    c.close()


def test_two_hundred_jobs(cluster: Any) -> None:
    b = make_backend("dask", cluster=cluster)
    try:
        assert isinstance(b, DaskBackend) and b.capacity == 2 * 4
        b.submit([spec(i, "idds_jupyter.worker.job:echo", i=i) for i in range(200)])
        res = drain(b, 200)
        assert set(res) == set(range(200))
        assert all(r["ok"] and r["result"] == {"i": i} for i, r in res.items())
        assert b.in_flight() == 0
        assert b.status([0, 999]) == {0: "done", 999: "unknown"}
    finally:
        b.close()


def test_batched_tasks(cluster: Any) -> None:
    b = DaskBackend(cluster=cluster, batch=50)
    try:
        b.submit([spec(i) for i in range(1000, 1200)])
        res = drain(b, 200)
        assert set(res) == set(range(1000, 1200)) and all(r["ok"] for r in res.values())
    finally:
        b.close()


def test_exception(cluster: Any) -> None:
    b = DaskBackend(cluster=cluster)
    try:
        b.submit([spec(1, "idds_jupyter.worker.job:fail", message="remote boom")])
        (r,) = drain(b, 1).values()
        assert not r["ok"] and r["error"] == "RuntimeError: remote boom"
        assert "raise RuntimeError(message)" in r["traceback"]
    finally:
        b.close()


def test_dask_level_error_becomes_failed_result(cluster: Any) -> None:
    """A task that fails at the Dask level (e.g. KilledWorker) gives failed results."""
    b = DaskBackend(cluster=cluster)
    try:
        fut = b.client.submit(_raise_in_task, key="idds-77-1", pure=False)
        from idds_jupyter.backends.dask_backend import _Task

        with b._lock:
            b._tasks["idds-77-1"] = _Task(fut, [spec(77)])
            b._job_key[77] = "idds-77-1"
        fut.add_done_callback(b._on_done)
        (r,) = drain(b, 1).values()
        assert r["job_id"] == 77 and not r["ok"]
        assert r["error"] == "ZeroDivisionError: division by zero"
        assert r["exc_type"] == "ZeroDivisionError" and "1 / 0" in r["traceback"]
    finally:
        b.close()


def _raise_in_task() -> float:
    return 1 / 0


def test_cancel(cluster: Any) -> None:
    b = DaskBackend(cluster=cluster)
    try:
        b.submit([spec(i, "idds_jupyter.worker.job:sleep", seconds=2.0) for i in range(6)])
        time.sleep(0.5)
        assert b.status([5])[5] == "queued"
        t0 = time.monotonic()
        b.cancel([2, 3, 4, 5])
        assert b.in_flight() == 2
        res = drain(b, 6, timeout=30)
        for i in (2, 3, 4, 5):
            assert not res[i]["ok"] and res[i]["error"] == "cancelled"
        assert res[0]["ok"] and res[1]["ok"]
        assert time.monotonic() - t0 < 5
    finally:
        b.close()
