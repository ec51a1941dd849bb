"""The ZeroMQ bus: a tiny broker and its clients, for agents in several processes.

Topology: publishers connect to the broker's XSUB socket (``pub_address``),
subscribers connect to its XPUB socket (``sub_address``), and the broker
forwards between the two (``zmq.proxy_steerable``, so it stops cleanly).
Messages are two frames, ``type + b"\\0"`` (the topic, so that prefix matching
is exact) and the events of that type as JSON: one ``publish`` of many events
sends one message per event type, ``{"type": T, "events": [[key, priority,
payload], ...]}`` (a lone event object is read too). Never pickle: nothing on
the bus is unpickled.

The slow-joiner problem (messages sent before a subscription has propagated
are dropped) is solved at both ends, so that a subscription receives every
event published after ``subscribe`` returned:

- the broker subscribes its XSUB to everything, so publishers never filter and
  a new subscription has only one hop to travel (subscriber -> broker XPUB);
  a publisher is an XPUB socket and knows it is connected when that
  subscribe-all message arrives;
- ``subscribe`` also subscribes to a unique probe topic *after* its event
  types, then publishes probes until one comes back. Subscriptions travel in
  order, so once a probe has been routed back by the broker the event types
  are routed too, for every publisher's later messages.

The broker also runs as a process::

    python -m idds_jupyter.bus.zmqbus --pub tcp://127.0.0.1:5555 --sub tcp://127.0.0.1:5556
"""

from __future__ import annotations

import argparse
import json
import logging
import signal
import threading
import time
import uuid
import weakref
from collections.abc import Iterable, Sequence
from typing import Any

import zmq

from idds_jupyter.bus.base import Bus, Subscription, normalize_types
from idds_jupyter.bus.event import Event

log = logging.getLogger(__name__)

HWM = 100_000
_PROBE_PREFIX = b"\x01probe:"
_SUBSCRIBE_ALL = b"\x01"  # an XSUB/XPUB subscription message for the empty prefix
_SLICE_MS = 100  # a blocked get() notices close() within this


def topic_of(event_type: str) -> bytes:
    """The topic frame of an event type (terminated so that "job" never matches "jobs.x")."""
    return event_type.encode() + b"\x00"


class ZmqBroker:
    """XSUB/XPUB forwarder between publishers and subscribers, run in a thread.

    Addresses may use a wildcard port (``tcp://127.0.0.1:*``); the bound ones are
    ``pub_endpoint`` and ``sub_endpoint`` once started.
    """

    def __init__(self, pub_address: str, sub_address: str) -> None:
        self.pub_address = pub_address
        self.sub_address = sub_address
        self.pub_endpoint = pub_address
        self.sub_endpoint = sub_address
        self._ctx: zmq.Context[Any] | None = None
        self._ctl: zmq.Socket[Any] | None = None
        self._thread: threading.Thread | None = None

    def start(self) -> ZmqBroker:
        ctx: zmq.Context[Any] = zmq.Context()
        xsub = ctx.socket(zmq.XSUB)
        xpub = ctx.socket(zmq.XPUB)
        ctl_in = ctx.socket(zmq.PAIR)
        try:
            for s in (xsub, xpub):
                s.setsockopt(zmq.LINGER, 0)
                s.setsockopt(zmq.SNDHWM, HWM)
                s.setsockopt(zmq.RCVHWM, HWM)
            xsub.bind(self.pub_address)
            xpub.bind(self.sub_address)
            # Publishers then send everything: no publisher-side slow joiner.
            xsub.send(_SUBSCRIBE_ALL)
            ctl_addr = f"inproc://idds-broker-{uuid.uuid4().hex}"
            ctl_in.bind(ctl_addr)
            ctl_out = ctx.socket(zmq.PAIR)
            ctl_out.connect(ctl_addr)
        except Exception:
            for s in (xsub, xpub, ctl_in):
                s.close(0)
            ctx.term()
            raise
        self.pub_endpoint = xsub.getsockopt_string(zmq.LAST_ENDPOINT)
        self.sub_endpoint = xpub.getsockopt_string(zmq.LAST_ENDPOINT)
        self._ctx, self._ctl = ctx, ctl_out
        self._thread = threading.Thread(
            target=self._run, args=(xsub, xpub, ctl_in), name="idds-zmq-broker", daemon=True
        )
        self._thread.start()
        return self

    @staticmethod
    def _run(xsub: zmq.Socket[Any], xpub: zmq.Socket[Any], ctl: zmq.Socket[Any]) -> None:
        try:
            zmq.proxy_steerable(xsub, xpub, None, ctl)
        except zmq.ContextTerminated:
            pass
        finally:
            for s in (xsub, xpub, ctl):
                s.close(0)

    def stop(self) -> None:
        """Stop forwarding and release the ports. Idempotent."""
        if self._ctl is None or self._ctx is None:
            return
        self._ctl.send(b"TERMINATE")
        if self._thread is not None:
            self._thread.join(5)
        self._ctl.close(0)
        self._ctx.term()
        self._ctl = self._ctx = self._thread = None

    def __enter__(self) -> ZmqBroker:
        return self.start() if self._ctx is None else self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def _events_of(body: Any) -> list[Event]:
    """The events of one message body (module doc); TypeError/ValueError if malformed."""
    if not isinstance(body, dict):
        raise TypeError(f"a message is a JSON object, got {type(body).__name__}")
    if "events" not in body:  # one event, as Event.to_json writes it
        return [Event.from_json(body)]
    etype, out = body["type"], []
    if not isinstance(etype, str):
        raise TypeError("the event type is not a string")
    for key, priority, payload in body["events"]:
        if not (
            (key is None or isinstance(key, str))
            and isinstance(priority, int)
            and isinstance(payload, dict)
        ):
            raise TypeError(f"malformed event {[key, priority, payload]!r:.200}")
        # checked above: filled without the frozen dataclass's per-field setattr (a
        # third of a subscriber's time at 100,000 events/s)
        ev = object.__new__(Event)
        ev.__dict__.update(type=etype, key=key, payload=payload, priority=priority)
        out.append(ev)
    return out


