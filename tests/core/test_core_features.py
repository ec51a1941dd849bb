"""Data-aware works, sub-workflows, on_failure, the Dask backend, agents split over processes."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
from helpers import config, layered_dag, run_to_end, wait_for
from sqlalchemy import select
from waiting import holds_for

from idds_jupyter.agents.runner import Runner
from idds_jupyter.core import Orchestrator
from idds_jupyter.model import Work, Workflow
from idds_jupyter.store.engine import make_engine
from idds_jupyter.store.migrate import current, upgrade
from idds_jupyter.store.tables import jobs

ECHO = "idds_jupyter.worker.job:echo"
FAIL = "idds_jupyter.worker.job:fail"


def test_data_aware_jobs_start_as_their_files_arrive(tmp_path: Path, db_url: str) -> None:
    cfg = config(tmp_path, db_url)
    with Runner(cfg) as runner:
        orch = Orchestrator(cfg, engine=runner.engine, bus=runner.bus)
        names = [f"raw_{i}.root" for i in range(6)]
        orch.catalog.add_dataset("tape:raw", names)
        wid = orch.submit(
            Workflow(
                name="carousel",
                works=[
                    Work(
                        name="process",
                        function=ECHO,
                        input_dataset="tape:raw",
                        parameters={"path": "{file}"},
                    )
                ],
            )
        )
        wait_for(lambda: orch.job_counts(wid).get("pending", 0) == 6)
        holds_for(
            lambda: orch.job_counts(wid) == {"pending": 6},
            1.0,  # nothing staged, nothing runs
            message="jobs of unstaged files stay pending",
        )
        assert orch.catalog.mark_available("tape:raw", names[:2]) == 2
        wait_for(lambda: orch.job_counts(wid).get("finished", 0) == 2)
        assert orch.job_counts(wid) == {"finished": 2, "pending": 4}
        assert orch.catalog.mark_available("tape:raw", names[:2]) == 0  # idempotent
        assert orch.catalog.mark_available("tape:raw") == 4
        assert orch.wait(wid, timeout=60) == "finished"
        results = [j["result"] for j in orch.jobs(wid, "process")]
    assert results == [{"path": n, "file": n} for n in names]


def test_subworkflow_and_on_failure(tmp_path: Path, db_url: str) -> None:
    wf = Workflow.from_dict(
        {
            "name": "nested",
            "works": [
                {"name": "prepare", "function": ECHO, "parameters": {"n": 3}},
                {
                    "name": "inner",
                    "depends_on": ["prepare"],
                    "parameters": {"n": "{prepare.result.n}"},
                    "workflow": {
                        "works": [
                            {"name": "a", "function": ECHO, "parameters": {"k": "{n}"}},
                            {
                                "name": "b",
                                "function": ECHO,
                                "depends_on": ["a"],
                                "parameters": {"k2": "{a.result.k * 2}"},
                            },
                        ]
                    },
                },
                {"name": "risky", "function": FAIL, "depends_on": ["inner"]},
                {"name": "cleanup", "function": ECHO, "parameters": {"why": "{risky.status}"}},
                {"name": "never", "function": ECHO, "depends_on": ["risky"]},
            ],
        }
    )
    wf.works[2].on_failure = ["cleanup"]
    orch, wid, status = run_to_end(config(tmp_path, db_url), wf)
    works = {w["name"]: w for w in orch.status(wid)["works"]}
    assert works["inner"]["status"] == "finished"
    assert works["inner.b"]["status"] == "finished"
    assert orch.jobs(wid, "inner.b")[0]["result"] == {"k2": 6}
    assert works["risky"]["status"] == "failed"
    assert works["cleanup"]["status"] == "finished"
    assert orch.jobs(wid, "cleanup")[0]["result"] == {"why": "failed"}
    assert works["never"]["status"] == "skipped"
    assert status == "finished"  # the failure was handled by its on_failure branch


def test_dask_backend_runs_the_same_workflow(tmp_path: Path) -> None:
    from distributed import LocalCluster

    with LocalCluster(
        n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None
    ) as cluster:
        cfg = config(
            tmp_path,
            f"sqlite:///{tmp_path / 'idds.db'}",
            backend="dask",
            dask_address=cluster.scheduler_address,
        )
        orch, wid, status = run_to_end(cfg, layered_dag(300), timeout=120)
        assert status == "finished"
        with orch.engine.begin() as conn:
            backends = {r[0] for r in conn.execute(select(jobs.c.backend))}
        assert backends == {"dask"}
        assert orch.job_counts(wid) == {"finished": 300}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.mark.parametrize("bus", ["zmq", "db"])
def test_roles_in_separate_processes(tmp_path: Path, pg_url: str, bus: str) -> None:
    """Clerk, Transformer and Carrier each in its own process, woken by a shared bus."""
    procs = []
    env = dict(
        os.environ,
        IDDS_DB_URL=pg_url,
        IDDS_HOME=str(tmp_path / "home"),
        IDDS_POLL_INTERVAL="5",
        IDDS_WORKERS="2",
    )
    if bus == "zmq":
        pub, sub = _free_port(), _free_port()
        procs.append(
            subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "idds_jupyter.bus.zmqbus",
                    "--pub",
                    f"tcp://127.0.0.1:{pub}",
                    "--sub",
                    f"tcp://127.0.0.1:{sub}",
                ],
                env=env,
            )
        )
        env["IDDS_BUS"] = f"zmq://127.0.0.1:{pub}:{sub}"
    else:
        env["IDDS_BUS"] = "db"
    upgrade(make_engine(pg_url))
    for role in ("clerk", "transformer", "carrier"):
        procs.append(
            subprocess.Popen(
                [sys.executable, "-m", "idds_jupyter.cli", "agents", "--only", role], env=env
            )
        )
    try:
        time.sleep(2.0)
        from idds_jupyter.bus import make_bus

        engine = make_engine(pg_url)
        orch = Orchestrator(
            config(tmp_path, pg_url), engine=engine, bus=make_bus(env["IDDS_BUS"], engine=engine)
        )
        t0 = time.monotonic()
        wids = [orch.submit(layered_dag(60, name=f"dag{i}")) for i in range(3)]
        assert [orch.wait(w, timeout=60) for w in wids] == ["finished"] * 3
        # Polling is every 5 s here; events made it much faster than three polls per level.
        assert time.monotonic() - t0 < 10
    finally:
        for p in procs:
            p.send_signal(signal.SIGTERM)
        for p in procs:
            p.wait(30)


def test_upgrading_an_sqlite_store_keeps_its_jobs_and_reserves_ids_above_them(
    tmp_path: Path,
) -> None:
    """0005 rebuilds SQLite's jobs table AUTOINCREMENT (ids reserved ahead are never
    reused): its rows, ids and indexes are kept, and reservations start above them."""
    from sqlalchemy import inspect

    from idds_jupyter.store.jobs import reserve_job_ids

    cfg = config(tmp_path, f"sqlite:///{tmp_path / 'old.db'}")
    engine = make_engine(cfg.db_url)
    upgrade(engine, "0004")
    orch = Orchestrator(cfg, engine=engine, migrate=False)
    wid = orch.submit(
        {
            "name": "m",
            "works": [{"name": "a", "function": "idds_jupyter.worker.job:noop", "n_jobs": 4}],
        }
    )
    with engine.begin() as conn:
        before = conn.execute(
            select(jobs.c.id, jobs.c.idx, jobs.c.status)
            .where(jobs.c.workflow_id == wid)
            .order_by(jobs.c.id)
        ).all()
    upgrade(engine, "0005")
    assert current(engine) == "0005"
    with engine.begin() as conn:
        after = conn.execute(
            select(jobs.c.id, jobs.c.idx, jobs.c.status)
            .where(jobs.c.workflow_id == wid)
            .order_by(jobs.c.id)
        ).all()
        reserved = reserve_job_ids(conn, 2)
        ddl = conn.exec_driver_sql("SELECT sql FROM sqlite_master WHERE name = 'jobs'").scalar_one()
    assert after == before and len(after) == 4
    assert reserved == [after[-1].id + 1, after[-1].id + 2]
    assert "AUTOINCREMENT" in ddl
    assert {ix["name"] for ix in inspect(engine).get_indexes("jobs")} == {
        "ix_jobs_status_work",
        "ix_jobs_workflow",
        "ix_jobs_lock_owner",
        "ix_jobs_file",
    }


def test_upgrading_to_0006_gives_existing_datasets_and_blobs_owners(
    db_url: str, tmp_path: Path
) -> None:
    """0006: dataset names become unique per owner (rows kept), blobs recorded with an owner
    and job results get grants (the run's owner), blobs of no known owner are admins' only,
    tokens gain expires_at (existing ones: never)."""
    from sqlalchemy import insert

    from idds_jupyter.store.auth_tables import api_tokens
    from idds_jupyter.store.cache import readable_blobs
    from idds_jupyter.store.catalog import Catalog
    from idds_jupyter.store.tables import blobs, datasets, files
    from idds_jupyter.store.tokens import create_token, verify_token

    engine = make_engine(db_url)
    upgrade(engine, "0005")
    orch = Orchestrator(config(tmp_path, db_url), engine=engine, migrate=False)
    wid = orch.submit(
        {
            "name": "m",
            "works": [{"name": "a", "function": "idds_jupyter.worker.job:noop", "n_jobs": 1}],
        },
        owner="alice",
    )
    up, res, lost = "a" * 64, "b" * 64, "c" * 64
    with engine.begin() as conn:
        ds = conn.execute(
            insert(datasets)
            .values(name="raw", owner="alice", status="open", meta={}, created_at=1.0)
            .returning(datasets.c.id)
        ).scalar_one()
        conn.execute(insert(files).values(dataset_id=ds, name="f1", status="new", created_at=1.0))
        conn.execute(
            insert(blobs),
            [
                {"sha256": up, "size": 1, "owner": "bob", "created_at": 1.0},
                {"sha256": res, "size": 2, "owner": None, "created_at": 1.0},
                {"sha256": lost, "size": 3, "owner": None, "created_at": 1.0},
            ],
        )
        conn.execute(jobs.update().where(jobs.c.workflow_id == wid).values(blob=res))
        conn.execute(
            insert(api_tokens).values(
                user="alice", name="old", token_hash="0" * 64, admin=False, created_at=1.0
            )
        )
    upgrade(engine, "0006")
    assert current(engine) == "0006"
    with engine.begin() as conn:
        assert readable_blobs(conn, [up, res, lost], "bob") == {up}
        assert readable_blobs(conn, [up, res, lost], "alice") == {res}
        assert conn.execute(select(api_tokens.c.expires_at)).scalar_one() is None
    assert [f["name"] for f in Catalog(engine, "alice").files("raw")] == ["f1"]
    Catalog(engine, "bob").add_dataset("raw", ["g1"])  # the same name, another owner
    with pytest.raises(LookupError):
        Catalog(engine, "carol").files("raw")
    _, token = create_token(engine, "carol", expires_in=60)
    assert verify_token(engine, token) is not None
    engine.dispose()


def test_db_upgrade_is_idempotent(db_url: str, tmp_path: Path) -> None:
    from alembic.script import ScriptDirectory

    from idds_jupyter.store.migrate import alembic_config

    head = ScriptDirectory.from_config(alembic_config(make_engine(db_url))).get_current_head()
    assert head is not None and int(head) >= 4  # 0004: function_stats
    env = dict(os.environ, IDDS_DB_URL=db_url, IDDS_HOME=str(tmp_path))
    for _ in range(2):
        res = subprocess.run(
            [sys.executable, "-m", "idds_jupyter.cli", "db", "upgrade"],
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert res.returncode == 0, res.stderr
        assert f"schema {head}" in res.stdout
    assert current(make_engine(db_url)) == head
