"""Bulk job operations: claim, record results, finish works, reclaim.

Every state change is a conditional statement over a set of rows (DESIGN §4):
the ``WHERE status IN (...)`` guard comes from the job state machine, so a
duplicated event, a stale result or a second agent changes nothing. Recording
a result, the Trigger releasing its children (:mod:`.trigger`) and counting it
on the work happen in one transaction: a job is released exactly once even
when the agent dies between two statements.
"""

from __future__ import annotations

import json
from collections import Counter, defaultdict, namedtuple
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import Float, Text, bindparam, cast, or_, select, text, update
from sqlalchemy.engine import Connection

from idds_jupyter.model.status import (
    JOB_MACHINE,
    JobStatus,
    WorkStatus,
)
from idds_jupyter.store.function_stats import function_key, record_durations
from idds_jupyter.store.provenance import record as record_provenance
from idds_jupyter.store.sql import Locked, among, chunks, db_now, is_postgres, now
from idds_jupyter.store.tables import datasets, files, jobs, workflows, works
from idds_jupyter.store.trigger import cancel_descendants, release_children
from idds_jupyter.store.workflows import (
    FILES_PROCESSED,
    WORK_ENDED,
    end_if_done,
    mark_dirty,
    note_messages,
)

PENDING = JobStatus.PENDING.value
READY = JobStatus.READY.value
SUBMITTED = JobStatus.SUBMITTED.value
RUNNING = JobStatus.RUNNING.value
FINISHED = JobStatus.FINISHED.value
FAILED = JobStatus.FAILED.value
CANCELLED = JobStatus.CANCELLED.value
IN_FLIGHT = (SUBMITTED, RUNNING)


def sources(dst: JobStatus) -> list[str]:
    return sorted(s.value for s in JOB_MACHINE.sources(dst))


@dataclass
class Outcome:
    """What a bulk step changed, so the agent can publish the right events."""

    finished: int = 0
    failed: int = 0
    retried: int = 0
    released: int = 0
    cancelled: int = 0
    ignored: int = 0
    # (workflow, work id, status, work name)
    terminal_works: list[tuple[int, int, str, str]] = field(default_factory=list)
    dirty_workflows: set[int] = field(default_factory=set)
    ended_workflows: list[tuple[int, str]] = field(default_factory=list)  # (workflow, status)
    job_results: list[dict[str, Any]] = field(default_factory=list)  # per-job notifications
    blobs: list[tuple[str, int]] = field(default_factory=list)  # pickled values workers stored

    def merge(self, other: Outcome) -> None:
        self.finished += other.finished
        self.failed += other.failed
        self.retried += other.retried
        self.released += other.released
        self.cancelled += other.cancelled
        self.ignored += other.ignored
        self.terminal_works += other.terminal_works
        self.dirty_workflows |= other.dirty_workflows
        self.ended_workflows += other.ended_workflows
        self.job_results += other.job_results
        self.blobs += other.blobs


# --------------------------------------------------------------------- claim


@dataclass
class Claim:
    """Released jobs a submission takes for its own Carrier as it creates them: up to
    ``room[backend]`` of them, locked by ``owner`` for ``ttl`` s, with no claim round."""

    owner: str
    ttl: float
    room: dict[str, int]
    #: the jobs taken, as :func:`claim_ready` returns them, plus their ``backend``
    jobs: list[dict[str, Any]] = field(default_factory=list)


def claim_ready(
    conn: Connection,
    owner: str,
    backends: Sequence[str],
    limit: int,
    ttl: float,
    users: Sequence[str] | None = None,
) -> list[dict[str, Any]]:
    """Lock up to ``limit`` released jobs of running works for ``owner`` (Submitter);
    ``users``: only jobs of these users' runs (:mod:`~idds_jupyter.store.fairshare`)."""
    params: dict[str, Any] = {"backends": list(backends), "limit": limit}
    if users is None:
        stmt = _CLAIM
    else:
        stmt, params["users"] = _CLAIM_OF, list(users)
    rows = conn.execute(stmt.on(conn), params).mappings().all()
    if not rows:
        return []
    t = now()
    claimed = [r["id"] for r in rows]
    for part in chunks(claimed):
        conn.execute(_MARK_SUBMITTED, {"ids": list(part), "owner": owner, "ttl": ttl, "t": t})
    return [dict(r, attempt=r["attempt"] + 1) for r in rows]


