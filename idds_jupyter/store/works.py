"""Transformer's bulk step: a new work instance becomes jobs, job-level edges and counters.

All new works of one workflow are expanded in one transaction, parents before
children, so a job's pending counter is exact when it is written: it counts the
parent jobs not yet finished (read under a share lock on PostgreSQL) plus one
while its input file is not yet available.
"""

from __future__ import annotations

import itertools
from array import array
from collections.abc import Iterable, Sequence
from typing import Any

from sqlalchemy import Float, bindparam, case, func, select, update
from sqlalchemy.engine import Connection

from idds_jupyter.model import JobDep
from idds_jupyter.model.policy import BackendPolicy
from idds_jupyter.model.status import JobStatus, WorkStatus
from idds_jupyter.store.function_stats import function_key, mean_wall
from idds_jupyter.store.jobs import CANCELLED, FINISHED, SUBMITTED, Claim, Outcome, finish_works
from idds_jupyter.store.sql import Locked, db_now, for_update, is_postgres, now
from idds_jupyter.store.tables import datasets, files, job_deps, jobs, workflows, works
from idds_jupyter.store.workflows import ACTIVE, WorkflowClosed

JOB_KINDS = ("function", "command")


class NotYet(Exception):
    """A job-level parent work has no jobs yet; expand this work on a later pass."""


def choose_backend(
    spec: dict[str, Any],
    workflow_backend: str | None,
    default: str,
    policy: BackendPolicy | None = None,
    conn: Connection | None = None,
) -> str:
    """The work's own setting, else the workflow's, else the first policy rule that
    holds (:mod:`idds_jupyter.model.policy`), else the configured default."""
    work = spec.get("work") or {}
    if work.get("backend") or workflow_backend:
        return str(work.get("backend") or workflow_backend)
    if policy:
        chosen = policy.choose(work_facts(spec, conn if policy.measured else None))
        if chosen:
            return chosen
    return default


def work_facts(spec: dict[str, Any], conn: Connection | None) -> dict[str, Any]:
    """What a backend policy knows of a work (its measured run time only with ``conn``)."""
    work = spec.get("work") or {}
    resources = spec.get("resources") or {}
    kwargs_list = spec.get("kwargs_list")
    key = function_key(spec)
    mean, runs = mean_wall(conn, key) if conn is not None else (None, 0)
    return {
        "kind": "function" if (spec.get("function") or spec.get("payload")) else "command",
        "function": spec.get("function") or key,
        "n_jobs": len(kwargs_list) if isinstance(kwargs_list, list) else spec.get("n_jobs"),
        "cores": resources.get("cores"),
        "memory_mb": resources.get("memory_mb"),
        "timeout_s": spec.get("timeout_s") or work.get("timeout_s"),
        "mean_wall_s": mean,
        "runs": runs,
    }


def expand_workflow(
    conn: Connection,
    workflow_id: int,
    workflow_backend: str | None,
    default_backend: str,
    out: Outcome,
    policy: BackendPolicy | None = None,
    rows: Sequence[Any] | None = None,
    claim: Claim | None = None,
) -> int:
    """Expand every new work of one workflow, parents first (the Transformer's step, inline).

    ``rows``: the new works, as the plan that just created them knows them (none read back).
    ``claim``: released jobs are taken for it as they are written (see :func:`expand_work`).
    """
    if rows is None:
        rows = conn.execute(_NEW_WORKS_OF, {"wf": workflow_id}).all()
    ended = []
    for row in rows:
        backend = choose_backend(row.spec or {}, workflow_backend, default_backend, policy, conn)
        try:
            if expand_work(conn, row, backend, out, claim) == 0:
                ended.append(row.id)
        except NotYet:  # its rucio:// dataset is being registered: the Transformer expands it
            continue
    finish_works(conn, ended, out)
    return len(rows)


_NEW_WORKS_OF = (
    select(works.c.id, works.c.workflow_id, works.c.name, works.c.spec, works.c.backend)
    .where(
        works.c.workflow_id == bindparam("wf"),
        works.c.status == WorkStatus.NEW.value,
        works.c.kind.in_(JOB_KINDS),
    )
    .order_by(works.c.id)
)


