"""Provenance rows and memoization lookups, in bulk (hashing rules: :mod:`idds_jupyter.model.provenance`).

* :func:`record` writes the provenance of a batch of ended jobs in the results'
  transaction (:func:`idds_jupyter.store.jobs.record_results`): one query for the
  upstream result digests of the batch (runs with job-level links only) and one
  multi-row upsert — no statement per job.
* :func:`cached_results` finds, for jobs being submitted whose work memoizes
  (``cache``), a succeeded job of the same namespace with the same code and input
  digests: one query per batch. The Submitter hands those results to its Receiver
  as if a backend had returned them, so a cached job is recorded, released and
  counted exactly like a run one (and shows as *cached*: ``cached_from`` is set).
* :func:`job_provenance` / :func:`run_provenance`: what the REST route and the
  export read.
"""

from __future__ import annotations

import json
from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.engine import Connection

from idds_jupyter.model import provenance as rules
from idds_jupyter.store.sql import chunks, now
from idds_jupyter.store.tables import environments, files, job_deps, jobs, provenance, works

__all__ = [
    "cached_results",
    "job_provenance",
    "provenance_summary",
    "record",
    "record_environments",
    "rerun_request",
    "run_info",
    "run_provenance",
    "upstream_hashes",
]

FINISHED = "finished"


def upstream_hashes(conn: Connection, job_ids: Sequence[int]) -> dict[int, list[str | None]]:
    """The result digests of each job's parents (job-level links), by child id (None: a
    parent with no record). Through the driver: thousands of (child, digest) pairs."""
    out: dict[int, list[str | None]] = defaultdict(list)
    pg = conn.dialect.name == "postgresql"
    for part in chunks(list(job_ids)):
        where = "d.child_id = ANY(%s)" if pg else f"d.child_id IN ({','.join('?' * len(part))})"
        sql = (
            "SELECT d.child_id, p.result_hash FROM job_deps d LEFT OUTER JOIN provenance p "
            f"ON p.job_id = d.parent_id WHERE {where}"
        )
        params = (list(part),) if pg else tuple(part)
        for child, digest in conn.exec_driver_sql(sql, params):
            out[child].append(digest)
    return out


def _job_facts(
    conn: Connection, job_ids: Sequence[int]
) -> dict[int, tuple[Any, int | None, str | None, str | None]]:
    """``(kwargs, file_id, backend, run owner)`` of jobs, through the driver (the results'
    own read of the jobs stays as narrow as it was)."""
    out: dict[int, tuple[Any, int | None, str | None, str | None]] = {}
    pg = conn.dialect.name == "postgresql"
    for part in chunks(list(job_ids)):
        where = "j.id = ANY(%s)" if pg else f"j.id IN ({','.join('?' * len(part))})"
        sql = (
            "SELECT j.id, j.kwargs, j.file_id, j.backend, w.owner FROM jobs j "
            f"JOIN workflows w ON w.id = j.workflow_id WHERE {where}"
        )
        for jid, kwargs, file_id, backend, owner in conn.exec_driver_sql(
            sql, (list(part),) if pg else tuple(part)
        ):
            if isinstance(kwargs, str | bytes):  # SQLite's JSON is text; PostgreSQL's decoded
                kwargs = json.loads(kwargs)
            out[jid] = (kwargs, file_id, backend, owner)
    return out


def file_names(conn: Connection, file_ids: Iterable[int | None]) -> dict[int, str]:
    ids = sorted({f for f in file_ids if f is not None})
    if not ids:
        return {}
    return dict(conn.execute(select(files.c.id, files.c.name).where(files.c.id.in_(ids))).all())


