"""The event bus: hints that wake agents, and the Coordinator that orders them.

Backends (one interface, :class:`Bus`): ``local`` (in-process, the embedded
default), ``db`` (the store's ``events`` table, several processes), ``zmq``
(a ZeroMQ broker) and ``none`` (disabled: agents poll the store alone).
"""

from __future__ import annotations

from sqlalchemy.engine import Engine

from idds_jupyter.bus.base import Bus, Subscription
from idds_jupyter.bus.coordinator import Coordinator, CoordinatorStats
from idds_jupyter.bus.db import DbBus, DbSubscription
from idds_jupyter.bus.event import (
    ALL,
    CONTROL,
    DEFAULT_PRIORITIES,
    EVENT_TYPES,
    JOB_RESULT,
    JOBS_CANCEL,
    JOBS_READY,
    MESSAGE_NEW,
    WORK_NEW,
    WORK_TERMINAL,
    WORKFLOW_DIRTY,
    WORKFLOW_NEW,
    WORKFLOW_TERMINAL,
    Event,
    default_priority,
    make_event,
)
from idds_jupyter.bus.local import LocalBus, LocalSubscription
from idds_jupyter.bus.null import NullBus, NullSubscription
from idds_jupyter.bus.zmqbus import ZmqBroker, ZmqBus, ZmqSubscription

BUS_KINDS = ("local", "none", "db", "zmq://HOST:PUBPORT:SUBPORT")


def make_bus(spec: str, engine: Engine | None = None) -> Bus:
    """Build a bus from its spec: "local", "none", "db" (needs ``engine``) or
    "zmq://HOST:PUBPORT:SUBPORT" (a client of the broker there; PUBPORT is where
    publishers connect, SUBPORT where subscribers connect).
    """
    s = spec.strip()
    if s == "local":
        return LocalBus()
    if s in ("none", "null", ""):
        return NullBus()
    if s == "db":
        if engine is None:
            raise ValueError('the "db" event bus needs the store\'s engine: make_bus("db", engine)')
        return DbBus(engine)
    if s.startswith("zmq://"):
        parts = s[len("zmq://") :].rsplit(":", 2)  # rsplit: an IPv6 host like [::1] has colons
        if len(parts) != 3 or not parts[0] or not (parts[1].isdigit() and parts[2].isdigit()):
            raise ValueError(f"bad zmq bus spec {spec!r}: expected zmq://HOST:PUBPORT:SUBPORT")
        host, pub_port, sub_port = parts
        return ZmqBus(f"tcp://{host}:{pub_port}", f"tcp://{host}:{sub_port}")
    raise ValueError(f"unknown event bus {spec!r}: expected one of {', '.join(BUS_KINDS)}")


__all__ = [
    "ALL",
    "BUS_KINDS",
    "CONTROL",
    "DEFAULT_PRIORITIES",
    "EVENT_TYPES",
    "JOBS_CANCEL",
    "JOBS_READY",
    "JOB_RESULT",
    "MESSAGE_NEW",
    "WORKFLOW_DIRTY",
    "WORKFLOW_NEW",
    "WORKFLOW_TERMINAL",
    "WORK_NEW",
    "WORK_TERMINAL",
    "Bus",
    "Coordinator",
    "CoordinatorStats",
    "DbBus",
    "DbSubscription",
    "Event",
    "LocalBus",
    "LocalSubscription",
    "NullBus",
    "NullSubscription",
    "Subscription",
    "ZmqBroker",
    "ZmqBus",
    "ZmqSubscription",
    "default_priority",
    "make_bus",
    "make_event",
]
