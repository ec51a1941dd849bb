"""Provenance and memoized re-runs, end to end on SQLite and on the real PostgreSQL.

A 3-work DAG of function jobs (job-level links, 100 jobs each) whose functions live in a
module of the test's own directory: the workers import it, the service hashes its source.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from helpers import config
from sqlalchemy import func, select

from idds_jupyter.agents.runner import Runner
from idds_jupyter.core import Orchestrator
from idds_jupyter.store import provenance as prov
from idds_jupyter.store.tables import environments, jobs, provenance

N = 100
STEPS = """
import os

def first(i):
    return int(i)

def middle(i):
    return (int(i) + 1) * {factor}

def last(i, fail_on=-1):
    i = int(i)
    if i == int(fail_on) and os.path.exists({flag!r}):
        raise RuntimeError("told to fail")
    return i + 1
"""


def dag(cache: bool = True, fail_on: int = -1) -> dict[str, Any]:
    i = {"i": "{job_index}"}
    one = {"work": "first", "pattern": "one_to_one"}
    two = {"work": "middle", "pattern": "one_to_one"}
    works: list[dict[str, Any]] = [
        {"name": "first", "function": f"{MOD}:first", "n_jobs": N, "parameters": i},
        {
            "name": "middle",
            "function": f"{MOD}:middle",
            "n_jobs": N,
            "job_deps": [one],
            "parameters": i,
        },
        {
            "name": "last",
            "function": f"{MOD}:last",
            "n_jobs": N,
            "job_deps": [two],
            "parameters": {**i, "fail_on": fail_on},
        },
    ]
    if cache:
        for w in works:
            w["cache"] = True
    return {"name": "prov", "works": works}


MOD = "provsteps"


@pytest.fixture
def steps(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Any:
    """The module ``provsteps`` in a directory of its own, on the workers' and the
    service's path; ``write(factor)`` (re)writes it."""
    src = tmp_path / "mods"
    src.mkdir()
    flag = tmp_path / "fail.flag"
    monkeypatch.syspath_prepend(str(src))
    monkeypatch.setenv("PYTHONPATH", f"{src}:{os.environ.get('PYTHONPATH', '')}")

    def write(factor: int) -> None:
        (src / f"{MOD}.py").write_text(STEPS.format(factor=factor, flag=str(flag)))

    write(2)
    write.flag = flag  # type: ignore[attr-defined]
    return write


def run(
    cfg: Any, template: Any = None, rerun_of: int | None = None
) -> tuple[Orchestrator, int, str]:
    """One run with a fresh Runner (fresh worker processes: the module as it is now)."""
    with Runner(cfg) as runner:
        orch = Orchestrator(cfg, engine=runner.engine, bus=runner.bus)
        if rerun_of is not None:
            with orch.engine.connect() as conn:
                req = prov.rerun_request(conn, rerun_of)
            assert req is not None
            wid = orch.submit(req["template"], req["params"], owner=req["owner"], cwd=req["cwd"])
        else:
            wid = orch.submit(template, owner="alice")
        status = orch.wait(wid, timeout=180)
    return orch, wid, status


def counts(orch: Orchestrator, wid: int) -> dict[str, dict[str, int]]:
    with orch.engine.connect() as conn:
        return prov.provenance_summary(conn, wid)


def results(orch: Orchestrator, wid: int) -> list[Any]:
    with orch.engine.connect() as conn:
        return [
            r
            for (r,) in conn.execute(
                select(jobs.c.result)
                .where(jobs.c.workflow_id == wid)
                .order_by(jobs.c.work_id, jobs.c.idx)
            )
        ]


