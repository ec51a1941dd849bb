"""Workflows in the store: submission, and the Clerk's plan-and-apply step.

The planning itself is pure (``idds_jupyter.model.plan``); this module reads a
workflow's run state, calls the planner and writes its decisions, under the
workflow row's lock and in one transaction, so a plan is applied once.
"""

from __future__ import annotations

import json
import threading
from collections import OrderedDict
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import bindparam, func, select, text, update
from sqlalchemy.engine import Connection

from idds_jupyter.model import (
    WORK_MACHINE,
    JobDep,
    Plan,
    RunState,
    Work,
    Workflow,
    WorkflowStatus,
    WorkInstance,
    WorkState,
    WorkStatus,
    plan,
)
from idds_jupyter.model.status import FAILED_LIKE, scope_outcome
from idds_jupyter.store.sql import Locked, among, for_update, is_postgres, now
from idds_jupyter.store.tables import jobs, messages, workflows, works

ACTIVE = (WorkflowStatus.NEW.value, WorkflowStatus.RUNNING.value)
# the kind of the outbound message of a workflow that ended (as the event that wakes its sender)
WORKFLOW_ENDED = "workflow.terminal"
WORK_ENDED = "work.terminal"
FILES_PROCESSED = "files.processed"


def submit(
    conn: Connection,
    wf: Workflow,
    params: Mapping[str, Any] | None = None,
    owner: str = "local",
    backend: str | None = None,
    priority: int = 0,
    cwd: str | None = None,
    open: bool = False,
) -> int:
    """Validate, then store a new workflow; nothing is written if validation fails.

    ``cwd`` is where its command jobs run (the submitter's directory, as a batch
    system's initial dir), unless a backend runs them elsewhere. An ``open``
    workflow (a Function-as-a-Task body still running) does not end until closed.
    """
    return int(_insert(conn, wf, params, owner, backend, priority, cwd, open)["id"])


def submit_planned(
    conn: Connection,
    wf: Workflow,
    params: Mapping[str, Any] | None = None,
    owner: str = "local",
    backend: str | None = None,
    priority: int = 0,
    cwd: str | None = None,
    open: bool = False,
) -> Applied:
    """:func:`submit`, then its first plan from what was just written (no work exists
    yet: nothing to read back), as the Clerk would make it."""
    row = _insert(conn, wf, params, owner, backend, priority, cwd, open, planned=True)
    return _plan_apply(conn, row, lambda: (wf, plan(wf, RunState(params=dict(row["params"])))))


def _insert(
    conn: Connection,
    wf: Workflow,
    params: Mapping[str, Any] | None,
    owner: str,
    backend: str | None,
    priority: int,
    cwd: str | None,
    open_: bool,
    planned: bool = False,
) -> dict[str, Any]:
    """The new workflow's row; ``planned``: written as its first plan (in this same
    transaction) leaves it, running and clean, so that plan need not update it."""
    merged = {**wf.parameters, **dict(params or {})}
    wf.validate(merged)
    t = now()
    template = wf.to_dict()
    row: dict[str, Any] = dict(
        name=wf.name,
        owner=owner,
        status=(WorkflowStatus.RUNNING if planned else WorkflowStatus.NEW).value,
        template=template,
        params=merged,
        meta=_initial_meta(cwd, open_, wf),
        backend=backend,
        priority=priority,
        dirty_seq=1,
        clean_seq=1 if planned else 0,
        created_at=t,
        updated_at=t,
        finished_at=None,
    )
    pk = conn.execute(_INSERT_WORKFLOW, row).inserted_primary_key
    assert pk is not None
    wid = row["id"] = int(pk[0])
    _remember(conn, wid, template, wf, (1, t))  # a later plan or growth need not read it again
    return row


_INSERT_WORKFLOW = workflows.insert()
_INSERT_WORKS = works.insert().returning(works.c.id, sort_by_parameter_order=True)


