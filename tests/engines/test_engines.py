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
from engine_support import Engine, engine_config, http_config

from idds_jupyter.agents.runner import Runner
from idds_jupyter.core import Orchestrator
from idds_jupyter.model import Condition, JobDep, Loop, Work, Workflow

pytestmark = pytest.mark.timeout(180)

ECHO = "idds_jupyter.worker.job:echo"
SLEEP = "idds_jupyter.worker.job:sleep"
F = "enginefuncs:"


def wait_for(
    pred: Callable[[], Any], timeout: float = 60, interval: float = 0.2, what: str = "condition"
) -> Any:
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
    return Workflow(
        name="branch-and-loop",
        parameters={"threshold": 0.5},
        works=[
            Work(name="simulate", function=F + "simulate", kwargs_list=seeds),
            Work(
                name="reconstruct",
                function=F + "reconstruct",
                kwargs_list=seeds,
                job_deps=[JobDep(work="simulate", pattern="one_to_one")],
            ),
            Work(
                name="summarize",
                function=F + "summarize",
                depends_on=["reconstruct"],
                parameters={"values": "{reconstruct.result}"},
            ),
            Work(
                name="publish",
                function=F + "publish",
                parameters={"efficiency": "{summarize.result.efficiency}"},
            ),
            Work(
                name="rerun",
                function=F + "rerun",
                parameters={"efficiency": "{summarize.result.efficiency}"},
            ),
            Work(name="tune", function=F + "tune", parameters={"iteration": "{iteration}"}),
        ],
        conditions=[
            Condition(
                "good_enough",
                "summarize.result.efficiency > threshold",
                true=["publish"],
                false=["rerun"],
            ),
        ],
        loops=[
            Loop(
                "tuning",
                works=["tune"],
                until="tune.result.value >= 3",
                max_iterations=6,
                depends_on=["summarize"],
            ),
        ],
    )


def _backends_used(orch: Orchestrator, wid: int) -> set[str]:
    from sqlalchemy import select

    from idds_jupyter.store.tables import jobs

    with orch.engine.begin() as conn:
        return {r[0] for r in conn.execute(select(jobs.c.backend).where(jobs.c.workflow_id == wid))}


def test_template_dag_with_condition_and_loop(engine: Engine, tmp_path: Path) -> None:
    c = engine_config(engine)
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
    c = engine_config(engine)
    marks = [{"marker": str(engine.workdir / f"mark{i}")} for i in range(3)]
    with Runner(c) as runner:
        orch = Orchestrator(c, engine=runner.engine, bus=runner.bus)
        wid = orch.submit(
            Workflow(
                name="flaky",
                works=[
                    Work(name="f", function=F + "flaky", kwargs_list=marks, retries=2),
                    Work(
                        name="after",
                        function=ECHO,
                        parameters={"got": "{f.result}"},
                        depends_on=["f"],
                    ),
                ],
            )
        )
        assert orch.wait(wid, timeout=90) == "finished", orch.status(wid)
    jobs = orch.jobs(wid, "f")
    assert [j["attempt"] for j in jobs] == [2, 2, 2]
    assert all(j["result"] == "second try ok" for j in jobs)
    assert orch.jobs(wid, "after")[0]["result"] == {"got": ["second try ok"] * 3}


def test_sweep_of_50_jobs(engine: Engine, tmp_path: Path) -> None:
    c = engine_config(engine)
    t0 = time.monotonic()
    with Runner(c) as runner:
        orch = Orchestrator(c, engine=runner.engine, bus=runner.bus)
        wid = orch.submit(
            Workflow(
                name="sweep",
                works=[Work(name="s", function=ECHO, kwargs_list=[{"i": i} for i in range(50)])],
            )
        )
        assert orch.wait(wid, timeout=120) == "finished", orch.status(wid)
        backend = runner.carrier.backends[engine.backend]
        polls = getattr(backend, "polls", None)
    elapsed = time.monotonic() - t0
    assert orch.job_counts(wid) == {"finished": 50}
    assert sorted(j["result"]["i"] for j in orch.jobs(wid, "s")) == list(range(50))
    if polls is not None:  # batch backends: one scheduler call per round, not one per job
        assert polls <= elapsed / c.batch_poll_interval + 3, (polls, elapsed)


