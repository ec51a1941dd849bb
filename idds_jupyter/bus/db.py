"""The database bus: events as rows of the ``events`` table.

Persistent and shared by every process that reaches the database, with no
extra service. Publishing is one small INSERT (executemany); a subscription
remembers the last id it has seen and polls for newer rows of its types.

Two details keep this cheap and correct:

- On SQLite the store's engine runs ``BEGIN IMMEDIATE`` for every transaction,
  so polling through it would take the write lock 10-20 times a second per
  subscriber. The bus therefore opens its own small engine on the same file,
  where a SELECT runs outside any transaction (WAL readers never block) and an
  INSERT waits for the write lock only ``publish_timeout`` seconds before the
  events are dropped (they are hints; an agent must not stall on them).
- Ids are allocated before commit, so on PostgreSQL a row with a smaller id
  can become visible after a larger one. A subscription remembers the holes
  below its last id for ``gap_grace_s`` seconds and looks them up again, so
  such late rows are still delivered. SQLite commits writers one at a time, so
  its ids appear in order; ``prune`` always keeps the newest row so that SQLite
  never reuses an id a subscription has already passed.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Iterable, Sequence
from typing import Any

from sqlalchemy import create_engine, delete, event, func, or_, select
from sqlalchemy.engine import Engine
from sqlalchemy.exc import OperationalError

from idds_jupyter.bus.base import Bus, Subscription, normalize_types
from idds_jupyter.bus.event import Event
from idds_jupyter.store.tables import events as events_table

log = logging.getLogger(__name__)

DEFAULT_POLL_INTERVAL = 0.05
DEFAULT_BATCH = 10_000
MAX_GAPS = 10_000


def _sqlite_side_engine(engine: Engine, busy_timeout_s: float) -> Engine | None:
    """A plain pysqlite engine on the same file (None for in-memory databases)."""
    database = engine.url.database
    if not database or database == ":memory:" or database.startswith("file::memory:"):
        return None
    side = create_engine(
        engine.url,
        connect_args={"timeout": busy_timeout_s, "check_same_thread": False},
    )

    @event.listens_for(side, "connect")
    def _on_connect(dbapi_conn: Any, _rec: Any) -> None:
        cur = dbapi_conn.cursor()
        cur.execute("PRAGMA journal_mode=WAL")
        cur.execute("PRAGMA synchronous=NORMAL")
        cur.execute(f"PRAGMA busy_timeout={int(busy_timeout_s * 1000)}")
        cur.close()

    return side


class DbSubscription(Subscription):
    """Polls the events table for rows newer than the last one it has seen."""

    def __init__(
        self,
        bus: DbBus,
        types: frozenset[str] | None,
        poll_interval: float,
        batch: int,
        gap_grace_s: float,
    ) -> None:
        self.types = types
        self.poll_interval = poll_interval
        self.batch = batch
        self.gap_grace_s = gap_grace_s
        self._bus = bus
        self._lock = threading.Lock()
        self._closed = threading.Event()
        self._gaps: dict[int, float] = {}  # id not yet seen below last_id -> when noticed
        with bus._read_engine.connect() as conn:
            self.last_id: int = int(conn.execute(select(func.max(events_table.c.id))).scalar() or 0)

    def _poll(self) -> list[Event]:
        """One query: rows above last_id, and rows that filled a known gap."""
        t = events_table.c
        cond = t.id > self.last_id
        if self._gaps:
            now = time.time()
            self._gaps = {i: ts for i, ts in self._gaps.items() if now - ts < self.gap_grace_s}
            if self._gaps:
                cond = or_(cond, t.id.in_(list(self._gaps)))
        # Every type is read (not only ours) so that holes in the ids can be told
        # apart from rows of other types; the rows are small hints.
        stmt = (
            select(t.id, t.type, t.key, t.priority, t.payload)
            .where(cond)
            .order_by(t.id)
            .limit(self.batch)
        )
        with self._bus._read_engine.connect() as conn:
            rows = conn.execute(stmt).all()
        if not rows:
            return []
        out: list[Event] = []
        now = time.time()
        types = self.types
        last = self.last_id
        for row in rows:
            rid = int(row.id)
            if rid > last:
                if rid > last + 1 and len(self._gaps) < MAX_GAPS:
                    for missing in range(last + 1, min(rid, last + 1 + MAX_GAPS)):
                        self._gaps[missing] = now
                last = rid
            else:
                self._gaps.pop(rid, None)
            if types is None or row.type in types:
                out.append(
                    Event(
                        type=row.type,
                        key=row.key,
                        payload=dict(row.payload or {}),
                        priority=int(row.priority or 0),
                    )
                )
        self.last_id = last
        return out

    def get(self, timeout: float | None = None) -> list[Event]:
        deadline = None if timeout is None else time.monotonic() + timeout
        while not self._closed.is_set():
            with self._lock:
                try:
                    found = self._poll()
                except OperationalError as exc:  # database busy or gone: hints may wait
                    log.warning("event bus poll failed: %s", exc)
                    found = []
            if found:
                return found
            if deadline is None:
                wait = self.poll_interval
            else:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return []
                wait = min(self.poll_interval, remaining)
            self._closed.wait(wait)
        return []

    def close(self) -> None:
        self._closed.set()


class DbBus(Bus):
    """Publish/subscribe through the ``events`` table of the store."""

    def __init__(
        self,
        engine: Engine,
        poll_interval: float = DEFAULT_POLL_INTERVAL,
        publish_timeout: float = 5.0,
        batch: int = DEFAULT_BATCH,
        gap_grace_s: float = 5.0,
    ) -> None:
        self.engine = engine
        self.poll_interval = poll_interval
        self.batch = batch
        self.gap_grace_s = gap_grace_s
        self._side = (
            _sqlite_side_engine(engine, publish_timeout)
            if engine.dialect.name == "sqlite"
            else None
        )
        self._write_engine = self._side or engine
        self._read_engine = self._side or engine
        self.dropped = 0  # events lost because the database was busy

    def publish(self, events: Sequence[Event]) -> None:
        if not events:
            return
        now = time.time()
        rows = [
            {
                "type": ev.type,
                "key": ev.key,
                "priority": ev.priority,
                "payload": ev.payload,
                "created_at": now,
            }
            for ev in events
        ]
        try:
            with self._write_engine.begin() as conn:
                conn.execute(events_table.insert(), rows)
        except OperationalError as exc:  # locked for too long: drop, the store is the truth
            self.dropped += len(rows)
            log.warning("event bus dropped %d events: %s", len(rows), exc)

    def subscribe(self, types: Iterable[str], poll_interval: float | None = None) -> DbSubscription:
        return DbSubscription(
            self,
            normalize_types(types),
            self.poll_interval if poll_interval is None else poll_interval,
            self.batch,
            self.gap_grace_s,
        )

    def prune(self, older_than_s: float) -> int:
        """Delete events older than ``older_than_s`` seconds; returns how many.

        The newest row is always kept so that ids keep growing (see module doc).
        """
        t = events_table.c
        newest = select(func.max(t.id)).scalar_subquery()
        stmt = delete(events_table).where(t.created_at < time.time() - older_than_s, t.id < newest)
        with self._write_engine.begin() as conn:
            return int(conn.execute(stmt).rowcount or 0)

    def close(self) -> None:
        if self._side is not None:
            self._side.dispose()


__all__ = ["DbBus", "DbSubscription"]