def _initial_meta(cwd: str | None, open_: bool, wf: Workflow) -> dict[str, Any]:
    # independent and n_works let a work's end skip the Clerk (store.jobs.finish_works)
    meta: dict[str, Any] = {"independent": wf.independent(), "n_works": len(wf.works)}
    if cwd:
        meta["cwd"] = cwd
    if open_:
        meta["open"] = True
    return meta


_NEW_MESSAGE = messages.insert()


def note_ended(conn: Connection, workflow_id: int, status: str) -> None:
    """A workflow ended: its outbound message (the Conductor sends it), in that transaction."""
    conn.execute(
        _NEW_MESSAGE,
        dict(
            workflow_id=workflow_id,
            kind=WORKFLOW_ENDED,
            status="new",
            payload={"workflow_id": workflow_id, "status": status},
            created_at=now(),
        ),
    )


def note_messages(conn: Connection, rows: Sequence[tuple[int, str, dict[str, Any]]]) -> None:
    """Outbound messages ``(workflow id, kind, payload)``, in the caller's transaction."""
    if rows:
        t = now()
        conn.execute(
            _NEW_MESSAGE,
            [
                dict(workflow_id=wf, kind=kind, status="new", payload=payload, created_at=t)
                for wf, kind, payload in rows
            ],
        )


def end_if_done(
    conn: Connection, workflow_id: int, meta: Mapping[str, Any], ended_now: Sequence[str] = ()
) -> str | None:
    """End a closed run of independent works whose works are all terminal; returns the
    status it ended with, else None (it goes on, is no longer active, or is left marked
    for the Clerk). ``ended_now``: the statuses of its works that just ended (a run of
    one work that just ended needs no count)."""
    if int(meta.get("n_works") or 0) == len(ended_now) == 1:
        tally = {WorkStatus(ended_now[0]): 1}
    else:
        tally = {WorkStatus(s): n for s, n in conn.execute(_WORK_TALLY, {"wf": workflow_id})}
    if sum(tally.values()) != int(meta.get("n_works") or 0):
        mark_dirty(conn, [workflow_id])  # an instance not created yet: the Clerk's case
        return None
    if not all(WORK_MACHINE.is_terminal(st) for st in tally):
        return None
    status = scope_outcome(
        tally.get(WorkStatus.FINISHED, 0), sum(tally.get(st, 0) for st in FAILED_LIKE)
    )
    if meta.get("error"):  # the body of a FaaT workflow raised
        status = WorkflowStatus.FAILED
    t = now()
    res = conn.execute(_END_RUN, {"wf": workflow_id, "status": status.value, "t": t})
    if not res.rowcount:
        return None
    note_ended(conn, workflow_id, status.value)
    return status.value


_WORK_TALLY = (
    select(works.c.status, func.count())
    .where(works.c.workflow_id == bindparam("wf"))
    .group_by(works.c.status)
)
_END_RUN = (
    update(workflows)
    .where(workflows.c.id == bindparam("wf"), workflows.c.status.in_(ACTIVE))
    .values(status=bindparam("status"), finished_at=bindparam("t"), updated_at=bindparam("t"))
)


def mark_dirty(conn: Connection, workflow_ids: Iterable[int]) -> None:
    """Ask the Clerk to re-plan these workflows."""
    wanted = sorted(set(workflow_ids))
    if wanted:
        conn.execute(_MARK_DIRTY, {"ids": wanted, "t": now()})


_MARK_DIRTY = (
    update(workflows)
    .where(among(workflows.c.id))
    .values(dirty_seq=workflows.c.dirty_seq + 1, updated_at=bindparam("t"))
)


class WorkflowClosed(ValueError):
    pass


@dataclass
class Grown:
    """What :func:`add_works` did: the new works' names, the workflow's backend, and
    the plan it applied already (None: plan the whole workflow, :func:`plan_workflow`)."""

    names: list[str]
    backend: str | None
    applied: Applied | None = None


