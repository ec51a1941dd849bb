"""Job-level DAG release: a layered DAG of no-op jobs, each depending on 2 jobs of the level above.

Runs the DAG through the orchestration core (durable state in SQLite or
PostgreSQL, local worker processes) and prints jobs/s, time to first job and
peak RSS; with ``--engine dask`` the same DAG also runs as plain Dask tasks on
a ``LocalCluster`` with the same number of worker processes, and the ratio is
printed.

    python bench/dag_release.py --jobs 100000 --engine dask
"""

from __future__ import annotations

import argparse
import os
import tempfile
import threading
import time
from pathlib import Path

import psutil
from benchlib import time_dag

from idds_jupyter.agents.runner import Runner
from idds_jupyter.config import Config
from idds_jupyter.core import Orchestrator
from idds_jupyter.model.generators import layered_dag


class PeakRSS(threading.Thread):
    """Samples the RSS of this process and of its children (the workers)."""

    def __init__(self) -> None:
        super().__init__(daemon=True)
        self.proc = psutil.Process()
        self.peak_self = 0
        self.peak_total = 0
        self.done = threading.Event()

    def run(self) -> None:
        while not self.done.wait(0.2):
            try:
                own = self.proc.memory_info().rss
                kids = sum(c.memory_info().rss for c in self.proc.children(recursive=True))
            except psutil.Error:
                continue
            self.peak_self = max(self.peak_self, own)
            self.peak_total = max(self.peak_total, own + kids)


def run_idds(n: int, levels: int, workers: int, db_url: str | None, home: Path) -> float:

    cfg = Config.load(
        None,
        home=home,
        db_url=db_url or f"sqlite:///{home / 'idds.db'}",
        workers=workers,
        poll_interval=1.0,
    )
    wf = layered_dag(n, levels)
    rss = PeakRSS()
    rss.start()
    with Runner(cfg) as runner:
        r = time_dag(Orchestrator(cfg, engine=runner.engine, bus=runner.bus), wf)
    rss.done.set()
    rss.join()
    status, wall, t_first = r.status, r.wall, r.first
    n_jobs, n_success, max_rel, max_succ = r.n_jobs, r.succeeded, r.max_release, r.max_success
    print(
        f"idds  : status={status} jobs={n_jobs} succeeded={n_success} "
        f"max release_count={max_rel} max success_count={max_succ}"
    )
    print(
        f"idds  : {wall:.2f} s, {n_jobs / wall:,.0f} jobs/s, first job done after {t_first * 1000:.0f} ms"
    )
    print(
        f"idds  : peak RSS agents process {rss.peak_self / 2**20:.0f} MiB, "
        f"with workers {rss.peak_total / 2**20:.0f} MiB  (db {cfg.db_url.split(':')[0]})"
    )
    if status != "finished" or n_success != n_jobs or max_rel != 1 or max_succ != 1:
        raise SystemExit("idds run did not finish every job exactly once")
    return n_jobs / wall


def _noop(*_parents: object) -> None:
    return None


def run_dask(n: int, levels: int, workers: int) -> float:
    from distributed import Client, LocalCluster

    sizes = [n // levels + (1 if i < n % levels else 0) for i in range(levels)]
    dsk: dict[str, tuple[object, ...]] = {}
    for i, size in enumerate(sizes):
        for j in range(size):
            if i == 0:
                dsk[f"L0-{j}"] = (_noop,)
            else:
                up = sizes[i - 1]
                dsk[f"L{i}-{j}"] = (_noop, f"L{i - 1}-{j % up}", f"L{i - 1}-{(j + 1) % up}")
    last = [f"L{levels - 1}-{j}" for j in range(sizes[-1])]
    with (
        LocalCluster(
            n_workers=workers, threads_per_worker=1, processes=True, dashboard_address=None
        ) as cluster,
        Client(cluster) as client,
    ):
        t0 = time.perf_counter()
        client.get(dsk, last, sync=True)
        wall = time.perf_counter() - t0
    print(
        f"dask  : {wall:.2f} s, {len(dsk) / wall:,.0f} jobs/s  (LocalCluster, {workers} worker processes)"
    )
    return len(dsk) / wall


def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--jobs", type=int, default=100_000)
    ap.add_argument("--levels", type=int, default=3)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--db", help="database URL (default: a fresh SQLite file)")
    ap.add_argument(
        "--engine",
        choices=["idds", "dask"],
        default="idds",
        help="dask: also run the same DAG on Dask and print the ratio",
    )
    args = ap.parse_args()
    print(
        f"DAG: {args.jobs:,} no-op jobs in {args.levels} levels, each job depends on 2 jobs "
        f"of the level above; {args.workers} workers; {os.cpu_count()} cores"
    )
    with tempfile.TemporaryDirectory(prefix="idds-bench-") as tmp:
        ours = run_idds(args.jobs, args.levels, args.workers, args.db, Path(tmp))
    if args.engine == "dask":
        theirs = run_dask(args.jobs, args.levels, args.workers)
        print(f"ratio : idds / dask = {ours / theirs:.1f}x jobs/s")


if __name__ == "__main__":
    main()
