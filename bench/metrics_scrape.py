"""The cost of the Prometheus metrics on the hot path: a layered DAG run twice, on a
fresh SQLite store each time, first with no metrics at all (the peer: no engine
instrumentation, no scrape), then with the metrics instrumentation on and a scraper
reading ``/metrics``'s exposition every ``--interval`` seconds (no reuse of the
store reading: ``metrics_cache_s`` = 0; Prometheus' default interval is 15 s).

Prints jobs/s of both runs, the overhead, the scrape latency (p50/p99/max) during the
run and on the finished store, and a few lines of the exposition taken mid-run.

    python bench/metrics_scrape.py --jobs 100000 --interval 1
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import threading
import time
from pathlib import Path

from benchlib import time_dag

from idds_jupyter.agents.runner import Runner
from idds_jupyter.config import Config
from idds_jupyter.core import Orchestrator
from idds_jupyter.model.generators import layered_dag

SHOWN = (
    "idds_jobs{",
    "idds_job_releases_total{",
    "idds_queue_depth{",
    "idds_submissions_total{",
    "idds_job_wall_seconds_count{",
    "idds_claim_seconds_count",
    "idds_db_transaction_seconds_count",
    "idds_bus_lag_seconds ",
    "idds_metrics_store_read_seconds ",
)


def pct(xs: list[float], q: float) -> float:
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(round(q * (len(xs) - 1))))] if xs else float("nan")


def run(n: int, levels: int, workers: int, interval: float | None) -> dict[str, object]:
    with tempfile.TemporaryDirectory(prefix="idds-bench-metrics-") as tmp:
        home = Path(tmp)
        cfg = Config.load(
            None,
            home=home,
            db_url=f"sqlite:///{home}/idds.db",
            workers=workers,
            poll_interval=1.0,
            metrics_cache_s=0.0,
        )
        wf = layered_dag(n, levels)
        scrapes: list[float] = []
        sample = ""
        with Runner(cfg) as runner:
            orch = Orchestrator(cfg, engine=runner.engine, bus=runner.bus)
            stop = threading.Event()
            metrics = None
            if interval is not None:
                from idds_jupyter.api.metrics import Metrics

                metrics = Metrics(runner.engine, runner.bus, cfg)

                def scrape() -> None:
                    nonlocal sample
                    assert metrics is not None
                    while not stop.wait(interval):
                        t0 = time.perf_counter()
                        text = metrics.exposition(None, True).decode()
                        scrapes.append(time.perf_counter() - t0)
                        if len(scrapes) == 3:
                            sample = text

                th = threading.Thread(target=scrape, daemon=True)
                th.start()
            r = time_dag(orch, wf)
            stop.set()
            after: list[float] = []
            if metrics is not None:
                th.join()
                for _ in range(5):
                    t0 = time.perf_counter()
                    metrics.exposition(None, True)
                    after.append(time.perf_counter() - t0)
                metrics.close()
        if r.status != "finished" or r.succeeded != r.n_jobs:
            raise SystemExit(f"run did not finish every job: {r}")
        return {
            "jobs_s": r.n_jobs / r.wall,
            "wall": r.wall,
            "scrapes": scrapes,
            "after": after,
            "sample": sample,
        }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--jobs", type=int, default=100_000)
    ap.add_argument("--levels", type=int, default=10)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--interval", type=float, default=1.0, help="seconds between scrapes")
    a = ap.parse_args()
    base = run(a.jobs, a.levels, a.workers, None)
    with_m = run(a.jobs, a.levels, a.workers, a.interval)
    s = [x * 1000 for x in with_m["scrapes"]]  # type: ignore[attr-defined]
    done = [x * 1000 for x in with_m["after"]]  # type: ignore[attr-defined]
    overhead = (float(base["jobs_s"]) / float(with_m["jobs_s"]) - 1) * 100  # type: ignore[arg-type]
    print(f"\nlayered DAG of {a.jobs:,} jobs, {a.levels} levels, {a.workers} workers, SQLite")
    print("| run | wall s | jobs/s | scrapes | scrape p50 ms | scrape p99 ms | scrape max ms |")
    print("|---|---|---|---|---|---|---|")
    print(f"| no metrics (peer) | {base['wall']:.1f} | {base['jobs_s']:,.0f} | 0 | - | - | - |")
    print(
        f"| metrics, scrape every {a.interval:g} s | {with_m['wall']:.1f} | "
        f"{with_m['jobs_s']:,.0f} | {len(s)} | {statistics.median(s) if s else float('nan'):.1f} | "
        f"{pct(s, 0.99):.1f} | {max(s) if s else float('nan'):.1f} |"
    )
    print(
        f"| scrape of the finished {a.jobs:,}-job store | | | {len(done)} | "
        f"{statistics.median(done):.1f} | {pct(done, 0.99):.1f} | {max(done):.1f} |"
    )
    print(f"\nthroughput cost of the metrics: {overhead:+.1f} % (machine shared: noisy)")
    print("\n/metrics lines of the third scrape, mid-run:")
    for line in str(with_m["sample"]).splitlines():
        if line.startswith(SHOWN):
            print("  " + line)


if __name__ == "__main__":
    main()