def add_works(conn: Connection, workflow_id: int, new: list[dict[str, Any]]) -> Grown:
    """Grow a running workflow by works (validated with the rest).

    A clean open run of independent works plans just the new ones here (they read
    nothing of the others), so adding the n-th work to a FaaT run or an HPO study
    does not read and plan the n-1 before it. Such a work is kept in its own row
    (its spec holds its template), not written into the run's template again: the
    template of a run of thousands of works is not rewritten for each (see
    :func:`full_template`). Other added works are appended to the template.
    """
    row = conn.execute(_GROW.on(conn), {"wf": workflow_id}).mappings().first()
    if row is None:
        raise LookupError(f"no workflow with id {workflow_id}")
    if row["status"] not in ACTIVE:
        raise WorkflowClosed(f"workflow {workflow_id} is {row['status']}: no works can be added")
    stored, old = _template_of(conn, workflow_id, row)
    wf = old.grown(new, row["params"])
    added = wf.works[len(old.works) :]
    # the run's whole template, kept in memory: no O(n) re-serialisation
    new_dicts = [w.to_dict() for w in added]
    template = {**stored, "works": [*stored.get("works", ()), *new_dicts]}
    meta = dict(row["meta"] or {})
    clean = row["dirty_seq"] == row["clean_seq"]
    meta["independent"] = bool(meta.get("independent")) and wf.independent(since=len(old.works))
    meta["n_works"] = len(wf.works)
    dirty_seq = row["dirty_seq"] + 1
    alone = clean and bool(meta.get("open")) and meta["independent"]
    # planned alone right below, in this transaction: it is clean once this commits
    clean_seq = dirty_seq if alone else row["clean_seq"]
    t = now()
    if alone and isinstance(stored.get("works"), list):
        meta["grown"] = True  # planned below: their rows, written now, hold them
    else:  # the Clerk plans them from the template
        _append_works(conn, workflow_id, stored, template, new_dicts)
    conn.execute(
        _GROWN,
        {"wf": workflow_id, "meta": meta, "dirty_seq": dirty_seq, "clean_seq": clean_seq, "t": t},
    )
    _remember(conn, workflow_id, template, wf, (dirty_seq, t))
    out = Grown([str(w["name"]) for w in new], row["backend"])
    if alone:
        part = Workflow(
            name=wf.name,
            parameters=wf.parameters,
            parameter_specs=wf.parameter_specs,
            works=list(added),
        )
        planned = {**row, "meta": meta, "dirty_seq": dirty_seq, "clean_seq": clean_seq}
        out.applied = _plan_apply(
            conn, planned, lambda: (wf, plan(part, RunState(params=dict(row["params"] or {}))))
        )
    return out


# Not the template: a run that grows by one work at a time would read (and decode) all
# its works each time. The parsed template is kept here with the (dirty_seq, updated_at)
# its last growth wrote; any other change of the row changes them, and the template is
# read again (see _template_of).
_GROW = Locked(
    select(
        workflows.c.id,
        workflows.c.owner,
        workflows.c.params,
        workflows.c.status,
        workflows.c.meta,
        workflows.c.backend,
        workflows.c.dirty_seq,
        workflows.c.clean_seq,
        workflows.c.finished_at,
        workflows.c.updated_at,
    ).where(workflows.c.id == bindparam("wf"))
)
_GROWN = (
    update(workflows)
    .where(workflows.c.id == bindparam("wf"))
    .values(
        meta=bindparam("meta"),
        dirty_seq=bindparam("dirty_seq"),
        clean_seq=bindparam("clean_seq"),
        updated_at=bindparam("t"),
    )
)
_TEMPLATE = select(workflows.c.template).where(workflows.c.id == bindparam("wf"))
# Appending in the database (its JSON functions, in C) instead of writing the whole
# template again from Python.
_APPEND_SQLITE = text(
    "UPDATE workflows SET template = json_insert(template, '$.works[#]', json(:w)) WHERE id = :wf"
)
_APPEND_PG = text(
    "UPDATE workflows SET template = jsonb_set(template, '{works}', "
    "(template -> 'works') || CAST(:w AS jsonb)) WHERE id = :wf"
)
_SET_TEMPLATE = (
    update(workflows)
    .where(workflows.c.id == bindparam("wf"))
    .values(template=bindparam("template"))
)


