"""Disk full: a reserve beside the SQLite database, so that abort still works.

When the disk that holds the SQLite store fills, every write fails with
``SQLITE_FULL`` ("database or disk is full"), an abort included: even a
one-row ``UPDATE`` appends to the WAL. So the store keeps a reserve, a file of
``disk_reserve_mb`` MB allocated beside the database (``<db>-reserve``):

- the first ``SQLITE_FULL`` any process meets gives it back (the engine's error
  hook, :func:`release`), and a control operation that failed on a full disk is
  tried once more (:meth:`idds_jupyter.core.Orchestrator._control`): aborts, and
  the agents' bookkeeping, write into the space it held;
- while it is given back, submissions are refused at once with
  :class:`StorageFull` (the API's 507) instead of eating that space;
- it is allocated again, and submissions accepted, once the filesystem has room
  for it twice over (the service recovers by itself when space returns).

PostgreSQL's disk is the database server's: no reserve here; its ``DiskFull``
errors answer 507 all the same (:mod:`idds_jupyter.api.faults`).
"""

from __future__ import annotations

import contextlib
import errno
import logging
import os
import sqlite3
import threading
from pathlib import Path
from typing import Any

log = logging.getLogger("idds_jupyter.store")


class StorageFull(OSError):
    """The store's disk is full: nothing was stored."""

    def __init__(self, message: str) -> None:
        super().__init__(errno.ENOSPC, message)


def sqlite_path(engine: Any) -> str | None:
    """The database file of an SQLite engine (None: PostgreSQL, or in memory)."""
    if engine.dialect.name != "sqlite":
        return None
    path = engine.url.database
    if not path or path == ":memory:" or path.startswith("file:"):
        return None
    return str(path)


def reserve_path(db_path: str) -> Path:
    return Path(f"{db_path}-reserve")


def is_disk_full(exc: BaseException) -> bool:
    """``exc`` (or the DBAPI error it wraps) says the disk is full."""
    seen: set[int] = set()
    e: BaseException | None = exc
    while e is not None and id(e) not in seen:
        seen.add(id(e))
        if (
            isinstance(e, sqlite3.Error)
            and getattr(e, "sqlite_errorcode", None) == sqlite3.SQLITE_FULL
        ):
            return True
        if isinstance(e, OSError) and e.errno in (errno.ENOSPC, errno.EDQUOT):
            return True
        if type(e).__name__ == "DiskFull":  # psycopg.errors.DiskFull (SQLSTATE 53100)
            return True
        e = getattr(e, "orig", None) or e.__cause__
    return False


def release(db_path: str) -> bool:
    """Give the reserve of ``db_path`` back to the filesystem; True if there was one."""
    try:
        os.unlink(reserve_path(db_path))
    except FileNotFoundError:
        return False
    log.warning(
        "store: disk full; the %s reserve is given back so that aborts can still write "
        "(submissions answer 507 until space returns)",
        db_path,
    )
    return True


class Reserve:
    """The reserve of one SQLite database, as the process that submits sees it."""

    def __init__(self, db_path: str, size: int) -> None:
        self.path = reserve_path(db_path)
        self.size = size
        self._lock = threading.Lock()
        self.ensure()

    def present(self) -> bool:
        try:
            return os.stat(self.path).st_size >= self.size
        except OSError:
            return False

    def ensure(self) -> bool:
        """The reserve is there, or allocated now (when the filesystem has room for it
        twice over: a disk just freed is not filled again at once)."""
        if self.size <= 0 or self.present():
            return True
        with self._lock:
            if self.present():
                return True
            try:  # a statvfs per submission while the disk is full: microseconds
                st = os.statvfs(self.path.parent)
                if st.f_bavail * st.f_frsize < 2 * self.size:
                    return False
                self._allocate()
            except OSError as exc:
                with contextlib.suppress(OSError):
                    Path(f"{self.path}.tmp").unlink(missing_ok=True)
                if exc.errno in (errno.ENOSPC, errno.EDQUOT):
                    return False
                # not a full disk (a read-only directory...): no reserve, and no refusals
                log.warning(
                    "store: no disk reserve for aborts on a full disk (%s): %s", self.path, exc
                )
                self.size = 0
                return True
            log.info("store: disk reserve %s of %d bytes in place", self.path, self.size)
            return True

    def _allocate(self) -> None:
        tmp = self.path.with_name(self.path.name + ".tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        try:
            try:
                os.posix_fallocate(fd, 0, self.size)
            except OSError as exc:  # a filesystem without fallocate: real zeros
                if exc.errno not in (errno.EOPNOTSUPP, errno.EINVAL, errno.ENOSYS):
                    raise
                block = b"\0" * 2**20
                for offset in range(0, self.size, len(block)):
                    os.write(fd, block[: self.size - offset])
                os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, self.path)

    def check(self) -> None:
        """Before a submission: StorageFull while the reserve is given back and space has
        not returned."""
        if self.size > 0 and not self.ensure():
            raise StorageFull(
                "insufficient storage: the disk of the store is full; nothing "
                "was stored (aborts still work). Free some space and submit again"
            )


def reserve_for(engine: Any, size_mb: float) -> Reserve | None:
    """The reserve of ``engine``'s SQLite file (None: PostgreSQL, in memory, or size 0)."""
    path = sqlite_path(engine)
    if path is None or size_mb <= 0:
        return None
    return Reserve(path, int(size_mb * 2**20))


__all__ = ["Reserve", "StorageFull", "is_disk_full", "release", "reserve_for", "sqlite_path"]
