"""Events: small JSON hints that wake agents.

An event says "look at this" (a workflow, a work, some jobs); it never carries
the truth, which stays in the store. So an event may be lost or duplicated and
the agents still converge, because they also poll the store.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

WORKFLOW_NEW = "workflow.new"
# Something changed in a workflow: the Clerk should re-plan it.
WORKFLOW_DIRTY = "workflow.dirty"
WORKFLOW_TERMINAL = "workflow.terminal"
WORK_NEW = "work.new"
WORK_TERMINAL = "work.terminal"
JOBS_READY = "jobs.ready"
JOBS_CANCEL = "jobs.cancel"
# Per-job result notification for callers waiting on a result.
JOB_RESULT = "job.result"
MESSAGE_NEW = "message.new"
CONTROL = "control"

# Subscribing to this pseudo-type receives every event (monitors, live streams).
ALL = "*"

# Terminal events first: finishing things frees resources and unblocks users,
# while new work can always wait a little.
DEFAULT_PRIORITIES: dict[str, int] = {
    WORKFLOW_TERMINAL: 100,
    WORK_TERMINAL: 90,
    JOBS_CANCEL: 80,
    CONTROL: 70,
    JOB_RESULT: 60,
    WORKFLOW_DIRTY: 50,
    WORK_NEW: 40,
    WORKFLOW_NEW: 30,
    JOBS_READY: 20,
    MESSAGE_NEW: 10,
}

EVENT_TYPES: tuple[str, ...] = tuple(DEFAULT_PRIORITIES)


@dataclass(frozen=True)
class Event:
    """One hint. Equality and hashing ignore the payload so duplicates compare equal."""

    type: str
    key: str | None = None
    payload: dict[str, Any] = field(default_factory=dict, compare=False, hash=False)
    priority: int = 0

    def to_json(self) -> dict[str, Any]:
        """The wire form (JSON only: the bus never pickles)."""
        return {
            "type": self.type,
            "key": self.key,
            "priority": self.priority,
            "payload": self.payload,
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Event:
        key = data.get("key")
        return cls(
            type=str(data["type"]),
            key=None if key is None else str(key),
            payload=dict(data.get("payload") or {}),
            priority=int(data.get("priority") or 0),
        )


def default_priority(type: str) -> int:
    """The priority an event of this type gets unless told otherwise (0 if unknown)."""
    return DEFAULT_PRIORITIES.get(type, 0)


def make_event(type: str, key: object = None, **payload: Any) -> Event:
    """An event with its type's default priority; ``key`` is stringified (ids are ints)."""
    return Event(
        type=type,
        key=None if key is None else str(key),
        payload=payload,
        priority=default_priority(type),
    )


def outcome_events(
    works_ended: list[tuple[int, int, str, str]], dirty: Iterable[int], ended: list[tuple[int, str]]
) -> list[Event]:
    """What a transaction of the store changed: works that ended, as (workflow id, work id,
    status, work name) — one ``work.terminal`` each, keyed by the workflow and naming the
    work (a caller waits on its name) —, workflows to re-plan, and workflows that ended."""
    events = [
        make_event(WORK_TERMINAL, str(wf), work=w, name=name, status=status)
        for wf, w, status, name in works_ended
    ]
    events += [make_event(WORKFLOW_DIRTY, str(wf)) for wf in dirty]
    return events + ended_events(ended)


def ended_events(ended: list[tuple[int, str]]) -> list[Event]:
    """Workflows that ended, as (workflow id, status): their terminal events, and a wake-up
    for the sender of the outbound messages written with them."""
    events = [make_event(WORKFLOW_TERMINAL, wid, status=status) for wid, status in ended]
    if ended:
        events.append(make_event(MESSAGE_NEW))
    return events


__all__ = [
    "ALL",
    "ended_events",
    "outcome_events",
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
    "Event",
    "default_priority",
    "make_event",
]