def _template_of(
    conn: Connection, workflow_id: int, row: Any
) -> tuple[Mapping[str, Any], Workflow]:
    """The run's whole template and its parsed workflow: from memory when this process
    wrote the row last (same ``dirty_seq`` and ``updated_at``), else read."""
    key = (str(conn.engine.url), int(workflow_id))
    with _parsed_lock:
        hit = _parsed.get(key)
        version = _versions.get(key)
    if hit is not None and version == (row["dirty_seq"], row["updated_at"]):
        return hit
    stored = conn.execute(_TEMPLATE, {"wf": workflow_id}).scalar_one()
    whole = full_template(conn, workflow_id, stored, row["meta"])
    return whole, parsed_template(conn, workflow_id, whole)


def full_template(
    conn: Connection, workflow_id: int, stored: Mapping[str, Any], meta: Mapping[str, Any] | None
) -> Mapping[str, Any]:
    """The template a run has now: the one submitted, plus the works added to it since
    (``meta["grown"]``), in the order they were added, read from their rows."""
    if not (meta or {}).get("grown"):
        return stored
    declared = {w.get("name") for w in stored.get("works") or () if isinstance(w, Mapping)}
    added: dict[str, Any] = {}
    for name, spec in conn.execute(_ADDED_WORKS, {"wf": workflow_id}):
        spec = spec or {}
        # instances of declared works (loops, inner works of sub-workflows) are not added
        if name not in declared and name not in added and spec.get("parent") is None:
            added[name] = spec.get("work") or {"name": name}
    return {**stored, "works": [*(stored.get("works") or ()), *added.values()]}


_ADDED_WORKS = (
    select(works.c.template_name, works.c.spec)
    .where(works.c.workflow_id == bindparam("wf"))
    .order_by(works.c.id)
)


def _append_works(
    conn: Connection,
    workflow_id: int,
    stored: Mapping[str, Any],
    template: Mapping[str, Any],
    new: list[dict[str, Any]],
) -> None:
    if not isinstance(stored.get("works"), list):
        conn.execute(_SET_TEMPLATE, {"wf": workflow_id, "template": template})
    elif is_postgres(conn):
        conn.execute(_APPEND_PG, {"wf": workflow_id, "w": json.dumps(new)})
    else:
        for w in new:
            conn.execute(_APPEND_SQLITE, {"wf": workflow_id, "w": json.dumps(w)})


# Parsed templates: the Clerk plans a growing FaaT run after every work it adds,
# and parsing hundreds of works each time would dominate. Keyed by database and
# workflow id, checked against the stored template itself (dict equality runs in
# C, several times faster than hashing its JSON).
_parsed: OrderedDict[tuple[str, int], tuple[Mapping[str, Any], Workflow]] = OrderedDict()
_versions: dict[tuple[str, int], tuple[int, float]] = {}  # what add_works wrote last
_parsed_lock = threading.Lock()


def parsed_template(conn: Connection, workflow_id: int, template: Mapping[str, Any]) -> Workflow:
    """``Workflow.from_dict(template)``, cached while the stored template is unchanged."""
    key = (str(conn.engine.url), int(workflow_id))
    with _parsed_lock:
        hit = _parsed.get(key)
    if hit is not None and hit[0] == template:
        with _parsed_lock:
            if key in _parsed:
                _parsed.move_to_end(key)
        return hit[1]
    wf = Workflow.from_dict(template)
    _remember(conn, workflow_id, template, wf)
    return wf


def _remember(
    conn: Connection,
    workflow_id: int,
    template: Mapping[str, Any],
    wf: Workflow,
    version: tuple[int, float] | None = None,
) -> None:
    key = (str(conn.engine.url), int(workflow_id))
    with _parsed_lock:
        _parsed[key] = (template, wf)
        _parsed.move_to_end(key)
        if version is not None:
            _versions[key] = version
        else:
            _versions.pop(key, None)
        while len(_parsed) > 256:
            old, _ = _parsed.popitem(last=False)
            _versions.pop(old, None)