_CLAIMED_COLUMNS = (
    jobs.c.id,
    jobs.c.work_id,
    jobs.c.workflow_id,
    jobs.c.idx,
    jobs.c.kwargs,
    jobs.c.file_id,
    jobs.c.attempt,
)
_RUNNING_WORKS = select(works.c.id).where(
    works.c.status == WorkStatus.RUNNING.value, among(works.c.backend, "backends")
)
_CLAIM = Locked(
    select(*_CLAIMED_COLUMNS)
    .where(jobs.c.status == READY, jobs.c.work_id.in_(_RUNNING_WORKS))
    .limit(bindparam("limit")),
    skip_locked=True,
    of=jobs,
)
_CLAIM_OF = Locked(
    select(*_CLAIMED_COLUMNS)
    .where(
        jobs.c.status == READY,
        jobs.c.work_id.in_(
            _RUNNING_WORKS.where(
                works.c.workflow_id.in_(
                    select(workflows.c.id).where(among(workflows.c.owner, "users"))
                )
            )
        ),
    )
    .limit(bindparam("limit")),
    skip_locked=True,
    of=jobs,
)
_MARK_SUBMITTED = (
    update(jobs)
    .where(among(jobs.c.id), jobs.c.status.in_(sources(JobStatus.SUBMITTED)))
    .values(
        status=SUBMITTED,
        lock_owner=bindparam("owner"),
        lock_expiry=db_now() + bindparam("ttl", type_=Float),
        attempt=jobs.c.attempt + 1,
        submitted_at=bindparam("t"),
        started_at=None,
    )
)


def mark_running(conn: Connection, owner: str, started: Sequence[tuple[int, int, float]]) -> None:
    """Jobs a backend reports as started: (job_id, attempt, started_at)."""
    if not started:
        return
    conn.execute(
        _MARK_RUNNING, [{"jid": j, "att": a, "owner": owner, "t": t} for j, a, t in started]
    )


_MARK_RUNNING = (
    update(jobs)
    .where(
        jobs.c.id == bindparam("jid"),
        jobs.c.attempt == bindparam("att"),
        jobs.c.lock_owner == bindparam("owner"),
        jobs.c.status == SUBMITTED,
    )
    .values(status=RUNNING, started_at=bindparam("t"))
)


def renew_locks(conn: Connection, owner: str, ttl: float) -> int:
    """Heart-beat: push the expiry of every in-flight job this owner holds (the
    database's clock: see :class:`~idds_jupyter.store.sql.db_now`).

    On PostgreSQL the rows a result transaction holds are skipped, not waited for:
    they are being recorded (and leave flight), and one that stays is renewed at the
    next beat, well within ``lock_ttl``. Waiting made every beat queue behind the
    Receiver's transactions, and those behind the beat (the first lock wait in a
    100,000-job DAG on PostgreSQL).
    """
    res = conn.execute(_RENEW_SKIP if is_postgres(conn) else _RENEW, {"owner": owner, "ttl": ttl})
    return res.rowcount or 0


_OWNED_IN_FLIGHT = (jobs.c.lock_owner == bindparam("owner"), jobs.c.status.in_(IN_FLIGHT))
_RENEWED = {"lock_expiry": db_now() + bindparam("ttl", type_=Float)}
_RENEW = update(jobs).where(*_OWNED_IN_FLIGHT).values(_RENEWED)
_RENEW_SKIP = (
    update(jobs)
    .where(
        jobs.c.id.in_(select(jobs.c.id).where(*_OWNED_IN_FLIGHT).with_for_update(skip_locked=True)),
        *_OWNED_IN_FLIGHT,
    )
    .values(_RENEWED)
)


def release_owned(conn: Connection, owner: str) -> int:
    """A stopping agent hands its in-flight jobs back at once (they run again elsewhere)."""
    res = conn.execute(
        update(jobs)
        .where(jobs.c.lock_owner == owner, jobs.c.status.in_(IN_FLIGHT))
        .values(status=READY, lock_owner=None, lock_expiry=None, error="requeued: agent stopped")
    )
    return res.rowcount or 0


