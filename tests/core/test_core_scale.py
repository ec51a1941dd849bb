"""What lets a DAG of a million jobs run, and two runners share a PostgreSQL, at small size:
the streamed expansion and the function statistics that no runner queues on."""

from __future__ import annotations

from pathlib import Path

import pytest
from helpers import config, layered_dag, run_to_end
from sqlalchemy import func, select, text

from idds_jupyter.store import works as store_works
from idds_jupyter.store.engine import make_engine
from idds_jupyter.store.function_stats import mean_wall, record_durations
from idds_jupyter.store.jobs import renew_locks
from idds_jupyter.store.migrate import upgrade
from idds_jupyter.store.tables import job_deps, jobs, workflows, works


def test_expansion_written_in_chunks_releases_each_job_once(
    tmp_path: Path, db_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Works written a few rows at a time (chunks of 7 instead of 2,000): every job, every
    edge and every claim taken at submission is there, each job released and run once."""
    monkeypatch.setattr(store_works, "_WRITE_CHUNK", 7)
    orch, wid, status = run_to_end(config(tmp_path, db_url), layered_dag(90))
    assert status == "finished"
    with orch.engine.begin() as conn:
        n, ok, max_rel, max_ok = conn.execute(
            select(
                func.count(),
                func.sum(jobs.c.success_count),
                func.max(jobs.c.release_count),
                func.max(jobs.c.success_count),
            ).where(jobs.c.workflow_id == wid)
        ).one()
        edges = conn.execute(select(func.count()).select_from(job_deps)).scalar()
        # each child's edges point at jobs idx, idx+1 (mod 30) of the level above
        wrong = conn.execute(
            select(func.count())
            .select_from(
                job_deps.join(jobs.alias("p"), job_deps.c.parent_id == text("p.id")).join(
                    jobs.alias("c"), job_deps.c.child_id == text("c.id")
                )
            )
            .where(text("p.idx <> c.idx AND p.idx <> (c.idx + 1) % 30"))
        ).scalar()
    assert (n, ok, max_rel, max_ok) == (90, 90, 1, 1)
    assert (edges, wrong) == (2 * 60, 0)


def test_function_stats_row_held_by_another_runner_is_not_waited_for(pg_url: str) -> None:
    """Two result transactions of one function: the second skips the row the first holds
    (a lock timeout would fail it, not hang it) and its durations count with a later batch."""
    engine = make_engine(pg_url)
    upgrade(engine)
    with engine.begin() as conn:
        record_durations(conn, {"m:f": [1.0]})
    with engine.connect() as first, engine.connect() as second, first.begin():
        record_durations(first, {"m:f": [2.0]})  # holds the row until it commits
        with second.begin():
            second.execute(text("SET LOCAL lock_timeout = '5s'"))
            record_durations(second, {"m:f": [6.0]})
    with engine.begin() as conn:
        assert mean_wall(conn, "m:f") == (pytest.approx(1.5), 2)
        record_durations(conn, {})  # the next batch folds in what was carried
        assert mean_wall(conn, "m:f") == (pytest.approx(3.0), 3)
    engine.dispose()


def test_heartbeat_skips_the_jobs_a_result_transaction_holds(pg_url: str) -> None:
    """The owner's beat renews the in-flight jobs no other transaction holds, without
    waiting (a lock timeout would fail it) for the one being recorded; the next beat
    renews that one too."""
    engine = make_engine(pg_url)
    upgrade(engine)
    t = 1.0
    with engine.begin() as conn:
        wf = conn.execute(
            workflows.insert()
            .values(
                name="hb",
                status="running",
                template={},
                params={},
                meta={},
                created_at=t,
                updated_at=t,
            )
            .returning(workflows.c.id)
        ).scalar_one()
        wk = conn.execute(
            works.insert()
            .values(
                workflow_id=wf,
                name="w",
                template_name="w",
                kind="function",
                status="running",
                spec={},
                created_at=t,
                updated_at=t,
            )
            .returning(works.c.id)
        ).scalar_one()
        ids = (
            conn.execute(
                jobs.insert().returning(jobs.c.id, sort_by_parameter_order=True),
                [
                    {
                        "workflow_id": wf,
                        "work_id": wk,
                        "idx": i,
                        "status": "submitted",
                        "lock_owner": "me",
                        "lock_expiry": 0.0,
                        "created_at": t,
                    }
                    for i in range(2)
                ],
            )
            .scalars()
            .all()
        )

    def expiry() -> list[float]:
        with engine.begin() as conn:
            return list(
                conn.execute(
                    select(jobs.c.lock_expiry).where(jobs.c.id.in_(ids)).order_by(jobs.c.id)
                ).scalars()
            )

    with engine.connect() as receiver, engine.connect() as poller, receiver.begin():
        receiver.execute(select(jobs.c.id).where(jobs.c.id == ids[0]).with_for_update())
        with poller.begin():
            poller.execute(text("SET LOCAL lock_timeout = '5s'"))
            assert renew_locks(poller, "me", 60.0) == 1
    first, second = expiry()
    assert first == 0.0 and second > 0.0
    with engine.begin() as conn:
        assert renew_locks(conn, "me", 60.0) == 2
    assert min(expiry()) > 0.0
    engine.dispose()
