"""HPO dispatch overhead: N trials of a fixed-duration objective with ``parallel`` in flight.

One run measures a :class:`idds_jupyter.hpo.Study` against a real server
(``idds-jupyter serve`` in a subprocess with ``--workers`` local workers, or
``--in-process``): wall time from the study's start to its end, against the
ideal ``trials × duration / parallel`` (every slot busy all the time), and the
overhead in percent. Reference: Ray Tune reports about 14 % on its own scale
test; the targets here (issue 23) are ≤ 3 % steered by the server (the default) and
≤ 5 % steered by the client with a pruner (``client`` runs pass Optuna's
``MedianPruner``, which is what makes a study client-steered; with no ``budgets``
each trial is one rung, so this is the dispatch path every rung takes).

The same study is also run with Optuna's own ``study.optimize(n_jobs=parallel)``
(threads, in this process, no distribution) as the floor a local loop reaches.

    .venv/bin/python bench/hpo_overhead.py [--trials 200] [--trial-seconds 0.1] [--parallel 8]
        [--sampler random|tpe] [--workers 8] [--prefetch 0,8] [--steer client,server]
        [--repeat 3] [--quality-seeds 10] [--quality-trials 100] [--in-process]
        [--no-optuna] [--json]

Quality (``--quality-seeds N``, 0 to leave it out): TPE on the Branin function
(global minimum 0.397887) for ``--quality-trials`` trials, server-steered, for
seeds 0..N-1, at parallel 1 and ``--parallel``, each with Optuna's
``constant_liar`` on and off (``sampler_options``; on is what a parallel study
gets by default). It prints the best value per seed and their median: how much a
parallel study loses against a sequential one, and how much the liar wins back.

Each ``--steer`` value runs the study with its sampler in this process (``client``)
or in the server's Steerer (``server``); ``--prefetch`` applies to the client.
Each study runs ``--repeat`` times (default 3) on the same server: the figures
are the median run's, with the fastest and slowest runs' overhead beside them
(a shared 2-core machine moves a single run by a point or two either way).

Under each of those lines, where the overhead of the median run went, from the
jobs' own start and end times (the ``monitor`` endpoint), in milliseconds of
wall time (slot time / parallel; they add up to wall - ideal): ``start`` (the
study's start to each slot's first trial), ``gaps`` (a trial's end to the next
trial's start in a slot), ``tail`` (each slot's last end to the study's end;
``end`` is the last trial's end to ``optimize()`` returning, included in it), and
``jobs`` (trials running longer than the objective's duration).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from typing import Any

TARGET_OVERHEAD_PCT = {"server": 3.0, "client": 5.0}
BRANIN_MIN = 0.397887


from benchlib import idds_server  # noqa: E402


def objective(x: float, duration: float = 0.1) -> float:
    time.sleep(duration)
    return (x - 0.3) ** 2


def branin(x1: float, x2: float) -> float:
    import math

    b, c, t = 5.1 / (4 * math.pi**2), 5 / math.pi, 1 / (8 * math.pi)
    return (x2 - b * x1**2 + c * x1 - 6) ** 2 + 10 * (1 - t) * math.cos(x1) + 10


def bench_quality(args: argparse.Namespace, client: Any) -> list[dict[str, Any]]:
    """Best Branin value per seed: parallel 1 and ``--parallel``, constant_liar on and off."""
    from idds_jupyter.hpo import Study, uniform

    space = {"x1": uniform(-5, 10), "x2": uniform(0, 15)}
    rows = []
    for parallel in sorted({1, args.parallel}):
        for liar in (True, False):
            bests = []
            for seed in range(args.quality_seeds):
                study = Study(
                    branin,
                    space,
                    max_trials=args.quality_trials,
                    parallel=parallel,
                    sampler="tpe",
                    sampler_options={"constant_liar": liar},
                    seed=seed,
                    name="quality",
                    client=client,
                )
                study.optimize(timeout=600)
                bests.append(study.best_value)
            rows.append({"parallel": parallel, "constant_liar": liar, "best": bests})
    return rows


def bench_idds(
    args: argparse.Namespace,
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """The study once per ``--steer`` and ``--prefetch`` value, on one server (warmed up first);
    then the quality runs."""
    import functools

    import optuna

    from idds_jupyter.client import Client, set_client
    from idds_jupyter.hpo import Study, uniform

    fn = functools.partial(objective, duration=args.duration)
    ideal = args.trials * args.duration / args.parallel
    out = []
    quality: list[dict[str, Any]] = []
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    with idds_server(args.in_process, args.workers) as (url, token):
        client = Client(url, token)
        set_client(client)
        try:
            # warm up: the server's first request, the workers' imports, the push channel
            Study(
                fn,
                {"x": uniform(0, 1)},
                max_trials=2 * args.parallel,
                parallel=args.parallel,
                sampler="random",
                seed=0,
                name="warmup",
                client=client,
            ).optimize(timeout=120)
            runs = [
                (steer, p)
                for steer in args.steer
                for p in (args.prefetch if steer == "client" else [0])
            ]
            for steer, prefetch in runs:
                walls, last = [], None
                spans: list[tuple[int, float, float]] = []  # (run, epoch start, epoch end)
                for _ in range(args.repeat):
                    study = Study(
                        fn,
                        {"x": uniform(0, 1)},
                        max_trials=args.trials,
                        parallel=args.parallel,
                        sampler=args.sampler,
                        seed=1,
                        name="overhead",
                        prefetch=prefetch,
                        steer=steer,
                        pruner=optuna.pruners.MedianPruner() if steer == "client" else None,
                        client=client,
                    )
                    e0, t0 = time.time(), time.perf_counter()
                    df = study.optimize(timeout=600)
                    walls.append(time.perf_counter() - t0)
                    assert study.run_id is not None
                    spans.append((study.run_id, e0, e0 + walls[-1]))
                    complete = int((df["state"] == "COMPLETE").sum())
                    if complete != args.trials:
                        raise SystemExit(
                            f"{steer} prefetch={prefetch}: {complete} of "
                            f"{args.trials} trials completed"
                        )
                    last = study
                assert last is not None and last.run_id is not None
                median = sorted(range(len(walls)), key=walls.__getitem__)[len(walls) // 2]
                out.append(
                    {
                        "engine": f"idds-jupyter {steer} prefetch={prefetch}",
                        "trials": args.trials,
                        **_figures(walls, ideal, args.trials),
                        "best": last.best_value,
                        "works": len(client.status(last.run_id)["works"]),
                        "breakdown_ms": _breakdown(client, *spans[median], args),
                    }
                )
            if args.quality_seeds:
                quality = bench_quality(args, client)
        finally:
            set_client(None)
            client.shutdown()
    return out, quality


def _breakdown(
    client: Any, run_id: int, t0: float, t1: float, args: argparse.Namespace
) -> dict[str, float]:
    """Where one run's overhead went (see the module's docstring), in ms of wall time."""
    runs: list[tuple[float, float]] = []
    for w in client.status(run_id)["works"]:
        offset = 0
        while True:
            page = client.jobs(run_id, w["name"], offset=offset, limit=500)
            runs += [
                (j["started_at"], j["finished_at"])
                for j in page["jobs"]
                if j["status"] == "finished" and j["started_at"] and j["finished_at"]
            ]
            offset += len(page["jobs"])
            if not page["jobs"] or offset >= page["total"]:
                break
    n = args.parallel
    starts = sorted(s for s, _ in runs)[:n]
    ends = sorted(e for _, e in runs)[-n:]
    busy = sum(e - s for s, e in runs)
    start = sum(s - t0 for s in starts)
    tail = sum(t1 - e for e in ends)
    idle = n * (t1 - t0) - busy
    return {
        "start": 1e3 * start / n,
        "gaps": 1e3 * (idle - start - tail) / n,
        "tail": 1e3 * tail / n,
        "end": 1e3 * (t1 - max(ends)),
        "jobs": 1e3 * (busy - len(runs) * args.duration) / n,
    }


def bench_optuna(args: argparse.Namespace) -> dict[str, Any]:
    import optuna

    from idds_jupyter.hpo import make_sampler, uniform

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    space: dict[str, Any] = {"x": uniform(0, 1)}
    ideal = args.trials * args.duration / args.parallel
    walls = []
    for _ in range(args.repeat):
        st = optuna.create_study(sampler=make_sampler(args.sampler, 1, space))
        t0 = time.perf_counter()
        st.optimize(
            lambda t: objective(t.suggest_float("x", 0, 1), args.duration),
            n_trials=args.trials,
            n_jobs=args.parallel,
        )
        walls.append(time.perf_counter() - t0)
    return {
        "engine": "optuna n_jobs (threads, local)",
        "trials": args.trials,
        **_figures(walls, ideal, args.trials),
    }


def _figures(walls: list[float], ideal: float, trials: int) -> dict[str, Any]:
    """The median run's wall time and overhead; every run's overhead, for the spread."""
    import statistics

    wall = statistics.median(walls)
    return {
        "wall_s": wall,
        "ideal_s": ideal,
        "overhead_pct": 100 * (wall - ideal) / ideal,
        "runs_overhead_pct": [100 * (w - ideal) / ideal for w in walls],
        "trials_per_s": trials / wall,
    }


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--trials", type=int, default=200)
    p.add_argument("--duration", "--trial-seconds", dest="duration", type=float, default=0.1)
    p.add_argument("--parallel", type=int, default=8)
    p.add_argument("--sampler", default="random")
    p.add_argument("--workers", type=int, default=None, help="server workers (default: parallel)")
    p.add_argument(
        "--prefetch",
        type=lambda v: [int(x) for x in v.split(",")],
        default=None,
        help="extra trials queued at the backend beyond the parallel ones; a comma "
        "list runs the study once per value (default: 0 and --parallel)",
    )
    p.add_argument(
        "--steer",
        type=lambda v: v.split(","),
        default=["client", "server"],
        help="where the sampler runs: client, server, or both (default)",
    )
    p.add_argument(
        "--repeat",
        type=int,
        default=3,
        help="runs of each study; the median is reported (default 3)",
    )
    p.add_argument("--quality-seeds", type=int, default=10, help="0: no quality table")
    p.add_argument("--quality-trials", type=int, default=100)
    p.add_argument("--in-process", action="store_true")
    p.add_argument("--no-optuna", action="store_true")
    p.add_argument("--json", action="store_true")
    args = p.parse_args(argv)
    if args.repeat < 1:
        p.error("--repeat must be at least 1")
    args.workers = args.workers or args.parallel
    args.prefetch = args.prefetch if args.prefetch is not None else [0, args.parallel]
    results, quality = bench_idds(args)
    if not args.no_optuna:
        results.append(bench_optuna(args))
    if args.json:
        print(json.dumps({"overhead": results, "quality": quality}, indent=2))
        return 0
    print(
        f"{args.trials} trials of a {args.duration} s objective, parallel={args.parallel}, "
        f"sampler={args.sampler}, {args.workers} workers; "
        f"ideal {args.trials * args.duration / args.parallel:.2f} s; median of {args.repeat} runs"
    )
    for r in results:
        works = f"   {r['works']} works" if "works" in r else ""
        runs = r["runs_overhead_pct"]
        print(
            f"  {r['engine']:40s} wall {r['wall_s']:7.2f} s   overhead {r['overhead_pct']:6.1f} % "
            f"({min(runs):.1f} .. {max(runs):.1f})   {r['trials_per_s']:6.1f} trials/s{works}"
        )
        if "breakdown_ms" in r:
            b = r["breakdown_ms"]
            print(
                f"  {'':40s} ms: start {b['start']:.0f} + gaps {b['gaps']:.0f} + tail "
                f"{b['tail']:.0f} (end {b['end']:.0f}) + jobs {b['jobs']:.0f}"
            )
    # Judged without prefetch: with it more than `parallel` trials are handed out at once
    # (queued at the backend), which is not what `parallel` promises.
    # A study steers from the server by default; from the client only when it must (pruning,
    # a sampler object), at the cost of a round trip to the kernel per trial.
    strict = [r for r in results if r["engine"].endswith(" prefetch=0")]
    for r in strict:
        steer = "server" if " server " in r["engine"] else "client"
        target = TARGET_OVERHEAD_PCT[steer]
        ok = r["overhead_pct"] <= target
        kind = "the default" if steer == "server" else "with a pruner"
        print(
            f"target overhead <= {target:.0f} % ({r['engine']}, {kind}): "
            f"{'met' if ok else 'NOT met'} ({r['overhead_pct']:.1f} %)"
        )
    if quality:
        _print_quality(quality, args)
    return 0


def _print_quality(rows: list[dict[str, Any]], args: argparse.Namespace) -> None:
    import statistics

    print(
        f"quality: best Branin value (min {BRANIN_MIN}) after {args.quality_trials} TPE trials, "
        f"server-steered, seeds 0..{args.quality_seeds - 1}"
    )
    print(f"  {'parallel':>8s} {'constant_liar':>13s} {'median':>9s} {'worst':>9s}   per seed")
    for r in rows:
        b = r["best"]
        print(
            f"  {r['parallel']:8d} {'on' if r['constant_liar'] else 'off':>13s} "
            f"{statistics.median(b):9.5f} {max(b):9.5f}   {' '.join(f'{v:.4f}' for v in b)}"
        )


if __name__ == "__main__":
    sys.exit(main())
