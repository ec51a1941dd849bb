"""The job locks of the store, statement by statement: heart-beat (``renew_locks``), a
dead owner's jobs taken back (``reclaim_expired``), a stopping owner's handed back
(``release_owned``). Each acts on exactly the rows it names, on SQLite and PostgreSQL,
on the database's clock. (test_core_clock.py runs them through real agents.)"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from helpers import config
from sqlalchemy import select, update

from idds_jupyter.core import Orchestrator
from idds_jupyter.store.jobs import claim_ready, reclaim_expired, release_owned, renew_locks
from idds_jupyter.store.sql import db_now
from idds_jupyter.store.tables import jobs


def _jobs(orch: Orchestrator, wid: int) -> dict[int, Any]:
    with orch.engine.begin() as conn:
        rows = conn.execute(select(jobs).where(jobs.c.workflow_id == wid)).all()
    return {r.id: r for r in rows}


def _now(orch: Orchestrator) -> float:
    with orch.engine.begin() as conn:
        return float(conn.execute(select(db_now())).scalar_one())


def _setup(tmp_path: Path, db_url: str) -> tuple[Orchestrator, int, list[int], list[int], int]:
    """Five jobs: owner A claims two, owner B one, one stays ready, one is finished (A's)."""
    orch = Orchestrator(config(tmp_path, db_url))
    wid = orch.submit({"name": "locks", "works": [{"name": "w", "command": "true", "n_jobs": 5}]})
    with orch.engine.begin() as conn:
        a = [int(c["id"]) for c in claim_ready(conn, "A", ["local"], 3, ttl=30.0)]
        b = [int(c["id"]) for c in claim_ready(conn, "B", ["local"], 1, ttl=30.0)]
        done = a.pop()  # A's third: finished, so no longer in flight
        conn.execute(update(jobs).where(jobs.c.id == done).values(status="finished"))
    assert len(a) == 2 and len(b) == 1
    return orch, wid, a, b, done


def test_renew_pushes_the_expiry_of_the_owners_jobs_in_flight_only(
    tmp_path: Path, db_url: str
) -> None:
    orch, wid, a, b, done = _setup(tmp_path, db_url)
    try:
        before = _jobs(orch, wid)
        with orch.engine.begin() as conn:
            assert renew_locks(conn, "A", 100.0) == 2
        t = _now(orch)
        after = _jobs(orch, wid)
        for jid in a:
            assert t + 95 < after[jid].lock_expiry <= t + 100.5, (jid, after[jid].lock_expiry, t)
            assert (after[jid].status, after[jid].lock_owner) == ("submitted", "A")
        for jid in (*b, done):
            assert after[jid].lock_expiry == before[jid].lock_expiry
        with orch.engine.begin() as conn:
            assert renew_locks(conn, "nobody", 100.0) == 0
    finally:
        orch.engine.dispose()


def test_reclaim_takes_expired_locks_but_not_those_of_owners_seen_alive(
    tmp_path: Path, db_url: str
) -> None:
    orch, wid, a, b, done = _setup(tmp_path, db_url)
    try:
        expire = update(jobs).where(jobs.c.id.in_([*a, *b, done])).values(lock_expiry=db_now() - 5)
        with orch.engine.begin() as conn:
            conn.execute(expire)
            conn.execute(
                update(jobs).where(jobs.c.id == a[1]).values(lock_expiry=db_now() + 60)
            )  # A's second: not expired yet
            assert reclaim_expired(conn, alive=["B"]) == 1  # A's first only
        got = _jobs(orch, wid)
        assert (got[a[0]].status, got[a[0]].lock_owner, got[a[0]].lock_expiry) == (
            "ready",
            None,
            None,
        )
        assert got[a[0]].error == "lost: owner stopped"
        assert (got[a[1]].status, got[a[1]].lock_owner) == ("submitted", "A")
        assert (got[b[0]].status, got[b[0]].lock_owner) == ("submitted", "B")
        assert got[done].status == "finished"
        with orch.engine.begin() as conn:
            assert reclaim_expired(conn) == 1  # B's, nobody said it was alive
            assert reclaim_expired(conn) == 0
        got = _jobs(orch, wid)
        assert (got[b[0]].status, got[b[0]].lock_owner) == ("ready", None)
        assert (got[a[1]].status, got[done].status) == ("submitted", "finished")
    finally:
        orch.engine.dispose()


def test_release_hands_back_the_stopping_owners_jobs_in_flight_only(
    tmp_path: Path, db_url: str
) -> None:
    orch, wid, a, b, done = _setup(tmp_path, db_url)
    try:
        with orch.engine.begin() as conn:
            conn.execute(update(jobs).where(jobs.c.id == a[1]).values(status="running"))
            assert release_owned(conn, "A") == 2
        got = _jobs(orch, wid)
        for jid in a:
            row = got[jid]
            assert (row.status, row.lock_owner, row.lock_expiry) == ("ready", None, None)
            assert row.error == "requeued: agent stopped"
        assert (got[b[0]].status, got[b[0]].lock_owner) == ("submitted", "B")
        assert got[b[0]].lock_expiry is not None and got[b[0]].error is None
        assert got[done].status == "finished"
        with orch.engine.begin() as conn:
            assert release_owned(conn, "A") == 0
    finally:
        orch.engine.dispose()


def test_claim_marks_what_it_takes_and_takes_only_the_named_users_runs(
    tmp_path: Path, db_url: str
) -> None:
    """``claim_ready``: up to ``limit`` ready jobs, marked submitted for the owner with an
    expiry, a submission time and one more attempt; with ``users`` (fair share), only jobs
    of those users' runs."""
    import time

    orch = Orchestrator(config(tmp_path, db_url))
    try:
        wf = {"name": "c", "works": [{"name": "w", "command": "true", "n_jobs": 3}]}
        w_alice, w_bob = orch.submit(wf, owner="alice"), orch.submit(wf, owner="bob")
        t0 = time.time()
        with orch.engine.begin() as conn:
            got = claim_ready(conn, "A", ["local"], 10, ttl=30.0, users=["bob"])
            assert claim_ready(conn, "A", ["slurm"], 10, ttl=30.0) == []  # no such backend's
        bob = _jobs(orch, w_bob)
        assert sorted(int(c["id"]) for c in got) == sorted(bob) and len(bob) == 3
        assert {c["attempt"] for c in got} == {1}
        t = _now(orch)
        for row in bob.values():
            assert (row.status, row.lock_owner, row.attempt) == ("submitted", "A", 1)
            assert t + 25 < row.lock_expiry <= t + 30.5
            assert row.submitted_at is not None and t0 - 1 <= row.submitted_at <= time.time() + 1
        assert {r.status for r in _jobs(orch, w_alice).values()} == {"ready"}
        with orch.engine.begin() as conn:
            assert claim_ready(conn, "B", ["local"], 10, ttl=30.0, users=["bob"]) == []
            assert len(claim_ready(conn, "B", ["local"], 2, ttl=30.0)) == 2  # alice's, limit 2
    finally:
        orch.engine.dispose()


def test_renew_on_postgresql_skips_rows_a_result_holds_instead_of_waiting(
    tmp_path: Path, db_url: str
) -> None:
    """PostgreSQL: a row locked by another transaction (the Receiver recording its result)
    is skipped by the heart-beat, which renews the others at once rather than queueing
    behind it. (SQLite has one writer at a time: nothing to skip.)"""
    from sqlalchemy import text

    orch, wid, a, _b, _done = _setup(tmp_path, db_url)
    try:
        if not db_url.startswith("postgresql"):
            with orch.engine.begin() as conn:
                assert renew_locks(conn, "A", 100.0) == 2
            return
        with orch.engine.connect() as holder:
            tx = holder.begin()
            holder.execute(select(jobs.c.id).where(jobs.c.id == a[0]).with_for_update())
            with orch.engine.begin() as conn:
                conn.execute(text("SET LOCAL lock_timeout = '3s'"))
                assert renew_locks(conn, "A", 100.0) == 1
            tx.rollback()
        t = _now(orch)
        got = _jobs(orch, wid)
        assert got[a[1]].lock_expiry > t + 95 and got[a[0]].lock_expiry < t + 35
    finally:
        orch.engine.dispose()
