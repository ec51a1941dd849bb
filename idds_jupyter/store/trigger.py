"""The Trigger: a job waiting on others is released once they are done, exactly once.

A job is written ``pending`` with a counter of what it waits for: its unfinished
parent jobs, plus one for an input file not yet available (:mod:`.works`). The
Trigger brings the counters down and releases (``pending`` → ``ready``) the jobs
at zero: one statement counts down all the children of a batch of finished
parents, a second releases those at zero (DESIGN §4: bulk, not per-row). It runs
in the transaction that records the parents' results (:func:`.jobs.record_results`,
the Receiver's) or that marks input files available (:func:`.catalog.mark_available`
calls :func:`release_on_files`), so a job is released exactly once even when
events are lost or an agent dies between two statements; the ``status = pending``
guard makes a second pass change nothing. A failed parent's descendants can never
be released: they are cancelled.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence

from sqlalchemy import func, select, update
from sqlalchemy.engine import Connection

from idds_jupyter.model.status import JobStatus
from idds_jupyter.store.sql import among, chunks
from idds_jupyter.store.tables import job_deps, jobs

__all__ = ["cancel_descendants", "release_children", "release_on_files"]

PENDING = JobStatus.PENDING.value
READY = JobStatus.READY.value
CANCELLED = JobStatus.CANCELLED.value


def release_children(conn: Connection, parent_ids: Sequence[int]) -> int:
    """Children's pending counters fall in one statement; those at zero are released. Returns how many."""
    if not parent_ids:
        return 0
    for part in chunks(parent_ids):
        conn.execute(_COUNT_DOWN, {"ids": list(part)})
    released = 0
    for part in chunks(parent_ids):
        res = conn.execute(_RELEASE, {"ids": list(part)})
        released += res.rowcount or 0
    return released


_CHILD_COUNTS = (
    select(job_deps.c.child_id, func.count().label("n"))
    .where(among(job_deps.c.parent_id))
    .group_by(job_deps.c.child_id)
    .subquery()
)
_COUNT_DOWN = (
    update(jobs)
    .where(jobs.c.id == _CHILD_COUNTS.c.child_id)
    .values(pending=jobs.c.pending - _CHILD_COUNTS.c.n)
)
_RELEASE = (
    update(jobs)
    .where(
        jobs.c.id.in_(select(job_deps.c.child_id).where(among(job_deps.c.parent_id))),
        jobs.c.status == PENDING,
        jobs.c.pending <= 0,
    )
    .values(status=READY, release_count=jobs.c.release_count + 1)
)


def release_on_files(conn: Connection, file_ids: Sequence[int]) -> int:
    """The jobs reading files just made available lose one pending; those at zero are released."""
    released = 0
    for part in chunks(file_ids):
        conn.execute(
            update(jobs)
            .where(jobs.c.file_id.in_(list(part)), jobs.c.status == PENDING)
            .values(pending=jobs.c.pending - 1)
        )
        res = conn.execute(
            update(jobs)
            .where(jobs.c.file_id.in_(list(part)), jobs.c.status == PENDING, jobs.c.pending <= 0)
            .values(status=READY, release_count=jobs.c.release_count + 1)
        )
        released += res.rowcount or 0
    return released


def cancel_descendants(conn: Connection, failed_ids: Sequence[int]) -> dict[int, int]:
    """Jobs downstream of a failed job are never released: cancel them, level by level.

    Returns the number cancelled per work id.
    """
    per_work: Counter[int] = Counter()
    frontier = list(failed_ids)
    while frontier:
        nxt: list[int] = []
        for part in chunks(frontier):
            children = select(job_deps.c.child_id).where(job_deps.c.parent_id.in_(part))
            rows = conn.execute(
                update(jobs)
                .where(jobs.c.id.in_(children), jobs.c.status == PENDING)
                .values(status=CANCELLED, error="upstream job failed")
                .returning(jobs.c.id, jobs.c.work_id)
            ).all()
            for jid, wid in rows:
                nxt.append(jid)
                per_work[wid] += 1
        frontier = nxt
    return dict(per_work)