def reclaim_expired(conn: Connection, alive: Sequence[str] = ()) -> int:
    """Jobs whose owner stopped heart-beating go back to ready (execution is at-least-once).

    Expired by the database's clock, never this process's: a reclaimer whose clock
    runs ahead must not take the jobs of an owner that is alive and renewing. Nor are
    the jobs of the owners in ``alive`` taken, whatever their expiry says: owners the
    caller saw heart-beat lately (the Poller, on its own monotonic clock), so that a
    jump of the clock itself (a host resumed from sleep, a stepped clock) does not
    make healthy locks look expired.
    """
    if alive:
        rows = conn.execute(_EXPIRED_NOT_ALIVE.on(conn), {"alive": list(alive)})
    else:
        rows = conn.execute(_EXPIRED.on(conn))
    ids = [r[0] for r in rows]
    for part in chunks(ids):
        conn.execute(_RECLAIM, {"ids": list(part)})
    return len(ids)


_EXPIRED = Locked(
    select(jobs.c.id).where(jobs.c.status.in_(IN_FLIGHT), jobs.c.lock_expiry < db_now()),
    skip_locked=True,
)
_EXPIRED_NOT_ALIVE = Locked(
    _EXPIRED.plain.where(among(jobs.c.lock_owner, "alive", negate=True)), skip_locked=True
)
_RECLAIM = (
    update(jobs)
    .where(among(jobs.c.id), jobs.c.status.in_(IN_FLIGHT), jobs.c.lock_expiry < db_now())
    .values(status=READY, lock_owner=None, lock_expiry=None, error="lost: owner stopped")
)


def reserve_job_ids(conn: Connection, n: int) -> list[int]:
    """``n`` job ids no other insert will take: a job can go to its worker under one of
    them before its row is written with it (an HPO study's next trial).

    PostgreSQL draws them from the table's sequence. On SQLite the table is
    AUTOINCREMENT (new rows take ids above ``sqlite_sequence``'s mark): the mark moves
    up by ``n``, in the caller's transaction (SQLite has one writer at a time).
    """
    if n <= 0:
        return []
    if is_postgres(conn):
        return [int(i) for i in conn.execute(_NEXTVAL, {"n": n}).scalars()]
    top = conn.execute(_SQLITE_RESERVE, {"n": n}).scalar()
    if top is None:  # no row yet: the table's first insert makes it
        top = conn.execute(_SQLITE_FIRST_RESERVE, {"n": n}).scalar_one()
    return list(range(int(top) - n + 1, int(top) + 1))


_NEXTVAL = text("SELECT nextval(pg_get_serial_sequence('jobs', 'id')) FROM generate_series(1, :n)")
_SQLITE_RESERVE = text(
    "UPDATE sqlite_sequence SET seq = max(seq, (SELECT coalesce(max(id), 0) "
    "FROM jobs)) + :n WHERE name = 'jobs' RETURNING seq"
)
_SQLITE_FIRST_RESERVE = text(
    "INSERT INTO sqlite_sequence (name, seq) SELECT 'jobs', "
    "coalesce(max(id), 0) + :n FROM jobs RETURNING seq"
)


# ------------------------------------------------------------------- results