class ZmqSubscription(Subscription):
    """A SUB socket connected to the broker, filtered by event type."""

    def __init__(self, bus: ZmqBus, types: frozenset[str] | None) -> None:
        self.types = types
        self._bus = bus
        self._lock = threading.Lock()
        self._closed = False
        self._pending: list[Event] = []
        sock = bus._ctx.socket(zmq.SUB)
        sock.setsockopt(zmq.LINGER, 0)
        sock.setsockopt(zmq.RCVHWM, HWM)
        sock.connect(bus.sub_address)
        if types is None:
            sock.setsockopt(zmq.SUBSCRIBE, b"")
        else:
            for t in sorted(types):
                sock.setsockopt(zmq.SUBSCRIBE, topic_of(t))
        self._sock = sock
        self.ready = self._probe(bus.ready_timeout)

    def _probe(self, timeout: float) -> bool:
        """Publish probes until one comes back: then our types are routed (module doc)."""
        probe = _PROBE_PREFIX + uuid.uuid4().hex.encode()
        sock = self._sock
        sock.setsockopt(zmq.SUBSCRIBE, probe)
        deadline = time.monotonic() + timeout
        interval = 0.002
        ok = False
        while not ok:
            self._bus._send([(probe, b"{}")], wait_ready_s=max(0.0, deadline - time.monotonic()))
            if sock.poll(int(interval * 1000)):
                while not ok and sock.poll(0):
                    frames = sock.recv_multipart()
                    if frames[0] == probe:
                        ok = True
                    else:
                        self._pending.extend(self._decode([frames]))
            if time.monotonic() >= deadline:
                break
            interval = min(interval * 2, 0.05)
        sock.setsockopt(zmq.UNSUBSCRIBE, probe)
        if not ok:
            log.warning(
                "zmq bus: no broker answered at %s within %.1fs", self._bus.sub_address, timeout
            )
        return ok

    def _decode(self, messages: list[list[bytes]]) -> list[Event]:
        out: list[Event] = []
        for frames in messages:
            if len(frames) != 2 or frames[0].startswith(_PROBE_PREFIX):
                continue
            try:
                batch = _events_of(json.loads(frames[1]))
            except (ValueError, KeyError, TypeError, AttributeError) as exc:
                log.warning("zmq bus: dropped a malformed message: %s", exc)
                continue
            out.extend(e for e in batch if self.types is None or e.type in self.types)
        return out

    def get(self, timeout: float | None = None) -> list[Event]:
        deadline = None if timeout is None else time.monotonic() + timeout
        with self._lock:
            out, self._pending = self._pending, []
            while not self._closed:
                raw: list[list[bytes]] = []
                wait_ms = 0 if out else _SLICE_MS
                if deadline is not None and not out:
                    wait_ms = max(0, min(_SLICE_MS, int((deadline - time.monotonic()) * 1000)))
                if self._sock.poll(wait_ms):
                    while True:
                        try:
                            raw.append(self._sock.recv_multipart(zmq.NOBLOCK))
                        except zmq.Again:
                            break
                    out.extend(self._decode(raw))
                if out or (deadline is not None and time.monotonic() >= deadline):
                    break
            return out

    def close(self) -> None:
        self._closed = True  # a blocked get() sees it within one slice, then we take the lock
        with self._lock:
            if not self._sock.closed:
                self._sock.close(0)
        self._bus._forget(self)


