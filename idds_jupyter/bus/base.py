"""The bus interface every backend implements.

Agents publish hints and wait on subscriptions; the interface is tiny so that a
backend can be swapped (in-process, database table, ZeroMQ, disabled) without
touching an agent. Contract shared by all backends:

- ``publish`` never blocks for long: a bus may drop events rather than stall
  an agent (the store is the truth, agents also poll);
- a subscription receives only events published after ``subscribe`` returned;
- buses and subscriptions are safe to use from several threads.
"""

from __future__ import annotations

import abc
from collections.abc import Iterable, Sequence
from types import TracebackType

from idds_jupyter.bus.event import ALL, Event


class Subscription(abc.ABC):
    """A stream of events of some types, read by one consumer."""

    @abc.abstractmethod
    def get(self, timeout: float | None = None) -> list[Event]:
        """All events available now; block up to ``timeout`` s for the first one ([] on timeout).

        ``timeout=None`` blocks until an event arrives (or the subscription is closed).
        """

    @abc.abstractmethod
    def close(self) -> None:
        """Stop receiving; further ``get`` calls return []. Idempotent."""

    def __enter__(self) -> Subscription:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


class Bus(abc.ABC):
    """Publishes events to the subscriptions of their type."""

    @abc.abstractmethod
    def publish(self, events: Sequence[Event]) -> None:
        """Hand the events to the bus; returns at once (or nearly) and may drop them."""

    @abc.abstractmethod
    def subscribe(self, types: Iterable[str]) -> Subscription:
        """A new subscription to these event types (``ALL`` = "*" for every type)."""

    def close(self) -> None:  # noqa: B027 - optional hook, most buses hold nothing
        """Release the bus's resources. Idempotent."""

    def __enter__(self) -> Bus:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


def normalize_types(types: Iterable[str]) -> frozenset[str] | None:
    """The set of types to match, or None for every type (``ALL``)."""
    if isinstance(types, str):  # a lone type is an easy mistake: "jobs.ready" is not 10 types
        types = [types]
    wanted = frozenset(types)
    return None if ALL in wanted else wanted


__all__ = ["Bus", "Subscription", "normalize_types"]
