"""Measured run time per function, kept as finished jobs are recorded (backend policies read it)."""

from __future__ import annotations

import threading
from collections.abc import Mapping
from typing import Any

from sqlalchemy import bindparam, select
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.engine import Connection

from idds_jupyter.store.sql import among, now
from idds_jupyter.store.tables import function_stats

__all__ = ["function_key", "mean_wall", "record_durations"]


def function_key(spec: Mapping[str, Any]) -> str | None:
    """What identifies a work's function across runs: a FaaT payload's sha256, or its
    ``module:function`` reference; None for commands (their cost depends on arguments)."""
    payload = spec.get("payload") or {}
    if isinstance(payload, Mapping) and payload.get("function"):
        return f"sha256:{payload['function']}"
    fn = spec.get("function")
    if isinstance(fn, str) and fn and "{" not in fn:
        return fn[:255]
    return None


def _upsert(insert: Any) -> Any:
    ins = insert(function_stats)
    old, new = function_stats.c, ins.excluded
    return ins.on_conflict_do_update(
        index_elements=[old.key],
        set_={
            "mean_wall_s": (old.mean_wall_s * old.n + new.mean_wall_s * new.n) / (old.n + new.n),
            "n": old.n + new.n,
            "updated_at": new.updated_at,
        },
    )


_UPSERT = {"sqlite": _upsert(sqlite_insert), "postgresql": _upsert(pg_insert)}
_MEAN = select(function_stats.c.mean_wall_s, function_stats.c.n).where(
    function_stats.c.key == bindparam("key")
)


def record_durations(conn: Connection, walls: Mapping[str, list[float]]) -> None:
    """Fold the run times of newly finished jobs into their functions' means.

    Every result transaction of a function updates its one row: on PostgreSQL two agent
    runners would queue on that row (its lock is held until the result's transaction
    commits). A row another transaction holds is skipped (``SKIP LOCKED``) and its
    durations are carried, in this process, into the next batch: a mean is advice for
    backend policies, not a record, so it may lag by a batch (or lose one to a crash).
    """
    stmt = _UPSERT.get(conn.dialect.name)
    if stmt is None:
        return
    sums = {k: (len(v), sum(v)) for k, v in walls.items() if v}
    if conn.dialect.name == "postgresql":
        sums = _take_unlocked(conn, sums)
    rows = [
        {"key": k, "n": n, "mean_wall_s": total / n, "updated_at": now()}
        for k, (n, total) in sums.items()
    ]
    if rows:
        conn.execute(stmt, rows)


# durations of rows another transaction held, by database and key: (count, sum)
_carried: dict[tuple[str, str], tuple[int, float]] = {}
_carried_lock = threading.Lock()
_EXISTING = select(function_stats.c.key).where(among(function_stats.c.key, "keys"))
_LOCK_FREE = _EXISTING.with_for_update(skip_locked=True)


def _take_unlocked(
    conn: Connection, sums: dict[str, tuple[int, float]]
) -> dict[str, tuple[int, float]]:
    """The durations whose rows this transaction could lock (or that have no row yet),
    with those carried from earlier batches; the others are carried to a later one."""
    db = conn.engine.url.render_as_string(hide_password=True)
    with _carried_lock:
        for (d, k), (n, total) in list(_carried.items()):
            if d == db:
                del _carried[(d, k)]
                n0, t0 = sums.get(k, (0, 0.0))
                sums[k] = (n0 + n, t0 + total)
    if not sums:
        return sums
    keys = sorted(sums)
    mine = set(conn.execute(_LOCK_FREE, {"keys": keys}).scalars())
    exist = set(conn.execute(_EXISTING, {"keys": keys}).scalars())
    busy = exist - mine
    if busy:
        with _carried_lock:
            for k in busy:
                n, total = sums.pop(k)
                n0, t0 = _carried.get((db, k), (0, 0.0))
                _carried[(db, k)] = (n0 + n, t0 + total)
    return sums


def mean_wall(conn: Connection, key: str | None) -> tuple[float | None, int]:
    """(mean run time in seconds, finished jobs) of a function; (None, 0) if never measured."""
    if key is None:
        return None, 0
    row = conn.execute(_MEAN, {"key": key}).first()
    return (float(row.mean_wall_s), int(row.n)) if row is not None else (None, 0)
