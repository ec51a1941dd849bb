"""Shared by the chaos tests: sizes (CI or soak), real server and agent processes, audits."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

from sqlalchemy import func, select

from idds_jupyter.store.tables import jobs

#: ``IDDS_SOAK=1`` (``make soak``) runs the full-size suite; by default it is sized for CI.
SOAK = os.environ.get("IDDS_SOAK", "") not in ("", "0")


def size(ci: int, soak: int) -> int:
    return soak if SOAK else ci


ROOT = Path(__file__).resolve().parents[2]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_for(
    pred: Callable[[], Any], timeout: float = 60, interval: float = 0.1, what: str = "condition"
) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = pred()
        if value:
            return value
        if time.monotonic() > deadline:
            raise TimeoutError(f"{what} not met in {timeout} s")
        time.sleep(interval)


def chaos_env(home: Path, db_url: str, mark: str, **extra: str) -> dict[str, str]:
    """The environment of a server/agents process of a chaos test; ``mark`` tags its processes."""
    env = dict(
        os.environ,
        IDDS_HOME=str(home),
        IDDS_DB_URL=db_url,
        IDDS_POLL_INTERVAL="0.3",
        IDDS_WORKERS="2",
        IDDS_LOCK_TTL="3",
        JUPYTER_RUNTIME_DIR=str(home / "runtime"),
        IDDS_CHAOS_MARK=mark,
    )
    env.pop("IDDS_URL", None)
    env.pop("IDDS_TOKEN", None)
    env.update(extra)
    return env


def cli(env: dict[str, str], *args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "idds_jupyter.cli", *args],
        env=env,
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


class Proc:
    """An ``idds-jupyter serve|agents`` process in a session of its own (its workers too)."""

    def __init__(self, env: dict[str, str], args: list[str], log: Path) -> None:
        self.log = log
        self._fh = open(log, "ab")  # noqa: SIM115 - lives as long as the process
        self.popen = subprocess.Popen(
            [sys.executable, "-m", "idds_jupyter.cli", *args],
            env=env,
            cwd=ROOT,
            stdout=self._fh,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        self.pid = self.popen.pid

    def kill(self) -> None:
        """SIGKILL the process alone: its workers are left to notice by themselves."""
        with_suppress(lambda: os.kill(self.pid, signal.SIGKILL))
        self.popen.wait(30)

    def stop(self, timeout: float = 60) -> int:
        if self.popen.poll() is None:
            self.popen.send_signal(signal.SIGTERM)
            try:
                self.popen.wait(timeout)
            except subprocess.TimeoutExpired:
                self.kill()
        self._fh.close()
        return int(self.popen.returncode)


def with_suppress(fn: Callable[[], Any]) -> None:
    with contextlib.suppress(ProcessLookupError):
        fn()


def serve(env: dict[str, str], port: int, log: Path) -> Proc:
    """``idds-jupyter serve --port PORT``; returns once ``/ping`` answers."""
    p = Proc(env, ["serve", "--port", str(port)], log)
    url = f"http://127.0.0.1:{port}/idds/api/v1/ping"

    def up() -> bool:
        if p.popen.poll() is not None:
            raise RuntimeError(
                f"the server exited ({p.popen.returncode}):\n{log.read_text()[-3000:]}"
            )
        try:
            with urllib.request.urlopen(url, timeout=2) as r:
                return bool(r.status == 200)
        except OSError:
            return False

    wait_for(up, timeout=60, interval=0.1, what="the server's /ping")
    return p


def marked(mark: str, home: Path | None = None) -> list[tuple[int, str]]:
    """Live processes (not zombies) tagged with ``mark`` in their environment, or whose
    command line mentions ``home``: what a chaos test leaves behind."""
    found = []
    needle = f"IDDS_CHAOS_MARK={mark}".encode()
    for d in Path("/proc").iterdir():
        if not d.name.isdigit() or int(d.name) == os.getpid():
            continue
        try:
            stat = (d / "stat").read_text()
            if stat.rsplit(")", 1)[1].split()[0] in ("Z", "X"):
                continue
            cmd = (d / "cmdline").read_bytes()
            env = (d / "environ").read_bytes()
        except OSError:
            continue
        if needle in env.split(b"\0") or (home is not None and str(home).encode() in cmd):
            found.append((int(d.name), cmd.replace(b"\0", b" ").decode(errors="replace")))
    return found


def no_orphans(mark: str, home: Path | None = None, grace: float = 15) -> None:
    """Every process of the test ended within ``grace`` s (workers notice their agent died)."""
    try:
        wait_for(lambda: not marked(mark, home), timeout=grace, interval=0.25, what="no orphans")
    except TimeoutError:
        left = marked(mark, home)
        for pid, _ in left:
            with_suppress(lambda pid=pid: os.kill(pid, signal.SIGKILL))
        raise AssertionError(f"{len(left)} processes outlived the test: {left}") from None


def executions(path: Path) -> Counter[str]:
    """How many times each job id ran (lines of ``chaosfuncs.record``)."""
    try:
        text = path.read_text()
    except FileNotFoundError:
        return Counter()
    return Counter(line.split()[0] for line in text.splitlines() if line.strip())


def audit(engine: Any, wid: int) -> dict[str, int]:
    """The exactly-once counters of a run's jobs, from the store."""
    with engine.begin() as conn:
        row = conn.execute(
            select(
                func.count(),
                func.sum(jobs.c.success_count),
                func.min(jobs.c.success_count),
                func.max(jobs.c.success_count),
                func.min(jobs.c.release_count),
                func.max(jobs.c.release_count),
                func.sum(func.cast(jobs.c.status == "finished", jobs.c.attempt.type)),
            ).where(jobs.c.workflow_id == wid)
        ).one()
    keys = (
        "jobs",
        "successes",
        "min_success",
        "max_success",
        "min_release",
        "max_release",
        "finished",
    )
    return {k: int(v or 0) for k, v in zip(keys, row, strict=True)}