def test_abort_cancels_the_engines_jobs(engine: Engine, tmp_path: Path) -> None:
    c = engine_config(engine)
    with Runner(c) as runner:
        orch = Orchestrator(c, engine=runner.engine, bus=runner.bus)
        wid = orch.submit(
            Workflow(
                name="slow",
                works=[
                    Work(
                        name="s",
                        function=SLEEP,
                        kwargs_list=[{"seconds": 60 if engine.kills_running else 5}] * 3,
                    )
                ],
            )
        )
        states = ("running",) if engine.reports_start else ("running", "submitted")
        wait_for(
            lambda: sum(orch.job_counts(wid).get(s, 0) for s in states) > 0,
            timeout=60,
            what="a job running",
        )
        # the store says "submitted" when the claim commits, just before the engine holds the job
        wait_for(lambda: engine.active(runner) > 0, timeout=30, what="a job in the engine")
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
    c = engine_config(engine)
    marker = engine.workdir / "who.json"
    with Runner(c) as runner:
        orch = Orchestrator(c, engine=runner.engine, bus=runner.bus)
        wid = orch.submit(
            Workflow(
                name="victim",
                works=[
                    Work(
                        name="v",
                        function=F + "die_once",
                        retries=2,
                        parameters={"marker": str(marker), "seconds": 120},
                    ),
                    Work(
                        name="next", function=ECHO, depends_on=["v"], parameters={"v": "{v.result}"}
                    ),
                ],
            )
        )
        runs = wait_for(
            lambda: marker.exists() and json.loads(marker.read_text()),
            timeout=90,
            what="the job to start",
        )
        engine.kill(runs[0])
        assert orch.wait(wid, timeout=90) == "finished", orch.status(wid)
    [job] = orch.jobs(wid, "v")
    assert job["result"]["runs"] == 2
    if engine.kill_fails_job:
        assert job["attempt"] == 2, job
    assert orch.jobs(wid, "next")[0]["result"] == {"v": {"runs": 2}}


@pytest.mark.parametrize("engine", ["slurm", "htcondor"], indirect=True)
def test_a_works_resources_reach_the_scheduler(engine: Engine, tmp_path: Path) -> None:
    """Cores, memory and scratch disk of a Work are what the batch scheduler asks and gives."""
    c = engine_config(engine)
    with Runner(c) as runner:
        orch = Orchestrator(c, engine=runner.engine, bus=runner.bus)
        wid = orch.submit(
            Workflow(
                name="sized",
                works=[
                    Work(
                        name="g",
                        function=F + "granted",
                        resources={"cores": 2, "memory_mb": 300, "disk_mb": 64},
                    )
                ],
            )
        )
        assert orch.wait(wid, timeout=120) == "finished", orch.status(wid)
    [job] = orch.jobs(wid, "g")
    got = job["result"]
    assert got["asked"] == {"cores": 2, "memory_mb": 300, "disk_mb": 64}, got
    if "slot" in got:  # HTCondor: the dynamic slot the job ran in
        assert got["slot"]["cores"] == 2 and got["slot"]["memory_mb"] >= 300, got
        assert 64 <= got["slot"]["disk_mb"] < 1024, got


def test_faat_map_of_50_functions(engine: Engine, tmp_path: Path) -> None:
    """``@work`` + ``.map`` through a real REST server whose core runs on this engine."""
    from idds_jupyter import work
    from idds_jupyter.api.server import start_server
    from idds_jupyter.client import Client, set_client

    c = engine_config(engine)
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


# ----------------------------------------------------------------------------- transfer: http


@pytest.fixture
def blob_fetches(monkeypatch: pytest.MonkeyPatch) -> dict[int, list[str]]:
    """Blobs served to jobs over HTTP (job id -> digests), counted in the API handler."""
    from idds_jupyter.api import jobs as api_jobs

    seen: dict[int, list[str]] = {}
    real = api_jobs.JobBlobHandler.get

    async def counting(self: Any, job_id: str, sha: str) -> None:
        await real(self, job_id, sha)
        seen.setdefault(int(job_id), []).append(sha)

    monkeypatch.setattr(api_jobs.JobBlobHandler, "get", counting)
    return seen


