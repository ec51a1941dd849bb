"""The Coordinator: merges duplicate events and serves the most urgent first.

A burst of "workflow 7 is dirty" hints needs one re-plan, not a hundred; and a
"workflow terminal" should not wait behind ten thousand "jobs ready". The
Coordinator sits between a subscription and an agent: it keeps one pending
event per (type, key), the newest payload winning, and hands them out by
priority (highest first, arrival order among equals).
"""

from __future__ import annotations

import dataclasses
import heapq
import itertools
import threading
from dataclasses import dataclass

from idds_jupyter.bus.base import Subscription
from idds_jupyter.bus.event import Event


@dataclass
class CoordinatorStats:
    """Counters so that tests and benchmarks can see the merging work."""

    received: int = 0  # events read from the subscription
    merged: int = 0  # of those, duplicates folded into a pending event
    served: int = 0  # events handed to the agent

    def as_dict(self) -> dict[str, int]:
        return dataclasses.asdict(self)


class Coordinator(Subscription):
    """Wraps a subscription; itself a subscription, so agents can use either."""

    def __init__(self, subscription: Subscription) -> None:
        self.subscription = subscription
        self.stats = CoordinatorStats()
        self._lock = threading.Lock()
        # (type, key) -> (arrival seq, event); dict order is arrival order.
        self._pending: dict[tuple[str, str | None], tuple[int, Event]] = {}
        self._seq = itertools.count()

    def _add(self, events: list[Event]) -> None:
        with self._lock:
            self.stats.received += len(events)
            for ev in events:
                k = (ev.type, ev.key)
                old = self._pending.get(k)
                if old is None:
                    self._pending[k] = (next(self._seq), ev)
                    continue
                self.stats.merged += 1
                seq, prev = old
                # Newest payload values win; the event keeps its first arrival slot.
                merged = dataclasses.replace(
                    prev,
                    payload={**prev.payload, **ev.payload},
                    priority=max(prev.priority, ev.priority),
                )
                self._pending[k] = (seq, merged)

    def _fill(self, timeout: float | None) -> None:
        """Read what the subscription has; wait up to timeout only if nothing is pending."""
        with self._lock:
            have = bool(self._pending)
        events = self.subscription.get(0 if have else timeout)
        if events:
            self._add(events)
            # Collect the rest of a burst (non-blocking) so duplicates merge.
            more = self.subscription.get(0)
            if more:
                self._add(more)

    @property
    def pending(self) -> int:
        """How many merged events wait to be served."""
        with self._lock:
            return len(self._pending)

    def get(self, timeout: float | None = None) -> list[Event]:
        """All pending events, merged, highest priority first ([] on timeout)."""
        self._fill(timeout)
        with self._lock:
            items = sorted(self._pending.values(), key=lambda se: (-se[1].priority, se[0]))
            self._pending.clear()
            self.stats.served += len(items)
        return [ev for _, ev in items]

    def next(self, timeout: float | None = None) -> Event | None:
        """The single most urgent pending event (None on timeout); the rest stay buffered."""
        best = self.top(1, timeout)
        return best[0] if best else None

    def top(self, n: int, timeout: float | None = None) -> list[Event]:
        """Up to ``n`` most urgent pending events; the rest stay buffered."""
        self._fill(timeout)
        with self._lock:
            best = heapq.nsmallest(
                n, self._pending.items(), key=lambda kv: (-kv[1][1].priority, kv[1][0])
            )
            for k, _ in best:
                del self._pending[k]
            self.stats.served += len(best)
        return [ev for _, (_, ev) in best]

    def close(self) -> None:
        self.subscription.close()
        with self._lock:
            self._pending.clear()


__all__ = ["Coordinator", "CoordinatorStats"]
