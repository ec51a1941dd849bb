"""Small helpers shared by the store's bulk statements."""

from __future__ import annotations

import time
from collections.abc import Iterator, Sequence
from typing import Any, TypeVar

from sqlalchemy import BindParameter, Select, bindparam
from sqlalchemy.engine import Connection

T = TypeVar("T")

# Bound parameters per statement stay well under SQLite's 32,766 and PostgreSQL's 65,535.
CHUNK = 5000


def now() -> float:
    return time.time()


def chunks(seq: Sequence[T], size: int = CHUNK) -> Iterator[Sequence[T]]:
    for i in range(0, len(seq), size):
        yield seq[i : i + size]


def is_postgres(conn: Connection) -> bool:
    return conn.dialect.name == "postgresql"


def for_update(conn: Connection, stmt: Select[Any], skip_locked: bool = False, **kw: Any) -> Select[Any]:
    """Row locks on PostgreSQL; SQLite's BEGIN IMMEDIATE already serializes writers."""
    if is_postgres(conn):
        return stmt.with_for_update(skip_locked=skip_locked, **kw)
    return stmt


def in_list(name: str = "ids") -> BindParameter[Any]:
    """An ``IN`` list bound at execution time: hot statements are built once, at import.

    Building a statement per call costs SQLAlchemy about a millisecond (coercions,
    cache key) against a fraction of that to run a prebuilt one.
    """
    return bindparam(name, expanding=True)


class Locked:
    """A prebuilt ``SELECT`` and its row-locking variant for PostgreSQL (see :func:`for_update`)."""

    def __init__(self, stmt: Select[Any], skip_locked: bool = False, **kw: Any) -> None:
        self.plain = stmt
        self.pg = stmt.with_for_update(skip_locked=skip_locked, **kw)

    def on(self, conn: Connection) -> Select[Any]:
        return self.pg if is_postgres(conn) else self.plain