def record(
    conn: Connection, ended: Sequence[tuple[Any, Mapping[str, Any], str]], linked: bool
) -> int:
    """Provenance of ended jobs: ``(job row, worker result, status)`` each, where the job
    row (a Row) carries ``id, work_id, workflow_id, idx, attempt, spec``. One upsert for the batch; environments the workers described are kept too."""
    if not ended:
        return 0
    # by position: a Row's attribute access costs ten times its index
    pos = {name: k for k, name in enumerate(ended[0][0]._fields)}
    jid, wf, wk, att, spec_, idx_ = (
        pos[n] for n in ("id", "workflow_id", "work_id", "attempt", "spec", "idx")
    )
    facts = _job_facts(conn, [row[jid] for row, _, _ in ended])
    # a cached result carries the digests its lookup computed: nothing to compute again
    todo = [row[jid] for row, r, _ in ended if not r.get("input_hash")]
    parents = upstream_hashes(conn, todo) if linked and todo else {}
    names = file_names(conn, (facts[j][1] for j in todo if j in facts))
    codes: dict[int, tuple[str, Any, str]] = {}
    envs: dict[str, Any] = {}
    t = now()
    rows = []
    for row, r, status in ended:
        kwargs, file_id, backend, owner = facts.get(row[jid], (None, None, None, None))
        if r.get("input_hash"):
            code, inputs, key = r["code_hash"], r["input_hash"], r["cache_key"]
        else:
            per_work = codes.get(row[wk])
            if per_work is None:
                spec = row[spec_] or {}
                per_work = codes[row[wk]] = (
                    rules.code_hash(spec),
                    rules.input_hasher(spec),
                    rules.cache_namespace(spec, owner),
                )
            code, hasher, namespace = per_work
            inputs = hasher(
                kwargs,
                row[idx_],
                names.get(file_id) if file_id is not None else None,
                parents.get(row[jid], ()),
            )
            key = rules.cache_key(namespace, code, inputs)
        cached_from = r.get("cached_from")
        digest = r.get("result_hash") if cached_from else None
        if digest is None and status == FINISHED:
            digest = rules.result_hash(r.get("blob"), r.get("inline"), r.get("result"))
        env_id = r.get("env_id")
        if env_id and "environment" in r and isinstance(r["environment"], dict):
            envs[str(env_id)] = r["environment"]
        # in _FIELDS order (the provenance table's columns)
        rows.append(
            (
                row[jid],
                row[wf],
                row[wk],
                owner,
                status,
                int(row[att] or 0),
                code,
                inputs,
                key,
                digest,
                env_id,
                backend,
                cached_from,
                r.get("started_at"),
                r.get("finished_at") or t,
            )
        )
    _upsert(conn, rows)
    if envs:
        record_environments(conn, envs)
    return len(rows)


_FIELDS = [c.name for c in provenance.columns]
_UPSERT: dict[str, str] = {}


def _upsert(conn: Connection, rows: list[tuple[Any, ...]]) -> None:
    """One multi-row upsert (a retried job's record replaces its earlier one), through the
    driver: no per-row parameter processing by SQLAlchemy for thousands of rows."""
    dialect = conn.dialect.name
    sql = _UPSERT.get(dialect)
    if sql is None:
        mark = "?" if conn.dialect.paramstyle == "qmark" else "%s"
        sql = _UPSERT[dialect] = (
            f"INSERT INTO provenance ({', '.join(_FIELDS)}) "
            f"VALUES ({', '.join(mark for _ in _FIELDS)}) ON CONFLICT (job_id) DO UPDATE SET "
            + ", ".join(f"{c} = excluded.{c}" for c in _FIELDS if c != "job_id")
        )
    for part in chunks(rows, 1000):
        conn.exec_driver_sql(sql, list(part))


def record_environments(conn: Connection, envs: Mapping[str, Any]) -> None:
    ins: Any = (
        pg_insert(environments)
        if conn.dialect.name == "postgresql"
        else sqlite_insert(environments)
    )
    t = now()
    conn.execute(
        ins.on_conflict_do_nothing(index_elements=["env_id"]),
        [{"env_id": k, "info": v, "created_at": t} for k, v in envs.items()],
    )


