"""A submission made next to an agent runner claims its first jobs in its own transaction."""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

import pytest
from helpers import config, wait_for
from sqlalchemy import event, select, text

from idds_jupyter.agents.carrier import receiver
from idds_jupyter.agents.runner import Runner
from idds_jupyter.bus import Event, Subscription
from idds_jupyter.bus import event as ev
from idds_jupyter.core import Orchestrator
from idds_jupyter.store.engine import make_engine
from idds_jupyter.store.tables import jobs, works

SLEEP = "idds_jupyter.worker.job:sleep"


def _jobs(orch: Orchestrator, wid: int) -> list[dict[str, object]]:
    with orch.engine.begin() as conn:
        return [
            dict(r)
            for r in conn.execute(
                select(
                    jobs.c.status,
                    jobs.c.lock_owner,
                    jobs.c.attempt,
                    jobs.c.release_count,
                    jobs.c.success_count,
                ).where(jobs.c.workflow_id == wid)
            ).mappings()
        ]


def test_submission_claims_its_jobs_in_its_own_transaction(tmp_path: Path, db_url: str) -> None:
    cfg = config(tmp_path, db_url)
    with Runner(cfg) as runner:
        orch = Orchestrator(cfg, engine=runner.engine, bus=runner.bus, dispatch=runner.dispatch)
        wid = orch.submit(
            {
                "name": "call",
                "works": [
                    {"name": "f", "function": SLEEP, "parameters": {"seconds": 0.3}, "n_jobs": 2}
                ],
            }
        )
        # No Submitter round yet: the jobs left the submission already claimed by this runner.
        rows = _jobs(orch, wid)
        assert [(r["lock_owner"], r["attempt"]) for r in rows] == [(runner.owner, 1)] * 2
        assert {r["status"] for r in rows} <= {"submitted", "running"}
        assert orch.wait(wid, timeout=60) == "finished"
    assert [
        (r["status"], r["release_count"], r["success_count"], r["attempt"])
        for r in _jobs(orch, wid)
    ] == [("finished", 1, 1, 1)] * 2


def test_jobs_beyond_the_room_are_written_ready_for_the_submitter(
    tmp_path: Path, db_url: str
) -> None:
    """A submission takes as many jobs as its Carrier has room for (``batch`` here); the
    others are written released and claimed by the Submitter; each runs once."""
    cfg = config(tmp_path, db_url, batch=3)
    with Runner(cfg) as runner:
        orch = Orchestrator(cfg, engine=runner.engine, bus=runner.bus, dispatch=runner.dispatch)
        wid = orch.submit(
            {
                "name": "map",
                "works": [
                    {"name": "f", "function": SLEEP, "parameters": {"seconds": 0.05}, "n_jobs": 8}
                ],
            }
        )
        assert orch.wait(wid, timeout=60) == "finished"
        with orch.engine.begin() as conn:
            rows = conn.execute(
                select(
                    jobs.c.id,
                    jobs.c.idx,
                    jobs.c.submitted_at,
                    jobs.c.status,
                    jobs.c.attempt,
                    jobs.c.release_count,
                    jobs.c.success_count,
                )
                .where(jobs.c.workflow_id == wid)
                .order_by(jobs.c.id)
            ).all()
    assert [r.idx for r in rows] == list(range(8))  # ids follow the jobs' order
    assert [(r.status, r.attempt, r.release_count, r.success_count) for r in rows] == [
        ("finished", 1, 1, 1)
    ] * 8
    # the first three left with the submission (one time), the others later
    first = rows[0].submitted_at
    assert [r.submitted_at == first for r in rows] == [True] * 3 + [False] * 5


def test_added_work_is_planned_expanded_and_claimed_at_once(tmp_path: Path, db_url: str) -> None:
    cfg = config(tmp_path, db_url)
    with Runner(cfg) as runner:
        orch = Orchestrator(cfg, engine=runner.engine, bus=runner.bus, dispatch=runner.dispatch)
        wid = orch.submit({"name": "body", "works": []}, open=True)
        orch.add_works(wid, [{"name": "step_0", "function": SLEEP, "parameters": {"seconds": 0.3}}])
        with orch.engine.begin() as conn:  # no Clerk, no Transformer round needed
            status = conn.execute(select(works.c.status).where(works.c.workflow_id == wid)).scalar()
        assert status == "running"
        assert [r["lock_owner"] for r in _jobs(orch, wid)] == [runner.owner]
        wait_for(lambda: [r["status"] for r in _jobs(orch, wid)] == ["finished"])
        assert orch.close(wid, result=1) in ("running", "finished")
        assert orch.wait(wid, timeout=60) == "finished"


