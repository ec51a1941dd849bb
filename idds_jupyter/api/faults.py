"""Storage faults as HTTP answers: a busy database is 503, a full disk is 507.

A request that meets a database locked by another process waits at most
``api_lock_wait`` seconds (the API's own engine: SQLite's busy timeout and this
process's write turn, PostgreSQL's ``lock_timeout``; see
:func:`idds_jupyter.store.engine.make_engine`) and then answers ``503`` with
``Retry-After``, not an opaque 500 after the whole lock. A full disk (SQLite's
``SQLITE_FULL``, PostgreSQL's ``DiskFull``, ``ENOSPC`` writing the cache) answers
``507 Insufficient Storage``; the transaction was rolled back, so nothing stored
is lost, and the next request after space returns succeeds.
"""

from __future__ import annotations

import errno
import sqlite3
from dataclasses import dataclass

from idds_jupyter.store.space import StorageFull, is_disk_full

RETRY_AFTER_S = 2


@dataclass(frozen=True)
class Fault:
    status: int
    message: str
    retry_after: int | None = None


BUSY = Fault(
    503,
    "database busy, retry: another process holds a lock on the store; nothing was changed",
    RETRY_AFTER_S,
)
UNAVAILABLE = Fault(
    503,
    "database unavailable, retry: the store cannot be reached; nothing was changed",
    RETRY_AFTER_S,
)
FULL = Fault(
    507,
    "insufficient storage: the disk of the store is full; nothing was stored "
    "(aborts still work). Free some space and retry",
)

# PostgreSQL SQLSTATEs: lock_not_available (lock_timeout), query_canceled (statement_timeout),
# deadlock_detected, serialization_failure; class 08: connection exceptions; 57P0x: shutdown
_PG_BUSY = {"55P03", "57014", "40P01", "40001"}


def storage_fault(exc: BaseException | None) -> Fault | None:
    """The answer for ``exc`` if it is a storage fault (else None: a plain 500)."""
    if exc is None:
        return None
    if isinstance(exc, StorageFull):
        return Fault(507, exc.strerror or FULL.message)
    if is_disk_full(exc):
        return FULL
    e: BaseException | None = exc
    seen: set[int] = set()
    while e is not None and id(e) not in seen:
        seen.add(id(e))
        if type(e).__name__ == "TimeoutError" and type(e).__module__.startswith("sqlalchemy"):
            return BUSY  # every pooled connection in use: as good as locked
        if isinstance(e, sqlite3.OperationalError):
            code = getattr(e, "sqlite_errorcode", None)
            if code in (sqlite3.SQLITE_BUSY, sqlite3.SQLITE_LOCKED) or "locked" in str(e):
                return BUSY
        state = getattr(e, "sqlstate", None)
        if isinstance(state, str):
            if state in _PG_BUSY:
                return BUSY
            if state.startswith("08") or state.startswith("57P0"):
                return UNAVAILABLE
        if type(e).__module__.startswith("psycopg") and type(e).__name__ == "OperationalError":
            return UNAVAILABLE  # no SQLSTATE: the connection failed or was lost
        if isinstance(e, OSError) and e.errno in (errno.ENOSPC, errno.EDQUOT):
            return FULL
        e = getattr(e, "orig", None) or e.__cause__
    return None


__all__ = ["BUSY", "FULL", "Fault", "UNAVAILABLE", "storage_fault"]
