"""The catalog: datasets and files; a file made available releases the jobs waiting on it.

Every user is a tenant: a dataset belongs to its owner, its name is unique per
owner (two users may each have a dataset ``raw``), and only its owner reads it,
lists it, adds files to it or marks them available. A :class:`Catalog` acts for
one owner; ``owner=None`` is an admin's view, which must name the owner of a
dataset it acts on. A dataset of another owner is reported exactly like one that
does not exist (``LookupError``): no one learns what others hold.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Iterable, Sequence
from typing import Any

from sqlalchemy import select, update
from sqlalchemy.engine import Connection, Engine

from idds_jupyter.store.jobs import (
    FAILED,
    PENDING,
    Outcome,
    count_on_works,
)
from idds_jupyter.store.sql import chunks, now
from idds_jupyter.store.tables import datasets, files, jobs
from idds_jupyter.store.trigger import cancel_descendants, release_on_files


class Catalog:
    """Datasets and their files of one owner, as the data-aware (carousel) works see them."""

    def __init__(self, engine: Engine, owner: str = "local") -> None:
        self.engine = engine
        self.owner = owner

    def add_dataset(
        self,
        name: str,
        files_: Iterable[str | dict[str, Any]] = (),
        meta: dict[str, Any] | None = None,
    ) -> int:
        """Create the owner's dataset ``name`` (or add to it); returns its id."""
        with self.engine.begin() as conn:
            ds = dataset_id(conn, self.owner, name)
            if ds is None:
                pk = conn.execute(
                    datasets.insert().values(
                        name=name,
                        owner=self.owner,
                        status="open",
                        meta=meta or {},
                        created_at=now(),
                    )
                ).inserted_primary_key
                assert pk is not None
                ds = int(pk[0])
            self._add_files(conn, ds, files_)
            return ds

    def add_files(self, dataset: str, files_: Iterable[str | dict[str, Any]]) -> None:
        with self.engine.begin() as conn:
            self._add_files(conn, self._dataset_id(conn, dataset), files_)

    def _add_files(self, conn: Connection, ds: int, files_: Iterable[str | dict[str, Any]]) -> None:
        have = {r[0] for r in conn.execute(select(files.c.name).where(files.c.dataset_id == ds))}
        rows = []
        for f in files_:
            d = {"name": f} if isinstance(f, str) else dict(f)
            if d["name"] in have:
                continue
            have.add(d["name"])
            rows.append(
                {
                    "dataset_id": ds,
                    "name": d["name"],
                    "size": d.get("size"),
                    "meta": d.get("meta"),
                    "status": "new",
                    "created_at": now(),
                }
            )
        if rows:
            conn.execute(files.insert(), rows)

    def _dataset_id(self, conn: Connection, name: str) -> int:
        ds = dataset_id(conn, self.owner, name)
        if ds is None:
            raise LookupError(f"unknown dataset {name!r}")
        return ds

    def exists(self, name: str) -> bool:
        with self.engine.connect() as conn:
            return dataset_id(conn, self.owner, name) is not None

    def mark_available(self, dataset: str, names: Sequence[str] | None = None) -> int:
        """Mark files available (all when ``names`` is None); returns the jobs released."""
        with self.engine.begin() as conn:
            return mark_available(conn, self._dataset_id(conn, dataset), names)

    def set_staging(
        self, dataset: str, names: Sequence[str], state: str, error: str | None = None
    ) -> Outcome:
        """Staging state of files not yet available (an external data source's view, e.g.
        Rucio's locks): ``queued``, ``staging``, ``stuck``; ``failed`` also fails the jobs
        waiting on them with ``error`` (their run goes on, or ends, as for any failed job)."""
        if state not in STAGING_STATES:
            raise ValueError(f"state must be one of {', '.join(STAGING_STATES)}, got {state!r}")
        with self.engine.begin() as conn:
            return set_staging(conn, self._dataset_id(conn, dataset), names, state, error)

    def files(self, dataset: str) -> list[dict[str, Any]]:
        with self.engine.begin() as conn:
            ds = self._dataset_id(conn, dataset)
            return [
                dict(r)
                for r in conn.execute(
                    select(
                        files.c.id,
                        files.c.name,
                        files.c.status,
                        files.c.size,
                        files.c.available_at,
                        files.c.meta,
                    )
                    .where(files.c.dataset_id == ds)
                    .order_by(files.c.id)
                ).mappings()
            ]

    def datasets(
        self, every_owner: bool = False, limit: int = 1000, offset: int = 0
    ) -> list[dict[str, Any]]:
        """The owner's datasets (``every_owner``: everyone's, for an admin), by name."""
        stmt = (
            select(
                datasets.c.id,
                datasets.c.name,
                datasets.c.owner,
                datasets.c.status,
                datasets.c.created_at,
                datasets.c.meta,
            )
            .order_by(datasets.c.owner, datasets.c.name)
            .limit(limit)
            .offset(offset)
        )
        if not every_owner:
            stmt = stmt.where(datasets.c.owner == self.owner)
        with self.engine.connect() as conn:
            return [dict(r) for r in conn.execute(stmt).mappings()]


def dataset_id(conn: Connection, owner: str, name: str) -> int | None:
    """The id of ``owner``'s dataset ``name`` (None when that owner has none of that name)."""
    ds = conn.execute(
        select(datasets.c.id).where(datasets.c.owner == owner, datasets.c.name == name)
    ).scalar()
    return None if ds is None else int(ds)


def mark_available(conn: Connection, dataset_id: int, names: Sequence[str] | None) -> int:
    """new → available, once per file; the jobs counting that file lose one pending and may go."""
    cond = [files.c.dataset_id == dataset_id, files.c.status != "available"]
    released = 0
    parts: Iterable[Sequence[str] | None] = [None] if names is None else chunks(list(names))
    for part in parts:
        where = cond + ([files.c.name.in_(list(part))] if part is not None else [])
        ids = [
            r[0]
            for r in conn.execute(
                update(files)
                .where(*where)
                .values(status="available", available_at=now())
                .returning(files.c.id)
            ).all()
        ]
        released += release_on_files(conn, ids)
    return released


#: staging states a data source may set on files not yet available (``failed`` fails their jobs)
STAGING_STATES = ("queued", "staging", "stuck", "failed")


def set_staging(
    conn: Connection, dataset_id: int, names: Sequence[str], state: str, error: str | None = None
) -> Outcome:
    """Files not yet available take ``state``; ``failed``: the jobs waiting on them fail."""
    out = Outcome()
    for part in chunks(list(names)):
        ids = [
            r[0]
            for r in conn.execute(
                update(files)
                .where(
                    files.c.dataset_id == dataset_id,
                    files.c.status != "available",
                    files.c.name.in_(list(part)),
                )
                .values(status=state)
                .returning(files.c.id)
            ).all()
        ]
        if state != "failed" or not ids:
            continue
        rows = conn.execute(
            update(jobs)
            .where(jobs.c.file_id.in_(ids), jobs.c.status == PENDING)
            .values(status=FAILED, error=error or "input file failed", finished_at=now())
            .returning(jobs.c.id, jobs.c.work_id)
        ).all()
        per_work: dict[int, Counter[str]] = defaultdict(Counter)
        for _, wid in rows:
            per_work[wid]["failed"] += 1
        out.failed += len(rows)
        for wid, n in cancel_descendants(conn, [r[0] for r in rows]).items():
            per_work[wid]["cancelled"] += n
            out.cancelled += n
        count_on_works(conn, per_work, out)
    return out
