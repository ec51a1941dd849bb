"""FaaT benchmark: round trip of a trivial ``@work`` call and ``.map`` throughput, vs Dask.

Measured in one run, on the same machine:

* idds-jupyter: a real standalone server (``idds-jupyter serve`` in a subprocess
  with 2 local workers, or ``--in-process``), found through its connection
  file; the client calls a function defined in ``__main__`` (pickled by value).
  - latency: ``f(i)`` blocking, N times (each call is a one-work workflow);
  - throughput: ``f.map(range(M))`` (one work, M jobs).
* Dask: ``LocalCluster(n_workers=2, threads_per_worker=1)``;
  ``client.submit(f, i, pure=False).result()`` N times and
  ``client.gather(client.map(f, range(M), pure=False))``.

Targets for idds-jupyter: p50 <= 5 ms, p99 <= 50 ms, map >= 5,000 tasks/s.

    .venv/bin/python bench/faat.py [--calls 1000] [--map 10000] [--in-process] [--no-dask] [--json]
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from collections.abc import Callable
from typing import Any

TARGETS = {"p50_ms": 5.0, "p99_ms": 50.0, "map_tasks_per_s": 5000.0}


from benchlib import idds_server  # noqa: E402


def trivial(x: int) -> int:
    return x


def _percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(q * (len(ordered) - 1))))]


def _latency(call: Callable[[int], Any], n: int, warmup: int = 20) -> dict[str, float]:
    for i in range(warmup):
        call(i)
    lat = []
    for i in range(n):
        t0 = time.perf_counter()
        out = call(i)
        lat.append((time.perf_counter() - t0) * 1000)
        if out != i:
            raise AssertionError(f"call {i} returned {out!r}")
    return {
        "p50_ms": statistics.median(lat),
        "p99_ms": _percentile(lat, 0.99),
        "mean_ms": statistics.fmean(lat),
        "max_ms": max(lat),
    }


def _throughput(run_map: Callable[[list[int]], list[Any]], m: int) -> dict[str, float]:
    items = list(range(m))
    run_map(items[:100])  # warm
    t0 = time.perf_counter()
    out = run_map(items)
    dt = time.perf_counter() - t0
    if out != items:
        raise AssertionError("map returned wrong results")
    return {"map_s": dt, "map_tasks_per_s": m / dt}


# --------------------------------------------------------------------------- idds


def bench_idds(n_calls: int, n_map: int, in_process: bool, workers: int) -> dict[str, Any]:
    import idds_jupyter
    from idds_jupyter.client import Client, set_client

    with idds_server(in_process, workers) as (url, token):
        client = Client(url, token)
        set_client(client)
        try:
            f = idds_jupyter.work(trivial)
            before = client.cache_stats()
            res: dict[str, Any] = {"server": "in-process" if in_process else "subprocess"}
            res.update(_latency(f, n_calls))
            res.update(_throughput(f.map, n_map))
            after = client.cache_stats()
            res["blobs_added"] = after["count"] - before["count"]
            return res
        finally:
            set_client(None)
            client.shutdown()


# --------------------------------------------------------------------------- dask


def bench_dask(n_calls: int, n_map: int, workers: int) -> dict[str, Any]:
    from dask.distributed import Client as DaskClient
    from dask.distributed import LocalCluster

    with (
        LocalCluster(
            n_workers=workers, threads_per_worker=1, processes=True, dashboard_address=":0"
        ) as cluster,
        DaskClient(cluster) as dc,
    ):

        def call(i: int) -> Any:
            return dc.submit(trivial, i, pure=False).result()

        def run_map(items: list[int]) -> list[Any]:
            return list(dc.gather(dc.map(trivial, items, pure=False)))

        res: dict[str, Any] = {}
        res.update(_latency(call, n_calls))
        res.update(_throughput(run_map, n_map))
        return res


# --------------------------------------------------------------------------- report


def report(idds: dict[str, Any], dask: dict[str, Any] | None) -> str:
    rows = [
        ("p50 round trip (ms)", "p50_ms", False),
        ("p99 round trip (ms)", "p99_ms", False),
        ("mean round trip (ms)", "mean_ms", False),
        ("map throughput (tasks/s)", "map_tasks_per_s", True),
    ]
    out = [f"{'':28s}{'idds-jupyter':>14s}{'dask':>12s}{'idds/dask':>11s}{'target':>10s}{'ok':>5s}"]
    for label, key, higher in rows:
        a = idds[key]
        b = dask[key] if dask else float("nan")
        ratio = a / b if dask and b else float("nan")
        target = TARGETS.get(key)
        ok = "" if target is None else ("yes" if (a >= target if higher else a <= target) else "NO")
        tgt = "" if target is None else (f">={target:g}" if higher else f"<={target:g}")
        out.append(f"{label:28s}{a:14.2f}{b:12.2f}{ratio:11.2f}{tgt:>10s}{ok:>5s}")
    out.append(
        f"idds-jupyter: map of {idds.get('n_map')} in {idds['map_s']:.2f} s; "
        f"blobs added by the timed runs: {idds['blobs_added']}; server: {idds['server']}"
    )
    if dask:
        out.append(f"dask: map of {idds.get('n_map')} in {dask['map_s']:.2f} s")
    return "\n".join(out)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--calls", type=int, default=1000, help="round trips timed (default 1000)")
    p.add_argument("--map", type=int, default=10_000, help="items of the map (default 10000)")
    p.add_argument("--workers", type=int, default=2, help="worker processes on both sides")
    p.add_argument(
        "--in-process", action="store_true", help="server in this process (start_server)"
    )
    p.add_argument("--no-dask", action="store_true", help="skip the Dask baseline")
    p.add_argument("--json", action="store_true", help="print the numbers as JSON too")
    args = p.parse_args(argv)

    idds = bench_idds(args.calls, args.map, args.in_process, args.workers)
    idds["n_map"] = args.map
    dask = None if args.no_dask else bench_dask(args.calls, args.map, args.workers)
    print(report(idds, dask))
    if args.json:
        print(json.dumps({"idds": idds, "dask": dask, "targets": TARGETS}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
