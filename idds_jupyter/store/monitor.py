"""Read-side queries of the REST service: owners, run lists, monitoring, logs, messages.

Every query is a bulk or grouped statement: a run of 100,000 jobs answers with
a handful of aggregate queries, never a per-job loop in Python.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from typing import Any

from sqlalchemy import Integer, case, cast, func, literal, select
from sqlalchemy.engine import Connection, Engine
from sqlalchemy.sql.elements import ColumnElement

from idds_jupyter.store.jobs import CANCELLED, FAILED, FINISHED
from idds_jupyter.store.provenance import provenance_summary
from idds_jupyter.store.sql import is_postgres, now
from idds_jupyter.store.tables import jobs, messages, provenance, workflows, works
from idds_jupyter.store.workflows import full_template

MAX_PAGE = 10_000


def job_counts_by_work(conn: Connection, workflow_id: int) -> dict[int, dict[str, int]]:
    """``{work id: {job status: count}}`` of one workflow, in one grouped query."""
    by_work: dict[int, dict[str, int]] = {}
    for wid, st, n in conn.execute(
        select(jobs.c.work_id, jobs.c.status, func.count())
        .where(jobs.c.workflow_id == workflow_id)
        .group_by(jobs.c.work_id, jobs.c.status)
    ):
        by_work.setdefault(wid, {})[st] = int(n)
    return by_work


def owner(engine: Engine, workflow_id: int) -> str | None:
    """The owner of a workflow, or None when there is no such workflow."""
    with engine.begin() as conn:
        return conn.execute(select(workflows.c.owner).where(workflows.c.id == workflow_id)).scalar()


def owners(engine: Engine, workflow_ids: Iterable[int]) -> dict[int, str]:
    ids = sorted({int(i) for i in workflow_ids})
    if not ids:
        return {}
    with engine.begin() as conn:
        return {
            int(i): str(o)
            for i, o in conn.execute(
                select(workflows.c.id, workflows.c.owner).where(workflows.c.id.in_(ids))
            )
        }


def list_runs(
    engine: Engine,
    owner: str | None = None,
    status: str | None = None,
    name: str | None = None,
    limit: int = 100,
    offset: int = 0,
) -> list[dict[str, Any]]:
    """Workflows newest first, optionally of one owner / status / name."""
    stmt = select(
        workflows.c.id,
        workflows.c.name,
        workflows.c.owner,
        workflows.c.status,
        workflows.c.backend,
        workflows.c.error,
        workflows.c.created_at,
        workflows.c.updated_at,
        workflows.c.finished_at,
    )
    if owner is not None:
        stmt = stmt.where(workflows.c.owner == owner)
    if status:
        stmt = stmt.where(workflows.c.status == status)
    if name:
        stmt = stmt.where(workflows.c.name == name)
    stmt = stmt.order_by(workflows.c.id.desc()).limit(min(limit, MAX_PAGE)).offset(offset)
    with engine.begin() as conn:
        return [dict(r) for r in conn.execute(stmt).mappings()]


# a work with no job ended yet: none run, cached or failed (store.provenance)
_NONE = {"ran": 0, "cached": 0, "failed": 0}


def _percentile(conn: Connection, workflow_id: int, n: int, q: float) -> float | None:
    if n <= 0:
        return None
    lat = jobs.c.finished_at - jobs.c.submitted_at
    k = int(round(q * (n - 1)))
    return conn.execute(
        select(lat)
        .where(
            jobs.c.workflow_id == workflow_id,
            jobs.c.status == FINISHED,
            jobs.c.submitted_at.is_not(None),
            jobs.c.finished_at.is_not(None),
        )
        .order_by(lat)
        .limit(1)
        .offset(k)
    ).scalar()


def summary(engine: Engine, workflow_id: int) -> dict[str, Any] | None:
    """Status, per-work job counts by status and run metrics; None if no such workflow.

    Metrics: ``throughput`` = finished jobs per second between the first start
    and the last finish; ``latency_p50``/``latency_p95`` = seconds from
    submission to finish of finished jobs; ``failure_rate`` = failed /
    (finished + failed).
    """
    with engine.begin() as conn:
        row = (
            conn.execute(
                select(
                    workflows.c.id,
                    workflows.c.name,
                    workflows.c.owner,
                    workflows.c.status,
                    workflows.c.error,
                    workflows.c.created_at,
                    workflows.c.finished_at,
                ).where(workflows.c.id == workflow_id)
            )
            .mappings()
            .first()
        )
        if row is None:
            return None
        ws = (
            conn.execute(
                select(
                    works.c.id,
                    works.c.name,
                    works.c.kind,
                    works.c.status,
                    works.c.n_jobs,
                    works.c.loop,
                    works.c.iteration,
                    works.c.reason,
                )
                .where(works.c.workflow_id == workflow_id)
                .order_by(works.c.id)
            )
            .mappings()
            .all()
        )
        by_work = job_counts_by_work(conn, workflow_id)
        n_fin, first_start, last_finish = conn.execute(
            select(func.count(), func.min(jobs.c.started_at), func.max(jobs.c.finished_at)).where(
                jobs.c.workflow_id == workflow_id, jobs.c.status == FINISHED
            )
        ).one()
        n_lat = (
            conn.execute(
                select(func.count()).where(
                    jobs.c.workflow_id == workflow_id,
                    jobs.c.status == FINISHED,
                    jobs.c.submitted_at.is_not(None),
                    jobs.c.finished_at.is_not(None),
                )
            ).scalar()
            or 0
        )
        p50 = _percentile(conn, workflow_id, n_lat, 0.50)
        p95 = _percentile(conn, workflow_id, n_lat, 0.95)
        # per work: jobs run, taken from the cache (memoized), failed (store.provenance)
        ran_cached = provenance_summary(conn, workflow_id)
    totals: dict[str, int] = {}
    for counts in by_work.values():
        for st, n in counts.items():
            totals[st] = totals.get(st, 0) + n
    n_failed = totals.get(FAILED, 0)
    span = (
        (last_finish - first_start)
        if (first_start is not None and last_finish is not None)
        else None
    )
    return {
        **dict(row),
        "jobs": totals,
        "works": [
            {
                **dict(w),
                "jobs": by_work.get(w["id"], {}),
                "provenance": ran_cached.get(w["name"], _NONE),
            }
            for w in ws
        ],
        "metrics": {
            "finished": int(n_fin or 0),
            "failed": n_failed,
            "throughput": (n_fin / span) if span and span > 0 else None,
            "latency_p50": p50,
            "latency_p95": p95,
            "failure_rate": (n_failed / (n_fin + n_failed)) if (n_fin or n_failed) else None,
            "first_start": first_start,
            "last_finish": last_finish,
        },
    }


def dag(engine: Engine, workflow_id: int) -> dict[str, Any] | None:
    """The run's graph: work instances as nodes, their dependencies and the template's branches.

    Nodes: ``{"name", "template_name", "kind", "status", "jobs": {status: n}, "loop", "iteration"}``
    (plus the template's conditions and loops with ``kind`` "condition"/"loop").
    Edges: ``{"source", "target", "kind"}`` — "dep" (``depends_on``), "job_dep"
    (``job_deps``) between instances, and the template's "true"/"false"/"on_failure"/"loop" edges.
    """
    from idds_jupyter.model import Workflow

    with engine.begin() as conn:
        tmpl = conn.execute(
            select(workflows.c.template, workflows.c.meta).where(workflows.c.id == workflow_id)
        ).first()
        if tmpl is None:
            return None
        whole = full_template(conn, workflow_id, tmpl[0] or {}, tmpl[1])
        ws = (
            conn.execute(
                select(
                    works.c.id,
                    works.c.name,
                    works.c.template_name,
                    works.c.kind,
                    works.c.status,
                    works.c.loop,
                    works.c.iteration,
                    works.c.spec,
                )
                .where(works.c.workflow_id == workflow_id)
                .order_by(works.c.id)
            )
            .mappings()
            .all()
        )
        by_work = job_counts_by_work(conn, workflow_id)
        ran_cached = provenance_summary(conn, workflow_id)
    nodes: list[dict[str, Any]] = []
    edges: list[dict[str, Any]] = []
    seen: set[tuple[str, str, str]] = set()

    def edge(src: str, dst: str, kind: str) -> None:
        if (src, dst, kind) not in seen:
            seen.add((src, dst, kind))
            edges.append({"source": src, "target": dst, "kind": kind})

    for w in ws:
        spec = w["spec"] or {}
        nodes.append(
            {
                "name": w["name"],
                "template_name": w["template_name"],
                "kind": w["kind"],
                "status": w["status"],
                "jobs": by_work.get(w["id"], {}),
                "loop": w["loop"],
                "iteration": w["iteration"],
                "provenance": ran_cached.get(w["name"], _NONE),
            }
        )
        for dep in spec.get("depends_on") or []:
            edge(str(dep), w["name"], "dep")
        for item in spec.get("job_deps") or []:
            if item:
                edge(str(item[0]), w["name"], "job_dep")
    template: dict[str, Any] | None
    try:
        template = Workflow.from_dict(dict(whole)).graph()
    except Exception as exc:  # an old or partial template still shows its instances
        template = {"error": str(exc).splitlines()[0] if str(exc) else type(exc).__name__}
    names = {n["name"] for n in nodes}
    for n in (template or {}).get("nodes", []):
        if n.get("kind") in ("condition", "loop") and n["name"] not in names:
            nodes.append(
                {
                    "name": n["name"],
                    "template_name": n["name"],
                    "kind": n["kind"],
                    "status": None,
                    "jobs": {},
                    "loop": n.get("loop"),
                    "iteration": None,
                }
            )
    for e in (template or {}).get("edges", []):
        if e.get("kind") in ("true", "false", "on_failure", "loop"):
            edge(e["source"], e["target"], e["kind"])
    return {"id": workflow_id, "nodes": nodes, "edges": edges, "template": template}


def jobs_page(
    engine: Engine,
    workflow_id: int,
    work: str,
    offset: int = 0,
    limit: int = 100,
    status: str | None = None,
) -> dict[str, Any] | None:
    """One page of a work's jobs in idx order; None when the work does not exist."""
    with engine.begin() as conn:
        wid = conn.execute(
            select(works.c.id).where(works.c.workflow_id == workflow_id, works.c.name == work)
        ).scalar()
        if wid is None:
            return None
        cond = [jobs.c.work_id == wid]
        if status:
            cond.append(jobs.c.status == status)
        total = conn.execute(select(func.count()).where(*cond)).scalar() or 0
        rows = (
            conn.execute(
                select(
                    jobs.c.id,
                    jobs.c.idx,
                    jobs.c.status,
                    jobs.c.attempt,
                    jobs.c.wall_s,
                    jobs.c.error,
                    jobs.c.exit_code,
                    jobs.c.log_path,
                    jobs.c.submitted_at,
                    jobs.c.started_at,
                    jobs.c.finished_at,
                    provenance.c.cached_from,
                )
                .select_from(jobs.outerjoin(provenance, provenance.c.job_id == jobs.c.id))
                .where(*cond)
                .order_by(jobs.c.idx)
                .limit(min(limit, MAX_PAGE))
                .offset(offset)
            )
            .mappings()
            .all()
        )
    out = []
    for r in rows:
        d = dict(r)
        err = d.pop("error")
        d["error"] = err.strip().splitlines()[0] if err and err.strip() else None
        d["log"] = d.pop("log_path") is not None
        d["cached"] = d["cached_from"] is not None  # memoized: the job it took its result from
        out.append(d)
    return {"work": work, "total": int(total), "offset": offset, "jobs": out}


def job_log(engine: Engine, job_id: int) -> dict[str, Any] | None:
    """``{"workflow_id", "owner", "log_path"}`` of a job, or None when there is no such job."""
    with engine.begin() as conn:
        row = (
            conn.execute(
                select(jobs.c.workflow_id, workflows.c.owner, jobs.c.log_path)
                .select_from(jobs.join(workflows, workflows.c.id == jobs.c.workflow_id))
                .where(jobs.c.id == job_id)
            )
            .mappings()
            .first()
        )
    return None if row is None else dict(row)


def list_messages(
    engine: Engine, owner: str | None = None, since: int = 0, limit: int = 100
) -> list[dict[str, Any]]:
    """Conductor notifications (the ``messages`` table) with id > ``since``, oldest first."""
    stmt = (
        select(
            messages.c.id,
            messages.c.workflow_id,
            messages.c.kind,
            messages.c.status,
            messages.c.payload,
            messages.c.created_at,
            messages.c.sent_at,
        )
        .where(messages.c.id > since)
        .order_by(messages.c.id)
        .limit(min(limit, MAX_PAGE))
    )
    if owner is not None:
        stmt = stmt.where(
            messages.c.workflow_id.in_(select(workflows.c.id).where(workflows.c.owner == owner))
        )
    with engine.begin() as conn:
        return [dict(r) for r in conn.execute(stmt).mappings()]


# ------------------------------------------------------------ aggregates
#: the job wall-time histogram's bucket bounds (seconds), as Prometheus ``le`` labels
WALL_BUCKETS = (0.01, 0.05, 0.1, 0.5, 1.0, 5.0, 10.0, 60.0, 300.0, 1800.0, 3600.0)
#: the most buckets a monitor time series may have (a request chooses hours and bucket size)
MAX_BUCKETS = 2000
_TERMINAL = (FINISHED, FAILED, CANCELLED)


def _backend(default: str = "local") -> ColumnElement[str]:
    """A job's backend: its own once submitted, else its run's, else the default one."""
    return func.coalesce(jobs.c.backend, workflows.c.backend, literal(default))


def _joined(owner: str | None) -> Any:
    """jobs joined with their workflow, and the owner condition (None: every owner)."""
    src = jobs.join(workflows, workflows.c.id == jobs.c.workflow_id)
    return src, ([] if owner is None else [workflows.c.owner == owner])


def metrics_snapshot(
    engine: Engine, owner: str | None = None, default_backend: str = "local"
) -> dict[str, Any]:
    """What the Prometheus collector exports, read from the store in two grouped queries
    (one scan of the jobs, one of the runs).

    ``jobs``: ``{(owner, backend, status): (count, releases)}``; ``wall``: ``{backend:
    (bucket counts cumulative per WALL_BUCKETS, count, sum)}``; ``submissions``:
    ``{(owner, backend): runs}``. ``owner``: only that owner's runs; ``default_backend``:
    the backend of runs and jobs that name none (the ``backend`` setting).
    """
    src, cond = _joined(owner)
    backend = _backend(default_backend).label("backend")
    out: dict[str, Any] = {"jobs": {}, "wall": {}, "submissions": {}}
    le = [
        func.coalesce(func.sum(case((jobs.c.wall_s <= bound, 1), else_=0)), 0)
        for bound in WALL_BUCKETS
    ]
    with engine.begin() as conn:
        for row in conn.execute(
            select(
                workflows.c.owner,
                backend,
                jobs.c.status,
                func.count(),
                func.coalesce(func.sum(jobs.c.release_count), 0),
                func.count(jobs.c.wall_s),
                func.coalesce(func.sum(jobs.c.wall_s), 0.0),
                *le,
            )
            .select_from(src)
            .where(*cond)
            .group_by(workflows.c.owner, backend, jobs.c.status)
        ):
            o, b, st, n, rel, n_wall, sum_wall = row[:7]
            out["jobs"][(str(o), str(b), str(st))] = (int(n), int(rel or 0))
            if n_wall:
                cum, count, total = out["wall"].get(str(b), ([0] * len(WALL_BUCKETS), 0, 0.0))
                cum = [c + int(v) for c, v in zip(cum, row[7:], strict=True)]
                out["wall"][str(b)] = (cum, count + int(n_wall), total + float(sum_wall))
        wf_backend = func.coalesce(workflows.c.backend, literal(default_backend)).label("backend")
        wf_cond = [] if owner is None else [workflows.c.owner == owner]
        for o, b, n in conn.execute(
            select(workflows.c.owner, wf_backend, func.count())
            .where(*wf_cond)
            .group_by(workflows.c.owner, wf_backend)
        ):
            out["submissions"][(str(o), str(b))] = int(n)
    return out


def _bucket(conn: Connection, col: Any, start: float, size: float) -> ColumnElement[int]:
    """The index of ``col``'s time bucket (0 = the one starting at ``start``)."""
    x = (col - start) / size
    return (func.floor(x) if is_postgres(conn) else cast(x, Integer)).label("bucket")


def aggregate(
    engine: Engine,
    owner: str | None = None,
    hours: float = 6.0,
    bucket_s: float = 300.0,
    until: float | None = None,
    default_backend: str = "local",
) -> dict[str, Any]:
    """The aggregate monitor: job counts now and time series over the last ``hours``.

    Per backend, jobs finished, failed and submitted in each bucket of ``bucket_s``
    seconds; per owner, the queue depth at each bucket's end (jobs created and not
    yet started or ended). ``owner``: only that owner's runs (None: every owner's,
    for admins). Grouped queries only: the cost does not grow with the bucket count.
    """
    if not (hours > 0 and bucket_s > 0):
        raise ValueError("hours and bucket must be positive")
    ratio = hours * 3600 / bucket_s  # inf for a bucket of a denormal size
    if not math.isfinite(ratio) or ratio > MAX_BUCKETS:
        shown = f"{math.ceil(ratio)}" if math.isfinite(ratio) else "too many"
        raise ValueError(
            f"{hours} hours in buckets of {bucket_s} s is {shown} buckets, more than {MAX_BUCKETS}"
        )
    n = max(1, math.ceil(ratio))
    end = now() if until is None else until
    start = end - n * bucket_s
    src, cond = _joined(owner)
    backend = _backend(default_backend).label("backend")
    left_at = func.coalesce(
        jobs.c.started_at,
        jobs.c.finished_at,
        case((jobs.c.status.in_(_TERMINAL), jobs.c.created_at)),
    )

    def series(conn: Connection, key: Any, col: Any, *where: Any) -> dict[str, list[int]]:
        out: dict[str, list[int]] = {}
        b = _bucket(conn, col, start, bucket_s)
        for k, i, c in conn.execute(
            select(key, b, func.count())
            .select_from(src)
            .where(*cond, *where, col >= start, col < start + n * bucket_s)
            .group_by(key, b)
        ):
            if 0 <= int(i) < n:
                out.setdefault(str(k), [0] * n)[int(i)] += int(c)
        return out

    by_backend: dict[str, dict[str, int]] = {}
    by_owner: dict[str, dict[str, int]] = {}
    with engine.begin() as conn:
        for o, bk, st, c in conn.execute(
            select(workflows.c.owner, backend, jobs.c.status, func.count())
            .select_from(src)
            .where(*cond)
            .group_by(workflows.c.owner, backend, jobs.c.status)
        ):
            by_backend.setdefault(str(bk), {}).setdefault(str(st), 0)
            by_backend[str(bk)][str(st)] += int(c)
            by_owner.setdefault(str(o), {}).setdefault(str(st), 0)
            by_owner[str(o)][str(st)] += int(c)
        finished = series(conn, backend, jobs.c.finished_at, jobs.c.status == FINISHED)
        failed = series(conn, backend, jobs.c.finished_at, jobs.c.status == FAILED)
        submitted = series(conn, backend, jobs.c.submitted_at)
        created = series(conn, workflows.c.owner, jobs.c.created_at)
        left = series(conn, workflows.c.owner, left_at)
        base = {
            str(o): int(c)
            for o, c in conn.execute(
                select(workflows.c.owner, func.count())
                .select_from(src)
                .where(
                    *cond,
                    jobs.c.created_at < start,
                    (left_at.is_(None)) | (left_at >= start),
                )
                .group_by(workflows.c.owner)
            )
        }
    depth: dict[str, list[int]] = {}
    for o in sorted(set(created) | set(left) | set(base)):
        level, line = base.get(o, 0), []
        ins, outs = created.get(o, [0] * n), left.get(o, [0] * n)
        for i in range(n):
            level += ins[i] - outs[i]
            line.append(max(level, 0))
        depth[o] = line
    return {
        "owner": owner,
        "since": start,
        "until": start + n * bucket_s,
        "bucket_s": bucket_s,
        "times": [start + i * bucket_s for i in range(n)],
        "by_backend": by_backend,
        "by_owner": by_owner,
        "series": {
            "finished": finished,
            "failed": failed,
            "submitted": submitted,
            "queue_depth": depth,
        },
    }


__all__ = [
    "WALL_BUCKETS",
    "aggregate",
    "metrics_snapshot",
    "dag",
    "job_log",
    "jobs_page",
    "list_messages",
    "list_runs",
    "owner",
    "owners",
    "summary",
]
