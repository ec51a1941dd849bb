"""A list ``command`` (argv, no shell) on each backend path: local pool, Dask, and the batch
wrapper (``python -m idds_jupyter.worker --job spec --out result``) run as a real process."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import distributed

from idds_jupyter.backends import make_backend
from idds_jupyter.backends.base import Backend
from idds_jupyter.backends.batch import DONE, BatchBackend, TaskState, _Batch, worker_command

SHOW_ARGV = "import json, sys; print(json.dumps(sys.argv[1:]))"


def values(marker: Path) -> list[str]:
    """Arguments a shell would split, expand or run; as argv items they stay as they are."""
    return [
        f"a b; touch {marker}",
        f"'; touch {marker}; '",
        f"$(touch {marker}) `touch {marker}`",
        "*",
        "line1\nline2",
        "",
    ]


def spec(job_id: int, command: list[str], log_dir: Path) -> dict[str, Any]:
    return {
        "job_id": job_id,
        "attempt": 1,
        "work_id": 1,
        "workflow_id": 1,
        "kind": "command",
        "function": None,
        "command": command,
        "kwargs": {},
        "payload": None,
        "env": {},
        "timeout_s": None,
        "log_dir": str(log_dir),
        "cwd": str(log_dir),
    }


def drain(b: Backend, n: int, timeout: float = 60.0) -> dict[int, dict[str, Any]]:
    out: dict[int, dict[str, Any]] = {}
    deadline = time.monotonic() + timeout
    while len(out) < n:
        assert time.monotonic() < deadline, f"only {len(out)} of {n} results"
        for r in b.results(0.5):
            if "ok" in r:
                out[int(r["job_id"])] = r
    return out


def check(b: Backend, tmp_path: Path) -> None:
    marker = tmp_path / "PWNED"
    argv = values(marker)
    b.submit([spec(7, [sys.executable, "-c", SHOW_ARGV, *argv], tmp_path)])
    r = drain(b, 1)[7]
    assert r["ok"], r
    assert r["result"] == argv  # the last output line, as JSON: each item arrived whole
    assert not marker.exists()


def test_local_backend(tmp_path: Path) -> None:
    b = make_backend("local", workers=1)
    try:
        check(b, tmp_path)
    finally:
        b.close()


def test_dask_backend(tmp_path: Path) -> None:
    old = os.environ.get("PYTHONPATH")
    os.environ["PYTHONPATH"] = os.pathsep.join(sys.path)  # workers import idds_jupyter
    try:
        cluster = distributed.LocalCluster(
            n_workers=1, threads_per_worker=1, processes=True, dashboard_address=None
        )
    finally:
        if old is None:
            os.environ.pop("PYTHONPATH", None)
        else:
            os.environ["PYTHONPATH"] = old
    b = make_backend("dask", cluster=cluster)
    try:
        check(b, tmp_path)
    finally:
        b.close()
        cluster.close()


class RunsTasks(BatchBackend):
    """A scheduler that runs each task's wrapper command line at once, as a real process."""

    name = "runs-tasks"
    engine_label = "runs-tasks"

    def _submit_batch(self, batch: _Batch) -> str:
        for i in range(len(batch.jobs)):
            argv = worker_command(sys.executable, batch.dir, str(i))
            subprocess.run(
                argv,
                check=True,
                timeout=60,
                stdin=subprocess.DEVNULL,
                env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)},
            )
        return "1"

    def _poll(self, batches: list[_Batch]) -> dict[tuple[str, int], TaskState]:
        return {(b.key, i): TaskState(DONE, "done") for b in batches for i in b.outstanding}

    def _cancel_tasks(self, tasks: list[tuple[_Batch, int]]) -> None:
        pass


def test_batch_wrapper(tmp_path: Path) -> None:
    b = RunsTasks(tmp_path / "batch", poll_interval=0.1)
    try:
        check(b, tmp_path)
    finally:
        b.close()


def test_render_error_fails_the_job_and_runs_nothing(tmp_path: Path) -> None:
    """A job whose command could not be rendered fails with the reason; nothing runs."""
    b = make_backend("local", workers=1)
    try:
        s = {
            **spec(8, ["touch", str(tmp_path / "RAN")], tmp_path),
            "render_error": "cannot render job 0: a placeholder inside backticks",
        }
        b.submit([s])
        r = drain(b, 1)[8]
        assert not r["ok"] and "inside backticks" in r["error"]
        assert not (tmp_path / "RAN").exists()
    finally:
        b.close()