def claim_new_works(conn: Connection, limit: int = 100) -> list[Any]:
    """New works of job kinds, oldest first, locked for this transaction."""
    stmt = (
        select(works.c.id, works.c.workflow_id, works.c.name, works.c.spec, works.c.backend)
        .where(works.c.status == WorkStatus.NEW.value, works.c.kind.in_(JOB_KINDS))
        .order_by(works.c.id)
        .limit(limit)
    )
    return list(conn.execute(for_update(conn, stmt, skip_locked=True)).all())


def expand_work(
    conn: Connection, work: Any, backend: str, out: Outcome, claim: Claim | None = None
) -> int:
    """Create the jobs of one new work; returns how many of them may still run (0: the work
    has nothing left to run, its end is for :func:`finish_works`).

    With a ``claim`` that has room on ``backend``, released jobs are written submitted and
    locked for its owner, as :func:`~idds_jupyter.store.jobs.claim_ready` would leave them:
    a function call or a new trial reaches its worker with no claim statements.
    """
    spec: dict[str, Any] = work.spec or {}
    t = now()
    kwargs_list = spec.get("kwargs_list")
    file_rows: list[Any] = []
    if spec.get("input_dataset"):
        file_rows = _dataset_files(conn, work.workflow_id, spec["input_dataset"])
        n = len(file_rows)
    elif kwargs_list is not None:
        n = len(kwargs_list)
    elif spec.get("n_jobs") is not None:
        n = int(spec["n_jobs"])
    else:
        n = 1

    pending = array("l", [0]) * n
    doomed = bytearray(n)
    # per job-level dependency: the parents' ids in idx order; the edges themselves are
    # generated again when they are written, never held (a million-job work has millions)
    linked: list[tuple[JobDep, array[int]]] = []
    for parent_name, dep_dict in spec.get("job_deps") or []:
        dep = JobDep.from_dict(dep_dict)
        parent_ids, parent_status = _parent_jobs(conn, work.workflow_id, parent_name)
        for p_idx, c_idx in dep.edges(n, len(parent_ids)):
            pstatus = parent_status[p_idx]
            if pstatus != FINISHED:
                pending[c_idx] += 1
                if pstatus in (JobStatus.FAILED.value, CANCELLED):
                    doomed[c_idx] = 1
        linked.append((dep, parent_ids))
    for i, f in enumerate(file_rows):
        if f.status != "available":
            pending[i] += 1

    n_cancelled = sum(doomed)
    released = _write_jobs(
        conn,
        work.workflow_id,
        work.id,
        backend,
        t,
        claim,
        (
            (
                i,
                kwargs_list[i] if kwargs_list is not None and not file_rows else None,
                file_rows[i].id if file_rows else None,
                pending[i],
                bool(doomed[i]),
            )
            for i in range(n)
        ),
    )
    if linked:
        ids = array(
            "q",
            conn.execute(
                select(jobs.c.id).where(jobs.c.work_id == work.id).order_by(jobs.c.idx)
            ).scalars(),
        )
        for dep, parent_ids in linked:
            edges = dep.edges(n, len(parent_ids))
            while batch := [
                {"parent_id": parent_ids[p], "child_id": ids[c]}
                for p, c in itertools.islice(edges, _WRITE_CHUNK)
            ]:
                conn.execute(job_deps.insert(), batch)
    conn.execute(
        _START_WORK, {"wid": work.id, "n": n, "nc": n_cancelled, "backend": backend, "t": t}
    )
    out.released += released
    return n - n_cancelled


def taken_job(
    job_id: int,
    workflow_id: int,
    work_id: int,
    idx: int,
    kwargs: Any,
    file_id: int | None,
    backend: str,
) -> dict[str, Any]:
    """A job a :class:`~idds_jupyter.store.jobs.Claim` took, as ``claim_ready`` returns it,
    with its backend: what its spec is rendered from."""
    return {
        "id": job_id,
        "work_id": work_id,
        "workflow_id": workflow_id,
        "idx": idx,
        "kwargs": kwargs,
        "file_id": file_id,
        "attempt": 1,
        "backend": backend,
    }


