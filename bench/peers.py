"""FaaT call path against its peers: one trivial call's round trip and a 10,000-item map.

One run, one machine, one table: idds-jupyter (a real ``idds-jupyter serve`` with 2 local
workers, as :mod:`faat` measures it), Dask distributed (``LocalCluster``, 2 worker
processes), Ray (``ray.init(num_cpus=2)``), Parsl (HighThroughputExecutor, 2 workers on
a local provider) and ipyparallel (a 2-engine cluster, load-balanced view) — each peer
where it is installed (the ``bench`` extra: ``pip install -e '.[bench]'``).

Every system runs the same function, defined in ``__main__`` (pickled by value):

* round trip: ``f(i)`` submitted and its result waited for, ``--calls`` times
  (after 20 warm-up calls); p50 and p99 in milliseconds;
* map: ``f`` over ``range(--map)``, all submitted then all gathered; tasks per second.

Targets (issue 23, item 2): idds-jupyter's p50 <= 0.25x Dask's and p99 <= 0.5x Dask's,
and the fastest row. The machine is shared: figures are noisy, compare within one run.

    .venv/bin/python bench/peers.py [--calls 1000] [--map 10000] [--only idds,dask,...] [--json]
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import os
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from typing import Any

from faat import _latency, _throughput, bench_dask, bench_idds

SYSTEMS = ("idds-jupyter", "dask", "ray", "parsl", "ipyparallel")
TARGETS = {"p50_vs_dask": 0.25, "p99_vs_dask": 0.5}


def trivial(x: int) -> int:
    return x


# --------------------------------------------------------------------------- ray


def bench_ray(n_calls: int, n_map: int, workers: int) -> dict[str, Any]:
    import ray

    # on a loaded machine Ray's dashboard agent may take longer than the raylet's 15 s
    # wait for its port file ("The current node timed out during startup")
    os.environ.setdefault("RAY_agent_register_timeout_ms", "120000")
    os.environ.setdefault("RAY_raylet_start_wait_time_s", "120")
    ray.init(
        num_cpus=workers,
        include_dashboard=False,
        log_to_driver=False,
        configure_logging=False,
        ignore_reinit_error=True,
    )
    try:
        f = ray.remote(trivial)

        def call(i: int) -> Any:
            return ray.get(f.remote(i))

        def run_map(items: list[int]) -> list[Any]:
            return list(ray.get([f.remote(i) for i in items]))

        res: dict[str, Any] = {}
        res.update(_latency(call, n_calls))
        res.update(_throughput(run_map, n_map))
        return res
    finally:
        ray.shutdown()


# --------------------------------------------------------------------------- parsl


def bench_parsl(n_calls: int, n_map: int, workers: int) -> dict[str, Any]:
    import parsl
    from parsl.config import Config
    from parsl.executors import HighThroughputExecutor
    from parsl.providers import LocalProvider

    # HTEX starts its interchange and worker pool as commands of this environment
    bindir = os.path.dirname(sys.executable)
    if bindir not in os.environ.get("PATH", "").split(os.pathsep):
        os.environ["PATH"] = bindir + os.pathsep + os.environ.get("PATH", "")
    run_dir = tempfile.mkdtemp(prefix="idds-bench-parsl-")
    cfg = Config(
        executors=[
            HighThroughputExecutor(
                label="htex",
                address="127.0.0.1",
                max_workers_per_node=workers,
                provider=LocalProvider(init_blocks=1, min_blocks=1, max_blocks=1),
            )
        ],
        run_dir=run_dir,
        usage_tracking=0,
    )
    dfk = parsl.load(cfg)
    try:
        app = parsl.python_app(trivial)

        def call(i: int) -> Any:
            return app(i).result()

        def run_map(items: list[int]) -> list[Any]:
            futs = [app(i) for i in items]
            return [fu.result() for fu in futs]

        res: dict[str, Any] = {}
        res.update(_latency(call, n_calls))
        res.update(_throughput(run_map, n_map))
        return res
    finally:
        dfk.cleanup()
        parsl.clear()


# --------------------------------------------------------------------------- ipyparallel


def bench_ipyparallel(n_calls: int, n_map: int, workers: int) -> dict[str, Any]:
    import ipyparallel as ipp

    cluster = ipp.Cluster(n=workers, log_level=40)
    rc = cluster.start_and_connect_sync()
    try:
        rc.wait_for_engines(workers, timeout=120)
        view = rc.load_balanced_view()

        def call(i: int) -> Any:
            return view.apply_sync(trivial, i)

        def run_map(items: list[int]) -> list[Any]:
            return list(view.map_sync(trivial, items))

        res: dict[str, Any] = {}
        res.update(_latency(call, n_calls))
        res.update(_throughput(run_map, n_map))
        return res
    finally:
        rc.close()
        cluster.stop_cluster_sync()


# --------------------------------------------------------------------------- run + report


@contextlib.contextmanager
def _quiet() -> Iterator[None]:
    """The peers log their start-up to stderr; keep the table readable."""
    import logging

    logging.disable(logging.WARNING)
    try:
        yield
    finally:
        logging.disable(logging.NOTSET)


def run_all(
    systems: list[str], n_calls: int, n_map: int, workers: int
) -> dict[str, dict[str, Any]]:
    runners: dict[str, Callable[[], dict[str, Any]]] = {
        "idds-jupyter": lambda: bench_idds(n_calls, n_map, False, workers),
        "dask": lambda: bench_dask(n_calls, n_map, workers),
        "ray": lambda: bench_ray(n_calls, n_map, workers),
        "parsl": lambda: bench_parsl(n_calls, n_map, workers),
        "ipyparallel": lambda: bench_ipyparallel(n_calls, n_map, workers),
    }
    out: dict[str, dict[str, Any]] = {}
    for name in systems:
        t0 = time.perf_counter()
        try:
            with _quiet():
                out[name] = runners[name]()
        except ImportError as exc:
            out[name] = {"skipped": f"not installed ({exc.name}): pip install -e '.[bench]'"}
        except Exception as exc:  # one peer failing to start leaves the others' rows
            out[name] = {"skipped": f"failed: {type(exc).__name__}: {exc}"}
        out[name]["wall_s"] = time.perf_counter() - t0
        print(f"# {name}: done in {out[name]['wall_s']:.0f} s", file=sys.stderr, flush=True)
    return out


def report(results: dict[str, dict[str, Any]], n_map: int) -> str:
    dask = results.get("dask") or {}
    nan = float("nan")

    def ratio(a: float | None, b: float | None) -> float:
        return a / b if a is not None and b else nan

    head = (
        f"{'system':14s}{'p50 ms':>9s}{'p99 ms':>9s}{f'{n_map:,} map tasks/s':>20s}"
        f"{'p50/dask':>10s}{'p99/dask':>10s}{'map/dask':>10s}"
    )
    lines = [head, "-" * len(head)]
    for name, r in results.items():
        if "skipped" in r:
            lines.append(f"{name:14s}  {r['skipped']}")
            continue
        lines.append(
            f"{name:14s}{r['p50_ms']:9.2f}{r['p99_ms']:9.2f}{r['map_tasks_per_s']:20.0f}"
            f"{ratio(r['p50_ms'], dask.get('p50_ms')):10.2f}"
            f"{ratio(r['p99_ms'], dask.get('p99_ms')):10.2f}"
            f"{ratio(r['map_tasks_per_s'], dask.get('map_tasks_per_s')):10.2f}"
        )
    idds = results.get("idds-jupyter") or {}
    if "p50_ms" in idds:
        lines.append("")
        lines += _verdicts(results, idds, dask)
    return "\n".join(lines)


def _verdicts(
    results: dict[str, dict[str, Any]], idds: dict[str, Any], dask: dict[str, Any]
) -> list[str]:
    out = []
    for key, col in (("p50_ms", "p50_vs_dask"), ("p99_ms", "p99_vs_dask")):
        limit = TARGETS[col]
        if "p50_ms" not in dask:
            out.append(f"target {key} <= {limit}x dask: not measured (no dask row)")
            continue
        r = idds[key] / dask[key]
        out.append(
            f"target {key} <= {limit}x dask: {r:.2f}x -> {'met' if r <= limit else 'NOT met'}"
        )
    measured = {n: r for n, r in results.items() if "p50_ms" in r}
    for key, higher in (("p50_ms", False), ("p99_ms", False), ("map_tasks_per_s", True)):
        best = (max if higher else min)(measured, key=lambda n, k=key: measured[n][k])
        verdict = "met" if best == "idds-jupyter" else f"NOT met ({best} is faster)"
        out.append(f"target fastest row on {key}: {verdict}")
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--calls", type=int, default=1000, help="round trips timed (default 1000)")
    p.add_argument("--map", type=int, default=10_000, help="items of the map (default 10000)")
    p.add_argument("--workers", type=int, default=2, help="worker processes of every system")
    p.add_argument(
        "--only", default=",".join(SYSTEMS), help=f"comma-separated subset of {','.join(SYSTEMS)}"
    )
    p.add_argument("--json", action="store_true", help="print the numbers as JSON too")
    args = p.parse_args(argv)
    systems = [s.strip() for s in args.only.split(",") if s.strip()]
    unknown = sorted(set(systems) - set(SYSTEMS))
    if unknown:
        p.error(f"unknown system(s) {unknown}; choose from {list(SYSTEMS)}")
    if args.calls < 1 or args.map < 100:
        p.error("--calls must be >= 1 and --map >= 100")
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    results = run_all(systems, args.calls, args.map, args.workers)
    print(
        f"FaaT call path, {args.calls} round trips and a {args.map}-item map, "
        f"{args.workers} workers each (one run; shared machine: figures are noisy)"
    )
    print(report(results, args.map))
    if args.json:
        print(json.dumps(results, indent=2, default=lambda v: None if math.isnan(v) else v))
    return 0


if __name__ == "__main__":
    sys.exit(main())