def cached_results(
    conn: Connection,
    claimed: Sequence[Mapping[str, Any]],
    specs: Mapping[int, Mapping[str, Any] | None],
    owners: Mapping[int, str | None],
) -> dict[int, dict[str, Any]]:
    """Results to take instead of running: for the claimed jobs (``id, work_id, idx,
    kwargs, file_id, attempt``) of works that memoize, the result of a succeeded job of
    the same namespace with equal code and input digests. ``specs``/``owners`` by work id."""
    mine = [j for j in claimed if rules.cache_enabled(specs.get(j["work_id"]) or {})]
    if not mine:
        return {}
    parents = upstream_hashes(conn, [j["id"] for j in mine])
    names = file_names(conn, (j.get("file_id") for j in mine))
    per_work: dict[int, tuple[str, Any, str]] = {}
    keys: dict[int, tuple[str, str, str]] = {}  # job -> (code, input, cache key)
    for j in mine:
        w = j["work_id"]
        if w not in per_work:
            spec = specs.get(w) or {}
            per_work[w] = (
                rules.code_hash(spec),
                rules.input_hasher(spec),
                rules.cache_namespace(spec, owners.get(w)),
            )
        code, hasher, namespace = per_work[w]
        ups = parents.get(j["id"], ())
        if any(p is None for p in ups):
            continue  # an upstream value of unknown provenance: run it
        fid = j.get("file_id")
        inputs = hasher(j.get("kwargs"), j["idx"], names.get(fid) if fid is not None else None, ups)
        keys[j["id"]] = (code, inputs, rules.cache_key(namespace, code, inputs))
    hits: dict[str, Any] = {}
    wanted = sorted({k for _, _, k in keys.values()})
    for part in chunks(wanted):
        q = (
            select(
                provenance.c.cache_key,
                provenance.c.result_hash,
                jobs.c.id,
                jobs.c.result,
                jobs.c.blob,
                jobs.c.inline,
            )
            .join(jobs, jobs.c.id == provenance.c.job_id)
            # executions only: a cached row names the execution it took its result from
            .where(
                provenance.c.cache_key.in_(list(part)),
                provenance.c.status == FINISHED,
                provenance.c.cached_from.is_(None),
                jobs.c.status == FINISHED,
            )
            .order_by(jobs.c.id)
        )
        for found in conn.execute(q):
            hits.setdefault(found.cache_key, found)
    t = now()
    out: dict[int, dict[str, Any]] = {}
    for j in mine:
        code, inputs, key = keys.get(j["id"], ("", "", ""))
        hit = hits.get(key)
        if hit is None or hit.id == j["id"]:
            continue
        out[j["id"]] = {
            "job_id": j["id"],
            "attempt": j["attempt"],
            "ok": True,
            "code_hash": code,
            "input_hash": inputs,
            "cache_key": key,
            "result": hit.result,
            "blob": hit.blob,
            "inline": hit.inline,
            "cached_from": hit.id,
            "result_hash": hit.result_hash,
            "wall_s": 0.0,
            "started_at": t,
            "finished_at": t,
            "exit_code": None,
        }
    return out


# ------------------------------------------------------------------------ reading

_COLUMNS = [c for c in provenance.columns]


def _row(conn: Connection, r: Any, envs: dict[str, Any]) -> dict[str, Any]:
    d = dict(r._mapping)
    env_id = d.get("env_id")
    d["cached"] = d.get("cached_from") is not None
    d["environment"] = envs.get(env_id) if env_id else None
    return d


def _envs(conn: Connection, ids: Iterable[str | None]) -> dict[str, Any]:
    want = sorted({i for i in ids if i})
    if not want:
        return {}
    return dict(
        conn.execute(
            select(environments.c.env_id, environments.c.info).where(
                environments.c.env_id.in_(want)
            )
        ).all()
    )


def job_provenance(
    conn: Connection, workflow_id: int, work: str, idx: int
) -> dict[str, Any] | None:
    """One job's provenance with its lineage: the upstream jobs (and their values) that
    fed it, and the job a cached result came from. None when the job has no record."""
    q = (
        select(
            *_COLUMNS,
            works.c.name.label("work"),
            jobs.c.idx,
            jobs.c.kwargs,
            jobs.c.result,
            jobs.c.blob,
            jobs.c.status.label("job_status"),
        )
        .select_from(
            provenance.join(jobs, jobs.c.id == provenance.c.job_id).join(
                works, works.c.id == provenance.c.work_id
            )
        )
        .where(works.c.workflow_id == workflow_id, works.c.name == work, jobs.c.idx == idx)
    )
    r = conn.execute(q).first()
    if r is None:
        return None
    upstream = conn.execute(
        select(
            job_deps.c.parent_id,
            jobs.c.idx,
            jobs.c.status,
            jobs.c.result,
            works.c.name,
            provenance.c.result_hash,
        )
        .select_from(
            job_deps.join(jobs, jobs.c.id == job_deps.c.parent_id)
            .join(works, works.c.id == jobs.c.work_id)
            .outerjoin(provenance, provenance.c.job_id == job_deps.c.parent_id)
        )
        .where(job_deps.c.child_id == r.job_id)
        .order_by(job_deps.c.parent_id)
    ).all()
    out = _row(conn, r, _envs(conn, [r.env_id]))
    out["upstream"] = [
        {
            "job_id": u.parent_id,
            "work": u.name,
            "idx": u.idx,
            "status": u.status,
            "result": u.result,
            "result_hash": u.result_hash,
        }
        for u in upstream
    ]
    if r.cached_from is not None:
        src = conn.execute(
            select(jobs.c.workflow_id, jobs.c.idx, works.c.name)
            .join(works, works.c.id == jobs.c.work_id)
            .where(jobs.c.id == r.cached_from)
        ).first()
        out["cached_source"] = (
            None
            if src is None
            else {
                "job_id": r.cached_from,
                "workflow_id": src.workflow_id,
                "work": src.name,
                "idx": src.idx,
            }
        )
    return out


