"""What the benchmarks share: a fresh server to measure, and timing a DAG run through the core."""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from sqlalchemy import func, select

from idds_jupyter.config import Config
from idds_jupyter.core import Orchestrator
from idds_jupyter.model import Workflow
from idds_jupyter.store.tables import jobs


@contextlib.contextmanager
def idds_server(
    in_process: bool, workers: int, prefix: str = "idds-bench-"
) -> Iterator[tuple[str, str]]:
    """A fresh standalone server with ``workers`` local workers; yields ``(url, token)``.

    ``in_process`` runs it in this process (``start_server``); otherwise it is
    ``idds-jupyter serve`` in a subprocess, as a user would run it.
    """
    with tempfile.TemporaryDirectory(prefix=prefix) as tmp:
        home = Path(tmp) / "home"
        runtime = Path(tmp) / "runtime"
        runtime.mkdir()
        if in_process:
            from idds_jupyter.api.server import start_server

            cfg = Config.load(None, home=home, db_url=f"sqlite:///{home}/idds.db", workers=workers)
            handle = start_server(cfg)
            try:
                yield handle.url, handle.token
            finally:
                handle.stop()
            return
        env = {
            **os.environ,
            "IDDS_HOME": str(home),
            "IDDS_WORKERS": str(workers),
            "IDDS_DB_URL": f"sqlite:///{home}/idds.db",
            "JUPYTER_RUNTIME_DIR": str(runtime),
        }
        for var in ("IDDS_URL", "IDDS_TOKEN"):
            env.pop(var, None)
        exe = Path(sys.executable).parent / "idds-jupyter"
        cmd = [str(exe)] if exe.exists() else [sys.executable, "-m", "idds_jupyter.cli"]
        proc = subprocess.Popen(
            [*cmd, "serve", "--port", "0"],
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        try:
            assert proc.stdout is not None
            for line in proc.stdout:  # "connection file ..." once it listens
                if "connection file" in line:
                    break
            else:
                raise RuntimeError(f"the server exited with {proc.wait()}")
            # keep reading its output, or a server that logs much would block on a full pipe
            threading.Thread(target=proc.stdout.read, daemon=True).start()
            info = json.loads(next(iter(runtime.glob("idds-*.json"))).read_text())
            yield str(info["url"]), str(info["token"])
        finally:
            proc.terminate()
            try:
                proc.wait(20)
            except subprocess.TimeoutExpired:
                proc.kill()


@dataclass
class DagRun:
    workflow_id: int
    status: str
    wall: float  # submit to the end, seconds
    first: float  # submit to the first finished job, seconds
    n_jobs: int
    succeeded: int
    max_release: int
    max_success: int


def time_dag(orch: Orchestrator, wf: Workflow) -> DagRun:
    """Submit ``wf`` through the core and time it; the audit counters come from the store.

    The one-time import of the template schema's validator is done before the clock starts.
    """
    Workflow.from_dict(wf.to_dict())
    engine = orch.engine
    t0, t0_epoch = time.perf_counter(), time.time()
    wid = orch.submit(wf)
    status = orch.wait(wid, interval=0.05)
    wall = time.perf_counter() - t0
    with engine.begin() as conn:  # the first job's end, as the store recorded it
        n, ok, max_rel, max_succ, first_end = conn.execute(
            select(
                func.count(),
                func.sum(jobs.c.success_count),
                func.max(jobs.c.release_count),
                func.max(jobs.c.success_count),
                func.min(jobs.c.finished_at),
            ).where(jobs.c.workflow_id == wid)
        ).one()
    t_first = (first_end - t0_epoch) if first_end is not None else float("nan")
    return DagRun(
        wid, status, wall, t_first, int(n), int(ok or 0), int(max_rel or 0), int(max_succ or 0)
    )
