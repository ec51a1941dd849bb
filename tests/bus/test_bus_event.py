"""Events, default priorities and make_bus specs."""

from __future__ import annotations

import json

import pytest

from idds_jupyter import bus as busmod
from idds_jupyter.bus import (
    JOBS_READY,
    WORK_TERMINAL,
    WORKFLOW_DIRTY,
    WORKFLOW_TERMINAL,
    Event,
    LocalBus,
    NullBus,
    ZmqBus,
    make_bus,
    make_event,
)


def test_make_event_fills_default_priority_and_stringifies_key() -> None:
    ev = make_event(WORKFLOW_TERMINAL, 7, status="finished")
    assert ev == Event(WORKFLOW_TERMINAL, "7", priority=100)
    assert ev.payload == {"status": "finished"}
    assert make_event(WORK_TERMINAL).priority == 90
    assert make_event(JOBS_READY).priority == 20
    assert make_event("custom.type").priority == 0


def test_terminal_events_outrank_the_rest() -> None:
    prios = busmod.DEFAULT_PRIORITIES
    assert max(prios, key=prios.__getitem__) == WORKFLOW_TERMINAL
    assert sorted(prios.values(), reverse=True) == [100, 90, 80, 70, 60, 50, 40, 30, 20, 10]


def test_equality_and_hash_ignore_payload() -> None:
    a = make_event(WORKFLOW_DIRTY, "1", n=1)
    b = make_event(WORKFLOW_DIRTY, "1", n=2)
    assert a == b and hash(a) == hash(b)
    assert len({a, b}) == 1


def test_json_round_trip() -> None:
    ev = make_event(JOBS_READY, "3", job_ids=[1, 2, 3])
    back = Event.from_json(json.loads(json.dumps(ev.to_json())))
    assert back == ev and back.payload == ev.payload and back.priority == ev.priority


def test_make_bus_specs() -> None:
    assert isinstance(make_bus("local"), LocalBus)
    assert isinstance(make_bus("none"), NullBus)
    with pytest.raises(ValueError, match="engine"):
        make_bus("db")
    with pytest.raises(ValueError, match="unknown event bus"):
        make_bus("kafka")
    with pytest.raises(ValueError, match="zmq://HOST:PUBPORT:SUBPORT"):
        make_bus("zmq://localhost:12")
    bus = make_bus("zmq://127.0.0.1:5001:5002")
    assert isinstance(bus, ZmqBus)
    assert (bus.pub_address, bus.sub_address) == ("tcp://127.0.0.1:5001", "tcp://127.0.0.1:5002")
    bus.close()
