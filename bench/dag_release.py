"""Job-level DAG release: a layered DAG of no-op jobs, each depending on 2 jobs of the level above.

Runs the DAG through the orchestration core (durable state in SQLite or
PostgreSQL, local worker processes) and prints jobs/s, time to first job and
peak RSS; with ``--engine dask`` the same DAG also runs as plain Dask tasks on
a ``LocalCluster`` with the same number of worker processes, and the ratio is
printed.

    python bench/dag_release.py --jobs 100000 --engine dask
    python bench/dag_release.py --jobs 10000,100000,1000000 --db sqlite --db postgres \
        --plot bench/results/dag_release_scaling.png
    python bench/dag_release.py --jobs 100000 --db postgres --runners 1 --runners 2 \
        --profile bench/results/profile

Every size runs on a fresh database. ``--db postgres`` starts a PostgreSQL on
loopback as the tests do (``tests/postgres.py``). ``--runners 2`` adds a second
agent runner (``idds-jupyter agents``, its own process and local workers) on the
same PostgreSQL: the two coordinate through the database only (claims with
``FOR UPDATE SKIP LOCKED``). ``--workers`` is the total number of worker
processes, shared out between the runners. ``--profile DIR`` samples
PostgreSQL's wait events and lock waits while each run goes and, when py-spy
is installed, records where every runner process spends its time.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from dataclasses import asdict, dataclass
from pathlib import Path

import psutil
from benchlib import time_dag

from idds_jupyter.agents.runner import Runner
from idds_jupyter.config import Config
from idds_jupyter.core import Orchestrator
from idds_jupyter.model.generators import layered_dag

ROOT = Path(__file__).resolve().parent.parent


class PeakRSS(threading.Thread):
    """Samples the RSS of the agents (this process and the extra runners) and of everything
    with their workers."""

    def __init__(self, runners: list[psutil.Process]) -> None:
        super().__init__(daemon=True)
        self.proc = psutil.Process()
        self.runners = runners
        self.peak_agents = 0
        self.peak_total = 0
        self.done = threading.Event()

    def run(self) -> None:
        while not self.done.wait(0.2):
            try:
                agents = self.proc.memory_info().rss + sum(
                    r.memory_info().rss for r in self.runners
                )
                kids = self.proc.children(recursive=True)
                total = self.proc.memory_info().rss + sum(c.memory_info().rss for c in kids)
            except psutil.Error:
                continue
            self.peak_agents = max(self.peak_agents, agents)
            self.peak_total = max(self.peak_total, total)


class WaitSampler(threading.Thread):
    """What PostgreSQL's backends wait on (pg_stat_activity) and which locks are waited
    for (pg_locks), sampled every 50 ms: a lock or a single-row hot spot would show."""

    def __init__(self, url: str) -> None:
        super().__init__(daemon=True)
        self.url = url.replace("postgresql+psycopg://", "postgresql://")
        self.waits: Counter[str] = Counter()
        self.locks: Counter[str] = Counter()
        self.blocked: Counter[str] = Counter()
        self.samples = 0
        self.done = threading.Event()

    def run(self) -> None:
        import psycopg

        with psycopg.connect(self.url, autocommit=True) as conn:
            me = conn.info.backend_pid
            while not self.done.wait(0.05):
                self.samples += 1
                for state, etype, event, query in conn.execute(
                    "SELECT state, wait_event_type, wait_event, query FROM pg_stat_activity "
                    "WHERE backend_type = 'client backend' AND pid <> %s "
                    "AND datname = current_database()",
                    (me,),
                ):
                    if state == "active":
                        self.waits[f"{etype}:{event}" if etype else "CPU (running)"] += 1
                        if etype == "Lock":  # which statement waits: the hot spot's name
                            self.blocked[" ".join(query.split())[:70]] += 1
                    else:
                        self.waits[f"({state})"] += 1
                for kind, rel, mode in conn.execute(
                    "SELECT l.locktype, coalesce(c.relname, ''), l.mode FROM pg_locks l "
                    "LEFT JOIN pg_class c ON c.oid = l.relation WHERE NOT l.granted"
                ):
                    self.locks[f"{kind} {rel} {mode}".strip()] += 1

    def report(self) -> str:
        active = sum(v for k, v in self.waits.items() if not k.startswith("("))
        lines = [
            f"  PostgreSQL sessions, {self.samples} samples: "
            f"{active / max(self.samples, 1):.2f} active on average"
        ]
        for k, v in self.waits.most_common(8):
            lines.append(f"    {k:<40} {v:>7}  {100 * v / max(sum(self.waits.values()), 1):5.1f} %")
        waited = sum(self.locks.values())
        lines.append(
            f"  lock waits (pg_locks not granted): {waited} session-samples "
            f"({waited / max(self.samples, 1):.3f} per sample)"
        )
        for k, v in self.locks.most_common(5):
            lines.append(f"    {k:<40} {v:>7}")
        if self.blocked:
            lines.append("  statements waiting on a lock:")
        for k, v in self.blocked.most_common(5):
            lines.append(f"    {v:>7}  {k}")
        return "\n".join(lines)


@dataclass
class Result:
    db: str
    runners: int
    n: int
    wall: float
    rate: float
    rss_agents: int
    rss_total: int


def _spy(pid: int, out: Path) -> subprocess.Popen[bytes] | None:
    exe = shutil.which("py-spy") or str(Path(sys.executable).parent / "py-spy")
    if not Path(exe).exists():
        return None
    return subprocess.Popen(
        # --gil: only the thread holding the GIL is sampled, so the samples are where the
        # process spends its CPU (its share of samples: how busy its one interpreter is)
        [exe, "record", "-p", str(pid), "-o", str(out), "-f", "speedscope", "-r", str(SPY_HZ)]
        + ["--gil", "--nonblocking"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )


SPY_HZ = 50


def spy_summary(path: Path, wall: float, top: int = 10) -> str:
    """A py-spy profile in a few lines: how busy the interpreter was (GIL held) and the
    functions of this project that held it longest (inclusive)."""

    if not path.exists():
        return f"  {path.name}: no profile written"
    data = json.loads(path.read_text())
    frames = data["shared"]["frames"]
    inclusive: Counter[str] = Counter()
    total = 0.0
    for prof in data["profiles"]:
        for stack, weight in zip(prof["samples"], prof["weights"], strict=True):
            total += weight
            seen = set()
            for i in stack:
                fr = frames[i]
                if "idds_jupyter" not in fr.get("file", ""):
                    continue
                key = f"{fr['name']} ({fr['file'].split('idds_jupyter/')[-1]})"
                if key not in seen:
                    seen.add(key)
                    inclusive[key] += weight
    # speedscope weights from py-spy are seconds of samples at SPY_HZ
    lines = [f"  {path.name}: GIL held {100 * total / wall:.0f} % of the run ({total:.1f} s)"]
    for k, v in inclusive.most_common(top):
        lines.append(f"    {100 * v / max(total, 1e-9):5.1f} %  {k}")
    return "\n".join(lines)


def run_idds(
    n: int,
    levels: int,
    workers: int,
    db: str,
    db_url: str,
    home: Path,
    runners: int = 1,
    profile: Path | None = None,
) -> Result:
    per_runner = [workers // runners + (1 if i < workers % runners else 0) for i in range(runners)]
    cfg = Config.load(None, home=home, db_url=db_url, workers=per_runner[0], poll_interval=1.0)
    wf = layered_dag(n, levels)
    extra: list[subprocess.Popen[bytes]] = []
    spies: list[subprocess.Popen[bytes]] = []
    sampler = WaitSampler(db_url) if profile is not None and db == "postgresql" else None
    with Runner(cfg) as runner:
        for i, w in enumerate(per_runner[1:], start=2):
            env = {
                **os.environ,
                "IDDS_HOME": str(home / f"runner{i}"),
                "IDDS_DB_URL": db_url,
                "IDDS_WORKERS": str(w),
                "IDDS_POLL_INTERVAL": "0.2",
            }
            env.pop("IDDS_CONFIG", None)
            p = subprocess.Popen(
                [sys.executable, "-m", "idds_jupyter.cli", "agents"],
                env=env,
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
            )
            assert p.stdout is not None
            p.stdout.readline()  # "idds-jupyter: agents ... on ..." once configured
            threading.Thread(target=p.stdout.read, daemon=True).start()
            extra.append(p)
        time.sleep(3.0 if extra else 0)  # the extra runners register and start their pools
        rss = PeakRSS([psutil.Process(p.pid) for p in extra])
        rss.start()
        if profile is not None:
            tag = f"{db}-{runners}runner-{n}"
            for k, pid in enumerate([os.getpid(), *(p.pid for p in extra)], start=1):
                spy = _spy(pid, profile / f"pyspy-{tag}-runner{k}.json")
                if spy is not None:
                    spies.append(spy)
        if sampler is not None:
            sampler.start()
        try:
            r = time_dag(Orchestrator(cfg, engine=runner.engine, bus=runner.bus), wf)
        finally:
            rss.done.set()
            rss.join()
            if sampler is not None:
                sampler.done.set()
                sampler.join()
            for p in extra:
                p.terminate()
            for p in extra:
                try:
                    p.wait(30)
                except subprocess.TimeoutExpired:
                    p.kill()
    for s in spies:
        s.send_signal(2)  # py-spy writes its profile on SIGINT
    for s in spies:
        try:
            s.wait(60)
        except subprocess.TimeoutExpired:
            s.kill()
    if profile is not None and spies:
        tag = f"{db}-{runners}runner-{n}"
        for k in range(1, runners + 1):
            print(spy_summary(profile / f"pyspy-{tag}-runner{k}.json", r.wall), flush=True)
    status, wall = r.status, r.wall
    print(
        f"idds  : {db} runners={runners} N={r.n_jobs:,} status={status} "
        f"succeeded={r.succeeded:,} max release_count={r.max_release} "
        f"max success_count={r.max_success}"
    )
    print(
        f"idds  : {wall:.2f} s, {r.n_jobs / wall:,.0f} jobs/s, "
        f"first job done after {r.first * 1000:.0f} ms; peak RSS agents "
        f"{rss.peak_agents / 2**20:.0f} MiB, with workers {rss.peak_total / 2**20:.0f} MiB",
        flush=True,
    )
    if sampler is not None:
        print(sampler.report(), flush=True)
    if status != "finished" or r.succeeded != r.n_jobs or r.max_release != 1 or r.max_success != 1:
        raise SystemExit("idds run did not finish every job exactly once")
    return Result(db, runners, n, wall, n / wall, rss.peak_agents, rss.peak_total)


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


def table(results: list[Result]) -> str:
    lines = [
        f"{'db':<11} {'runners':>7} {'jobs':>10} {'time s':>9} {'jobs/s':>8} "
        f"{'s/1k jobs':>9} {'RSS agents MiB':>14} {'+workers MiB':>12}"
    ]
    for r in results:
        lines.append(
            f"{r.db:<11} {r.runners:>7} {r.n:>10,} {r.wall:>9.1f} {r.rate:>8,.0f} "
            f"{1000 * r.wall / r.n:>9.3f} {r.rss_agents / 2**20:>14.0f} "
            f"{r.rss_total / 2**20:>12.0f}"
        )
    return "\n".join(lines)


def plot(results: list[Result], path: Path) -> None:
    """Wall time and peak RSS against N (log-log): a straight line of slope 1 is linear cost."""
    path.parent.mkdir(parents=True, exist_ok=True)
    series: dict[str, list[Result]] = {}
    for r in results:
        series.setdefault(f"{r.db}, {r.runners} runner{'s' if r.runners > 1 else ''}", []).append(r)
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(10, 4))
    for label, rs in series.items():
        rs = sorted(rs, key=lambda r: r.n)
        ns = [r.n for r in rs]
        ax1.loglog(ns, [r.wall for r in rs], "o-", label=label)
        ax2.semilogx(ns, [r.rss_agents / 2**20 for r in rs], "o-", label=label)
    lo = min(r.n for r in results)
    hi = max(r.n for r in results)
    ref = min(r.wall for r in results if r.n == lo)
    ax1.loglog([lo, hi], [ref, ref * hi / lo], "k:", label="linear in N")
    ax1.set(xlabel="jobs in the DAG", ylabel="wall time (s)", title="time to run the DAG")
    ax2.set(xlabel="jobs in the DAG", ylabel="MiB", title="peak RSS of the agents")
    ax2.axhline(1024, color="r", ls=":", label="1 GiB")
    for ax in (ax1, ax2):
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=80)
    print(f"plot  : {path}")


def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--jobs", default="100000", help="DAG size(s), comma-separated")
    ap.add_argument("--levels", type=int, default=3)
    ap.add_argument("--workers", type=int, default=2, help="worker processes in all")
    ap.add_argument(
        "--db",
        action="append",
        help="sqlite (a fresh file, the default), postgres (a fresh server on loopback) "
        "or a database URL; repeat to compare",
    )
    ap.add_argument(
        "--runners",
        type=int,
        action="append",
        help="agent runners on the database (2: a second `idds-jupyter agents` process; "
        "PostgreSQL only); repeat to compare",
    )
    ap.add_argument("--plot", type=Path, help="save a plot of time and RSS against N here")
    ap.add_argument(
        "--record",
        type=Path,
        help="append each run's figures to this JSON-lines file; --plot then draws every "
        "run recorded there (the last of each db, runners and size), not only this one's",
    )
    ap.add_argument("--profile", type=Path, help="save profiles (py-spy, wait events) here")
    ap.add_argument(
        "--engine",
        choices=["idds", "dask"],
        default="idds",
        help="dask: also run the same DAG on Dask and print the ratio",
    )
    args = ap.parse_args()
    sizes = [int(s.replace("_", "")) for s in args.jobs.split(",")]
    dbs = args.db or ["sqlite"]
    runner_counts = args.runners or [1]
    print(
        f"DAG: no-op jobs in {args.levels} levels, each job depends on 2 jobs of the level "
        f"above; {args.workers} workers in all; {os.cpu_count()} cores; sizes {sizes}"
    )
    if args.profile is not None:
        args.profile.mkdir(parents=True, exist_ok=True)
    results: list[Result] = []
    pg = None
    try:
        for db in dbs:
            for nrun in runner_counts:
                for n in sizes:
                    with tempfile.TemporaryDirectory(prefix="idds-bench-") as tmp:
                        home = Path(tmp)
                        if db == "sqlite":
                            kind, url = "sqlite", f"sqlite:///{home / 'idds.db'}"
                        elif db == "postgres":
                            if pg is None:
                                sys.path.insert(0, str(ROOT / "tests"))
                                from postgres import PostgresServer

                                pg = PostgresServer().start()
                            kind, url = "postgresql", pg.create_database(f"bench_{nrun}_{n}")
                        else:
                            kind, url = db.split(":")[0].split("+")[0], db
                        if nrun > 1 and kind == "sqlite":
                            print(f"skip  : {nrun} runners on SQLite (one writer): PostgreSQL only")
                            continue
                        res = run_idds(
                            n, args.levels, args.workers, kind, url, home, nrun, args.profile
                        )
                        results.append(res)
                        if args.record is not None:
                            with args.record.open("a") as f:
                                f.write(json.dumps({**asdict(res), "at": time.time()}) + "\n")
    finally:
        if pg is not None:
            pg.stop()
    print(table(results))
    for kind in sorted({r.db for r in results}):
        for n in sizes:
            one = [r for r in results if (r.db, r.n, r.runners) == (kind, n, 1)]
            two = [r for r in results if (r.db, r.n, r.runners) == (kind, n, 2)]
            if one and two:
                print(
                    f"scale : {kind} N={n:,} 2 runners / 1 runner = "
                    f"{two[0].rate / one[0].rate:.2f}x jobs/s"
                )
    if args.plot is not None:
        if args.record is not None and args.record.exists():
            last = {}
            for line in args.record.read_text().splitlines():
                rec = json.loads(line)
                fields = {k: rec[k] for k in Result.__dataclass_fields__}
                last[(rec["db"], rec["runners"], rec["n"])] = Result(**fields)
            results = list(last.values())
        plot(results, args.plot)
    if args.engine == "dask":
        n = sizes[-1]
        theirs = run_dask(n, args.levels, args.workers)
        ours = [r for r in results if r.n == n][0].rate
        print(f"ratio : idds / dask = {ours / theirs:.1f}x jobs/s")


if __name__ == "__main__":
    main()
