"""DbBus: the events table, across threads and processes."""

from __future__ import annotations

import threading
import time

from bus_helpers import ChildSubscriber
from sqlalchemy import func, insert, select, update
from sqlalchemy.engine import Engine

from idds_jupyter.bus import JOBS_READY, WORK_NEW, WORKFLOW_DIRTY, DbBus, make_bus, make_event
from idds_jupyter.store.tables import events


def test_publish_subscribe_per_type(bus_engine: Engine) -> None:
    bus = DbBus(bus_engine, poll_interval=0.01)
    jobs = bus.subscribe([JOBS_READY])
    dirty = bus.subscribe([WORKFLOW_DIRTY, WORK_NEW])
    bus.publish([make_event(JOBS_READY, "1", ids=[1, 2]), make_event(WORKFLOW_DIRTY, "2")])
    got = jobs.get(2)
    assert [(e.type, e.key, e.payload, e.priority) for e in got] == [
        (JOBS_READY, "1", {"ids": [1, 2]}, 20)
    ]
    assert [e.key for e in dirty.get(2)] == ["2"]
    assert jobs.get(0) == []
    bus.close()


def test_only_events_after_subscribe(bus_engine: Engine) -> None:
    bus = make_bus("db", bus_engine)
    bus.publish([make_event(JOBS_READY, "early")])
    sub = bus.subscribe([JOBS_READY])
    assert sub.get(0.1) == []
    bus.publish([make_event(JOBS_READY, "late")])
    assert [e.key for e in sub.get(2)] == ["late"]
    bus.close()


def test_timeout_and_wakeup(bus_engine: Engine) -> None:
    bus = DbBus(bus_engine, poll_interval=0.02)
    sub = bus.subscribe([JOBS_READY])
    t0 = time.monotonic()
    assert sub.get(0.15) == []
    assert 0.14 <= time.monotonic() - t0 < 1
    threading.Timer(0.05, bus.publish, [[make_event(JOBS_READY, "a")]]).start()
    t0 = time.monotonic()
    assert [e.key for e in sub.get(5)] == ["a"]
    assert time.monotonic() - t0 < 1
    sub.close()
    assert sub.get(None) == []
    bus.close()


def test_many_events_one_statement_and_batches(bus_engine: Engine) -> None:
    bus = DbBus(bus_engine, batch=1000)
    sub = bus.subscribe([JOBS_READY])
    n = 5000
    t0 = time.monotonic()
    bus.publish([make_event(JOBS_READY, str(i)) for i in range(n)])
    got: list[str | None] = []
    while len(got) < n and time.monotonic() - t0 < 20:
        got.extend(e.key for e in sub.get(1))
    assert got == [str(i) for i in range(n)]
    bus.close()


def test_subscriber_in_another_process(bus_engine: Engine, bus_db_url: str) -> None:
    child = ChildSubscriber(f"db:{bus_db_url}", [JOBS_READY, WORKFLOW_DIRTY], count=3).start()
    bus = DbBus(bus_engine)
    bus.publish([make_event(JOBS_READY, "1"), make_event(WORK_NEW, "skip")])
    bus.publish([make_event(WORKFLOW_DIRTY, "2"), make_event(JOBS_READY, "3", n=3)])
    got = child.result()
    assert [(e["type"], e["key"]) for e in got] == [
        (JOBS_READY, "1"),
        (WORKFLOW_DIRTY, "2"),
        (JOBS_READY, "3"),
    ]
    assert got[2]["payload"] == {"n": 3}
    bus.close()


def test_late_rows_below_last_id_are_still_delivered(bus_engine: Engine) -> None:
    """PostgreSQL can commit id 11 before id 10: the hole is looked up again."""
    bus = DbBus(bus_engine, poll_interval=0.01)
    sub = bus.subscribe([JOBS_READY])
    row = {"type": JOBS_READY, "priority": 20, "payload": {}, "created_at": time.time()}
    if bus_engine.dialect.name == "postgresql":
        # The real thing: a transaction holding a smaller id commits last.
        with bus_engine.connect() as slow:
            tx = slow.begin()
            slow.execute(insert(events).values(key="earlier-id", **row))
            bus.publish([make_event(JOBS_READY, "later-id")])
            assert [e.key for e in sub.get(2)] == ["later-id"]
            tx.commit()
    else:  # SQLite commits in id order; fake the hole with explicit ids
        start = sub.last_id
        with bus_engine.begin() as conn:
            conn.execute(insert(events).values(id=start + 3, key="later-id", **row))
        assert [e.key for e in sub.get(2)] == ["later-id"]
        with bus_engine.begin() as conn:
            conn.execute(insert(events).values(id=start + 1, key="earlier-id", **row))
    assert [e.key for e in sub.get(2)] == ["earlier-id"]
    assert sub.get(0.05) == []
    bus.close()


def test_prune_keeps_the_newest_row(bus_engine: Engine) -> None:
    bus = DbBus(bus_engine)
    bus.publish([make_event(JOBS_READY, str(i)) for i in range(10)])
    with bus_engine.begin() as conn:
        conn.execute(update(events).values(created_at=time.time() - 3600))
    sub = bus.subscribe([JOBS_READY])
    assert bus.prune(60) == 9
    with bus_engine.connect() as conn:
        assert conn.execute(select(func.count()).select_from(events)).scalar() == 1
    # Ids keep growing, so the subscription still sees new events.
    bus.publish([make_event(JOBS_READY, "new")])
    assert [e.key for e in sub.get(2)] == ["new"]
    assert bus.prune(60) == 1  # the old row that was newest; "new" stays
    bus.close()


def test_sqlite_poll_does_not_wait_for_the_write_lock(tmp_path: object) -> None:
    """Subscribers poll outside transactions: a writer holding the lock does not stall them."""
    from idds_jupyter.store.engine import make_engine
    from idds_jupyter.store.tables import metadata

    engine = make_engine(f"sqlite:///{tmp_path}/lock.db")
    metadata.create_all(engine)
    bus = DbBus(engine, poll_interval=0.01, publish_timeout=0.2)
    sub = bus.subscribe([JOBS_READY])
    with engine.begin() as conn:  # BEGIN IMMEDIATE: holds the write lock
        conn.execute(insert(events).values(type="other", created_at=time.time(), priority=0))
        t0 = time.monotonic()
        assert sub.get(0.1) == []
        assert time.monotonic() - t0 < 0.5
        # Publishing gives up after publish_timeout and drops: hints never stall an agent.
        t0 = time.monotonic()
        bus.publish([make_event(JOBS_READY, "dropped")])
        assert time.monotonic() - t0 < 2
        assert bus.dropped == 1
    bus.publish([make_event(JOBS_READY, "ok")])
    assert [e.key for e in sub.get(2)] == ["ok"]
    bus.close()
    engine.dispose()
