"""Control of a workflow or one of its works: abort, suspend, resume, retry failed.

Each is idempotent (a second call changes nothing) and shows in the statuses.
They return the in-flight job ids a Carrier should cancel in its backend.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from sqlalchemy import and_, func, select, update
from sqlalchemy.engine import Connection
from sqlalchemy.sql.elements import ColumnElement

from idds_jupyter.model.status import WorkflowStatus, WorkStatus
from idds_jupyter.store.jobs import (
    CANCELLED,
    FAILED,
    FINISHED,
    IN_FLIGHT,
    PENDING,
    READY,
    Outcome,
    finish_works,
    mark_dirty,
)
from idds_jupyter.store.sql import chunks, now
from idds_jupyter.store.tables import job_deps, jobs, workflows, works

WORK_ACTIVE = (WorkStatus.NEW.value, WorkStatus.RUNNING.value, WorkStatus.SUSPENDED.value)
WF_ACTIVE = (WorkflowStatus.NEW.value, WorkflowStatus.RUNNING.value, WorkflowStatus.SUSPENDED.value)


class ControlError(LookupError):
    pass


@dataclass
class ControlResult:
    workflow_id: int
    changed: bool = False
    cancel_jobs: list[int] = field(default_factory=list)
    outcome: Outcome = field(default_factory=Outcome)


def _scope(conn: Connection, workflow_id: int, work: str | None) -> ColumnElement[bool]:
    if conn.execute(select(workflows.c.id).where(workflows.c.id == workflow_id)).first() is None:
        raise ControlError(f"no workflow with id {workflow_id}")
    cond = works.c.workflow_id == workflow_id
    if work is not None:
        if conn.execute(select(works.c.id).where(cond, works.c.name == work)).first() is None:
            raise ControlError(f"workflow {workflow_id} has no work named {work!r}")
        cond = and_(cond, works.c.name == work)
    return cond


def abort(conn: Connection, workflow_id: int, work: str | None = None) -> ControlResult:
    cond = _scope(conn, workflow_id, work)
    out = ControlResult(workflow_id)
    t = now()
    wids = select(works.c.id).where(cond)
    out.cancel_jobs = [
        r[0]
        for r in conn.execute(
            select(jobs.c.id).where(jobs.c.work_id.in_(wids), jobs.c.status.in_(IN_FLIGHT))
        )
    ]
    res = conn.execute(
        update(jobs)
        .where(jobs.c.work_id.in_(wids), jobs.c.status.in_((PENDING, READY, *IN_FLIGHT)))
        .values(status=CANCELLED, error="aborted", lock_owner=None, lock_expiry=None)
    )
    out.changed |= bool(res.rowcount)
    res = conn.execute(
        update(works)
        .where(cond, works.c.status.in_(WORK_ACTIVE))
        .values(status=WorkStatus.ABORTED.value, finished_at=t, updated_at=t)
    )
    out.changed |= bool(res.rowcount)
    if work is None:
        res = conn.execute(
            update(workflows)
            .where(workflows.c.id == workflow_id, workflows.c.status.in_(WF_ACTIVE))
            .values(status=WorkflowStatus.ABORTED.value, finished_at=t, updated_at=t)
        )
        out.changed |= bool(res.rowcount)
    else:
        mark_dirty(conn, [workflow_id])
    return out


def suspend(conn: Connection, workflow_id: int, work: str | None = None) -> ControlResult:
    cond = _scope(conn, workflow_id, work)
    out = ControlResult(workflow_id)
    res = conn.execute(
        update(works)
        .where(cond, works.c.status == WorkStatus.RUNNING.value)
        .values(status=WorkStatus.SUSPENDED.value, updated_at=now())
    )
    out.changed |= bool(res.rowcount)
    if work is None:
        res = conn.execute(
            update(workflows)
            .where(
                workflows.c.id == workflow_id, workflows.c.status == WorkflowStatus.RUNNING.value
            )
            .values(status=WorkflowStatus.SUSPENDED.value, updated_at=now())
        )
        out.changed |= bool(res.rowcount)
    return out


def resume(conn: Connection, workflow_id: int, work: str | None = None) -> ControlResult:
    cond = _scope(conn, workflow_id, work)
    out = ControlResult(workflow_id)
    ids = [
        r[0]
        for r in conn.execute(
            update(works)
            .where(cond, works.c.status == WorkStatus.SUSPENDED.value)
            .values(status=WorkStatus.RUNNING.value, updated_at=now())
            .returning(works.c.id)
        )
    ]
    out.changed |= bool(ids)
    if work is None:
        res = conn.execute(
            update(workflows)
            .where(
                workflows.c.id == workflow_id, workflows.c.status == WorkflowStatus.SUSPENDED.value
            )
            .values(status=WorkflowStatus.RUNNING.value, updated_at=now())
        )
        out.changed |= bool(res.rowcount)
    if ids:  # jobs may have ended while suspended
        finish_works(conn, ids, out.outcome)
    mark_dirty(conn, [workflow_id])
    return out


def retry_failed(conn: Connection, workflow_id: int, work: str | None = None) -> ControlResult:
    """Failed jobs run again; jobs cancelled because of them wait for them again."""
    cond = _scope(conn, workflow_id, work)
    out = ControlResult(workflow_id)
    t = now()
    wids = [
        r[0]
        for r in conn.execute(
            select(works.c.id).where(
                cond,
                works.c.kind.in_(("function", "command")),
                works.c.status.in_(
                    (
                        WorkStatus.FAILED.value,
                        WorkStatus.SUBFINISHED.value,
                        WorkStatus.RUNNING.value,
                        WorkStatus.SUSPENDED.value,
                    )
                ),
            )
        )
    ]
    if not wids:
        return out
    res = conn.execute(
        update(jobs)
        .where(jobs.c.work_id.in_(wids), jobs.c.status == FAILED)
        .values(status=READY, retries_used=0, error=None)
    )
    out.changed |= bool(res.rowcount)
    # Every job cancelled downstream of a failure (in any work of the workflow) waits again.
    cancelled = [
        r[0]
        for r in conn.execute(
            select(jobs.c.id).where(
                jobs.c.workflow_id == workflow_id,
                jobs.c.status == CANCELLED,
                jobs.c.error == "upstream job failed",
            )
        )
    ]
    parent = jobs.alias("parent")
    for part in chunks(cancelled):
        unmet = (
            select(func.count())
            .select_from(job_deps.join(parent, parent.c.id == job_deps.c.parent_id))
            .where(job_deps.c.child_id == jobs.c.id, parent.c.status != FINISHED)
            .scalar_subquery()
        )
        conn.execute(
            update(jobs)
            .where(jobs.c.id.in_(list(part)))
            .values(status=PENDING, pending=unmet, error=None)
        )
        conn.execute(
            update(jobs)
            .where(jobs.c.id.in_(list(part)), jobs.c.pending <= 0)
            .values(status=READY, release_count=jobs.c.release_count + 1)
        )
    touched = (
        [
            r[0]
            for r in conn.execute(
                select(jobs.c.work_id).where(jobs.c.id.in_(cancelled[:30000])).distinct()
            )
        ]
        if cancelled
        else []
    )
    for wid in set(wids) | set(touched):
        counts: dict[str, int] = dict(
            conn.execute(
                select(jobs.c.status, func.count())
                .where(jobs.c.work_id == wid)
                .group_by(jobs.c.status)
            ).all()
        )
        conn.execute(
            update(works)
            .where(works.c.id == wid)
            .values(
                n_finished=counts.get(FINISHED, 0),
                n_failed=counts.get(FAILED, 0),
                n_cancelled=counts.get(CANCELLED, 0),
                updated_at=t,
            )
        )
        conn.execute(
            update(works)
            .where(
                works.c.id == wid,
                works.c.status.in_((WorkStatus.FAILED.value, WorkStatus.SUBFINISHED.value)),
            )
            .values(status=WorkStatus.RUNNING.value, finished_at=None)
        )
    # Skipped works are planned again: those skipped because of the failure now
    # run, the others (a branch not taken) are skipped again by the same rule.
    conn.execute(
        works.delete().where(
            works.c.workflow_id == workflow_id, works.c.status == WorkStatus.SKIPPED.value
        )
    )
    res = conn.execute(
        update(workflows)
        .where(
            workflows.c.id == workflow_id,
            workflows.c.status.in_((WorkflowStatus.FAILED.value, WorkflowStatus.SUBFINISHED.value)),
        )
        .values(status=WorkflowStatus.RUNNING.value, finished_at=None, updated_at=t)
    )
    out.changed |= bool(res.rowcount)
    mark_dirty(conn, [workflow_id])
    return out