def run_provenance(
    conn: Connection, workflow_id: int, offset: int = 0, limit: int | None = None
) -> dict[str, Any]:
    """The recorded jobs of a run (a page of them, in work and job order) with their
    environments and upstream links, and per work how many jobs ran, were cached or failed."""
    q = (
        select(*_COLUMNS, works.c.name.label("work"), jobs.c.idx, jobs.c.kwargs, jobs.c.result)
        .select_from(
            provenance.join(jobs, jobs.c.id == provenance.c.job_id).join(
                works, works.c.id == provenance.c.work_id
            )
        )
        .where(provenance.c.workflow_id == workflow_id)
        .order_by(provenance.c.work_id, jobs.c.idx)
        .offset(offset)
    )
    if limit is not None:
        q = q.limit(limit)
    rows = conn.execute(q).all()
    envs = _envs(conn, (r.env_id for r in rows))
    ids = [r.job_id for r in rows]
    links: list[tuple[int, int]] = []
    for part in chunks(ids):
        links += [
            (p, c)
            for p, c in conn.execute(
                select(job_deps.c.parent_id, job_deps.c.child_id).where(
                    job_deps.c.child_id.in_(list(part))
                )
            )
        ]
    jobs_out = []
    for r in rows:
        d = dict(r._mapping)
        d["cached"] = r.cached_from is not None
        jobs_out.append(d)
    return {
        "workflow_id": workflow_id,
        "offset": offset,
        "jobs": jobs_out,
        "environments": envs,
        "links": [{"parent": p, "child": c} for p, c in links],
        "works": provenance_summary(conn, workflow_id),
    }


def provenance_summary(conn: Connection, workflow_id: int) -> dict[str, dict[str, int]]:
    """Per work of a run: jobs that ran (succeeded), were cached, failed; one grouped query."""
    cached = provenance.c.cached_from.isnot(None)
    q = (
        select(works.c.name, provenance.c.status, cached.label("cached"), func.count().label("n"))
        .join(works, works.c.id == provenance.c.work_id)
        .where(provenance.c.workflow_id == workflow_id)
        .group_by(works.c.id, works.c.name, provenance.c.status, cached)
        .order_by(works.c.id)
    )  # in the works' order
    out: dict[str, dict[str, int]] = {}
    for name, status, is_cached, n in conn.execute(q):
        s = out.setdefault(name, {"ran": 0, "cached": 0, "failed": 0})
        key = "failed" if status != FINISHED else ("cached" if is_cached else "ran")
        s[key] += int(n)
    return out


def rerun_request(conn: Connection, workflow_id: int) -> dict[str, Any] | None:
    """What a re-run of a run submits: its whole template (works added while it ran
    included) with every work memoizing, its parameters and name; None if no such run."""
    from idds_jupyter.store.tables import workflows
    from idds_jupyter.store.workflows import full_template

    row = conn.execute(
        select(
            workflows.c.name,
            workflows.c.template,
            workflows.c.params,
            workflows.c.meta,
            workflows.c.owner,
            workflows.c.backend,
        ).where(workflows.c.id == workflow_id)
    ).first()
    if row is None:
        return None
    whole = full_template(conn, workflow_id, row.template or {}, row.meta)
    return {
        "template": rules.with_cache(whole),
        "params": dict(row.params or {}),
        "name": row.name,
        "owner": row.owner,
        "backend": row.backend,
        "cwd": (row.meta or {}).get("cwd"),
    }


def run_info(conn: Connection, workflow_id: int) -> dict[str, Any] | None:
    """A run as an export names it: id, name, status, owner, times, its whole template."""
    from idds_jupyter.store.tables import workflows
    from idds_jupyter.store.workflows import full_template

    row = conn.execute(select(workflows).where(workflows.c.id == workflow_id)).mappings().first()
    if row is None:
        return None
    return {
        "id": row["id"],
        "name": row["name"],
        "status": row["status"],
        "owner": row["owner"],
        "created_at": row["created_at"],
        "finished_at": row["finished_at"],
        "params": row["params"],
        "template": dict(full_template(conn, workflow_id, row["template"] or {}, row["meta"])),
    }
