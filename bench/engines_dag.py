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
            ``python -P -m idds_jupyter.worker --job spec-i.json --out result-i.json``
            (the command line the backend gives its tasks);
* htcondor: ONE cluster (one ``Schedd.submit`` with N itemdata rows), same wrapper.

and the orchestration overhead ``(core wall - engine wall) / engine wall`` is
printed (target: <= 10 % for the batch systems), with the ratio of the two
rates (``rate x``; target for Dask: >= 0.8, the Dask backend grouping jobs per
Dask task, see ``idds_jupyter.backends.dask_backend``). Slurm and HTCondor are started
on loopback with ``ci/engines/slurm.sh`` / ``ci/engines/htcondor.sh``.

Time to the first job is, on both sides, submission to the end of the first
job as the job itself recorded it (the wrapper's ``finished_at``). The spec
files of the hand submission are written before its clock starts; the core
writes its own while its clock runs. ``busy`` is the share of the machine's
CPU time used (by anything) during a run, ``cpu`` the CPU seconds of this
process (the core's agents run in it) — other load on the machine shows there.

    python bench/engines_dag.py --jobs 10000 --engine all
    python bench/engines_dag.py --jobs 10000 --engine slurm --results /tmp/engines.json
    python bench/engines_dag.py --jobs 10000 --engine htcondor --results /tmp/engines.json

With ``--results FILE`` each engine's row is merged into FILE (JSON) and the
table printed at the end holds every row in FILE, so engines run one at a time
still end up side by side.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import psutil
from benchlib import time_dag

from idds_jupyter.agents.runner import Runner
from idds_jupyter.backends.batch import worker_command
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
    busy: float = float("nan")  # share of the machine's CPU time in use during the run, %
    cpu_here: float = float("nan")  # CPU s of this process and its reaped children (sbatch, ...)
    cpu_engine: float = float("nan")  # CPU s of the engine's daemons and jobs (cgroup)

    @property
    def rate(self) -> float:
        return self.n / self.wall if self.wall else 0.0

    @property
    def cpu(self) -> float:
        """All the CPU the run cost: this process, its children, the engine and its jobs."""
        return self.cpu_here + (0.0 if self.cpu_engine != self.cpu_engine else self.cpu_engine)


class EngineCPU:
    """CPU seconds of an engine's processes and of everything they start, through a cgroup.

    The engine's daemons (and the Dask workers) are moved into the cgroup
    ``idds-bench-<engine>`` (cgroup v1 ``cpuacct``, else cgroup v2 ``cpu.stat``);
    the jobs they start inherit it. Best effort: without cgroups (or root) the
    figure is absent.
    """

    def __init__(self, engine: str) -> None:
        self.dir: Path | None = None
        self.v1 = False
        v1 = Path("/sys/fs/cgroup/cpuacct")
        root = v1 if (v1 / "cpuacct.usage").exists() else _cgroup2_mount()
        if root is None:
            return
        try:
            d = root / f"idds-bench-{engine}"
            d.mkdir(exist_ok=True)
        except OSError:
            return
        self.dir, self.v1 = d, root == v1

    def add(self, pids: list[int]) -> None:
        if self.dir is None:
            return
        for pid in pids:
            with contextlib.suppress(OSError):
                (self.dir / "cgroup.procs").write_text(f"{pid}\n")

    def seconds(self) -> float:
        if self.dir is None:
            return float("nan")
        try:
            if not (self.dir / "cgroup.procs").read_text().strip():
                return float("nan")  # nothing of the engine in it
            if self.v1:
                return int((self.dir / "cpuacct.usage").read_text()) / 1e9
            for line in (self.dir / "cpu.stat").read_text().splitlines():
                if line.startswith("usage_usec "):
                    return int(line.split()[1]) / 1e6
        except (OSError, ValueError):
            pass
        return float("nan")


def _cgroup2_mount() -> Path | None:
    try:
        with open("/proc/mounts", encoding="utf-8") as fh:
            for line in fh:
                parts = line.split()
                if len(parts) > 2 and parts[2] == "cgroup2" and not parts[1].startswith("/var/"):
                    return Path(parts[1])
    except OSError:
        pass
    return None


#: the engine being measured (set by measure())
ENGINE_CPU: EngineCPU | None = None


class Meter:
    """CPU use during a run: the whole machine's (/proc/stat), this process's and its reaped
    children's, and the engine's (:data:`ENGINE_CPU`)."""

    def __enter__(self) -> Meter:
        self.stat0 = _proc_stat()
        self.here0 = _cpu_here()
        self.engine0 = ENGINE_CPU.seconds() if ENGINE_CPU else float("nan")
        return self

    def __exit__(self, *exc: object) -> None:
        stat1 = _proc_stat()
        self.cpu_here = _cpu_here() - self.here0
        self.cpu_engine = (ENGINE_CPU.seconds() if ENGINE_CPU else float("nan")) - self.engine0
        if self.stat0 and stat1:
            total = stat1[0] - self.stat0[0]
            idle = stat1[1] - self.stat0[1]
            self.busy = 100.0 * (total - idle) / total if total else float("nan")
        else:
            self.busy = float("nan")

    def mark(self, f: Figures) -> Figures:
        f.busy, f.cpu_here, f.cpu_engine = self.busy, self.cpu_here, self.cpu_engine
        return f


def _cpu_here() -> float:
    ch = resource.getrusage(resource.RUSAGE_CHILDREN)
    return time.process_time() + ch.ru_utime + ch.ru_stime


def _proc_stat() -> tuple[int, int] | None:
    try:
        with open("/proc/stat", encoding="ascii") as fh:
            fields = [int(x) for x in fh.readline().split()[1:]]
    except (OSError, ValueError):
        return None
    return sum(fields[:8]), fields[3] + fields[4]  # total (without guest), idle + iowait


def start_engine(script: str, restart: bool = False) -> dict[str, str]:
    if restart:
        subprocess.run(
            ["bash", str(CI / script), "stop"],
            capture_output=True,
            timeout=300,
            stdin=subprocess.DEVNULL,
        )
    proc = subprocess.run(
        ["bash", str(CI / script), "start"],
        capture_output=True,
        text=True,
        timeout=900,
        stdin=subprocess.DEVNULL,
    )
    if proc.returncode != 0:
        raise SystemExit(f"ci/engines/{script} start failed:\n{proc.stderr[-3000:]}")
    out = {}
    for line in proc.stdout.splitlines():
        k, sep, v = line.partition("=")
        if sep and k.isidentifier():
            out[k] = v
    return out


def engine_settings(engine: str, env: dict[str, str]) -> str:
    """What the engine was configured with (slots, scheduler settings), for the record."""
    try:
        if engine == "slurm":
            node = subprocess.run(
                ["scontrol", "show", "node"], capture_output=True, text=True, timeout=30
            ).stdout
            cpus = next((w.split("=", 1)[1] for w in node.split() if w.startswith("CPUTot=")), "?")
            conf = subprocess.run(
                ["scontrol", "show", "config"], capture_output=True, text=True, timeout=30
            ).stdout
            sched = next(
                (
                    ln.split("=", 1)[1].strip()
                    for ln in conf.splitlines()
                    if ln.startswith("SchedulerParameters")
                ),
                "?",
            )
            return f"node CPUs={cpus}; SchedulerParameters={sched}"
        if engine == "htcondor":
            out = subprocess.run(
                [
                    "chroot",
                    env.get("CONDOR_ROOT", "/"),
                    "/usr/bin/env",
                    "-i",
                    "PATH=/usr/sbin:/usr/bin:/sbin:/bin",
                    "condor_config_val",
                    "NUM_CPUS",
                    "CLAIM_WORKLIFE",
                    "NEGOTIATOR_INTERVAL",
                ],
                capture_output=True,
                text=True,
                timeout=30,
            ).stdout.split()
            return f"NUM_CPUS={out[0]}, CLAIM_WORKLIFE={out[1]}, NEGOTIATOR_INTERVAL={out[2]}"
    except (OSError, subprocess.SubprocessError, ValueError, IndexError):
        pass
    return ""


def noop_spec(i: int) -> dict[str, Any]:
    return {"job_id": i, "attempt": 0, "kind": "function", "function": NOOP, "kwargs": {}}


# --------------------------------------------------------------------------- through the core


def run_core(engine: str, n: int, levels: int, home: Path, options: dict[str, Any]) -> Figures:
    cfg = Config.load(
        None,
        home=home,
        db_url=f"sqlite:///{home / 'idds.db'}",
        backend=engine,
        backends=(engine,),
        workers=options.pop("workers", 2),
        poll_interval=1.0,
        batch_poll_interval=1.0,
        **options,
    )
    wf = layered_dag(n, levels)
    with Meter() as m, Runner(cfg) as runner:
        r = time_dag(Orchestrator(cfg, engine=runner.engine, bus=runner.bus), wf)
    status, wall, t_first, n_jobs, n_ok = r.status, r.wall, r.first, r.n_jobs, r.succeeded
    if status != "finished" or n_ok != n_jobs:
        raise SystemExit(f"{engine}: the DAG ended {status} with {n_ok}/{n_jobs} jobs succeeded")
    if r.max_release != 1 or r.max_success != 1:
        raise SystemExit(
            f"{engine}: a job was released {r.max_release} or succeeded {r.max_success} times"
        )
    return m.mark(Figures(wall, t_first, n_jobs))


# --------------------------------------------------------------------------- the engine alone


def raw_local(n: int, workers: int) -> Figures:
    from idds_jupyter.backends import make_backend

    with Meter() as m:  # the worker processes are started and reaped inside (their CPU counts)
        b = make_backend("local", workers=workers)
        try:
            # as in the core, whose backend is up before the clock starts: one job first
            b.submit([noop_spec(-1)])
            while not any("ok" in r for r in b.results(1.0)):
                pass
            t0, t0_epoch = time.perf_counter(), time.time()
            b.submit([noop_spec(i) for i in range(n)])
            done, first = 0, None
            while done < n:
                got = [r for r in b.results(1.0) if "ok" in r]
                if got and first is None:
                    first = min(float(r.get("finished_at") or time.time()) for r in got) - t0_epoch
                done += len(got)
            wall = time.perf_counter() - t0
        finally:
            b.close()
    return m.mark(Figures(wall, first, n))


def _noop(*_parents: object) -> float:
    return time.time()


def raw_dask(n: int, levels: int, address: str) -> Figures:
    from distributed import Client

    sizes = [n // levels + (1 if i < n % levels else 0) for i in range(levels)]
    dsk: dict[str, tuple[object, ...]] = {}
    for i, size in enumerate(sizes):
        for j in range(size):
            up = sizes[i - 1] if i else 0
            dsk[f"L{i}-{j}"] = (
                (_noop,) if i == 0 else (_noop, f"L{i - 1}-{j % up}", f"L{i - 1}-{(j + 1) % up}")
            )
    last = [f"L{levels - 1}-{j}" for j in range(sizes[-1])]
    first_level = [f"L0-{j}" for j in range(sizes[0])] if levels > 1 else []
    with Client(address) as client, Meter() as m:
        t0, t0_epoch = time.perf_counter(), time.time()
        ends = client.get(dsk, last + first_level, sync=True)
        wall = time.perf_counter() - t0
    return m.mark(Figures(wall, min(ends) - t0_epoch, len(dsk)))


def _write_specs(d: Path, n: int) -> None:
    d.mkdir(parents=True, exist_ok=True)
    d.chmod(0o777)
    for i in range(n):
        (d / f"spec-{i}.json").write_text(json.dumps(noop_spec(i)))


def _first_end(d: Path, names: list[str]) -> float | None:
    ends = []
    for name in names:
        try:
            ends.append(float(json.loads((d / name).read_text())["finished_at"]))
        except (OSError, ValueError, KeyError, TypeError):
            continue
    return min(ends) if ends else None


def _wait_results(
    d: Path, n: int, t0: float, t0_epoch: float, timeout: float, what: str
) -> Figures:
    """Wait for result-0.json … result-(n-1).json, cheaply: tasks end in about index order,
    so each look stats only the lowest indexes still missing (listing a directory of 3 n
    files five times a second cost as much CPU as the core's own work)."""
    missing = list(range(n))  # ascending
    first = None
    while True:
        found = [i for i in missing[:_WINDOW] if os.path.exists(d / f"result-{i}.json")]
        now = time.perf_counter()
        if found:
            gone = set(found)
            missing = [i for i in missing if i not in gone]
            if first is None:
                end = _first_end(d, [f"result-{i}.json" for i in found])
                first = (end - t0_epoch) if end is not None else now - t0
        if not missing:
            return Figures(now - t0, first, n)
        if now - t0 > timeout:
            raise SystemExit(f"{what}: only {n - len(missing)}/{n} results after {timeout:g} s")
        time.sleep(0.2)


#: how many of the lowest missing result files each look checks
_WINDOW = 500


def raw_slurm(n: int, work: Path, timeout: float) -> Figures:
    d = work / "raw-slurm"
    _write_specs(d, n)
    script = d / "job.sh"
    argv = worker_command(sys.executable, str(d), "$SLURM_ARRAY_TASK_ID")
    script.write_text(f"#!/bin/sh\nexec {' '.join(argv)}\n")
    script.chmod(0o755)
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join(
            p for p in (str(ROOT), os.environ.get("PYTHONPATH", "")) if p
        ),
    }
    with Meter() as m:
        t0, t0_epoch = time.perf_counter(), time.time()
        out = subprocess.run(
            [
                "sbatch",
                "--parsable",
                f"--array=0-{n - 1}",
                "--job-name=raw-bench",
                f"--output={d}/task-%a.log",
                f"--chdir={d}",
                "--export=ALL",
                "--no-requeue",
                str(script),
            ],
            capture_output=True,
            text=True,
            check=True,
            env=env,
        ).stdout.strip()
        try:
            f = _wait_results(d, n, t0, t0_epoch, timeout, "slurm array")
        finally:
            subprocess.run(["scancel", out.split(";")[0]], capture_output=True)
    return m.mark(f)


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
    sub = htc.Submit(
        {
            "universe": "vanilla",
            "executable": sys.executable,
            "transfer_executable": "false",
            "arguments": " ".join(worker_command(sys.executable, str(d), "$(idx)")[1:]),
            "initialdir": str(d),
            "output": f"{d}/task-$(idx).log",
            "error": f"{d}/task-$(idx).log",
            "log": f"{d}/events.log",
            "should_transfer_files": "NO",
            "environment": f"\"PYTHONPATH='{pp}'\"",
        }
    )
    with Meter() as m:
        t0, t0_epoch = time.perf_counter(), time.time()
        result = sd.submit(sub, itemdata=iter([{"idx": str(i)} for i in range(n)]))
        try:
            f = _wait_results(d, n, t0, t0_epoch, timeout, "htcondor cluster")
        finally:
            sd.act(htc.JobAction.Remove, f"ClusterId == {result.cluster()}")
            shutil.rmtree(token_dir, ignore_errors=True)
    return m.mark(f)


# --------------------------------------------------------------------------- main


@dataclass
class Row:
    engine: str
    jobs: int
    levels: int
    core: Figures
    raw: Figures
    alone: str  # what "the engine alone" was
    settings: str  # the engine's configuration
    when: str

    @property
    def overhead(self) -> float:
        return (self.core.wall - self.raw.wall) / self.raw.wall * 100

    @property
    def ratio(self) -> float:
        """The core's jobs/s over the engine alone's (issue 23: >= 0.8 for Dask)."""
        return self.core.rate / self.raw.rate if self.raw.rate else float("nan")

    @property
    def cpu_overhead(self) -> float:
        """The same in CPU time (all of it: core, commands, engine, jobs); other load on the
        machine hardly moves it."""
        return (self.core.cpu - self.raw.cpu) / self.raw.cpu * 100 if self.raw.cpu else float("nan")

    def to_json(self) -> dict[str, Any]:
        return {
            **asdict(self),
            "overhead_pct": round(self.overhead, 2),
            "cpu_overhead_pct": round(self.cpu_overhead, 2),
            "rate_ratio": round(self.ratio, 3),
        }

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> Row:
        fields = {k: d[k] for k in ("engine", "jobs", "levels", "alone", "settings", "when")}
        return cls(core=Figures(**d["core"]), raw=Figures(**d["raw"]), **fields)


def _s(x: float | None, fmt: str = ".2f") -> str:
    return "-" if x is None or x != x else f"{x:{fmt}}"


def print_table(rows: list[Row]) -> None:
    head = (
        f"{'engine':9s} {'jobs':>6s} | {'core s':>7s} {'jobs/s':>6s} {'1st job':>8s} "
        f"{'cpu/job':>8s} | {'alone s':>7s} {'jobs/s':>6s} {'1st job':>8s} {'cpu/job':>8s} | "
        f"{'overhead':>8s} {'in cpu':>7s} {'rate x':>6s}"
    )
    print(head)
    print("-" * len(head))
    for r in rows:
        c, a = r.core, r.raw
        print(
            f"{r.engine:9s} {r.jobs:>6,d} | {c.wall:7.1f} {c.rate:6.1f} {_s(c.first):>6s} s "
            f"{_s(1000 * c.cpu / c.n, '.1f'):>5s} ms | {a.wall:7.1f} {a.rate:6.1f} "
            f"{_s(a.first):>6s} s {_s(1000 * a.cpu / a.n, '.1f'):>5s} ms | "
            f"{r.overhead:+7.1f}% {_s(r.cpu_overhead, '+.1f'):>6s}% {r.ratio:6.2f}"
        )
    print()
    print(
        "core = the DAG through the orchestration core; alone = the same number of no-op jobs "
        "on the engine without it;\ncpu/job = CPU of everything the run used (this process, "
        "its commands, the engine's daemons and jobs) per job;\noverhead = core wall time vs "
        "alone wall time; in cpu = the same for CPU time; rate x = core jobs/s / alone jobs/s.\n"
        "Machine busy % during each run "
        "(other load shows here):"
    )
    for r in rows:
        print(
            f"  {r.engine}: busy core {_s(r.core.busy, '.0f')} %, alone {_s(r.raw.busy, '.0f')}"
            f" %; alone = {r.alone}; {r.settings or 'default settings'} ({r.when})"
        )


def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--jobs", type=int, default=10_000)
    ap.add_argument("--levels", type=int, default=3)
    ap.add_argument("--workers", type=int, default=2, help="local / Dask worker processes")
    ap.add_argument(
        "--engine",
        default="all",
        help="comma-separated list of local, dask, slurm, htcondor; or all",
    )
    ap.add_argument(
        "--alone-first",
        action="store_true",
        help="run the engine alone before the core (default: the core first)",
    )
    ap.add_argument(
        "--restart-engines",
        action="store_true",
        help="stop Slurm / HTCondor first, so that they run this checkout's "
        "ci/engines configuration",
    )
    ap.add_argument(
        "--results",
        type=Path,
        help="merge each engine's row into this JSON file and print all its rows",
    )
    ap.add_argument("--timeout", type=float, default=7200, help="per run, seconds")
    args = ap.parse_args()
    engines = ENGINES if args.engine == "all" else [e.strip() for e in args.engine.split(",")]
    for e in engines:
        if e not in ENGINES:
            ap.error(f"unknown engine {e!r} (choose from {', '.join(ENGINES)} or all)")
    print(
        f"DAG: {args.jobs:,} no-op jobs in {args.levels} levels (each waits for 2 jobs of the "
        f"level above); {os.cpu_count()} cores; load average "
        f"{' '.join(f'{x:.1f}' for x in os.getloadavg())}",
        flush=True,
    )
    rows: list[Row] = []
    for engine in engines:
        print(f"{engine}:", flush=True)
        work = Path(tempfile.mkdtemp(prefix=f"idds-bench-{engine}-", dir="/tmp"))
        work.chmod(0o777)
        try:
            figs, note, env = measure(engine, args, work)
        finally:
            shutil.rmtree(work, ignore_errors=True)
        row = Row(
            engine,
            args.jobs,
            args.levels,
            figs[0],
            figs[1],
            note,
            engine_settings(engine, env),
            time.strftime("%Y-%m-%d %H:%M"),
        )
        rows.append(row)
        print(
            f"{engine}: overhead {row.overhead:+.1f} % (wall), {row.cpu_overhead:+.1f} % (cpu); "
            f"core {row.core.rate:.1f} jobs/s / alone {row.raw.rate:.1f} jobs/s = {row.ratio:.2f}x",
            flush=True,
        )
        if args.results:
            _merge(args.results, row)
    if args.results:
        rows = [Row.from_json(d) for d in json.loads(args.results.read_text()).values()]
        rows.sort(key=lambda r: ENGINES.index(r.engine) if r.engine in ENGINES else 99)
    print()
    print_table(rows)


def measure(
    engine: str, args: argparse.Namespace, work: Path
) -> tuple[tuple[Figures, Figures], str, dict[str, str]]:
    """The core and the engine alone on ``engine``: figures, what "alone" was, the engine's env."""
    global ENGINE_CPU
    n, levels, first = args.jobs, args.levels, args.alone_first
    env: dict[str, str] = {}
    ENGINE_CPU = None
    if engine == "local":  # the workers are this process's children: counted when reaped
        figs = _pair(
            lambda: run_core("local", n, levels, work / "home", {"workers": args.workers}),
            lambda: raw_local(n, args.workers),
            first,
        )
        return figs, f"LocalBackend fed all jobs at once ({args.workers} worker processes)", env
    if engine == "dask":
        # the workers' "failed to communicate with scheduler" tracebacks when the cluster
        # shuts down are noise here
        os.environ.setdefault("DASK_LOGGING__DISTRIBUTED", "critical")
        from distributed import LocalCluster

        with LocalCluster(
            n_workers=args.workers, threads_per_worker=1, processes=True, dashboard_address=None
        ) as cluster:
            addr = cluster.scheduler_address
            ENGINE_CPU = EngineCPU(engine)
            ENGINE_CPU.add([p.pid for p in psutil.Process().children(recursive=True)])
            figs = _pair(
                lambda: run_core("dask", n, levels, work / "home", {"dask_address": addr}),
                lambda: raw_dask(n, levels, addr),
                first,
            )
        return (
            figs,
            (
                f"same DAG as plain Dask tasks, no wrapper (LocalCluster, {args.workers} "
                f"worker processes)"
            ),
            env,
        )
    if engine == "slurm":
        env = start_engine("slurm.sh", args.restart_engines)
        os.environ["SLURM_CONF"] = env["SLURM_CONF"]
        ENGINE_CPU = EngineCPU(engine)
        ENGINE_CPU.add(_slurm_pids(Path(env["SLURM_CONF"]).parent))
        figs = _pair(
            lambda: run_core(
                "slurm", n, levels, work / "home", {"shared_dir": str(work / "batch")}
            ),
            lambda: raw_slurm(n, work, args.timeout),
            first,
        )
        return figs, "ONE sbatch --array of the worker wrapper", env
    env = start_engine("htcondor.sh", args.restart_engines)
    ENGINE_CPU = EngineCPU(engine)
    ENGINE_CPU.add(_chroot_pids(env.get("CONDOR_ROOT", "")))
    (work / "home").mkdir()
    (work / "home").chmod(0o777)
    figs = _pair(
        lambda: run_core(
            "htcondor",
            n,
            levels,
            work / "home",
            {
                "shared_dir": str(work / "batch"),
                "condor_schedd": env["CONDOR_SCHEDD"],
                "condor_token": env["CONDOR_TOKEN"],
            },
        ),
        lambda: raw_htcondor(n, work, env["CONDOR_SCHEDD"], env["CONDOR_TOKEN"], args.timeout),
        first,
    )
    return figs, "ONE HTCondor cluster (one submit, N itemdata rows) of the worker wrapper", env


def _slurm_pids(state: Path) -> list[int]:
    pids = []
    for f in ("slurmctld.pid", "slurmd.pid", "munge/munged.pid"):
        with contextlib.suppress(OSError, ValueError, IndexError):
            pids.append(int((state / f).read_text().split()[0]))
    return pids


def _chroot_pids(root: str) -> list[int]:
    """The processes running inside the chroot ``root`` (the HTCondor daemons)."""
    pids = []
    for p in psutil.pids():
        try:
            if root and os.readlink(f"/proc/{p}/root") == root:
                pids.append(p)
        except OSError:
            continue
    return pids


def _pair(core: Any, alone: Any, alone_first: bool) -> tuple[Figures, Figures]:
    """Run both (in the order asked), printing each one's figures as soon as it ends."""
    out: dict[str, Figures] = {}
    for what in ("alone", "core ") if alone_first else ("core ", "alone"):
        f = out[what] = (alone if what == "alone" else core)()
        print(
            f"  {what} {f.wall:8.1f} s {f.rate:7.1f} jobs/s first {_s(f.first)} s; cpu "
            f"{_s(f.cpu_here, '.1f')} s here + {_s(f.cpu_engine, '.1f')} s engine; machine "
            f"busy {_s(f.busy, '.0f')} %",
            flush=True,
        )
    return out["core "], out["alone"]


def _merge(path: Path, row: Row) -> None:
    data: dict[str, Any] = {}
    if path.exists():
        data = json.loads(path.read_text())
    data[row.engine] = row.to_json()
    path.write_text(json.dumps(data, indent=1))


if __name__ == "__main__":
    main()
