"""Memoized re-run: a run re-submitted unchanged completes from the cache.

A layered DAG (job-level links, every job depending on 2 of the level above) of
function jobs that each take ``--sleep`` seconds, every work ``cache: true``. The
first run executes every job; the same template submitted again takes every result
from the first run's (no job runs: the provenance table says so). Prints both
times and the ratio (issue 22: at most 10 %).

    python bench/provenance_cache.py --jobs 10000 --sleep 0.02
"""

from __future__ import annotations

import argparse
import os
import tempfile
from pathlib import Path

from benchlib import time_dag
from sqlalchemy import func, select

from idds_jupyter.agents.runner import Runner
from idds_jupyter.config import Config
from idds_jupyter.core import Orchestrator
from idds_jupyter.model import Workflow
from idds_jupyter.model.generators import layered_dag
from idds_jupyter.store.tables import provenance


def cached_dag(n: int, levels: int, sleep: float) -> Workflow:
    wf = layered_dag(
        n, levels, function="idds_jupyter.worker.job:sleep", parameters={"seconds": sleep}
    )
    for i, w in enumerate(wf.works):
        w.cache = True
        w.parameters["level"] = i  # each level its own inputs: the first run runs every job
    return wf


def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--jobs", type=int, default=10_000)
    ap.add_argument("--levels", type=int, default=3)
    ap.add_argument("--sleep", type=float, default=0.02, help="seconds each job takes")
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--db", help="database URL (default: a fresh SQLite file)")
    args = ap.parse_args()
    print(
        f"DAG: {args.jobs:,} jobs of {args.sleep * 1000:.0f} ms in {args.levels} levels, "
        f"cache: true; {args.workers} workers; {os.cpu_count()} cores"
    )
    with tempfile.TemporaryDirectory(prefix="idds-bench-") as tmp:
        home = Path(tmp)
        cfg = Config.load(
            None,
            home=home,
            db_url=args.db or f"sqlite:///{home / 'idds.db'}",
            workers=args.workers,
            poll_interval=1.0,
        )
        wf = cached_dag(args.jobs, args.levels, args.sleep)
        walls = []
        with Runner(cfg) as runner:
            orch = Orchestrator(cfg, engine=runner.engine, bus=runner.bus)
            for label in ("first run", "unchanged re-run"):
                r = time_dag(orch, wf)
                with orch.engine.connect() as conn:
                    cached = conn.execute(
                        select(func.count())
                        .select_from(provenance)
                        .where(
                            provenance.c.workflow_id == r.workflow_id,
                            provenance.c.cached_from.isnot(None),
                        )
                    ).scalar()
                print(
                    f"{label:<17}: status={r.status} jobs={r.n_jobs} succeeded={r.succeeded} "
                    f"cached={cached} max release_count={r.max_release}  {r.wall:.2f} s"
                )
                if r.status != "finished" or r.succeeded != r.n_jobs or r.max_release != 1:
                    raise SystemExit("the run did not finish every job exactly once")
                walls.append(r.wall)
    print(f"ratio            : re-run / first run = {walls[1] / walls[0]:.1%}")


if __name__ == "__main__":
    main()
