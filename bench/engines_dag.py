"""The layered no-op DAG of bench/dag_release.py on every workload engine, next to the engine alone.

For each engine the DAG (``idds_jupyter.model.generators.layered_dag``: ``--jobs``
no-op jobs in ``--levels`` levels, each job waiting for 2 jobs of the level above)
runs through the orchestration core (Runner + Orchestrator, SQLite) with
``backend=<engine>``; jobs/s and the time to the first finished job are printed.
The same number of no-op jobs then runs on the engine without the core:

* local:    ``python -m idds_jupyter.worker --pool`` processes fed directly
            (``LocalBackend`` alone, all jobs at once, no DAG);
* dask:     the same DAG as plain Dask tasks on the same ``LocalCluster``;
* slurm:    ONE job array (``sbatch --array=0-N-1``) whose task i runs
            ``python -m idds_jupyter.worker --job spec-i.json --out result-i.json``;
* htcondor: ONE cluster (one ``Schedd.submit`` with N itemdata rows), same wrapper.

and the orchestration overhead ``(core wall - engine wall) / engine wall`` is
printed (target: <= 10 % for the batch systems). Slurm and HTCondor are started
on loopback with ``ci/engines/slurm.sh`` / ``ci/engines/htcondor.sh``.

    python bench/engines_dag.py --jobs 10000 --engine all
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from benchlib import time_dag

from idds_jupyter.agents.runner import Runner
from idds_jupyter.config import Config
from idds_jupyter.core import Orchestrator
from idds_jupyter.model.generators import NOOP, layered_dag

ROOT = Path(__file__).resolve().parent.parent
CI = ROOT / "ci" / "engines"
ENGINES = ["local", "dask", "slurm", "htcondor"]


@dataclass
class Figures:
    wall: float
    first: float | None
    n: int

    @property
    def rate(self) -> float:
        return self.n / self.wall if self.wall else 0.0


def start_engine(script: str) -> dict[str, str]:
    proc = subprocess.run(["bash", str(CI / script), "start"], capture_output=True, text=True,
                          timeout=900, stdin=subprocess.DEVNULL)
    if proc.returncode != 0:
        raise SystemExit(f"ci/engines/{script} start failed:\n{proc.stderr[-3000:]}")
    out = {}
    for line in proc.stdout.splitlines():
        k, sep, v = line.partition("=")
        if sep and k.isidentifier():
            out[k] = v
    return out


def noop_spec(i: int) -> dict[str, Any]:
    return {"job_id": i, "attempt": 0, "kind": "function", "function": NOOP, "kwargs": {}}


# --------------------------------------------------------------------------- through the core


def run_core(engine: str, n: int, levels: int, home: Path, options: dict[str, Any]) -> Figures:


    cfg = Config.load(None, home=home, db_url=f"sqlite:///{home / 'idds.db'}", backend=engine,
                      backends=(engine,), workers=options.pop("workers", 2), poll_interval=1.0,
                      batch_poll_interval=1.0, **options)
    wf = layered_dag(n, levels)
    with Runner(cfg) as runner:
        r = time_dag(Orchestrator(cfg, engine=runner.engine, bus=runner.bus), wf)
    status, wall, t_first, n_jobs, n_ok = r.status, r.wall, r.first, r.n_jobs, r.succeeded
    if status != "finished" or n_ok != n_jobs:
        raise SystemExit(f"{engine}: the DAG ended {status} with {n_ok}/{n_jobs} jobs succeeded")
    return Figures(wall, t_first, n_jobs)


# --------------------------------------------------------------------------- the engine alone


def raw_local(n: int, workers: int) -> Figures:
    from idds_jupyter.backends import make_backend

    b = make_backend("local", workers=workers)
    try:
        t0 = time.perf_counter()
        b.submit([noop_spec(i) for i in range(n)])
        done, first = 0, None
        while done < n:
            got = [r for r in b.results(1.0) if "ok" in r]
            if got and first is None:
                first = time.perf_counter() - t0
            done += len(got)
        return Figures(time.perf_counter() - t0, first, n)
    finally:
        b.close()


def _noop(*_parents: object) -> None:
    return None


def raw_dask(n: int, levels: int, address: str) -> Figures:
    from distributed import Client

    sizes = [n // levels + (1 if i < n % levels else 0) for i in range(levels)]
    dsk: dict[str, tuple[object, ...]] = {}
    for i, size in enumerate(sizes):
        for j in range(size):
            up = sizes[i - 1] if i else 0
            dsk[f"L{i}-{j}"] = (_noop,) if i == 0 else \
                (_noop, f"L{i - 1}-{j % up}", f"L{i - 1}-{(j + 1) % up}")
    last = [f"L{levels - 1}-{j}" for j in range(sizes[-1])]
    with Client(address) as client:
        t0 = time.perf_counter()
        client.get(dsk, last, sync=True)
        wall = time.perf_counter() - t0
    return Figures(wall, None, len(dsk))


def _write_specs(d: Path, n: int) -> None:
    d.mkdir(parents=True, exist_ok=True)
    d.chmod(0o777)
    for i in range(n):
        (d / f"spec-{i}.json").write_text(json.dumps(noop_spec(i)))


def _wait_results(d: Path, n: int, t0: float, timeout: float, what: str) -> Figures:
    first = None
    while True:
        count = sum(1 for e in os.scandir(d) if e.name.startswith("result-")
                    and not e.name.endswith(".tmp"))
        now = time.perf_counter()
        if count and first is None:
            first = now - t0
        if count >= n:
            return Figures(now - t0, first, n)
        if now - t0 > timeout:
            raise SystemExit(f"{what}: only {count}/{n} results after {timeout:g} s")
        time.sleep(0.2)


def raw_slurm(n: int, work: Path, timeout: float) -> Figures:
    d = work / "raw-slurm"
    _write_specs(d, n)
    script = d / "job.sh"
    script.write_text("#!/bin/sh\n"
                      f"exec {sys.executable} -m idds_jupyter.worker"
                      f" --job {d}/spec-$SLURM_ARRAY_TASK_ID.json"
                      f" --out {d}/result-$SLURM_ARRAY_TASK_ID.json\n")
    script.chmod(0o755)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(
        p for p in (str(ROOT), os.environ.get("PYTHONPATH", "")) if p)}
    t0 = time.perf_counter()
    out = subprocess.run(["sbatch", "--parsable", f"--array=0-{n - 1}", "--job-name=raw-bench",
                          f"--output={d}/task-%a.log", f"--chdir={d}", "--export=ALL",
                          "--no-requeue", str(script)], capture_output=True, text=True,
                         check=True, env=env).stdout.strip()
    try:
        return _wait_results(d, n, t0, timeout, "slurm array")
    finally:
        subprocess.run(["scancel", out.split(";")[0]], capture_output=True)


def raw_htcondor(n: int, work: Path, schedd: str, token: str, timeout: float) -> Figures:
    from idds_jupyter.backends.htcondor import _import_htcondor

    d = work / "raw-condor"
    _write_specs(d, n)
    token_dir = tempfile.mkdtemp(prefix="idds-bench-token-")
    shutil.copyfile(token, os.path.join(token_dir, "idds"))
    os.chmod(os.path.join(token_dir, "idds"), 0o600)
    htc = _import_htcondor(token_dir)
    coll = htc.Collector(schedd)
    sd = htc.Schedd(coll.locate(htc.DaemonType.Schedd))
    pp = os.pathsep.join(p for p in (str(ROOT), os.environ.get("PYTHONPATH", "")) if p)
    sub = htc.Submit({
        "universe": "vanilla", "executable": sys.executable, "transfer_executable": "false",
        "arguments": f"-m idds_jupyter.worker --job {d}/spec-$(idx).json"
                     f" --out {d}/result-$(idx).json",
        "initialdir": str(d), "output": f"{d}/task-$(idx).log", "error": f"{d}/task-$(idx).log",
        "log": f"{d}/events.log", "should_transfer_files": "NO",
        "environment": f"\"PYTHONPATH='{pp}'\"",
    })
    t0 = time.perf_counter()
    result = sd.submit(sub, itemdata=iter([{"idx": str(i)} for i in range(n)]))
    try:
        return _wait_results(d, n, t0, timeout, "htcondor cluster")
    finally:
        sd.act(htc.JobAction.Remove, f"ClusterId == {result.cluster()}")
        shutil.rmtree(token_dir, ignore_errors=True)


# --------------------------------------------------------------------------- main


def fmt(f: Figures | None) -> tuple[str, str]:
    if f is None:
        return "-", "-"
    first = f"{f.first:.2f} s" if f.first is not None else "-"
    return f"{f.rate:,.0f}", first


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--jobs", type=int, default=10_000)
    ap.add_argument("--levels", type=int, default=3)
    ap.add_argument("--workers", type=int, default=2, help="local / Dask worker processes")
    ap.add_argument("--engine", choices=[*ENGINES, "all"], default="all")
    ap.add_argument("--timeout", type=float, default=7200, help="per run, seconds")
    args = ap.parse_args()
    engines = ENGINES if args.engine == "all" else [args.engine]
    print(f"DAG: {args.jobs:,} no-op jobs in {args.levels} levels (each waits for 2 jobs of the "
          f"level above); {os.cpu_count()} cores", flush=True)
    rows: list[tuple[str, Figures, Figures | None, str]] = []
    for engine in engines:
        work = Path(tempfile.mkdtemp(prefix=f"idds-bench-{engine}-", dir="/tmp"))
        work.chmod(0o777)
        try:
            raw: Figures | None = None
            note = ""
            if engine == "local":
                core = run_core(engine, args.jobs, args.levels, work / "home",
                                {"workers": args.workers})
                raw = raw_local(args.jobs, args.workers)
                note = "engine alone: LocalBackend fed all jobs at once"
            elif engine == "dask":
                from distributed import LocalCluster

                with LocalCluster(n_workers=args.workers, threads_per_worker=1, processes=True,
                                  dashboard_address=None) as cluster:
                    core = run_core(engine, args.jobs, args.levels, work / "home",
                                    {"dask_address": cluster.scheduler_address})
                    raw = raw_dask(args.jobs, args.levels, cluster.scheduler_address)
                note = "engine alone: same DAG as plain Dask tasks (no wrapper)"
            elif engine == "slurm":
                env = start_engine("slurm.sh")
                os.environ["SLURM_CONF"] = env["SLURM_CONF"]
                core = run_core(engine, args.jobs, args.levels, work / "home",
                                {"shared_dir": str(work / "batch")})
                raw = raw_slurm(args.jobs, work, args.timeout)
                note = "engine alone: ONE array of the wrapper"
            else:
                env = start_engine("htcondor.sh")
                (work / "home").mkdir()
                (work / "home").chmod(0o777)
                core = run_core(engine, args.jobs, args.levels, work / "home",
                                {"shared_dir": str(work / "batch"),
                                 "condor_schedd": env["CONDOR_SCHEDD"],
                                 "condor_token": env["CONDOR_TOKEN"]})
                raw = raw_htcondor(args.jobs, work, env["CONDOR_SCHEDD"], env["CONDOR_TOKEN"],
                                   args.timeout)
                note = "engine alone: ONE cluster of the wrapper"
        finally:
            shutil.rmtree(work, ignore_errors=True)
        rows.append((engine, core, raw, note))
        c_rate, c_first = fmt(core)
        r_rate, r_first = fmt(raw)
        over = (core.wall - raw.wall) / raw.wall * 100 if raw else float("nan")
        print(f"{engine:9s} core {core.wall:8.1f} s {c_rate:>7s} jobs/s first {c_first:>8s} | "
              f"alone {raw.wall if raw else float('nan'):8.1f} s {r_rate:>7s} jobs/s first "
              f"{r_first:>8s} | overhead {over:+.0f} %  ({note})", flush=True)
    print()
    print(f"{'engine':9s} | {'core jobs/s':>11s} | {'core 1st job':>12s} | {'alone jobs/s':>12s} | "
          f"{'alone 1st job':>13s} | overhead")
    for engine, core, raw, _ in rows:
        c_rate, c_first = fmt(core)
        r_rate, r_first = fmt(raw)
        over = f"{(core.wall - raw.wall) / raw.wall * 100:+.0f} %" if raw else "-"
        print(f"{engine:9s} | {c_rate:>11s} | {c_first:>12s} | {r_rate:>12s} | {r_first:>13s} | "
              f"{over}")


if __name__ == "__main__":
    main()