def close(
    conn: Connection,
    workflow_id: int,
    result: Any = None,
    result_blob: str | None = None,
    error: str | None = None,
    traceback: str | None = None,
) -> tuple[str, bool]:
    """The body of an open workflow ended: record its result (or error); let it finish.

    Returns the run's status and whether this close ended it. A run of independent
    works (a FaaT body, an HPO study) ends here when its works have all ended, else
    where its last work ends: nothing is left for the Clerk to plan. Another run is
    marked for the Clerk.
    """
    row = conn.execute(
        for_update(
            conn, select(workflows.c.meta, workflows.c.status).where(workflows.c.id == workflow_id)
        )
    ).first()
    if row is None:
        raise LookupError(f"no workflow with id {workflow_id}")
    meta = dict(row.meta or {})
    meta.update(
        open=False, result=result, result_blob=result_blob, error=error, traceback=traceback
    )
    values: dict[str, Any] = {"meta": meta, "updated_at": now()}
    independent = bool(meta.get("independent"))
    if not independent:
        values["dirty_seq"] = workflows.c.dirty_seq + 1
    if error:
        values["error"] = error
    conn.execute(update(workflows).where(workflows.c.id == workflow_id).values(**values))
    if independent and row.status in ACTIVE:
        ended = end_if_done(conn, workflow_id, meta)
        if ended is not None:
            return ended, True
    return str(row.status), False


class StoredWorkState(WorkState):
    """A work instance whose result is read from its jobs only when an expression needs it."""

    def __init__(
        self, conn: Connection, work_id: int, name: str, status: str, kind: str, cached: Any = None
    ) -> None:
        self._conn, self._work_id, self._kind, self._cached = conn, work_id, kind, cached
        self._loaded = cached is not None
        self.name = name
        self.status = WorkStatus(status)

    @property
    def result(self) -> Any:
        if not self._loaded:
            self._cached = work_result(self._conn, self._work_id)
            self._loaded = True
        return self._cached

    @result.setter
    def result(self, value: Any) -> None:
        self._cached, self._loaded = value, True


def work_result(conn: Connection, work_id: int) -> Any:
    """A 1-job work's result is its job's; an n-job work's is the list in job order."""
    rows = [
        r[0]
        for r in conn.execute(
            select(jobs.c.result).where(jobs.c.work_id == work_id).order_by(jobs.c.idx)
        )
    ]
    if len(rows) == 1:
        return rows[0]
    return rows


@dataclass
class NewWork:
    """A work row a plan just inserted (what the Transformer would read back to expand it)."""

    id: int
    workflow_id: int
    name: str
    kind: str
    spec: dict[str, Any]
    backend: str | None
    #: its run's works read nothing of each other: recording a job's success releases nothing
    independent: bool = False
    #: the run's owner (its jobs run in that owner's workers only)
    owner: str | None = None


@dataclass
class Applied:
    workflow_id: int
    created: list[str] = field(default_factory=list)
    new_job_works: int = 0
    status: str | None = None
    new_works: list[NewWork] = field(default_factory=list)  # of job kinds, status new


def plan_next(conn: Connection, owner: str) -> Applied | None:
    """Clerk: take one dirty workflow (row-locked), plan it, apply the plan."""
    row = conn.execute(_NEXT_DIRTY.on(conn)).mappings().first()
    if row is None:
        return None
    return plan_row(conn, row)


_NEXT_DIRTY = Locked(
    select(workflows)
    .where(workflows.c.status.in_(ACTIVE), workflows.c.dirty_seq > workflows.c.clean_seq)
    .order_by(workflows.c.priority.desc(), workflows.c.id)
    .limit(1),
    skip_locked=True,
)
_WORKFLOW = select(workflows).where(workflows.c.id == bindparam("wf"))


