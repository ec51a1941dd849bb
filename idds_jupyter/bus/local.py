"""The in-process bus: the embedded default (one process runs every agent).

One bounded queue per subscription. Publishing appends under a short lock and
never waits for a consumer: a queue that overflows drops its oldest events,
which is safe because events are only hints.
"""

from __future__ import annotations

import threading
from collections import deque
from collections.abc import Callable, Iterable, Sequence

from idds_jupyter.bus.base import Bus, Subscription, normalize_types
from idds_jupyter.bus.event import Event

DEFAULT_MAX_PENDING = 100_000


class LocalSubscription(Subscription):
    """A bounded queue of events, filled by ``LocalBus.publish``."""

    def __init__(self, bus: LocalBus, types: frozenset[str] | None, max_pending: int) -> None:
        self.types = types
        self._bus = bus
        self._queue: deque[Event] = deque(maxlen=max_pending)
        self._cond = threading.Condition(threading.Lock())
        self._closed = False
        self.dropped = 0  # events lost to overflow, for tests and monitoring
        # Called in the publisher's thread after events are queued: a consumer on an
        # event loop schedules its read there instead of keeping a thread blocked in get().
        self.on_put: Callable[[], None] | None = None

    def _put(self, events: list[Event]) -> None:
        with self._cond:
            if self._closed:
                return
            queue = self._queue
            overflow = len(queue) + len(events) - (queue.maxlen or 0)
            if overflow > 0:
                self.dropped += overflow  # deque(maxlen) drops the oldest
            queue.extend(events)
            self._cond.notify_all()
        if self.on_put is not None:
            self.on_put()

    def get(self, timeout: float | None = None) -> list[Event]:
        with self._cond:
            if not self._queue and not self._closed:
                self._cond.wait_for(lambda: bool(self._queue) or self._closed, timeout)
            out = list(self._queue)
            self._queue.clear()
            return out

    def close(self) -> None:
        with self._cond:
            if self._closed:
                return
            self._closed = True
            self._queue.clear()
            self._cond.notify_all()
        self._bus._unsubscribe(self)


class LocalBus(Bus):
    """Thread-safe publish/subscribe between the threads of one process."""

    def __init__(self, max_pending: int = DEFAULT_MAX_PENDING) -> None:
        self.max_pending = max_pending
        self._lock = threading.Lock()
        self._subs: list[LocalSubscription] = []
        # Copy-on-write routing tables: publish reads them without taking the lock.
        self._by_type: dict[str, tuple[LocalSubscription, ...]] = {}
        self._catch_all: tuple[LocalSubscription, ...] = ()

    def _reindex(self) -> None:
        by_type: dict[str, list[LocalSubscription]] = {}
        catch_all = []
        for sub in self._subs:
            if sub.types is None:
                catch_all.append(sub)
            else:
                for t in sub.types:
                    by_type.setdefault(t, []).append(sub)
        self._by_type = {t: tuple(s) for t, s in by_type.items()}
        self._catch_all = tuple(catch_all)

    def subscribe(self, types: Iterable[str]) -> LocalSubscription:
        sub = LocalSubscription(self, normalize_types(types), self.max_pending)
        with self._lock:
            self._subs.append(sub)
            self._reindex()
        return sub

    def _unsubscribe(self, sub: LocalSubscription) -> None:
        with self._lock:
            if sub in self._subs:
                self._subs.remove(sub)
                self._reindex()

    def publish(self, events: Sequence[Event]) -> None:
        by_type, catch_all = self._by_type, self._catch_all
        batches: dict[LocalSubscription, list[Event]] = {}
        for ev in events:
            for sub in by_type.get(ev.type, ()):
                batches.setdefault(sub, []).append(ev)
            for sub in catch_all:
                batches.setdefault(sub, []).append(ev)
        for sub, batch in batches.items():
            sub._put(batch)

    def close(self) -> None:
        with self._lock:
            subs = list(self._subs)
        for sub in subs:
            sub.close()


__all__ = ["LocalBus", "LocalSubscription"]
