"""Measured run time per function, kept as finished jobs are recorded (backend policies read it)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from sqlalchemy import bindparam, select
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.engine import Connection

from idds_jupyter.store.sql import now
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
    """Fold the run times of newly finished jobs into their functions' means."""
    stmt = _UPSERT.get(conn.dialect.name)
    rows = [
        {"key": k, "n": len(v), "mean_wall_s": sum(v) / len(v), "updated_at": now()}
        for k, v in walls.items()
        if v
    ]
    if stmt is not None and rows:
        conn.execute(stmt, rows)


def mean_wall(conn: Connection, key: str | None) -> tuple[float | None, int]:
    """(mean run time in seconds, finished jobs) of a function; (None, 0) if never measured."""
    if key is None:
        return None, 0
    row = conn.execute(_MEAN, {"key": key}).first()
    return (float(row.mean_wall_s), int(row.n)) if row is not None else (None, 0)
