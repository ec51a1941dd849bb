"""The Coordinator merges duplicates and serves by priority."""

from __future__ import annotations

import threading

from idds_jupyter.bus import (
    CONTROL,
    JOBS_READY,
    MESSAGE_NEW,
    WORK_TERMINAL,
    WORKFLOW_DIRTY,
    WORKFLOW_TERMINAL,
    Coordinator,
    LocalBus,
    make_event,
)


def _coord() -> tuple[LocalBus, Coordinator]:
    bus = LocalBus()
    return bus, Coordinator(
        bus.subscribe(
            [JOBS_READY, WORKFLOW_DIRTY, WORKFLOW_TERMINAL, WORK_TERMINAL, MESSAGE_NEW, CONTROL]
        )
    )


def test_duplicates_merge_newest_payload_wins() -> None:
    bus, coord = _coord()
    bus.publish([make_event(WORKFLOW_DIRTY, "7", n=i, first=(i == 0)) for i in range(100)])
    bus.publish([make_event(WORKFLOW_DIRTY, "8", n=0)])
    out = coord.get(1)
    assert [(e.type, e.key) for e in out] == [(WORKFLOW_DIRTY, "7"), (WORKFLOW_DIRTY, "8")]
    assert out[0].payload == {"n": 99, "first": False}
    assert coord.stats.received == 101
    assert coord.stats.merged == 99
    assert coord.stats.served == 2
    assert coord.stats.as_dict() == {"received": 101, "merged": 99, "served": 2}


def test_served_by_priority_terminal_first() -> None:
    bus, coord = _coord()
    bus.publish(
        [
            make_event(MESSAGE_NEW, "m"),
            make_event(JOBS_READY, "j1"),
            make_event(WORKFLOW_DIRTY, "d"),
            make_event(WORK_TERMINAL, "wt"),
            make_event(JOBS_READY, "j2"),
            make_event(WORKFLOW_TERMINAL, "t"),
            make_event(CONTROL, "c"),
        ]
    )
    out = coord.get(1)
    assert [e.key for e in out] == ["t", "wt", "c", "d", "j1", "j2", "m"]


def test_next_serves_one_and_buffers_the_rest() -> None:
    bus, coord = _coord()
    bus.publish([make_event(JOBS_READY, "j"), make_event(WORKFLOW_TERMINAL, "t")])
    first = coord.next(1)
    assert first is not None and first.key == "t"
    assert coord.pending == 1
    # A duplicate arriving while buffered merges into the pending one.
    bus.publish([make_event(JOBS_READY, "j", more=True), make_event(WORK_TERMINAL, "w")])
    ev = coord.next(1)
    assert ev is not None and ev.key == "w"
    ev = coord.next(1)
    assert ev is not None and ev.key == "j" and ev.payload == {"more": True}
    assert coord.next(0.05) is None
    assert coord.stats.merged == 1


def test_top_n() -> None:
    bus, coord = _coord()
    bus.publish([make_event(JOBS_READY, str(i)) for i in range(5)] + [make_event(CONTROL, "c")])
    assert [e.key for e in coord.top(3, 1)] == ["c", "0", "1"]
    assert [e.key for e in coord.get(0)] == ["2", "3", "4"]


def test_get_blocks_until_an_event_arrives() -> None:
    bus, coord = _coord()
    threading.Timer(0.05, bus.publish, [[make_event(CONTROL, "stop")]]).start()
    assert [e.key for e in coord.get(5)] == ["stop"]
    coord.close()
    assert coord.get(0) == []
