"""PostgreSQL under the service: restarted mid-run, and shared by three agents processes.

Both run on a private real PostgreSQL (tests/postgres.py), so that stopping it disturbs
no other test.
"""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
import textwrap
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest
from chaos_helpers import (
    MAP_SCRIPT,
    SOAK,
    STUDY_SCRIPT,
    Proc,
    RestartablePostgres,
    audit,
    chaos_env,
    cli,
    executions,
    free_port,
    no_orphans,
    serve,
    size,
    wait_for,
)

from idds_jupyter.client import Client
from idds_jupyter.model.generators import layered_dag
from idds_jupyter.store.engine import make_engine

RESTARTS = size(1, 3)
DAG_JOBS = size(1_000, 10_000)
AGENT_DAG_JOBS = size(2_001, 10_002)
MAP_ITEMS = size(200, 1_000)
TRIALS = size(12, 40)
HAVE_OPTUNA = importlib.util.find_spec("optuna") is not None

pytestmark = pytest.mark.timeout(size(600, 3600))


@pytest.fixture
def own_pg() -> Iterator[RestartablePostgres]:
    pg = RestartablePostgres()
    try:
        yield pg
    finally:
        pg.close()


def test_postgres_restarted_mid_run_everything_finishes(
    tmp_path: Path, own_pg: RestartablePostgres
) -> None:
    """A job-level DAG and a FaaT ``.map`` on ``idds-jupyter serve``; PostgreSQL stopped (``pg_ctl stop -m fast``) for 3 s and started again.

    (Before the Receiver kept the results it could not record, the results that came
    while the database was down were dropped: their jobs stayed ``submitted`` for good,
    their locks renewed by the live agent, and the DAG never ended.)
    """
    _restart_run(tmp_path, own_pg, with_study=False)


@pytest.mark.skipif(
    not SOAK or not HAVE_OPTUNA,
    reason="soak size, run by `make soak` (IDDS_SOAK=1); needs Optuna",
)
def test_postgres_restarted_during_a_server_steered_study(
    tmp_path: Path, own_pg: RestartablePostgres
) -> None:
    """The same with a server-steered HPO study. (It used to stall: trials the Steerer
    asked while the store refused their jobs were kept as in flight and never ended;
    they now go out again next turn, tests/core/test_core_steerer.py.)"""
    _restart_run(tmp_path, own_pg, with_study=True, study_timeout=180)


def _restart_run(
    tmp_path: Path, own_pg: RestartablePostgres, with_study: bool, study_timeout: int = 500
) -> None:
    db_url = own_pg.create_database("chaos_restart")
    home = tmp_path / "home"
    mark = uuid.uuid4().hex
    env = chaos_env(home, db_url, mark)
    assert cli(env, "db", "upgrade").returncode == 0
    port = free_port()
    log = tmp_path / "serve.log"
    server = serve(env, port, log)
    url = f"http://127.0.0.1:{port}/"
    token = (home / "serve-token").read_text().strip()
    client = Client(url, token)
    engine = make_engine(db_url)
    record = tmp_path / "executions.txt"
    t0 = time.monotonic()
    outages = []
    try:
        wid = client.submit(
            layered_dag(
                DAG_JOBS,
                function="chaosfuncs:record",
                parameters={"path": str(record), "delay": 0.01},
            ).to_dict()
        )
        user_env = dict(env, IDDS_URL=url, IDDS_TOKEN=token)
        procs = {}
        scripts = {"map": MAP_SCRIPT.format(n=MAP_ITEMS, timeout=500)}
        if with_study:
            scripts["hpo"] = STUDY_SCRIPT.format(n=TRIALS, timeout=study_timeout)
        for name, src in scripts.items():
            path = tmp_path / f"{name}.py"
            path.write_text(textwrap.dedent(src))
            procs[name] = subprocess.Popen(
                [sys.executable, str(path)],
                env=user_env,
                cwd=tmp_path,
                text=True,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
            )
        # the user's scripts have submitted (a submission while the store is down gets a
        # 503 "retry", which is right but not what is tested here)
        wait_for(
            lambda: len(client.runs(10)) == 1 + len(procs),
            timeout=120,
            what="the map and the study submitted",
        )
        for _ in range(RESTARTS):
            wait_for(lambda: executions(record), timeout=60, what="jobs running")
            time.sleep(1.0)
            before = sum(executions(record).values())
            own_pg.stop_fast()
            time.sleep(3.0)  # the service sees the database gone for a while
            own_pg.start_again()
            outages.append(before)
            assert server.popen.poll() is None, (
                "the server died with its database:\n" + log.read_text()[-3000:]
            )
        outs = {}
        for name, proc in procs.items():
            out, err = proc.communicate(timeout=size(500, 3000))
            assert proc.returncode == 0, f"{name} script failed:\n{out}\n{err[-4000:]}"
            outs[name] = json.loads(out.strip().splitlines()[-1])
        try:
            status = client.wait_workflow(wid, timeout=size(300, 2400))
        except TimeoutError:
            status = "stalled"
        if status != "finished":
            print("\nstalled:", stall_report(engine, wid, log))
        assert status == "finished"
        dag = audit(engine, wid)
    finally:
        client.shutdown()
        rc = server.stop()
        engine.dispose()
    assert rc == 0, log.read_text()[-3000:]
    print(
        f"\npostgres-restart: {RESTARTS} restarts (3 s down) at {outages} executions of "
        f"{DAG_JOBS} DAG jobs; FaaT map {MAP_ITEMS}; HPO {outs.get('hpo')}; "
        f"{time.monotonic() - t0:.1f} s"
    )
    assert outages[0] < DAG_JOBS, "the DAG ended before the database restart"
    assert dag == {
        "jobs": DAG_JOBS,
        "successes": DAG_JOBS,
        "min_success": 1,
        "max_success": 1,
        "min_release": 1,
        "max_release": 1,
        "finished": DAG_JOBS,
    }, dag
    assert len(executions(record)) == DAG_JOBS
    assert outs["map"] == [x * x for x in range(MAP_ITEMS)]
    if with_study:
        assert outs["hpo"]["n"] == TRIALS and outs["hpo"]["complete"] == TRIALS, outs["hpo"]
    no_orphans(mark, home)