class ZmqBus(Bus):
    """Client of a ``ZmqBroker``: publishes to ``pub_address``, subscribes at ``sub_address``."""

    def __init__(self, pub_address: str, sub_address: str, ready_timeout: float = 2.0) -> None:
        self.pub_address = pub_address
        self.sub_address = sub_address
        self.ready_timeout = ready_timeout
        self._ctx: zmq.Context[Any] = zmq.Context()
        # One publisher socket for all threads: sockets are not thread-safe, sends are µs.
        self._pub_lock = threading.Lock()
        self._pub: zmq.Socket[Any] | None = None
        self._pub_ready = False
        self._subs: weakref.WeakSet[ZmqSubscription] = weakref.WeakSet()
        self._closed = False
        self.dropped = 0  # messages (one per event type of a publish) lost to a full queue

    def _poll_ready(self, pub: zmq.Socket[Any], timeout_s: float) -> None:
        """Read subscription messages; the broker's subscribe-all means we are connected."""
        deadline = time.monotonic() + timeout_s
        while True:
            remaining = deadline - time.monotonic()
            if not pub.poll(max(0, int(remaining * 1000))):
                return
            while True:
                try:
                    msg = pub.recv(zmq.NOBLOCK)
                except zmq.Again:
                    break
                if msg == _SUBSCRIBE_ALL:
                    self._pub_ready = True
            if self._pub_ready:
                return

    def _send(self, messages: Iterable[tuple[bytes, bytes]], wait_ready_s: float = 0.0) -> None:
        with self._pub_lock:
            if self._closed:
                return
            pub = self._pub
            if pub is None:
                pub = self._pub = self._ctx.socket(zmq.XPUB)
                pub.setsockopt(zmq.SNDHWM, HWM)
                pub.setsockopt(zmq.LINGER, 1000)  # let a short-lived publisher's last events out
                pub.connect(self.pub_address)
                wait_ready_s = max(wait_ready_s, self.ready_timeout)
            if self._pub_ready:
                self._poll_ready(pub, 0)  # drain other subscription messages
            else:
                self._poll_ready(pub, wait_ready_s)
            for topic, body in messages:
                try:
                    pub.send_multipart([topic, body], zmq.NOBLOCK)
                except zmq.Again:
                    self.dropped += 1

    def publish(self, events: Sequence[Event]) -> None:
        if not events:
            return
        by_type: dict[str, list[list[Any]]] = {}
        for ev in events:  # one message per type: a subscriber's filter still applies
            by_type.setdefault(ev.type, []).append([ev.key, ev.priority, ev.payload])
        self._send(
            [
                (
                    topic_of(t),
                    json.dumps({"type": t, "events": batch}, separators=(",", ":")).encode(),
                )
                for t, batch in by_type.items()
            ]
        )

    def subscribe(self, types: Iterable[str]) -> ZmqSubscription:
        if self._closed:
            raise RuntimeError("the bus is closed")
        sub = ZmqSubscription(self, normalize_types(types))
        self._subs.add(sub)
        return sub

    def _forget(self, sub: ZmqSubscription) -> None:
        self._subs.discard(sub)

    def close(self) -> None:
        if self._closed:
            return
        for sub in list(self._subs):
            sub.close()
        with self._pub_lock:
            self._closed = True
            if self._pub is not None:
                self._pub.close()
                self._pub = None
        self._ctx.term()


def main(argv: Sequence[str] | None = None) -> int:
    """Run a broker until SIGINT/SIGTERM; prints the bound endpoints on one line."""
    ap = argparse.ArgumentParser(prog="python -m idds_jupyter.bus.zmqbus", description=main.__doc__)
    ap.add_argument("--pub", required=True, help="address publishers connect to (XSUB side)")
    ap.add_argument("--sub", required=True, help="address subscribers connect to (XPUB side)")
    args = ap.parse_args(argv)
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    broker = ZmqBroker(args.pub, args.sub).start()
    print(f"broker pub={broker.pub_endpoint} sub={broker.sub_endpoint}", flush=True)
    try:
        while not stop.wait(1.0):
            pass
    finally:
        broker.stop()
    return 0


__all__ = ["ZmqBroker", "ZmqBus", "ZmqSubscription", "main", "topic_of"]

if __name__ == "__main__":
    raise SystemExit(main())