def plan_workflow(conn: Connection, workflow_id: int) -> Applied:
    """Plan one workflow now (its first plan, at submission): the Clerk's step, inline."""
    row = conn.execute(_WORKFLOW, {"wf": workflow_id}).mappings().one()
    return plan_row(conn, row)


def plan_row(conn: Connection, row: Mapping[Any, Any]) -> Applied:
    def planned() -> tuple[Workflow, Plan]:
        wf = parsed_template(
            conn, row["id"], full_template(conn, row["id"], row["template"], row["meta"])
        )
        return wf, plan(wf, _run_state(conn, row))

    return _plan_apply(conn, row, planned)


def _plan_apply(
    conn: Connection, row: Mapping[Any, Any], planned: Callable[[], tuple[Workflow, Plan]]
) -> Applied:
    """Apply the plan ``planned`` makes (the workflow and its plan); a plan that cannot be
    made fails the workflow."""
    out = Applied(workflow_id=row["id"])
    try:
        wf, p = planned()
        applied = _apply(conn, row, wf, p, out)
    except Exception as exc:  # a template that cannot be planned fails its workflow, loudly
        conn.execute(
            update(workflows)
            .where(workflows.c.id == row["id"])
            .values(
                status=WorkflowStatus.FAILED.value,
                error=f"{type(exc).__name__}: {exc}",
                clean_seq=row["dirty_seq"],
                finished_at=now(),
                updated_at=now(),
            )
        )
        out.status = WorkflowStatus.FAILED.value
        note_ended(conn, row["id"], out.status)
        return out
    return applied


def _run_state(conn: Connection, row: Mapping[Any, Any]) -> RunState:
    meta = row["meta"] or {}
    states: dict[str, WorkState] = {}
    for w in conn.execute(_WORK_STATES, {"wf": row["id"]}):
        states[w.name] = StoredWorkState(conn, w.id, w.name, w.status, w.kind, w.result)
    return RunState(
        params=dict(row["params"] or {}),
        works=states,
        conditions=dict(meta.get("conditions", {})),
        loops=dict(meta.get("loops", {})),
    )


_WORK_STATES = select(works.c.id, works.c.name, works.c.status, works.c.kind, works.c.result).where(
    works.c.workflow_id == bindparam("wf")
)


def instance_spec(inst: WorkInstance) -> dict[str, Any]:
    """The JSON the Transformer and Carrier need to run an instance's jobs."""
    w = inst.work
    return {
        "work": {k: v for k, v in w.to_dict().items() if k != "workflow"},
        "function": w.function,
        "payload": w.payload,
        "command": inst.command,
        "parameters": inst.parameters,
        "kwargs_list": inst.kwargs_list,
        "n_jobs": w.n_jobs,
        "input_dataset": w.input_dataset,
        "depends_on": list(inst.depends_on),
        "job_deps": [[p, d.to_dict()] for p, d in inst.job_deps],
        "env": dict(w.env or {}),
        "timeout_s": w.timeout_s,
        "resources": dict(w.resources or {}),
        "loop": inst.loop,
        "iteration": inst.iteration,
        "context": inst.context,
        "job_parameters": inst.job_parameters,
        "parent": inst.parent,
    }


def spec_instance(spec: dict[str, Any], name: str) -> WorkInstance:
    """The instance back from its stored spec, for rendering its jobs (``render_job``)."""
    return WorkInstance(
        name=name,
        work=Work.from_dict(spec["work"]),
        parameters=spec.get("parameters") or {},
        command=spec.get("command"),
        kwargs_list=spec.get("kwargs_list"),
        depends_on=spec.get("depends_on") or [],
        job_deps=[(p, JobDep.from_dict(d)) for p, d in spec.get("job_deps") or []],
        loop=spec.get("loop"),
        iteration=spec.get("iteration"),
        job_parameters=spec.get("job_parameters") or {},
        context=spec.get("context") or {},
        parent=spec.get("parent"),
    )


def _kind(inst: WorkInstance) -> str:
    w = inst.work
    if w.workflow is not None:
        return "workflow"
    return "function" if (w.function or w.payload) else "command"