def test_three_agents_processes_on_one_postgres_run_each_job_once(
    tmp_path: Path, own_pg: RestartablePostgres
) -> None:
    from idds_jupyter.config import Config
    from idds_jupyter.core import Orchestrator

    db_url = own_pg.create_database("chaos_agents")
    home = tmp_path / "home"
    mark = uuid.uuid4().hex
    env = chaos_env(home, db_url, mark, IDDS_BUS="db")
    assert cli(env, "db", "upgrade").returncode == 0
    record = tmp_path / "executions.txt"
    agents = [Proc(env, ["agents"], tmp_path / f"agents-{i}.log") for i in range(3)]
    t0 = time.monotonic()
    try:
        time.sleep(1.0)
        orch = Orchestrator(Config.load(None, home=home, db_url=db_url))
        wid = orch.submit(
            layered_dag(
                AGENT_DAG_JOBS, function="chaosfuncs:record", parameters={"path": str(record)}
            )
        )
        assert orch.wait(wid, timeout=size(300, 1200)) == "finished"
        dag = audit(orch.engine, wid)
    finally:
        rcs = [a.stop() for a in agents]
    assert rcs == [0, 0, 0], [a.log.read_text()[-2000:] for a in agents]
    lines = [line.split() for line in record.read_text().splitlines()]
    ran = Counter(job for job, _ in lines)
    by_agent = Counter(pid for _, pid in lines)
    print(
        f"\n3 agents on one PostgreSQL: {AGENT_DAG_JOBS} jobs, executions per agent "
        f"{sorted(by_agent.values())}; {time.monotonic() - t0:.1f} s"
    )
    assert len(ran) == AGENT_DAG_JOBS
    twice = sorted(j for j, n in ran.items() if n > 1)
    assert twice == [], f"{len(twice)} jobs executed more than once: {twice[:20]}"
    assert set(by_agent) <= {str(a.pid) for a in agents}
    assert len(by_agent) >= 2, f"the agents did not share the work: {dict(by_agent)}"
    assert dag == {
        "jobs": AGENT_DAG_JOBS,
        "successes": AGENT_DAG_JOBS,
        "min_success": 1,
        "max_success": 1,
        "min_release": 1,
        "max_release": 1,
        "finished": AGENT_DAG_JOBS,
    }, dag
    no_orphans(mark, home)
    assert os.path.exists(record)


def stall_report(engine: object, wid: int, log: Path) -> str:
    """What the store says of a run that did not end, and the server's last errors."""
    from sqlalchemy import func, select

    from idds_jupyter.store.tables import jobs, workflows, works

    with engine.begin() as conn:  # type: ignore[attr-defined]
        by_status = conn.execute(
            select(jobs.c.status, func.count(), func.min(jobs.c.lock_expiry))
            .where(jobs.c.workflow_id == wid)
            .group_by(jobs.c.status)
        ).all()
        wks = conn.execute(
            select(works.c.name, works.c.status, works.c.n_jobs, works.c.n_finished).where(
                works.c.workflow_id == wid
            )
        ).all()
        wf = conn.execute(select(workflows.c.status).where(workflows.c.id == wid)).all()
    errors = [line for line in log.read_text().splitlines() if " ERROR " in line or "Error" in line]
    return f"run {wf}; jobs {by_status}; works {wks}; last errors {errors[-15:]}"