def test_sqlite_writers_of_one_process_take_turns(tmp_path: Path) -> None:
    """Many threads writing at once all commit; a rolled-back transaction frees the lock."""
    engine = make_engine(f"sqlite:///{tmp_path / 'gate.db'}")
    with engine.begin() as conn:
        conn.execute(text("CREATE TABLE counter (n INTEGER)"))
        conn.execute(text("INSERT INTO counter VALUES (0)"))

    def bump(times: int) -> None:
        for i in range(times):
            if i % 10 == 0:  # a failing transaction in between
                with pytest.raises(RuntimeError), engine.begin() as conn:
                    conn.execute(text("UPDATE counter SET n = n + 1000"))
                    raise RuntimeError("rolled back")
            with engine.begin() as conn:
                n = conn.execute(text("SELECT n FROM counter")).scalar()
                conn.execute(text("UPDATE counter SET n = :n"), {"n": n + 1})

    threads = [threading.Thread(target=bump, args=(50,)) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert not any(t.is_alive() for t in threads)
    with engine.begin() as conn:  # read-modify-write never lost an update
        assert conn.execute(text("SELECT n FROM counter")).scalar() == 200


def test_a_success_told_early_is_followed_by_its_record(tmp_path: Path, db_url: str) -> None:
    """A success reaches a waiting caller before it is recorded; once it is, the run gets
    an empty ``job.result`` (views re-read it), though nothing else about it changed."""
    cfg = config(tmp_path, db_url)
    with Runner(cfg) as runner:
        orch = Orchestrator(cfg, engine=runner.engine, bus=runner.bus, dispatch=runner.dispatch)
        sub = runner.bus.subscribe([ev.JOB_RESULT])
        wid = orch.submit(
            {
                "name": "two",
                "works": [
                    {
                        "name": "f",
                        "function": SLEEP,
                        "kwargs_list": [{"seconds": 0.01}, {"seconds": 2}],
                    }
                ],
            }
        )
        seen: list[Event] = []
        wait_for(lambda: any(e.payload.get("recorded") for e in _collect(sub, seen)), timeout=30)
        early = [e for e in seen if e.payload["jobs"]]
        assert [(j["idx"], j["status"]) for e in early for j in e.payload["jobs"]] == [
            (0, "finished")
        ]
        assert next(e for e in seen if e.payload.get("recorded")).key == str(wid)
        # the job the empty event was for is recorded; the other one still runs
        assert sorted(r["status"] for r in _jobs(orch, wid)) in (
            ["finished", "running"],
            ["finished", "submitted"],
        )
        assert orch.wait(wid, timeout=60) == "finished"
        sub.close()


def _told(sub: Subscription, wid: int, timeout: float = 30) -> None:
    """Wait, as a FaaT caller does, for the pushed success of run ``wid``."""
    seen: list[Event] = []
    wait_for(
        lambda: any(e.key == str(wid) and e.payload["jobs"] for e in _collect(sub, seen)),
        timeout=timeout,
        interval=0,
    )


def _receiver_commits(engine: Any) -> list[int]:
    """Commits made by the Receiver's thread, counted as they happen."""
    count = [0]

    def on_commit(conn: Any) -> None:
        if threading.current_thread().name.startswith("idds-receiver"):
            count[0] += 1

    event.listen(engine, "commit", on_commit)
    return count


def test_a_loop_of_calls_is_recorded_in_one_transaction(
    tmp_path: Path, db_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Successes told early are held for the record: calls made one after the other (each
    waiting for its value) share one Receiver transaction, here once ``batch`` are held."""
    monkeypatch.setattr(receiver, "TOLD_WITHIN_S", 120.0)  # only the batch size flushes here
    cfg = config(tmp_path, db_url, batch=4)
    with Runner(cfg) as runner:
        orch = Orchestrator(cfg, engine=runner.engine, bus=runner.bus, dispatch=runner.dispatch)
        sub = runner.bus.subscribe([ev.JOB_RESULT])
        commits = _receiver_commits(runner.engine)
        wids = []
        for _ in range(4):
            wids.append(
                orch.submit(
                    {
                        "name": "call",
                        "works": [{"name": "f", "function": SLEEP, "parameters": {"seconds": 0}}],
                    }
                )
            )
            _told(sub, wids[-1])
            if len(wids) < 4:  # told, not yet recorded
                assert [r["status"] for r in _jobs(orch, wids[-1])] != ["finished"]
        for wid in wids:
            assert orch.wait(wid, timeout=30) == "finished"
        assert commits[0] == 1
        sub.close()


def test_a_success_other_jobs_wait_for_is_recorded_at_once(
    tmp_path: Path, db_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Only successes whose record releases nothing (runs of independent works) are held
    for ``TOLD_WITHIN_S``: in a chain, each success is recorded within ``TOLD_CHAINED_S``,
    so the next work is not held up by the batching of calls."""
    monkeypatch.setattr(receiver, "TOLD_WITHIN_S", 120.0)
    cfg = config(tmp_path, db_url)
    with Runner(cfg) as runner:
        orch = Orchestrator(cfg, engine=runner.engine, bus=runner.bus, dispatch=runner.dispatch)
        wid = orch.submit(
            {
                "name": "chain",
                "works": [
                    {"name": "a", "function": SLEEP, "parameters": {"seconds": 0}},
                    {
                        "name": "b",
                        "function": SLEEP,
                        "parameters": {"seconds": 0},
                        "depends_on": ["a"],
                    },
                    {
                        "name": "c",
                        "function": SLEEP,
                        "parameters": {"seconds": 0},
                        "depends_on": ["b"],
                    },
                ],
            }
        )
        assert orch.wait(wid, timeout=30) == "finished"


def test_a_closed_run_is_recorded_at_once(
    tmp_path: Path, db_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Closing a run whose last success is told but held ends it with that record, without
    waiting for ``TOLD_WITHIN_S`` (an HPO study's end, a body's last call)."""
    monkeypatch.setattr(receiver, "TOLD_WITHIN_S", 120.0)
    cfg = config(tmp_path, db_url)
    with Runner(cfg) as runner:
        orch = Orchestrator(cfg, engine=runner.engine, bus=runner.bus, dispatch=runner.dispatch)
        sub = runner.bus.subscribe([ev.JOB_RESULT])
        wid = orch.submit({"name": "body", "works": []}, open=True)
        orch.add_works(wid, [{"name": "f", "function": SLEEP, "parameters": {"seconds": 0}}])
        _told(sub, wid)
        assert [r["status"] for r in _jobs(orch, wid)] != ["finished"]  # held
        orch.close(wid)
        assert orch.wait(wid, timeout=30) == "finished"
        assert [r["status"] for r in _jobs(orch, wid)] == ["finished"]
        sub.close()


def _collect(sub: Subscription, seen: list[Event]) -> list[Event]:
    seen += sub.get(timeout=0.2)
    return seen