def _apply(
    conn: Connection, row: Mapping[Any, Any], wf: Workflow, p: Plan, out: Applied
) -> Applied:
    t = now()
    wf_id = row["id"]
    rows = []
    cwd = (row["meta"] or {}).get("cwd")
    for inst in p.create:
        kind = _kind(inst)
        status = WorkStatus(inst.status).value
        spec = instance_spec(inst)
        if cwd:
            spec["cwd"] = cwd
        rows.append(
            {
                "workflow_id": wf_id,
                "name": inst.name,
                "template_name": inst.work.name,
                "kind": kind,
                "status": status,
                "spec": spec,
                "backend": inst.work.backend or row["backend"],
                "retries": int(inst.work.retries or 0),
                "loop": inst.loop,
                "iteration": inst.iteration,
                "reason": getattr(inst, "reason", None),
                "created_at": t,
                "updated_at": t,
                "finished_at": t if status == WorkStatus.SKIPPED.value else None,
            }
        )
        out.created.append(inst.name)
        if kind != "workflow" and status == WorkStatus.NEW.value:
            out.new_job_works += 1
    if rows:
        ids = conn.execute(_INSERT_WORKS, rows).scalars().all()
        alone = bool((row["meta"] or {}).get("independent"))
        owner = row.get("owner")
        out.new_works = [
            NewWork(i, wf_id, r["name"], r["kind"], r["spec"], r["backend"], alone, owner)
            for i, r in zip(ids, rows, strict=True)
            if r["kind"] != "workflow" and r["status"] == WorkStatus.NEW.value
        ]
    for name, status in (getattr(p, "status_updates", None) or {}).items():
        conn.execute(
            update(works)
            .where(
                works.c.workflow_id == wf_id,
                works.c.name == name,
                works.c.status != WorkStatus(status).value,
            )
            .values(
                status=WorkStatus(status).value,
                updated_at=t,
                finished_at=t if WorkStatus(status).value in _WORK_TERMINAL else None,
            )
        )
    meta = dict(row["meta"] or {})
    if p.conditions:
        meta["conditions"] = {**meta.get("conditions", {}), **p.conditions}
    if p.loops:
        meta["loops"] = {**meta.get("loops", {}), **p.loops}
    if getattr(p, "loop_info", None):
        meta["loop_info"] = {**meta.get("loop_info", {}), **p.loop_info}
    values: dict[str, Any] = {
        "wf": wf_id,
        "meta": meta,
        "clean_seq": row["dirty_seq"],
        "t": t,
        "status": row["status"],
        "finished_at": row["finished_at"],
    }
    same_meta = meta == (row["meta"] or {})
    if row["status"] == WorkflowStatus.NEW.value:
        values["status"] = WorkflowStatus.RUNNING.value
    if p.status is not None and not meta.get("open"):  # an open body may still add works
        status = WorkflowStatus(p.status).value
        if meta.get("error"):  # the workflow body itself raised
            status = WorkflowStatus.FAILED.value
        values["status"] = status
        values["finished_at"] = t
        out.status = status
    if not (
        same_meta
        and values["status"] == row["status"]
        and out.status is None
        and row["dirty_seq"] == row.get("clean_seq")
    ):
        conn.execute(_PLANNED, values)
    if out.status is not None:
        note_ended(conn, wf_id, out.status)
    return out


# The row was read in this transaction (and locked): unchanged fields are written back as read.
_PLANNED = (
    update(workflows)
    .where(workflows.c.id == bindparam("wf"))
    .values(
        meta=bindparam("meta"),
        clean_seq=bindparam("clean_seq"),
        updated_at=bindparam("t"),
        status=bindparam("status"),
        finished_at=bindparam("finished_at"),
    )
)


_WORK_TERMINAL = {
    s.value
    for s in (
        WorkStatus.FINISHED,
        WorkStatus.SUBFINISHED,
        WorkStatus.FAILED,
        WorkStatus.ABORTED,
        WorkStatus.SKIPPED,
    )
}