def _write_jobs(
    conn: Connection,
    workflow_id: int,
    work_id: int,
    backend: str,
    t: float,
    claim: Claim | None,
    items: Iterable[tuple[int, Any, int | None, int, bool]],
    reserved: Sequence[int] | None = None,
) -> int:
    """Write one work's jobs ``(idx, kwargs, file id, pending, doomed)``; returns how many
    were released (ready, or taken by ``claim``).

    The rows are built and inserted a chunk at a time: a work of a million jobs never
    holds a million row dicts. With a ``claim`` that has room on ``backend``, released
    jobs are written submitted and locked for its owner, as
    :func:`~idds_jupyter.store.jobs.claim_ready` would leave them; only the chunks
    holding such jobs read their ids back. ``reserved``: every job was taken and sent
    already, under these reserved ids (:func:`~idds_jupyter.store.jobs.reserve_job_ids`);
    ``claim.jobs`` has them.
    """
    take = claim.room.get(backend, 0) if claim is not None else 0
    n_taken = 0
    released = 0
    written: list[dict[str, Any]] = []  # the rows of the reserved path
    buf: list[dict[str, Any]] = []
    buf_taken: list[int] = []  # positions in ``buf``

    def flush() -> None:
        if not buf:
            return
        if buf_taken:
            assert claim is not None
            if len(buf) == 1:  # one job taken (an HPO trial): a plain insert, not a batch
                ids: list[int] = [conn.execute(_INSERT_JOB_RETURNING, buf[0]).scalar_one()]
            else:
                ids = list(conn.execute(_INSERT_JOBS_RETURNING, buf).scalars())
            claim.jobs += [
                taken_job(
                    ids[p],
                    workflow_id,
                    work_id,
                    buf[p]["idx"],
                    buf[p]["kwargs"],
                    buf[p]["file_id"],
                    backend,
                )
                for p in buf_taken
            ]
        else:  # none of them taken: lock_expiry NULL (lock_ttl unread)
            conn.execute(_INSERT_JOBS, buf)
        buf.clear()
        buf_taken.clear()

    for i, kwargs, file_id, pending, doomed in items:
        if doomed:
            status = CANCELLED
        elif pending > 0:
            status = JobStatus.PENDING.value
        else:
            status = JobStatus.READY.value
        # lock_ttl: the claimed rows' lock expires that long after the database's now
        # (_LOCKED below); the others' lock_expiry stays NULL
        locked: dict[str, Any] = {
            "lock_owner": None,
            "lock_ttl": None,
            "attempt": 0,
            "submitted_at": None,
        }
        if take > n_taken and status == JobStatus.READY.value:
            assert claim is not None
            n_taken += 1
            buf_taken.append(len(buf))
            locked = {
                "lock_owner": claim.owner,
                "lock_ttl": claim.ttl,
                "attempt": 1,
                "submitted_at": t,
            }
            status = SUBMITTED
        elif status == JobStatus.READY.value:
            released += 1
        row = {
            "workflow_id": workflow_id,
            "work_id": work_id,
            "idx": i,
            "status": status,
            "pending": pending,
            "kwargs": kwargs,
            "file_id": file_id,
            "backend": backend,
            "error": "upstream job failed" if doomed else None,
            "created_at": t,
            "release_count": 0 if status in (CANCELLED, JobStatus.PENDING.value) else 1,
            **locked,
        }
        if reserved is not None:
            written.append(row)
            continue
        buf.append(row)
        if len(buf) >= _WRITE_CHUNK:
            flush()
    if reserved is not None:
        assert claim is not None
        if n_taken != len(written) or any(j["backend"] != backend for j in claim.jobs):
            raise RuntimeError(
                f"work {work_id}: {len(written)} jobs sent ahead do not fit its "
                f"backend {backend!r} (room for {n_taken})"
            )
        rows = [{**r, "id": i} for r, i in zip(written, reserved, strict=True)]
        conn.execute(_INSERT_CLAIMED, rows[0] if len(rows) == 1 else rows)
        claim.room[backend] -= n_taken
        return n_taken
    flush()
    if n_taken:
        assert claim is not None
        claim.room[backend] -= n_taken
    return released + n_taken