def record_results(
    conn: Connection, owner: str | None, results: Sequence[dict[str, Any]]
) -> Outcome:
    """Receiver + Trigger + Finisher for one batch of worker results, in the caller's transaction.

    The results are recorded here, the finished jobs' children released and the
    failed jobs' descendants cancelled by the Trigger (:mod:`.trigger`), the works
    whose jobs are all done ended by the Finisher (:func:`finish_works`).

    A result counts only if its job is still in flight, locked by ``owner`` (when
    given) and at the same attempt: duplicates and late results are ignored.
    """
    out = Outcome()
    if not results:
        return out
    by_id = {int(r["job_id"]): r for r in results}
    job_ids = sorted(by_id)
    current: dict[int, Any] = {}
    # a batch's jobs share a few works and runs: their JSON is decoded once per distinct text
    decoded: dict[str | None, Any] = {None: None}
    for part in chunks(job_ids):
        for found in conn.execute(_CURRENT.on(conn), {"ids": list(part)}):
            spec, meta = found[-2], found[-1]
            if spec not in decoded:
                decoded[spec] = json.loads(spec)
            if meta not in decoded:
                decoded[meta] = json.loads(meta)
            current[found[0]] = _Current._make((*found[:-2], decoded[spec], decoded[meta]))
    retries: dict[int, int] = {}
    names: dict[int, str] = {}
    keys: dict[int, str | None] = {}
    linked = False  # jobs of runs with job-level links (independent runs have none)
    for row in current.values():
        if row.work_id not in names:
            retries[row.work_id], names[row.work_id] = row.retries, row.name
            keys[row.work_id] = function_key(row.spec or {})
            linked = linked or not (row.meta or {}).get("independent")
    walls: dict[str, list[float]] = defaultdict(list)

    ok_rows: list[dict[str, Any]] = []
    retry_rows: list[dict[str, Any]] = []
    fail_rows: list[dict[str, Any]] = []
    per_work: dict[int, Counter[str]] = defaultdict(Counter)
    t = now()
    for jid in job_ids:
        r = by_id[jid]
        row = current.get(jid)
        if (
            row is None
            or row.status not in IN_FLIGHT
            or (owner is not None and row.lock_owner != owner)
            or int(r.get("attempt", row.attempt)) != row.attempt
        ):
            out.ignored += 1
            continue
        common = {
            "jid": jid,
            "wall_s": r.get("wall_s"),
            "max_rss_kb": r.get("max_rss_kb"),
            "log_path": r.get("log_path"),
            "exit_code": r.get("exit_code"),
            "started_at": r.get("started_at"),
            "finished_at": r.get("finished_at") or t,
        }
        note = {
            "job_id": jid,
            "work_id": row.work_id,
            "workflow_id": row.workflow_id,
            "work": names.get(row.work_id),
            "idx": row.idx,
            "attempt": row.attempt,
        }
        if r.get("ok"):
            done = finished_note(note, r)
            ok_rows.append(
                {**common, "result": done["result"], "blob": done["blob"], "inline": done["inline"]}
            )
            per_work[row.work_id]["finished"] += 1
            key = keys.get(row.work_id)
            if (
                key is not None
                and isinstance(r.get("wall_s"), int | float)
                and not r.get("cached_from")
            ):
                walls[key].append(float(r["wall_s"]))
            out.job_results.append(done)
        else:
            error = _error_text(r)
            if row.retries_used < retries.get(row.work_id, 0):
                retry_rows.append({**common, "error": error})
                out.retried += 1
            else:
                fail_rows.append(
                    {
                        **common,
                        "error": error,
                        "blob": r.get("error_blob"),
                        "inline": r.get("error_inline"),
                    }
                )
                per_work[row.work_id]["failed"] += 1
                out.job_results.append(
                    {
                        **note,
                        "status": FAILED,
                        "error": r.get("error"),
                        "exc_type": r.get("exc_type"),
                        "traceback": r.get("traceback"),
                        "error_blob": r.get("error_blob"),
                        "error_inline": r.get("error_inline"),
                        "log_path": r.get("log_path"),
                    }
                )
        for key in ("blob", "error_blob"):
            if r.get(key):
                out.blobs.append((r[key], int(r.get(f"{key}_size") or 0)))

    if ok_rows:
        conn.execute(_RECORD_OK, ok_rows)
        out.finished = len(ok_rows)
        record_durations(conn, walls)
    if retry_rows:
        conn.execute(_RECORD_RETRY, retry_rows)
    if fail_rows:
        conn.execute(_RECORD_FAILED, fail_rows)
        out.failed = len(fail_rows)

    record_provenance(
        conn,
        [(current[r["jid"]], by_id[r["jid"]], FINISHED) for r in ok_rows]
        + [(current[r["jid"]], by_id[r["jid"]], FAILED) for r in fail_rows],
        linked,
    )
    note_files_processed(
        conn,
        [(current[r["jid"]], FINISHED) for r in ok_rows]
        + [(current[r["jid"]], FAILED) for r in fail_rows],
    )
    if linked:
        out.released = release_children(conn, [r["jid"] for r in ok_rows])
        for work_id, n in cancel_descendants(conn, [r["jid"] for r in fail_rows]).items():
            per_work[work_id]["cancelled"] += n
            out.cancelled += n
    count_on_works(conn, per_work, out)
    return out


_FILE_NAMES = (
    select(files.c.id, files.c.name, datasets.c.name.label("dataset"))
    .join(datasets, datasets.c.id == files.c.dataset_id)
    .where(among(files.c.id))
)


