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
        # the default groups jobs when many wait: 4 tasks' worth per thread of the biggest batch
        assert isinstance(b, DaskBackend) and b.batch is None and b.capacity == 2 * 4 * 64
        b.submit([spec(i, "idds_jupyter.worker.job:echo", i=i) for i in range(200)])
        with b._lock:  # 200 // (4 x 2 threads) = 25 jobs per task
            assert {len(t.specs) for t in b._tasks.values()} <= {25}
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


def test_few_jobs_get_a_task_each(cluster: Any) -> None:
    b = DaskBackend(cluster=cluster)
    try:
        b.submit([spec(i) for i in range(5)])
        with b._lock:
            assert sorted(b._tasks) == [f"idds-{i}-0" for i in range(5)]
        assert all(r["ok"] for r in drain(b, 5).values())
    finally:
        b.close()


def test_a_batch_keeps_per_job_results(cluster: Any, tmp_path: Any) -> None:
    """In one task: each job its own result, error, attempt and log; a failure fails one job."""
    b = DaskBackend(cluster=cluster, batch=6)
    try:
        specs = [
            spec(1, "idds_jupyter.worker.job:echo", i=1),
            spec(2, "idds_jupyter.worker.job:fail", message="only me"),
            {**spec(3, "idds_jupyter.worker.job:echo", i=3), "attempt": 2},
            {**spec(4), "kind": "command", "command": "echo out-$IDDS_JOB_ID; exit 3"},
            {**spec(5), "kind": "command", "command": "echo out-$IDDS_JOB_ID"},
            spec(6, "idds_jupyter.worker.job:nowhere"),
        ]
        b.submit([{**s, "log_dir": str(tmp_path)} for s in specs])
        with b._lock:
            assert len(b._tasks) == 1
        res = drain(b, 6)
        assert res[1]["ok"] and res[1]["result"] == {"i": 1}
        assert not res[2]["ok"] and res[2]["error"] == "RuntimeError: only me"
        assert "raise RuntimeError(message)" in res[2]["traceback"]
        assert res[3]["ok"] and res[3]["attempt"] == 2 and res[3]["result"] == {"i": 3}
        assert not res[4]["ok"] and res[4]["exit_code"] == 3
        assert res[5]["ok"] and res[5]["exit_code"] == 0
        for j in (4, 5):
            with open(res[j]["log_path"]) as fh:
                assert fh.read() == f"out-{j}\n"
        assert not res[6]["ok"] and res[6]["error"]
        assert b.in_flight() == 0 and b.status([2, 5]) == {2: "done", 5: "done"}
    finally:
        b.close()


def test_cancel_in_a_batch_skips_only_the_cancelled(cluster: Any, tmp_path: Any) -> None:
    """Cancelled jobs of a batch are reported at once and never run; the others run on."""
    b = DaskBackend(cluster=cluster, batch=5)
    try:
        cmd = "echo ran-$IDDS_JOB_ID; sleep 0.3"
        b.submit(
            [
                {**spec(i), "kind": "command", "command": cmd, "log_dir": str(tmp_path)}
                for i in range(10)
            ]
        )
        assert b.status([4, 9]) == {4: "queued", 9: "queued"}
        b.cancel([3, 4, 8])
        assert b.in_flight() == 7
        assert b.status([3]) == {3: "done"}
        res = drain(b, 10)
        for i in range(10):
            ran = os.path.exists(tmp_path / f"job-{i}.0.log")
            if i in (3, 4, 8):
                assert not res[i]["ok"] and res[i]["error"] == "cancelled"
                assert not ran, f"cancelled job {i} ran"
            else:
                assert res[i]["ok"], res[i]
                assert (tmp_path / f"job-{i}.0.log").read_text() == f"ran-{i}\n"
        assert b.in_flight() == 0
    finally:
        b.close()


def test_a_long_batch_sends_results_before_its_end(cluster: Any) -> None:
    """Past STREAM_AFTER_S a batch's results come one by one, each reported once."""
    b = DaskBackend(cluster=cluster, batch=4)
    try:
        b.submit([spec(i, "idds_jupyter.worker.job:sleep", seconds=0.3) for i in range(4)])
        seen: dict[int, float] = {}
        res = {}
        while len(res) < 4:
            for r in b.results(1.0):
                assert r["job_id"] not in res
                res[r["job_id"]] = r
                seen[r["job_id"]] = time.time()
        assert all(r["ok"] for r in res.values())
        # job 1 ended after 0.5 s of its batch: it was here before job 3 had even finished
        assert seen[1] < res[3]["finished_at"]
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


def test_a_lost_batch_fails_its_unreported_jobs(cluster: Any) -> None:
    """A batch task failing at the Dask level fails each job not yet reported, once."""
    b = DaskBackend(cluster=cluster)
    try:
        from idds_jupyter.backends.dask_backend import _Task

        fut = b.client.submit(_raise_in_task, key="idds-batch-test", pure=False)
        with b._lock:
            task = b._tasks["idds-batch-test"] = _Task(fut, [spec(80), spec(81), spec(82)])
            for j in (80, 81, 82):
                b._job_key[j] = "idds-batch-test"
            b._reported_locked(task, "idds-batch-test", 81)  # as if streamed already
        fut.add_done_callback(b._on_done)
        res = drain(b, 2)
        assert set(res) == {80, 82}
        assert all(r["error"] == "ZeroDivisionError: division by zero" for r in res.values())
        assert b.results(0.3) == [] and b.in_flight() == 0
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
