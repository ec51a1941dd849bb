"""Small helpers shared by the store's bulk statements."""

from __future__ import annotations

import time
from collections.abc import Iterator, Sequence
from typing import Any, TypeVar

from sqlalchemy import ARRAY, Boolean, Float, Select, all_, any_, bindparam
from sqlalchemy.engine import Connection
from sqlalchemy.ext.compiler import compiles
from sqlalchemy.sql.compiler import SQLCompiler
from sqlalchemy.sql.elements import ColumnElement
from sqlalchemy.sql.functions import FunctionElement
from sqlalchemy.sql.visitors import InternalTraversal

T = TypeVar("T")

# Bound parameters per statement stay well under SQLite's 32,766 and PostgreSQL's 65,535.
CHUNK = 5000


def now() -> float:
    """This process's wall clock: for the times a run reports (created, finished...),
    never for deciding whose lock has expired (:class:`db_now`)."""
    return time.time()


class db_now(FunctionElement[float]):  # noqa: N801 - an SQL function, named like one
    """The database's clock, in float epoch seconds like the tables' times.

    Lock expiries and agent heart-beats are written and compared with this, in the
    statement itself, never with a process's own clock: an agent whose clock runs
    120 s ahead would otherwise find every healthy lock expired and reclaim it (and
    one 120 s behind would write locks already expired for the others). PostgreSQL's
    clock is the server's, shared by all its clients. SQLite has no server: its
    ``'now'`` is the host's clock read by the C library, the same for every process
    that opens the file (a WAL database is only ever opened on one host).
    """

    type = Float()
    name = "db_now"
    inherit_cache = True


@compiles(db_now)
def _db_now_pg(element: db_now, compiler: SQLCompiler, **kw: Any) -> str:
    # the statement's start: the same value in every row a statement writes or compares
    return "CAST(EXTRACT(EPOCH FROM STATEMENT_TIMESTAMP()) AS DOUBLE PRECISION)"


@compiles(db_now, "sqlite")
def _db_now_sqlite(element: db_now, compiler: SQLCompiler, **kw: Any) -> str:
    # the Julian day of the Unix epoch is 2440587.5; 'now' is one value within a statement
    return "((julianday('now') - 2440587.5) * 86400.0)"


def chunks(seq: Sequence[T], size: int = CHUNK) -> Iterator[Sequence[T]]:
    for i in range(0, len(seq), size):
        yield seq[i : i + size]


def is_postgres(conn: Connection) -> bool:
    return conn.dialect.name == "postgresql"


def for_update(
    conn: Connection, stmt: Select[Any], skip_locked: bool = False, **kw: Any
) -> Select[Any]:
    """Row locks on PostgreSQL; SQLite's BEGIN IMMEDIATE already serializes writers."""
    if is_postgres(conn):
        return stmt.with_for_update(skip_locked=skip_locked, **kw)
    return stmt


class among(ColumnElement[bool]):  # noqa: N801 - an SQL construct, named like one
    """``col IN (<list bound at execution as name>)``; ``negate``: ``NOT IN``.

    Hot statements are built once, at import (building one per call costs SQLAlchemy
    about a millisecond). On PostgreSQL this is ``col = ANY(:name)`` with the list
    bound as one array: the statement's text is the same whatever the list's length,
    so psycopg converts it once and PostgreSQL runs it as a prepared statement,
    where an expanded ``IN (...)`` is new text, parsed and planned again, at every
    length. SQLite gets the expanded ``IN``.
    """

    inherit_cache = True
    type = Boolean()
    _traverse_internals = [
        ("col", InternalTraversal.dp_clauseelement),
        ("name", InternalTraversal.dp_string),
        ("negate", InternalTraversal.dp_boolean),
    ]

    def __init__(self, col: ColumnElement[Any], name: str = "ids", negate: bool = False) -> None:
        self.col = col
        self.name = name
        self.negate = negate

    @property
    def _from_objects(self) -> list[Any]:
        return self.col._from_objects


@compiles(among)
def _among_expanded(element: among, compiler: SQLCompiler, **kw: Any) -> str:
    p: Any = bindparam(element.name, expanding=True)
    expr = element.col.not_in(p) if element.negate else element.col.in_(p)
    return compiler.process(expr, **kw)


@compiles(among, "postgresql")
def _among_array(element: among, compiler: SQLCompiler, **kw: Any) -> str:
    p = bindparam(element.name, type_=ARRAY(element.col.type))
    expr = element.col != all_(p) if element.negate else element.col == any_(p)
    return compiler.process(expr, **kw)


class Locked:
    """A prebuilt ``SELECT`` and its row-locking variant for PostgreSQL (see :func:`for_update`)."""

    def __init__(self, stmt: Select[Any], skip_locked: bool = False, **kw: Any) -> None:
        self.plain = stmt
        self.pg = stmt.with_for_update(skip_locked=skip_locked, **kw)

    def on(self, conn: Connection) -> Select[Any]:
        return self.pg if is_postgres(conn) else self.plain
