"""ZmqBus through a real broker on 127.0.0.1: in a thread and as a process."""

from __future__ import annotations

import subprocess
import sys
import threading
import time
from collections.abc import Iterator

import pytest
from bus_helpers import ROOT, ChildSubscriber

from idds_jupyter.bus import (
    ALL,
    JOB_RESULT,
    JOBS_READY,
    WORK_NEW,
    WORKFLOW_DIRTY,
    Event,
    Subscription,
    ZmqBroker,
    ZmqBus,
    make_bus,
    make_event,
)


def _spec(broker: ZmqBroker) -> str:
    pub_port = broker.pub_endpoint.rsplit(":", 1)[1]
    sub_port = broker.sub_endpoint.rsplit(":", 1)[1]
    return f"zmq://127.0.0.1:{pub_port}:{sub_port}"


@pytest.fixture
def zbus(broker: ZmqBroker) -> Iterator[ZmqBus]:
    bus = ZmqBus(broker.pub_endpoint, broker.sub_endpoint)
    yield bus
    bus.close()


def _collect(sub: Subscription, n: int, timeout: float = 5.0) -> list[Event]:
    got: list[Event] = []
    deadline = time.monotonic() + timeout
    while len(got) < n and time.monotonic() < deadline:
        got.extend(sub.get(0.2))
    return got


def test_subscription_is_ready_when_subscribe_returns(zbus: ZmqBus) -> None:
    """No slow joiner: the first event published right after subscribe arrives."""
    for i in range(20):
        sub = zbus.subscribe([JOBS_READY])
        assert sub.ready
        zbus.publish([make_event(JOBS_READY, str(i))])
        assert [e.key for e in sub.get(2)] == [str(i)]
        sub.close()


def test_topic_filtering_is_exact(zbus: ZmqBus) -> None:
    jobs = zbus.subscribe([JOBS_READY])
    job = zbus.subscribe([JOB_RESULT, WORKFLOW_DIRTY])
    every = zbus.subscribe([ALL])
    zbus.publish(
        [
            make_event(JOBS_READY, "1", ids=[1]),
            make_event(JOB_RESULT, "2"),
            make_event(WORK_NEW, "3"),
            make_event("job", "4"),  # a prefix of both "job.result" and "jobs.ready"
            make_event(WORKFLOW_DIRTY, "5"),
        ]
    )
    got = _collect(every, 5)
    assert [e.key for e in got] == ["1", "2", "3", "4", "5"]
    assert [(e.key, e.payload, e.priority) for e in jobs.get(2)] == [("1", {"ids": [1]}, 20)]
    assert [e.key for e in _collect(job, 2)] == ["2", "5"]
    assert jobs.get(0.1) == [] and job.get(0) == []


def test_publisher_in_a_fresh_bus_is_not_dropped(broker: ZmqBroker) -> None:
    """A brand-new publisher's first event reaches existing subscribers."""
    with ZmqBus(broker.pub_endpoint, broker.sub_endpoint) as sbus:
        sub = sbus.subscribe([WORK_NEW])
        for i in range(5):
            with ZmqBus(broker.pub_endpoint, broker.sub_endpoint) as pbus:
                pbus.publish([make_event(WORK_NEW, str(i))])
            assert [e.key for e in sub.get(2)] == [str(i)]


def test_threads_publish_concurrently(zbus: ZmqBus) -> None:
    sub = zbus.subscribe([JOBS_READY])
    n_threads, per_thread = 4, 2500

    def pub(i: int) -> None:
        for j in range(0, per_thread, 250):
            zbus.publish([make_event(JOBS_READY, f"{i}-{k}") for k in range(j, j + 250)])

    threads = [threading.Thread(target=pub, args=(i,)) for i in range(n_threads)]
    t0 = time.monotonic()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    got = _collect(sub, n_threads * per_thread, timeout=20)
    elapsed = time.monotonic() - t0
    assert len({e.key for e in got}) == n_threads * per_thread
    assert elapsed < 10  # thousands of events per second, with a wide margin


def test_close_wakes_a_blocked_get(zbus: ZmqBus) -> None:
    sub = zbus.subscribe([JOBS_READY])
    threading.Timer(0.05, sub.close).start()
    t0 = time.monotonic()
    assert sub.get(None) == []
    assert time.monotonic() - t0 < 2


def test_subscriber_in_another_process(broker: ZmqBroker, zbus: ZmqBus) -> None:
    child = ChildSubscriber(_spec(broker), [JOBS_READY, WORKFLOW_DIRTY], count=3).start()
    zbus.publish([make_event(JOBS_READY, "1"), make_event(WORK_NEW, "skip")])
    zbus.publish([make_event(WORKFLOW_DIRTY, "2"), make_event(JOBS_READY, "3", n=3)])
    got = child.result()
    assert [(e["type"], e["key"]) for e in got] == [
        (JOBS_READY, "1"),
        (WORKFLOW_DIRTY, "2"),
        (JOBS_READY, "3"),
    ]
    assert got[2]["payload"] == {"n": 3}


def test_broker_as_a_process() -> None:
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "idds_jupyter.bus.zmqbus",
            "--pub",
            "tcp://127.0.0.1:*",
            "--sub",
            "tcp://127.0.0.1:*",
        ],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline().split()
        assert line[0] == "broker", line
        pub = line[1].split("=", 1)[1]
        sub_addr = line[2].split("=", 1)[1]
        spec = f"zmq://127.0.0.1:{pub.rsplit(':', 1)[1]}:{sub_addr.rsplit(':', 1)[1]}"
        child = ChildSubscriber(spec, [WORK_NEW], count=2).start()
        with make_bus(spec) as bus:
            bus.publish([make_event(WORK_NEW, "a"), make_event(JOBS_READY, "b")])
            bus.publish([make_event(WORK_NEW, "c")])
            assert [e["key"] for e in child.result()] == ["a", "c"]
    finally:
        proc.terminate()
        assert proc.wait(10) == 0


def test_no_broker_publish_drops_and_subscribe_gives_up() -> None:
    import socket

    ports = []
    for _ in range(2):
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            ports.append(s.getsockname()[1])
    bus = ZmqBus(f"tcp://127.0.0.1:{ports[0]}", f"tcp://127.0.0.1:{ports[1]}", ready_timeout=0.2)
    t0 = time.monotonic()
    bus.publish([make_event(JOBS_READY)])
    sub = bus.subscribe([JOBS_READY])
    assert not sub.ready
    assert sub.get(0.05) == []
    assert time.monotonic() - t0 < 2
    bus.close()