#: rows per insert statement (and the most row dicts held at once)
_WRITE_CHUNK = 2000


class BeyondDeclared(ValueError):
    """Jobs added beyond the count their work was declared with."""


class WorkEnded(WorkflowClosed):
    """The work (or its run) ended: no job can be added to it. ``run_active``: the run
    goes on (the work alone was aborted); ``missing``: the run has no such work."""

    def __init__(self, message: str, run_active: bool = False, missing: bool = False) -> None:
        super().__init__(message)
        self.run_active = run_active
        self.missing = missing


def append_jobs(
    conn: Connection,
    workflow_id: int,
    work: str,
    start: int,
    kwargs_list: Sequence[dict[str, Any]],
    claim: Claim | None = None,
    reserved: Sequence[int] | None = None,
    within_declared: bool = False,
) -> int:
    """Jobs ``start``, ``start + 1``, … of a running work of an open run, written now (an
    HPO study's next trials in the work that holds them all); returns how many were released.
    ``within_declared``: refuse jobs beyond the count the work was declared with
    (:class:`BeyondDeclared`; a user's quota was charged for those at the declaration).

    The work was declared with its whole job count (:func:`declare_jobs`), so it does not
    end while jobs are still to come. No plan is needed: they are jobs of a planned work.
    ``reserved``: the jobs were taken by ``claim`` and sent under these reserved ids already.
    """
    row = conn.execute(_APPENDABLE.on(conn), {"wf": workflow_id, "name": work}).first()
    if row is None:
        raise WorkEnded(f"workflow {workflow_id} has no work named {work!r}", missing=True)
    if row.wf_status not in ACTIVE or row.status != WorkStatus.RUNNING.value:
        raise WorkEnded(
            f"workflow {workflow_id}, work {work!r}: not running, no jobs can be added",
            run_active=row.wf_status in ACTIVE,
        )
    end = start + len(kwargs_list)
    if within_declared and end > row.n_jobs:
        raise BeyondDeclared(
            f"work {work!r} of workflow {workflow_id} has {row.n_jobs} jobs declared: "
            f"jobs {start}..{end - 1} are beyond them"
        )
    t = now()
    released = _write_jobs(
        conn,
        workflow_id,
        row.id,
        row.backend,
        t,
        claim,
        [(start + i, kw, None, 0, False) for i, kw in enumerate(kwargs_list)],
        reserved,
    )
    if end > row.n_jobs:  # more than declared: the work waits for them too
        conn.execute(update(works).where(works.c.id == row.id).values(n_jobs=end, updated_at=t))
    return released


def declare_jobs(conn: Connection, workflow_id: int, counts: dict[str, int]) -> None:
    """The works ``counts`` names will have that many jobs: the rest is added later by
    :func:`append_jobs`. Until their run is closed they do not end before."""
    if counts:
        conn.execute(
            _DECLARE, [{"wf": workflow_id, "work": name, "n": n} for name, n in counts.items()]
        )


_DECLARE = (
    update(works)
    .where(
        works.c.workflow_id == bindparam("wf"),
        works.c.name == bindparam("work"),
        works.c.n_jobs < bindparam("n"),
    )
    .values(n_jobs=bindparam("n"))
)


def settle_declared(conn: Connection, workflow_id: int, out: Outcome) -> None:
    """A closed run's works declared with jobs that never came have the jobs they got:
    those whose jobs have all ended end now."""
    ids = [r[0] for r in conn.execute(_SETTLE, {"wf": workflow_id, "t": now()})]
    finish_works(conn, ids, out)


