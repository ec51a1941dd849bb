"""LocalBus and NullBus."""

from __future__ import annotations

import threading
import time

from idds_jupyter.bus import (
    ALL,
    JOBS_READY,
    WORK_NEW,
    WORKFLOW_DIRTY,
    LocalBus,
    NullBus,
    make_event,
)


def test_publish_subscribe_per_type() -> None:
    bus = LocalBus()
    jobs = bus.subscribe([JOBS_READY])
    dirty = bus.subscribe([WORKFLOW_DIRTY, WORK_NEW])
    every = bus.subscribe([ALL])
    bus.publish([make_event(JOBS_READY, "1"), make_event(WORKFLOW_DIRTY, "2"), make_event("x")])
    assert [e.key for e in jobs.get(1)] == ["1"]
    assert [e.key for e in dirty.get(1)] == ["2"]
    assert [e.type for e in every.get(1)] == [JOBS_READY, WORKFLOW_DIRTY, "x"]
    assert jobs.get(0) == []


def test_only_events_after_subscribe() -> None:
    bus = LocalBus()
    bus.publish([make_event(JOBS_READY, "early")])
    sub = bus.subscribe([JOBS_READY])
    assert sub.get(0) == []
    bus.publish([make_event(JOBS_READY, "late")])
    assert [e.key for e in sub.get(0)] == ["late"]


def test_get_times_out_and_wakes_on_publish() -> None:
    bus = LocalBus()
    sub = bus.subscribe([JOBS_READY])
    t0 = time.monotonic()
    assert sub.get(0.1) == []
    assert 0.09 <= time.monotonic() - t0 < 1
    threading.Timer(0.05, bus.publish, [[make_event(JOBS_READY, "a")]]).start()
    t0 = time.monotonic()
    assert [e.key for e in sub.get(5)] == ["a"]
    assert time.monotonic() - t0 < 1


def test_close_wakes_a_blocked_get_and_unsubscribes() -> None:
    bus = LocalBus()
    sub = bus.subscribe([JOBS_READY])
    threading.Timer(0.05, sub.close).start()
    t0 = time.monotonic()
    assert sub.get(None) == []
    assert time.monotonic() - t0 < 2
    bus.publish([make_event(JOBS_READY)])
    assert sub.get(0) == []


def test_many_threads_publish_and_subscribe_concurrently() -> None:
    bus = LocalBus()
    n_threads, per_thread = 8, 2000
    subs = [bus.subscribe([JOBS_READY]) for _ in range(3)]

    def pub(i: int) -> None:
        for j in range(0, per_thread, 100):
            bus.publish([make_event(JOBS_READY, f"{i}-{k}") for k in range(j, j + 100)])

    threads = [threading.Thread(target=pub, args=(i,)) for i in range(n_threads)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for sub in subs:
        keys = [e.key for e in sub.get(0)]
        assert len(keys) == n_threads * per_thread == len(set(keys))


def test_overflow_drops_oldest_instead_of_blocking() -> None:
    bus = LocalBus(max_pending=10)
    sub = bus.subscribe([JOBS_READY])
    bus.publish([make_event(JOBS_READY, str(i)) for i in range(25)])
    assert [e.key for e in sub.get(0)] == [str(i) for i in range(15, 25)]
    assert sub.dropped == 15


def test_null_bus_drops_and_get_waits_out_the_timeout() -> None:
    bus = NullBus()
    sub = bus.subscribe([JOBS_READY])
    bus.publish([make_event(JOBS_READY, "1")])
    t0 = time.monotonic()
    assert sub.get(0.2) == []
    assert time.monotonic() - t0 >= 0.19
    assert sub.get(0) == []
    sub.close()
    bus.close()
