"""The engine end to end on every workload engine: local, Dask, Slurm, HTCondor, PanDA (stand-in).

The PanDA cases (ids ``panda_standin``) run panda-client against the stand-in
server of ``panda_standin.py``; ``test_panda_real.py`` runs against a real server
when ``IDDS_TEST_PANDA_URL`` … are set.

Each test runs real workflows through the real core (Runner + Orchestrator on
SQLite) with ``backend=<engine>``: a template DAG with a condition and a loop, a
job that fails once and is retried, a 50-job sweep, an abort while jobs run (the
engine's jobs are cancelled), a job killed from outside the engine while it
runs (retried; the workflow still finishes), and a FaaT ``.map`` of 50 calls
through a real REST server.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from engine_support import Engine

from idds_jupyter.agents.runner import Runner
from idds_jupyter.config import Config
from idds_jupyter.core import Orchestrator
from idds_jupyter.model import Condition, JobDep, Loop, Work, Workflow

pytestmark = pytest.mark.timeout(180)

ECHO = "idds_jupyter.worker.job:echo"
SLEEP = "idds_jupyter.worker.job:sleep"
F = "enginefuncs:"


def cfg(tmp_path: Path, engine: Engine, **kw: Any) -> Config:
    opts = {"poll_interval": 0.5, "workers": 2, "batch_poll_interval": 0.5, "lock_ttl": 60.0,
            **engine.options, **kw}
    work = engine.workdir
    return Config.load(None, home=work / "home", db_url=f"sqlite:///{work / 'idds.db'}",
                       backend=engine.backend, **opts)


def wait_for(pred: Callable[[], Any], timeout: float = 60, interval: float = 0.2,
             what: str = "condition") -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = pred()
        if value:
            return value
        if time.monotonic() > deadline:
            raise TimeoutError(f"{what} not met within {timeout:g} s")
        time.sleep(interval)


def branch_and_loop() -> Workflow:
    """examples/branch_and_loop.yaml with Python functions: DAG, condition, loop."""
    seeds = [{"seed": s} for s in (1, 2, 3, 4)]
    return Workflow(name="branch-and-loop", parameters={"threshold": 0.5}, works=[
        Work(name="simulate", function=F + "simulate", kwargs_list=seeds),
        Work(name="reconstruct", function=F + "reconstruct", kwargs_list=seeds,
             job_deps=[JobDep(work="simulate", pattern="one_to_one")]),
        Work(name="summarize", function=F + "summarize", depends_on=["reconstruct"],
             parameters={"values": "{reconstruct.result}"}),
        Work(name="publish", function=F + "publish",
             parameters={"efficiency": "{summarize.result.efficiency}"}),
        Work(name="rerun", function=F + "rerun",
             parameters={"efficiency": "{summarize.result.efficiency}"}),
        Work(name="tune", function=F + "tune", parameters={"iteration": "{iteration}"}),
    ], conditions=[
        Condition("good_enough", "summarize.result.efficiency > threshold",
                  true=["publish"], false=["rerun"]),
    ], loops=[
        Loop("tuning", works=["tune"], until="tune.result.value >= 3", max_iterations=6,
             depends_on=["summarize"]),
    ])


def _backends_used(orch: Orchestrator, wid: int) -> set[str]:
    from sqlalchemy import select

    from idds_jupyter.store.tables import jobs

    with orch.engine.begin() as conn:
        return {r[0] for r in conn.execute(select(jobs.c.backend).where(jobs.c.workflow_id == wid))}


def test_template_dag_with_condition_and_loop(engine: Engine, tmp_path: Path) -> None:
    c = cfg(tmp_path, engine)
    with Runner(c) as runner:
        orch = Orchestrator(c, engine=runner.engine, bus=runner.bus)
        wid = orch.submit(branch_and_loop())
        assert orch.wait(wid, timeout=120) == "finished", orch.status(wid)
    st = orch.status(wid)
    works = {w["name"]: w["status"] for w in st["works"]}
    assert works["publish"] == "finished" and works["rerun"] == "skipped", works
    assert orch.jobs(wid, "summarize")[0]["result"] == {"efficiency": 0.625, "n": 4}
    assert orch.jobs(wid, "publish")[0]["result"] == {"published": 0.625}
    assert st["loop_info"]["tuning"]["iterations"] == 3
    assert st["loop_info"]["tuning"]["converged"]
    assert _backends_used(orch, wid) == {engine.backend}


def test_failed_job_is_retried(engine: Engine, tmp_path: Path) -> None:
    c = cfg(tmp_path, engine)
    marks = [{"marker": str(engine.workdir / f"mark{i}")} for i in range(3)]
    with Runner(c) as runner:
        orch = Orchestrator(c, engine=runner.engine, bus=runner.bus)
        wid = orch.submit(Workflow(name="flaky", works=[
            Work(name="f", function=F + "flaky", kwargs_list=marks, retries=2),
            Work(name="after", function=ECHO, parameters={"got": "{f.result}"},
                 depends_on=["f"])]))
        assert orch.wait(wid, timeout=90) == "finished", orch.status(wid)
    jobs = orch.jobs(wid, "f")
    assert [j["attempt"] for j in jobs] == [2, 2, 2]
    assert all(j["result"] == "second try ok" for j in jobs)
    assert orch.jobs(wid, "after")[0]["result"] == {"got": ["second try ok"] * 3}


def test_sweep_of_50_jobs(engine: Engine, tmp_path: Path) -> None:
    c = cfg(tmp_path, engine)
    t0 = time.monotonic()
    with Runner(c) as runner:
        orch = Orchestrator(c, engine=runner.engine, bus=runner.bus)
        wid = orch.submit(Workflow(name="sweep", works=[
            Work(name="s", function=ECHO, kwargs_list=[{"i": i} for i in range(50)])]))
        assert orch.wait(wid, timeout=120) == "finished", orch.status(wid)
        backend = runner.carrier.backends[engine.backend]
        polls = getattr(backend, "polls", None)
    elapsed = time.monotonic() - t0
    assert orch.job_counts(wid) == {"finished": 50}
    assert sorted(j["result"]["i"] for j in orch.jobs(wid, "s")) == list(range(50))
    if polls is not None:  # batch backends: one scheduler call per round, not one per job
        assert polls <= elapsed / c.batch_poll_interval + 3, (polls, elapsed)


def test_abort_cancels_the_engines_jobs(engine: Engine, tmp_path: Path) -> None:
    c = cfg(tmp_path, engine)
    with Runner(c) as runner:
        orch = Orchestrator(c, engine=runner.engine, bus=runner.bus)
        wid = orch.submit(Workflow(name="slow", works=[
            Work(name="s", function=SLEEP, kwargs_list=[{"seconds": 60 if engine.kills_running else 5}] * 3)]))
        states = ("running",) if engine.reports_start else ("running", "submitted")
        wait_for(lambda: sum(orch.job_counts(wid).get(s, 0) for s in states) > 0, timeout=60,
                 what="a job running")
        assert engine.active(runner) > 0
        t0 = time.monotonic()
        assert orch.abort(wid).changed
        assert orch.wait(wid, timeout=30) == "aborted"
        assert set(orch.job_counts(wid)) == {"cancelled"}
        wait_for(lambda: engine.active(runner) == 0, timeout=30, what="the engine's jobs gone")
        assert time.monotonic() - t0 < 40
        # the engine is free again: new work runs at once (Dask: once the sleeps are over)
        quick = orch.submit(Workflow(name="quick", works=[Work(name="q", function=ECHO, n_jobs=2)]))
        assert orch.wait(quick, timeout=60) == "finished"


def test_job_killed_from_outside_is_retried(engine: Engine, tmp_path: Path) -> None:
    c = cfg(tmp_path, engine)
    marker = engine.workdir / "who.json"
    with Runner(c) as runner:
        orch = Orchestrator(c, engine=runner.engine, bus=runner.bus)
        wid = orch.submit(Workflow(name="victim", works=[
            Work(name="v", function=F + "die_once", retries=2,
                 parameters={"marker": str(marker), "seconds": 120}),
            Work(name="next", function=ECHO, depends_on=["v"], parameters={"v": "{v.result}"})]))
        runs = wait_for(lambda: marker.exists() and json.loads(marker.read_text()), timeout=90,
                        what="the job to start")
        engine.kill(runs[0])
        assert orch.wait(wid, timeout=90) == "finished", orch.status(wid)
    [job] = orch.jobs(wid, "v")
    assert job["result"]["runs"] == 2
    if engine.kill_fails_job:
        assert job["attempt"] == 2, job
    assert orch.jobs(wid, "next")[0]["result"] == {"v": {"runs": 2}}


def test_faat_map_of_50_functions(engine: Engine, tmp_path: Path) -> None:
    """``@work`` + ``.map`` through a real REST server whose core runs on this engine."""
    from idds_jupyter import work
    from idds_jupyter.api.server import start_server
    from idds_jupyter.client import Client, set_client

    c = cfg(tmp_path, engine)
    old_umask = None
    if engine.jobs_run_as_other_user:
        # the jobs read the function's blob and write their values into the cache
        c.cache_dir.mkdir(parents=True, exist_ok=True)
        for d in (c.home, c.cache_dir):
            d.chmod(0o777)
        old_umask = os.umask(0)
    handle = start_server(c)
    client = Client(handle.url, handle.token)
    old = set_client(client)
    try:
        @work
        def triple(x: int) -> int:
            return x * 3

        assert triple.map(range(50), timeout=150) == [x * 3 for x in range(50)]
    finally:
        set_client(old)
        client.shutdown()
        handle.stop()
        if old_umask is not None:
            os.umask(old_umask)