def note_files_processed(conn: Connection, ended: Sequence[tuple[Any, str]]) -> None:
    """One outbound ``files.processed`` message per work and outcome for the jobs of
    ``ended`` bound to a dataset file (the carousel's follow-up, as iDDS's Conductor
    sends for contents); jobs with no file cost nothing."""
    bound = [(row, status) for row, status in ended if row.file_id is not None]
    if not bound:
        return
    names: dict[int, tuple[str, str]] = {}
    for part in chunks(sorted({int(row.file_id) for row, _ in bound})):
        for r in conn.execute(_FILE_NAMES, {"ids": list(part)}):
            names[r.id] = (r.name, r.dataset)
    by_status: dict[tuple[int, int, str, str | None, str], list[str]] = defaultdict(list)
    for row, status in bound:
        name, dataset = names.get(int(row.file_id), (None, None))
        if name is not None:
            by_status[(row.workflow_id, row.work_id, row.name, dataset, status)].append(name)
    note_messages(
        conn,
        [
            (
                wf,
                FILES_PROCESSED,
                {
                    "workflow_id": wf,
                    "work_id": work_id,
                    "work": work,
                    "dataset": dataset,
                    "status": status,
                    "files": sorted(names_),
                },
            )
            for (wf, work_id, work, dataset, status), names_ in by_status.items()
        ],
    )


def finished_note(job: Mapping[str, Any], r: Mapping[str, Any]) -> dict[str, Any]:
    """What a waiting caller is told of a success: ``job`` (job_id, work_id, workflow_id,
    work, idx, attempt) with the value's JSON, and its pickle inline or as a blob."""
    result = r.get("result")
    if result is None and r.get("summary") is not None:
        result = {"__summary__": r["summary"]}
    return {
        **job,
        "status": FINISHED,
        "blob": r.get("blob"),
        "inline": r.get("inline"),
        "result": result,
    }


# a job as it is now, with what its result needs of its work (retries, name, function)
# and its workflow (whether it has job-level links)
_CURRENT = Locked(
    select(
        jobs.c.id,
        jobs.c.work_id,
        jobs.c.workflow_id,
        jobs.c.attempt,
        jobs.c.idx,
        jobs.c.retries_used,
        jobs.c.lock_owner,
        jobs.c.status,
        jobs.c.file_id,
        works.c.retries,
        works.c.name,
        # as text, decoded once per batch and distinct value by record_results
        cast(works.c.spec, Text).label("spec"),
        cast(workflows.c.meta, Text).label("meta"),
    )
    .join(works, works.c.id == jobs.c.work_id)
    .join(workflows, workflows.c.id == jobs.c.workflow_id)
    .where(among(jobs.c.id)),
    of=jobs,
)
# a row of _CURRENT (its columns in order), its JSON decoded
_Current = namedtuple(  # noqa: PYI024
    "_Current",
    [
        "id",
        "work_id",
        "workflow_id",
        "attempt",
        "idx",
        "retries_used",
        "lock_owner",
        "status",
        "file_id",
        "retries",
        "name",
        "spec",
        "meta",
    ],
)
assert list(_Current._fields) == [c.name for c in _CURRENT.plain.selected_columns]
# executemany cannot expand IN lists: spell the in-flight guard out.
_GUARD = (jobs.c.id == bindparam("jid"), or_(jobs.c.status == SUBMITTED, jobs.c.status == RUNNING))
_RUN_FIELDS: dict[str, Any] = {
    k: bindparam(k)
    for k in ("wall_s", "max_rss_kb", "log_path", "exit_code", "started_at", "finished_at")
}
_RECORD_OK = (
    update(jobs)
    .where(*_GUARD)
    .values(
        status=FINISHED,
        result=bindparam("result"),
        blob=bindparam("blob"),
        inline=bindparam("inline"),
        **_RUN_FIELDS,
        success_count=jobs.c.success_count + 1,
        error=None,
        lock_owner=None,
        lock_expiry=None,
    )
)
_RECORD_RETRY = (
    update(jobs)
    .where(*_GUARD)
    .values(
        status=READY,
        error=bindparam("error"),
        **_RUN_FIELDS,
        retries_used=jobs.c.retries_used + 1,
        lock_owner=None,
        lock_expiry=None,
    )
)
_RECORD_FAILED = (
    update(jobs)
    .where(*_GUARD)
    .values(
        status=FAILED,
        error=bindparam("error"),
        blob=bindparam("blob"),
        inline=bindparam("inline"),
        **_RUN_FIELDS,
        lock_owner=None,
        lock_expiry=None,
    )
)


def _error_text(r: dict[str, Any]) -> str:
    parts = [str(r.get("error") or "failed")]
    if r.get("traceback"):
        parts.append(str(r["traceback"]))
    return "\n".join(parts)


def count_on_works(conn: Connection, per_work: dict[int, Counter[str]], out: Outcome) -> None:
    """Add job outcomes to the works' counters; a work with every job done becomes terminal."""
    if not per_work:
        return
    t = now()
    conn.execute(
        _COUNT_ON_WORK,
        [
            {"wid": w, "f": c["finished"], "x": c["failed"], "c": c["cancelled"], "t": t}
            for w, c in per_work.items()
        ],
    )
    finish_works(conn, list(per_work), out)


