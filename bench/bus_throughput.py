"""Event bus throughput, publish -> subscribe, events/s.

The ZeroMQ bus as a Jupyter server uses it with its agents' child: the broker
and a subscriber in this process, the publisher in another process; and, in
the same run, the same publisher and subscriber in one process, the DB bus
(SQLite) and the in-process bus. Events are published in batches (``--batch``)
as the agents do; a row counts events received by the subscriber over the
time from the first publish to the last event received.

    python bench/bus_throughput.py --events 200000 --batch 100
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

from idds_jupyter.bus import JOB_RESULT, Bus, ZmqBroker, make_bus, make_event


def _batches(n: int, batch: int) -> list[list[Any]]:
    events = [make_event(JOB_RESULT, i, job_id=i, status="finished") for i in range(n)]
    return [events[i : i + batch] for i in range(0, n, batch)]


def _publish(bus: Bus, batches: list[list[Any]], pace: int) -> None:
    for k, b in enumerate(batches):
        bus.publish(b)
        if pace and k % pace == pace - 1:
            time.sleep(0)  # let the receiver run (one process)


def _publisher_process(spec: str, n: int, batch: int, go: Any, t0: Any) -> None:
    bus = make_bus(spec)
    batches = _batches(n, batch)
    bus.publish([make_event("bench.warm")])  # connects, waits for the broker
    go.wait()
    t0.value = time.perf_counter()
    _publish(bus, batches, 0)
    bus.close()


def _receive(sub: Any, n: int, timeout: float) -> tuple[int, float]:
    got, deadline = 0, time.monotonic() + timeout
    while got < n and time.monotonic() < deadline:
        got += sum(1 for e in sub.get(timeout=0.5) if e.type == JOB_RESULT)
    return got, time.perf_counter()


def zmq_cross_process(n: int, batch: int) -> tuple[int, float]:
    broker = ZmqBroker("tcp://127.0.0.1:*", "tcp://127.0.0.1:*").start()
    spec = (
        f"zmq://127.0.0.1:{broker.pub_endpoint.rsplit(':', 1)[1]}"
        f":{broker.sub_endpoint.rsplit(':', 1)[1]}"
    )
    bus = make_bus(spec)
    sub = bus.subscribe([JOB_RESULT])
    ctx = mp.get_context("spawn")
    go, t0 = ctx.Event(), ctx.Value("d", 0.0)
    p = ctx.Process(target=_publisher_process, args=(spec, n, batch, go, t0))
    p.start()
    time.sleep(2.0)  # the publisher's imports and connection
    go.set()
    got, t1 = _receive(sub, n, 60)
    p.join()
    sub.close()
    bus.close()
    broker.stop()
    return got, t1 - t0.value


def one_process(bus: Bus, n: int, batch: int) -> tuple[int, float]:
    sub = bus.subscribe([JOB_RESULT])
    batches = _batches(n, batch)
    out: dict[str, Any] = {}

    def receiver() -> None:
        out["got"], out["t1"] = _receive(sub, n, 60)

    th = threading.Thread(target=receiver)
    th.start()
    t0 = time.perf_counter()
    _publish(bus, batches, 10)
    th.join()
    sub.close()
    return out["got"], out["t1"] - t0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--events", type=int, default=200_000)
    ap.add_argument("--batch", type=int, default=100)
    args = ap.parse_args()
    n, batch = args.events, args.batch
    rows: list[tuple[str, int, float]] = []
    got, dt = zmq_cross_process(n, batch)
    rows.append(("zmq, publisher in another process", got, dt))
    with ZmqBroker("tcp://127.0.0.1:*", "tcp://127.0.0.1:*") as broker:
        pub, sub = broker.pub_endpoint.rsplit(":", 1)[1], broker.sub_endpoint.rsplit(":", 1)[1]
        with make_bus(f"zmq://127.0.0.1:{pub}:{sub}") as bus:
            bus.publish([make_event("bench.warm")])
            rows.append(("zmq, one process", *one_process(bus, n, batch)))
    with tempfile.TemporaryDirectory() as tmp:
        from idds_jupyter.store.engine import make_engine
        from idds_jupyter.store.migrate import upgrade

        engine = make_engine(f"sqlite:///{Path(tmp) / 'bus.db'}")
        upgrade(engine)
        with make_bus("db", engine=engine) as bus:
            rows.append(("db (SQLite), one process", *one_process(bus, n, batch)))
        engine.dispose()
    with make_bus("local") as bus:
        rows.append(("local (in-process)", *one_process(bus, n, batch)))
    print(f"\nbus throughput: {n:,} events in batches of {batch}, publish -> subscribe")
    print(f"| {'bus':<36} | {'received':>9} | {'seconds':>7} | {'events/s':>9} |")
    print(f"|{'-' * 38}|{'-' * 11}|{'-' * 9}|{'-' * 11}|")
    for name, got, dt in rows:
        print(f"| {name:<36} | {got:>9,} | {dt:>7.2f} | {got / dt:>9,.0f} |")


if __name__ == "__main__":
    main()