def test_http_transfer_faat_map_and_command_job(
    batch_engine: Engine, tmp_path: Path, blob_fetches: dict[int, list[str]]
) -> None:
    """FaaT ``.map`` and a command job (failing once, retried) with ``transfer: http``."""
    from idds_jupyter import work
    from idds_jupyter.api.server import start_server
    from idds_jupyter.client import Client, set_client

    engine = batch_engine
    c = http_config(engine)
    handle = start_server(c)
    client = Client(handle.url, handle.token)
    old = set_client(client)
    try:

        @work
        def triple(x: int) -> Any:
            return x * 3 if x % 2 else [x] * 5000  # even items: a value too big to go inline

        values = triple.map(range(20), timeout=150)
        assert values == [x * 3 if x % 2 else [x] * 5000 for x in range(20)]
        # every job fetched its inputs over HTTP: its spec and its work's function and calls
        assert len(blob_fetches) == 20, blob_fetches
        assert all(len(shas) >= 2 for shas in blob_fetches.values()), blob_fetches

        orch = handle.ctx.orch
        wid = orch.submit(
            Workflow(
                name="cmd-http",
                works=[
                    Work(
                        name="c",
                        retries=1,
                        kwargs_list=[{"n": 6}, {"n": 7}],
                        command='[ "$IDDS_ATTEMPT" -ge 2 ] || exit 3; n={n}; '
                        'echo "{{\\"n\\": $((n * 7)), \\"cwd\\": \\"$(pwd)\\"}}"',
                    )
                ],
            )
        )
        assert orch.wait(wid, timeout=150) == "finished", orch.status(wid)
        jobs = orch.jobs(wid, "c")
        assert [j["result"]["n"] for j in jobs] == [42, 49]
        assert [j["attempt"] for j in jobs] == [2, 2]  # the first attempts failed: retried
        for j in jobs:
            # run in its own scratch dir, not in the submitter's directory (this process's cwd)
            assert "idds-job-" in j["result"]["cwd"] and str(c.home) not in j["result"]["cwd"]
            assert j["result"]["cwd"] != os.getcwd()
            # the job's output came back with its result and is served from the core's logs
            assert Path(j["log_path"]).is_relative_to(c.log_dir), j
            assert f'"n": {j["result"]["n"]}' in client.log(j["id"])
    finally:
        set_client(old)
        client.shutdown()
        handle.stop()


def test_http_transfer_needs_no_shared_filesystem(
    batch_engine: Engine, tmp_path: Path, blob_fetches: dict[int, list[str]]
) -> None:
    """What a job sees with ``transfer: http``: no path of the core, its own scratch dir.

    On HTCondor, whose jobs run as another user, the core's home (cache, logs,
    batch specs) is closed to them (mode 0700) and the jobs still run: they
    cannot have read anything from it. On Slurm and the PanDA stand-in (jobs as
    root, who reads everything) the spec they ran names no file at all and they
    fetched their blobs over HTTP.
    """
    from idds_jupyter import work
    from idds_jupyter.api.server import start_server
    from idds_jupyter.client import Client, set_client

    engine = batch_engine
    c = http_config(engine)
    handle = start_server(c)
    client = Client(handle.url, handle.token)
    old = set_client(client)
    try:

        @work
        def where_am_i(home: str, cache: str) -> dict[str, Any]:
            import os as _os

            with open(_os.environ["IDDS_JOB_SPEC"], encoding="utf-8") as fh:
                spec = fh.read()
            return {
                "cwd": _os.getcwd(),
                "home_env": _os.environ.get("HOME"),
                "uid": _os.getuid(),
                "cache_readable": _os.access(cache, _os.R_OK),
                "home_listable": _os.access(home, _os.X_OK),
                "spec": spec,
                "task": _os.environ.get("IDDS_BATCH_TASK") or _os.environ.get("PANDAID"),
            }

        [seen] = where_am_i.map([str(c.home)], [str(c.cache_dir)], timeout=150)
    finally:
        set_client(old)
        client.shutdown()
        handle.stop()
    spec = json.loads(seen["spec"])
    assert spec["transfer"] == "http" and "result_dir" not in spec and "log_dir" not in spec
    # the blobs are named by digest only: the paths in the spec are the job's own copies
    assert spec["payload"]["path"].startswith(seen["cwd"]), spec
    for text in (str(c.home), str(c.cache_dir), str(c.batch_dir)):
        assert text not in json.dumps({k: v for k, v in spec.items() if k != "env"}), (text, spec)
    assert not seen["cwd"].startswith(str(engine.workdir)) and "idds-job-" in seen["cwd"], seen
    assert seen["task"], seen  # it did run as a task of the batch system (or a PanDA pilot's)
    [(job_id, shas)] = blob_fetches.items()
    assert spec["payload"]["sha256"] in shas and spec["call"]["sha256"] in shas
    if engine.jobs_run_as_other_user:
        assert seen["uid"] != os.getuid()
        assert not seen["cache_readable"] and not seen["home_listable"], seen
        assert seen["home_env"] != os.environ.get("HOME"), seen
