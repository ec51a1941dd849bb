"""Statuses of workflows, works and jobs, and the state machines that guard them.

The store turns :meth:`StateMachine.sources` into one bulk conditional
``UPDATE ... WHERE status IN (...)``, so every legal transition lives here and
nowhere else.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from enum import StrEnum
from typing import Generic, TypeVar


class WorkflowStatus(StrEnum):
    """Status of a workflow run (the dynamic part of a Workflow)."""

    NEW = "new"
    RUNNING = "running"
    SUSPENDED = "suspended"
    FINISHED = "finished"
    SUBFINISHED = "subfinished"
    FAILED = "failed"
    ABORTED = "aborted"


class WorkStatus(StrEnum):
    """Status of a work instance; ``skipped`` records a branch that was not taken."""

    NEW = "new"
    RUNNING = "running"
    SUSPENDED = "suspended"
    FINISHED = "finished"
    SUBFINISHED = "subfinished"
    FAILED = "failed"
    ABORTED = "aborted"
    SKIPPED = "skipped"


class JobStatus(StrEnum):
    """Status of one job, the unit actually executed by a backend."""

    PENDING = "pending"
    READY = "ready"
    SUBMITTED = "submitted"
    RUNNING = "running"
    FINISHED = "finished"
    FAILED = "failed"
    CANCELLED = "cancelled"


class IllegalTransition(ValueError):
    """A status change the state machine forbids; names the entity kind and both states."""

    def __init__(self, kind: str, src: object, dst: object) -> None:
        self.kind = kind
        self.src = str(src)
        self.dst = str(dst)
        super().__init__(f"illegal {kind} transition {self.src!r} -> {self.dst!r}")


S = TypeVar("S", bound=StrEnum)


class StateMachine(Generic[S]):
    """The legal one-step transitions of one kind of entity.

    States may be given as enum members or as their string values, so callers
    holding raw column values from the store need no conversion.
    """

    def __init__(
        self,
        kind: str,
        states: type[S],
        transitions: Mapping[S, Iterable[S]],
        terminal: Iterable[S],
    ) -> None:
        self.kind = kind
        self.states = states
        self._next: dict[S, frozenset[S]] = {s: frozenset() for s in states}
        for src, dsts in transitions.items():
            self._next[states(src)] = frozenset(states(d) for d in dsts)
        self._sources: dict[S, frozenset[S]] = {
            dst: frozenset(s for s, nxt in self._next.items() if dst in nxt) for dst in states
        }
        self.terminal: frozenset[S] = frozenset(states(t) for t in terminal)

    def _coerce(self, state: S | str, src: object, dst: object) -> S:
        try:
            return self.states(state)
        except ValueError:
            raise IllegalTransition(self.kind, src, dst) from None

    def allowed(self, src: S | str, dst: S | str) -> bool:
        """True when ``src -> dst`` is a legal single step (unknown states are not)."""
        try:
            return self.states(dst) in self._next[self.states(src)]
        except ValueError:
            return False

    def check(self, src: S | str, dst: S | str) -> None:
        """Raise :class:`IllegalTransition` unless ``src -> dst`` is legal."""
        s = self._coerce(src, src, dst)
        d = self._coerce(dst, src, dst)
        if d not in self._next[s]:
            raise IllegalTransition(self.kind, s, d)

    def sources(self, dst: S | str) -> frozenset[S]:
        """States from which ``dst`` is reachable in one step (for bulk conditional updates)."""
        return self._sources[self.states(dst)]

    def targets(self, src: S | str) -> frozenset[S]:
        """States reachable from ``src`` in one step."""
        return self._next[self.states(src)]

    def is_terminal(self, state: S | str) -> bool:
        """True when ``state`` is at rest (it may still be re-opened by a user retry)."""
        return self.states(state) in self.terminal

    def __repr__(self) -> str:
        return f"StateMachine({self.kind!r})"


_J = JobStatus
JOB_MACHINE: StateMachine[JobStatus] = StateMachine(
    "job",
    JobStatus,
    {
        _J.PENDING: [_J.READY, _J.CANCELLED],
        _J.READY: [_J.SUBMITTED, _J.CANCELLED, _J.PENDING],
        _J.SUBMITTED: [_J.RUNNING, _J.FINISHED, _J.FAILED, _J.READY, _J.CANCELLED],
        _J.RUNNING: [_J.FINISHED, _J.FAILED, _J.READY, _J.CANCELLED],
        _J.FAILED: [_J.READY],
        _J.CANCELLED: [_J.PENDING],
        _J.FINISHED: [],
    },
    terminal=[_J.FINISHED, _J.FAILED, _J.CANCELLED],
)

_W = WorkStatus
WORK_MACHINE: StateMachine[WorkStatus] = StateMachine(
    "work",
    WorkStatus,
    {
        _W.NEW: [_W.RUNNING, _W.SKIPPED, _W.ABORTED, _W.SUSPENDED],
        _W.RUNNING: [_W.SUSPENDED, _W.FINISHED, _W.SUBFINISHED, _W.FAILED, _W.ABORTED],
        _W.SUSPENDED: [_W.RUNNING, _W.ABORTED],
        _W.FAILED: [_W.RUNNING],
        _W.SUBFINISHED: [_W.RUNNING],
        _W.FINISHED: [],
        _W.ABORTED: [],
        _W.SKIPPED: [],
    },
    terminal=[_W.FINISHED, _W.SUBFINISHED, _W.FAILED, _W.ABORTED, _W.SKIPPED],
)

_F = WorkflowStatus
WORKFLOW_MACHINE: StateMachine[WorkflowStatus] = StateMachine(
    "workflow",
    WorkflowStatus,
    {
        _F.NEW: [_F.RUNNING, _F.ABORTED, _F.FAILED],
        _F.RUNNING: [_F.SUSPENDED, _F.FINISHED, _F.SUBFINISHED, _F.FAILED, _F.ABORTED],
        _F.SUSPENDED: [_F.RUNNING, _F.ABORTED],
        _F.FAILED: [_F.RUNNING],
        _F.SUBFINISHED: [_F.RUNNING],
        _F.FINISHED: [],
        _F.ABORTED: [],
    },
    terminal=[_F.FINISHED, _F.SUBFINISHED, _F.FAILED, _F.ABORTED],
)


def scope_outcome(finished: int, failed: int) -> WorkflowStatus:
    """The status of a scope whose elements are all at rest: finished unless something
    failed (and was not handled), failed when nothing finished, else subfinished."""
    if not failed:
        return WorkflowStatus.FINISHED
    return WorkflowStatus.FAILED if finished == 0 else WorkflowStatus.SUBFINISHED


FAILED_LIKE = (WorkStatus.FAILED, WorkStatus.SUBFINISHED, WorkStatus.ABORTED)
