"""Fair share: time to bob's first job while alice's big DAG runs, against bob alone.

Bob submits a 10-job run while alice's 100,000-job layered DAG keeps the workers busy
(one shared core, as on a hub), and the bench prints how long bob waited for his first
job and for his whole run, next to the same run with no other load (target: first job
within 2 s). Alice's run is aborted once bob's has finished.

    python bench/fair_share.py --jobs 100000 [--sleep 0.0] [--db postgresql://…]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

from sqlalchemy import func, select

from idds_jupyter.agents.runner import Runner
from idds_jupyter.config import Config
from idds_jupyter.core import Orchestrator
from idds_jupyter.model.generators import layered_dag
from idds_jupyter.store.tables import jobs

SLEEP = "idds_jupyter.worker.job:sleep"


def _times(orch: Orchestrator, wid: int, t0: float) -> tuple[float, ...]:
    with orch.engine.begin() as conn:
        row = conn.execute(
            select(
                func.min(jobs.c.submitted_at),
                func.min(jobs.c.started_at),
                func.min(jobs.c.finished_at),
                func.max(jobs.c.finished_at),
            ).where(jobs.c.workflow_id == wid)
        ).one()
    return tuple(t - t0 for t in row)


def bobs_run(orch: Orchestrator) -> tuple[float, ...]:
    """Bob's 10 jobs: submit, wait; seconds to his first job's claim, start and end, and
    to his last job's end."""
    wf = layered_dag(10, 1, name="bob-small")
    t0 = time.time()
    wid = orch.submit(wf, owner="bob")
    status = orch.wait(wid, interval=0.02, timeout=600)
    if status != "finished":
        raise SystemExit(f"bob's run ended {status}")
    return _times(orch, wid, t0)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--jobs", type=int, default=100_000, help="jobs of alice's DAG")
    p.add_argument("--levels", type=int, default=10)
    p.add_argument("--sleep", type=float, default=0.0, help="seconds each of alice's jobs takes")
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--warmup", type=float, default=3.0, help="s of alice's run before bob's")
    p.add_argument("--db", default=None, help="database URL (default: SQLite in a temp dir)")
    a = p.parse_args()
    with tempfile.TemporaryDirectory(prefix="idds-fair-") as tmp:
        home = Path(tmp)
        cfg = Config.load(
            None,
            home=home,
            db_url=a.db or f"sqlite:///{home / 'idds.db'}",
            workers=a.workers,
            poll_interval=1.0,
        )
        with Runner(cfg) as runner:
            orch = Orchestrator(cfg, engine=runner.engine, bus=runner.bus)
            bobs_run(orch)  # warm the workers and the imports
            alone = bobs_run(orch)
            big = (
                layered_dag(a.jobs, a.levels, function=SLEEP, parameters={"seconds": a.sleep})
                if a.sleep
                else layered_dag(a.jobs, a.levels)
            )
            t_alice = time.time()
            alice = orch.submit(big, owner="alice")
            time.sleep(a.warmup)
            loaded = bobs_run(orch)
            done_alice = orch.job_counts(alice).get("finished", 0)
            running = orch.status(alice, with_works=False)["status"]
            orch.abort(alice)
            orch.wait(alice, interval=0.1, timeout=600)
    print(
        f"alice: {a.jobs:,}-job DAG ({a.levels} levels, {a.sleep * 1000:.0f} ms jobs), "
        f"{done_alice:,} jobs done in {time.time() - t_alice:.1f} s, {running} when bob's ended"
    )
    head = ("claimed", "started", "first job", "whole run")
    print(f"{'bob, 10 jobs (s after submit)':<30}" + "".join(f"{h:>11}" for h in head))
    for label, t in (("alone", alone), ("while alice's DAG runs", loaded)):
        print(f"{label:<30}" + "".join(f"{x:>11.3f}" for x in t))
    print(f"target: first job <= 2 s while loaded: {'met' if loaded[2] <= 2 else 'NOT met'}")


if __name__ == "__main__":
    main()