_WRITTEN = (
    select(func.count()).select_from(jobs).where(jobs.c.work_id == works.c.id).scalar_subquery()
)
# built once: building it at every close cost more than running it
_SETTLE = (
    update(works)
    .where(
        works.c.workflow_id == bindparam("wf"),
        works.c.status == WorkStatus.RUNNING.value,
        works.c.n_jobs > _WRITTEN,
    )
    .values(n_jobs=_WRITTEN, updated_at=bindparam("t"))
    .returning(works.c.id)
)


_APPENDABLE = Locked(
    select(
        works.c.id,
        works.c.status,
        works.c.backend,
        works.c.n_jobs,
        workflows.c.status.label("wf_status"),
    )
    .join(workflows, workflows.c.id == works.c.workflow_id)
    .where(works.c.workflow_id == bindparam("wf"), works.c.name == bindparam("name")),
    of=workflows,
)


_INSERT_JOBS = jobs.insert()
# Jobs written claimed: their lock expires on the database's clock, like claim_ready's.
_LOCKED = {"lock_expiry": db_now() + bindparam("lock_ttl", type_=Float)}
_INSERT_CLAIMED = jobs.insert().values(_LOCKED)
_INSERT_JOBS_RETURNING = (
    jobs.insert().values(_LOCKED).returning(jobs.c.id, sort_by_parameter_order=True)
)
_INSERT_JOB_RETURNING = jobs.insert().values(_LOCKED).returning(jobs.c.id)


# n_jobs: a work declared with more jobs than it starts with (declare_jobs) keeps that count
_START_WORK = (
    update(works)
    .where(works.c.id == bindparam("wid"), works.c.status == WorkStatus.NEW.value)
    .values(
        status=WorkStatus.RUNNING.value,
        n_jobs=case((works.c.n_jobs > bindparam("n"), works.c.n_jobs), else_=bindparam("n")),
        n_cancelled=bindparam("nc"),
        backend=bindparam("backend"),
        updated_at=bindparam("t"),
    )
)


def finish_empty(conn: Connection, work_ids: Sequence[int], out: Outcome) -> None:
    """Works with no jobs left to run (empty sweep, all cancelled) end at once."""
    finish_works(conn, work_ids, out)


def _parent_jobs(conn: Connection, workflow_id: int, name: str) -> tuple[array[int], list[str]]:
    """The ids (in idx order) and statuses of a parent work's jobs."""
    parent = conn.execute(
        select(works.c.id, works.c.status).where(
            works.c.workflow_id == workflow_id, works.c.name == name
        )
    ).one()
    if parent.status == WorkStatus.NEW.value:
        raise NotYet(name)
    wid = parent.id
    stmt = select(jobs.c.id, jobs.c.status).where(jobs.c.work_id == wid).order_by(jobs.c.idx)
    if is_postgres(conn):
        stmt = stmt.with_for_update(read=True)
    ids: array[int] = array("q")
    statuses: list[str] = []
    for jid, status in conn.execute(stmt):
        ids.append(jid)
        statuses.append(status)  # the same few str objects: 8 bytes a job
    return ids, statuses


def _dataset_files(conn: Connection, workflow_id: int, name: str) -> list[Any]:
    """The files of the run owner's dataset ``name`` (a job acts as its run's owner: a
    dataset of another user is unknown here, as it is to that user's API calls)."""
    owner = select(workflows.c.owner).where(workflows.c.id == workflow_id).scalar_subquery()
    ds = conn.execute(
        select(datasets.c.id).where(datasets.c.name == name, datasets.c.owner == owner)
    ).scalar_one_or_none()
    if ds is None:
        if name.startswith("rucio://"):  # registered by the Rucio data source (data/rucio.py)
            raise NotYet(name)
        raise LookupError(f"input_dataset: unknown dataset {name!r}")
    stmt = (
        select(files.c.id, files.c.name, files.c.status)
        .where(files.c.dataset_id == ds)
        .order_by(files.c.id)
    )
    if is_postgres(conn):
        stmt = stmt.with_for_update(read=True)
    return list(conn.execute(stmt).all())