_COUNT_ON_WORK = (
    update(works)
    .where(works.c.id == bindparam("wid"))
    .values(
        n_finished=works.c.n_finished + bindparam("f"),
        n_failed=works.c.n_failed + bindparam("x"),
        n_cancelled=works.c.n_cancelled + bindparam("c"),
        updated_at=bindparam("t"),
    )
)


def finish_works(conn: Connection, work_ids: Sequence[int], out: Outcome) -> None:
    """Finisher: running works whose jobs are all terminal get their final status."""
    if not work_ids:
        return
    # The workflow rows are locked on PostgreSQL, so that a concurrent close() (which
    # locks its row too) either sees these ends or is seen here: a closed run is re-planned.
    rows = conn.execute(_DONE_WORKS.on(conn), {"ids": list(work_ids)}).all()
    t = now()
    dirty: set[int] = set()
    check: dict[int, tuple[Mapping[str, Any], list[str]]] = {}
    ended_msgs: list[tuple[int, str, dict[str, Any]]] = []
    for row in rows:
        status = work_outcome(
            row.n_jobs,
            row.n_finished,
            row.n_failed + row.n_cancelled,
            (row.spec or {}).get("work", {}).get("policy", "subfinished"),
        )
        res = conn.execute(_END_WORK, {"wid": row.id, "status": status, "t": t})
        if res.rowcount:
            out.terminal_works.append((row.workflow_id, row.id, status, row.name))
            ended_msgs.append(
                (
                    row.workflow_id,
                    WORK_ENDED,
                    {
                        "workflow_id": row.workflow_id,
                        "work_id": row.id,
                        "work": row.name,
                        "status": status,
                    },
                )
            )
            then = on_work_end(row.meta)
            if then == PLAN:
                dirty.add(row.workflow_id)
            elif then == CHECK_END:
                check.setdefault(row.workflow_id, (row.meta or {}, []))[1].append(status)
    note_messages(conn, ended_msgs)  # before a workflow's end, which may follow here
    for wf_id, (meta, ended_now) in check.items():
        ended = end_if_done(conn, wf_id, meta, ended_now)
        if ended is not None:
            out.ended_workflows.append((wf_id, ended))
    out.dirty_workflows |= dirty
    mark_dirty(conn, dirty)


_DONE_WORKS = Locked(
    select(
        works.c.id,
        works.c.workflow_id,
        works.c.name,
        works.c.n_jobs,
        works.c.n_finished,
        works.c.n_failed,
        works.c.n_cancelled,
        works.c.spec,
        workflows.c.meta,
    )
    .join(workflows, workflows.c.id == works.c.workflow_id)
    .where(
        among(works.c.id),
        works.c.status == WorkStatus.RUNNING.value,
        works.c.n_finished + works.c.n_failed + works.c.n_cancelled >= works.c.n_jobs,
    )
    .order_by(works.c.workflow_id, works.c.id),
    of=workflows,
)
_END_WORK = (
    update(works)
    .where(works.c.id == bindparam("wid"), works.c.status == WorkStatus.RUNNING.value)
    .values(status=bindparam("status"), finished_at=bindparam("t"), updated_at=bindparam("t"))
)


def work_outcome(n_jobs: int, n_ok: int, n_bad: int, policy: str) -> str:
    if n_bad == 0:
        return WorkStatus.FINISHED.value
    if n_ok == 0 or policy == "failed":
        return WorkStatus.FAILED.value
    return WorkStatus.SUBFINISHED.value


PLAN, CHECK_END, NOTHING = "plan", "check-end", "nothing"


def on_work_end(meta: Mapping[str, Any] | None) -> str:
    """What a work's end asks of its workflow (``meta`` as :func:`store.workflows.submit`
    writes it).

    The Clerk's plan (PLAN) in general. Nothing for an open run of independent works
    (a FaaT body, an HPO study): until it grows or is closed its plan cannot change,
    and re-planning a run of thousands of works after each end would cost O(works)
    per call. For a closed run of independent works only its end can follow, decided
    here at once (CHECK_END, a count of its works by status): no Clerk round, which
    would plan the whole run to learn the same.
    """
    if not meta or not meta.get("independent"):
        return PLAN
    return NOTHING if meta.get("open") else CHECK_END