def in_flight_ids(engine: Any) -> set[str]:
    """Ids of jobs submitted or running now (at a kill: the ones that may run twice)."""
    with engine.begin() as conn:
        return {
            str(r[0])
            for r in conn.execute(
                select(jobs.c.id).where(jobs.c.status.in_(("submitted", "running")))
            )
        }


# A notebook user's scripts, run as processes of their own against a server (IDDS_URL/IDDS_TOKEN):
# a FaaT ``.map`` printing its values, and a server-steered HPO study printing its summary.
MAP_SCRIPT = """
import json, time
from idds_jupyter import work

@work
def square(x):
    time.sleep(0.01)
    return x * x

values = square.map(range({n}), timeout={timeout})
print(json.dumps(values))
"""

STUDY_SCRIPT = """
import json
from idds_jupyter.hpo import Study, uniform

def objective(x):
    return (x - 0.3) ** 2

study = Study(objective, {{"x": uniform(0, 1)}}, max_trials={n}, parallel=2, sampler="random",
              seed=3, name="chaos-hpo", steer="server")
df = study.optimize(timeout={timeout})
print(json.dumps({{"run": study.run_id, "n": len(df),
                  "complete": int((df["state"] == "COMPLETE").sum())}}))
"""


class RestartablePostgres:
    """A private real PostgreSQL (tests/postgres.py) that a test may stop and start again."""

    def __init__(self) -> None:
        from postgres import PostgresServer

        self.pg = PostgresServer().start()
        self.url = self.pg.url

    def create_database(self, name: str) -> str:
        return str(self.pg.create_database(name))

    def stop_fast(self) -> None:
        self.pg._run(self.pg.bindir / "pg_ctl", "-D", self.pg.dir / "data", "stop", "-m", "fast")

    def start_again(self) -> None:
        opts = (
            f"-p {self.pg.port} -k {self.pg.dir} -c listen_addresses=127.0.0.1 "
            "-c fsync=off -c max_connections=200"
        )
        self.pg._run(
            self.pg.bindir / "pg_ctl",
            "-D",
            self.pg.dir / "data",
            "-l",
            self.pg.dir / "log",
            "-o",
            opts,
            "-w",
            "start",
        )

    def close(self) -> None:
        self.pg.stop()
