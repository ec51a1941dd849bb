"""Exactly-once release under crashes, and several runners on one PostgreSQL."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

from helpers import layered_dag, wait_for
from sqlalchemy import func, select

from idds_jupyter.config import Config
from idds_jupyter.core import Orchestrator
from idds_jupyter.store.tables import jobs


def start_agents(tmp_path: Path, db_url: str, tag: str) -> subprocess.Popen[bytes]:
    env = dict(
        os.environ,
        IDDS_DB_URL=db_url,
        IDDS_HOME=str(tmp_path / "home"),
        IDDS_BUS="db",
        IDDS_LOCK_TTL="3",
        IDDS_POLL_INTERVAL="0.5",
        IDDS_WORKERS="2",
    )
    log = open(tmp_path / f"agents-{tag}.log", "wb")  # noqa: SIM115 - lives as long as the process
    return subprocess.Popen(
        [sys.executable, "-m", "idds_jupyter.cli", "agents"],
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
    )


def count_lines(path: str) -> int:
    try:
        with open(path, "rb") as f:
            return sum(1 for _ in f)
    except FileNotFoundError:
        return 0


def test_sigkill_agents_mid_dag_then_restart(tmp_path: Path, db_url: str) -> None:
    orch = Orchestrator(Config.load(None, home=tmp_path / "home", db_url=db_url))
    record = str(tmp_path / "executions.txt")
    wid = orch.submit(
        layered_dag(
            10_002, function="corefuncs:record", parameters={"path": record, "delay": 0.0005}
        )
    )
    first = start_agents(tmp_path, db_url, "1")
    try:
        wait_for(lambda: count_lines(record) >= 3000, timeout=120, interval=0.01)
    finally:
        first.send_signal(signal.SIGKILL)
        first.wait()
    with orch.engine.begin() as conn:  # what the store holds as done when the agents die
        done_at_kill = set(
            conn.execute(
                select(jobs.c.id).where(jobs.c.workflow_id == wid, jobs.c.status == "finished")
            ).scalars()
        )
    assert len(done_at_kill) < 10_002, "the DAG ended before the kill; nothing was tested"
    second = start_agents(tmp_path, db_url, "2")
    try:
        assert orch.wait(wid, timeout=240) == "finished"
    finally:
        second.terminate()
        second.wait(30)
    with orch.engine.begin() as conn:
        n, ok, max_rel, max_succ, min_rel = conn.execute(
            select(
                func.count(),
                func.sum(jobs.c.success_count),
                func.max(jobs.c.release_count),
                func.max(jobs.c.success_count),
                func.min(jobs.c.release_count),
            ).where(jobs.c.workflow_id == wid)
        ).one()
    assert (n, ok) == (10_002, 10_002)
    assert max_succ == 1, "a job was recorded as succeeded twice"
    assert (min_rel, max_rel) == (1, 1), "a job was released twice (or never)"
    executions = Counter(line.split()[0] for line in Path(record).read_text().splitlines())
    assert len(executions) == 10_002  # every job ran; re-runs of lost in-flight jobs are allowed
    # a job the store held as done at the kill never ran again: only jobs in flight (ran,
    # their results not yet recorded) may have
    again = {int(j) for j, n in executions.items() if n > 1}
    assert not again & done_at_kill, sorted(again & done_at_kill)[:10]


def test_two_runners_on_one_postgres_run_each_job_once(tmp_path: Path, pg_url: str) -> None:
    orch = Orchestrator(Config.load(None, home=tmp_path / "home", db_url=pg_url))
    record = str(tmp_path / "executions.txt")
    runners = [start_agents(tmp_path, pg_url, "a"), start_agents(tmp_path, pg_url, "b")]
    try:
        time.sleep(1.0)
        wid = orch.submit(
            layered_dag(10_002, function="corefuncs:record", parameters={"path": record})
        )
        assert orch.wait(wid, timeout=300) == "finished"
    finally:
        for r in runners:
            r.terminate()
        for r in runners:
            r.wait(30)
    lines = [line.split() for line in Path(record).read_text().splitlines()]
    executions = Counter(job for job, _ in lines)
    assert len(executions) == 10_002
    twice = [j for j, n in executions.items() if n > 1]
    assert twice == [], f"{len(twice)} jobs executed more than once"
    agents = Counter(pid for _, pid in lines)
    assert len(agents) == 2, f"both runners should have run jobs: {dict(agents)}"