def test_edit_the_middle_work_reruns_it_and_the_last_first_is_cached(
    tmp_path: Path, db_url: str, steps: Any
) -> None:
    cfg = config(tmp_path, db_url)
    orch, wid, status = run(cfg, dag())
    assert status == "finished"
    assert counts(orch, wid) == {
        "first": {"ran": N, "cached": 0, "failed": 0},
        "middle": {"ran": N, "cached": 0, "failed": 0},
        "last": {"ran": N, "cached": 0, "failed": 0},
    }
    # every job has its provenance: digests, environment, attempts, times
    with orch.engine.connect() as conn:
        assert (
            conn.execute(
                select(func.count()).select_from(provenance).where(provenance.c.workflow_id == wid)
            ).scalar()
            == 3 * N
        )
        env = conn.execute(select(environments.c.info)).first()
        one = prov.job_provenance(conn, wid, "last", 7)
    assert env is not None and env.info["python"] == ".".join(map(str, sys.version_info[:3]))
    assert "sqlalchemy" in env.info["packages"]
    assert one is not None and one["attempts"] == 1 and one["status"] == "finished"
    assert len(one["code_hash"]) == len(one["input_hash"]) == len(one["result_hash"]) == 64
    assert one["environment"]["host"] and one["backend"] == "local" and not one["cached"]
    assert [(u["work"], u["idx"], u["result"]) for u in one["upstream"]] == [("middle", 7, 16)]

    # unchanged: all from the cache
    orch, same, status = run(cfg, dag())
    assert status == "finished"
    assert {w: c["cached"] for w, c in counts(orch, same).items()} == {
        "first": N,
        "middle": N,
        "last": N,
    }
    assert results(orch, same) == results(orch, wid)

    steps(3)  # the middle work's function edited
    orch, again, status = run(cfg, dag())
    assert status == "finished"
    assert counts(orch, again) == {
        "first": {"ran": 0, "cached": N, "failed": 0},
        "middle": {"ran": N, "cached": 0, "failed": 0},
        "last": {"ran": N, "cached": 0, "failed": 0},
    }
    assert results(orch, again)[N : 2 * N] == [3 * (i + 1) for i in range(N)]
    assert results(orch, again)[2 * N :] == [i + 1 for i in range(N)]
    with orch.engine.connect() as conn:
        cached = prov.job_provenance(conn, again, "first", 5)
    assert cached is not None and cached["cached"]
    assert (
        cached["cached_source"]["workflow_id"] == same
        or cached["cached_source"]["workflow_id"] == wid
    )


def test_off_by_default_every_job_runs(tmp_path: Path, db_url: str, steps: Any) -> None:
    cfg = config(tmp_path, db_url)
    run(cfg, dag(cache=False))
    orch, wid, status = run(cfg, dag(cache=False))
    assert status == "finished"
    assert {w: c["ran"] for w, c in counts(orch, wid).items()} == {
        "first": N,
        "middle": N,
        "last": N,
    }


def test_rerun_failed_runs_only_the_failed_jobs_and_their_downstream(
    tmp_path: Path, db_url: str, steps: Any
) -> None:
    """Three middle jobs made to fail: their last jobs are cancelled. A re-run (the
    failure fixed) runs those 3 and their 3 downstream jobs; the other 294 are cached."""
    cfg = config(tmp_path, db_url)
    # the run is not memoized itself: a re-run memoizes every work
    flag: Path = steps.flag
    flag.write_text("x")
    orch, wid, status = run(cfg, dag(cache=False, fail_on=4))
    assert status in ("subfinished", "failed")
    assert counts(orch, wid)["last"] == {"ran": N - 1, "cached": 0, "failed": 1}
    flag.unlink()
    orch, again, status = run(cfg, rerun_of=wid)
    assert status == "finished"
    assert counts(orch, again) == {
        "first": {"ran": 0, "cached": N, "failed": 0},
        "middle": {"ran": 0, "cached": N, "failed": 0},
        "last": {"ran": 1, "cached": N - 1, "failed": 0},
    }


def cli(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "idds_jupyter.cli", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )


def test_cli_rerun_failed_and_the_crate_read_by_rocrate(
    tmp_path: Path, db_url: str, steps: Any
) -> None:
    """``idds-jupyter rerun ID --failed`` (agents in the command) runs the failed job and its
    downstream only; ``idds-jupyter provenance ID -o run.crate.zip`` writes an RO-Crate
    that the ``rocrate`` library opens, with one action per job and the run's profiles."""
    from rocrate.rocrate import ROCrate

    cfg = config(tmp_path, db_url)
    flag: Path = steps.flag
    flag.write_text("x")
    # middle job 4 fails: the last work's job 4 is cancelled, never run
    tmpl = dag(cache=False)
    tmpl["works"][1]["function"] = f"{MOD}:last"  # fails when i == fail_on and the flag exists
    tmpl["works"][1]["parameters"] = {"i": "{job_index}", "fail_on": 4}
    orch, wid, status = run(cfg, tmpl)
    assert status in ("subfinished", "failed")
    assert counts(orch, wid) == {
        "first": {"ran": N, "cached": 0, "failed": 0},
        "middle": {"ran": N - 1, "cached": 0, "failed": 1},
        "last": {"ran": N - 1, "cached": 0, "failed": 0},
    }
    flag.unlink()
    env = dict(
        os.environ,
        IDDS_DB_URL=db_url,
        IDDS_HOME=str(tmp_path / "home"),
        IDDS_POLL_INTERVAL="0.5",
        IDDS_WORKERS="2",
    )
    out = cli(env, "rerun", str(wid), "--failed", "--embedded", "-q")
    print(out.stdout, out.stderr)
    assert out.returncode == 0, out.stderr
    again = int(out.stdout.split()[1])
    assert counts(orch, again) == {
        "first": {"ran": 0, "cached": N, "failed": 0},
        "middle": {"ran": 1, "cached": N - 1, "failed": 0},
        "last": {"ran": 1, "cached": N - 1, "failed": 0},
    }
    assert "middle" in out.stdout and "ran=1 cached=99 failed=0" in out.stdout

    crate_zip = tmp_path / "run.crate.zip"
    out = cli(env, "provenance", str(again), "-o", str(crate_zip))
    print(out.stdout, out.stderr)
    assert out.returncode == 0, out.stderr
    crate = ROCrate(str(crate_zip))
    conforms = {c["@id"] if isinstance(c, dict) else c.id for c in crate.root_dataset["conformsTo"]}
    assert {
        "https://w3id.org/ro/wfrun/process/0.5",
        "https://w3id.org/ro/wfrun/workflow/0.5",
    } <= conforms
    assert crate.mainEntity is not None and crate.mainEntity.id == "workflow.json"
    actions = crate.get_by_type("CreateAction")
    assert len(actions) == 3 * N + 1  # one per job, one for the run
    by_name = {a["name"]: a for a in actions}
    ran = by_name["middle[4]"]
    assert ran["instrument"]["name"] == "middle" and ran["instrument"]["identifier"]
    assert (
        ran["actionStatus"] == "http://schema.org/CompletedActionStatus"
        or getattr(ran["actionStatus"], "id", None) == "http://schema.org/CompletedActionStatus"
    )
    assert [o["name"] for o in ran["object"]] == [
        "input digest",
        f"result of job {_job_id(orch, again, 'first', 4)}",
    ]
    assert by_name["middle[5]"]["isBasedOn"] is not None  # cached: the job it took its result from
    assert ran["environment"]["name"] == "environment"
    assert len(crate.get_by_type("SoftwareApplication")) == 3


def _job_id(orch: Orchestrator, wid: int, work: str, idx: int) -> int:
    from idds_jupyter.store.tables import works

    with orch.engine.connect() as conn:
        return int(
            conn.execute(
                select(jobs.c.id)
                .join(works, works.c.id == jobs.c.work_id)
                .where(jobs.c.workflow_id == wid, works.c.name == work, jobs.c.idx == idx)
            ).scalar_one()
        )


def test_upgrading_to_0007_keeps_runs_and_records_new_jobs(tmp_path: Path, db_url: str) -> None:
    """0007 adds the provenance tables only: a run stored at 0006 is kept whole (and has no
    record: never a cache source); jobs ending after the upgrade are recorded; 0007 goes
    back down to 0006 and up again."""
    from alembic import command
    from sqlalchemy import inspect

    from idds_jupyter.store.engine import make_engine
    from idds_jupyter.store.migrate import alembic_config, current, upgrade

    engine = make_engine(db_url)
    upgrade(engine, "0006")
    cfg = config(tmp_path, db_url)
    before = Orchestrator(cfg, engine=engine, migrate=False).submit(
        {
            "name": "old",
            "works": [{"name": "a", "function": "idds_jupyter.worker.job:noop", "n_jobs": 3}],
        },
        owner="alice",
    )
    with engine.connect() as conn:
        old_jobs = conn.execute(
            select(jobs.c.id, jobs.c.status).where(jobs.c.workflow_id == before).order_by(jobs.c.id)
        ).all()
    upgrade(engine)
    assert current(engine) == "0007"
    assert {"provenance", "environments"} <= set(inspect(engine).get_table_names())
    with engine.connect() as conn:
        assert (
            conn.execute(
                select(jobs.c.id, jobs.c.status)
                .where(jobs.c.workflow_id == before)
                .order_by(jobs.c.id)
            ).all()
            == old_jobs
        )
    with Runner(cfg) as runner:
        orch = Orchestrator(cfg, engine=runner.engine, bus=runner.bus)
        assert orch.wait(before, timeout=120) == "finished"  # the old run goes on
    with engine.connect() as conn:
        assert prov.provenance_summary(conn, before) == {"a": {"ran": 3, "cached": 0, "failed": 0}}
    command.downgrade(alembic_config(engine), "0006")
    assert current(engine) == "0006"
    assert "provenance" not in set(inspect(engine).get_table_names())
    upgrade(engine)
    assert current(engine) == "0007"
    engine.dispose()
