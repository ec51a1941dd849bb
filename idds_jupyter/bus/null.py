"""The disabled bus: agents then work by polling the store alone.

It exists so that "events are hints" is testable: with this bus every workflow
must still finish, only slower.
"""

from __future__ import annotations

import threading
from collections.abc import Iterable, Sequence

from idds_jupyter.bus.base import Bus, Subscription
from idds_jupyter.bus.event import Event


class NullSubscription(Subscription):
    """Never yields an event; ``get`` just waits out its timeout (an agent's poll interval)."""

    def __init__(self) -> None:
        self._closed = threading.Event()

    def get(self, timeout: float | None = None) -> list[Event]:
        # Waiting on an Event (not time.sleep) lets close() wake a blocked agent.
        self._closed.wait(timeout)
        return []

    def close(self) -> None:
        self._closed.set()


class NullBus(Bus):
    """Drops everything it is given."""

    def publish(self, events: Sequence[Event]) -> None:
        return None

    def subscribe(self, types: Iterable[str]) -> Subscription:
        return NullSubscription()


__all__ = ["NullBus", "NullSubscription"]
