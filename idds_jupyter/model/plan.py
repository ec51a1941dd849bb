"""Run-time planning — the core of the Clerk, as a pure function.

The orchestration agents keep the dynamic part of a workflow (work instances,
evaluated conditions, loop iterations) in the store, and call :func:`plan`
whenever something changed. The planner answers what to create now, which
conditions it evaluated, which loops advanced, the statuses of container
instances (sub-workflows and loops) and, once everything is at rest, the
workflow's terminal status. It reads nothing but its arguments, so it is
idempotent: with the same state it returns the same plan and never asks twice
for an instance that already exists.

Instance names: top-level work ``train``; work ``inner`` of sub-workflow work
``sub`` is ``sub.inner``; body work ``step`` of loop ``refine`` in iteration
``i`` (0-based) is ``refine[i].step``; these compose (``sub.refine[2].step``).
Conditions and loops are named the same way.

Container statuses: a sub-workflow instance is created with status RUNNING
(its inner works are created alongside it; agents create no jobs for it) and
its later status is reported in :attr:`Plan.status_updates`. A loop has no
WorkInstance; its status is reported in ``status_updates`` too (and
:attr:`Plan.loop_info` when it ends). If the agents store loop and sub-workflow
rows in ``RunState.works`` under their instance names, an update is reported
only when it differs from the stored status (always a legal WORK_MACHINE step;
from NEW the planner first asks for RUNNING, so apply and plan again);
otherwise loop updates are repeated on every call.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

from .analysis import JOB_NAMES, Analysis, analyze
from .errors import ExpressionError, TemplateError
from .limits import RUNTIME
from .parameter import placeholders, substitute
from .shell import render_command
from .status import FAILED_LIKE, WORK_MACHINE, WorkflowStatus, WorkStatus, scope_outcome
from .work import JobDep, Work
from .workflow import Workflow

__all__ = ["Plan", "RunState", "WorkInstance", "WorkState", "plan", "render_job"]

_TO_WORK = {
    WorkflowStatus.FINISHED: WorkStatus.FINISHED,
    WorkflowStatus.SUBFINISHED: WorkStatus.SUBFINISHED,
    WorkflowStatus.FAILED: WorkStatus.FAILED,
    WorkflowStatus.ABORTED: WorkStatus.ABORTED,
}


@dataclass
class WorkState:
    """One existing work instance as the store sees it.

    ``result`` is JSON: for a one-job work that job's result, for n jobs the list
    of job results in job order. It is read only when an expression needs it,
    so the store may make it a lazily computed property.
    """

    name: str
    status: WorkStatus
    result: Any = None


@dataclass
class RunState:
    """The dynamic part of one workflow run, as input to :func:`plan`."""

    params: dict[str, Any]
    works: dict[str, WorkState] = field(default_factory=dict)
    conditions: dict[str, bool] = field(default_factory=dict)
    loops: dict[str, int] = field(default_factory=dict)


@dataclass
class WorkInstance:
    """A work instance the agents must create now.

    ``parameters`` are fully substituted; ``job_parameters`` are the work
    parameters that read per-job names (``job_index``, ``file``, sweep keys) and
    ``command`` still holds those per-job placeholders — :func:`render_job`
    finishes both for one job using ``context`` (the values those placeholders
    read besides per-job names). ``status`` is NEW, SKIPPED (created only to show
    a branch not taken; ``reason`` says why), RUNNING for a sub-workflow
    container, or FAILED when its parameters could not be resolved (``reason``).
    """

    name: str
    work: Work
    parameters: dict[str, Any]
    command: str | list[str] | None
    kwargs_list: list[dict[str, Any]] | None
    depends_on: list[str]
    job_deps: list[tuple[str, JobDep]]
    loop: str | None = None
    iteration: int | None = None
    status: WorkStatus = WorkStatus.NEW
    reason: str | None = None
    job_parameters: dict[str, Any] = field(default_factory=dict)
    context: dict[str, Any] = field(default_factory=dict)
    parent: str | None = None

    @property
    def is_container(self) -> bool:
        """True for a sub-workflow instance: no jobs, status derived from inner works."""
        return self.work.workflow is not None


@dataclass
class Plan:
    """What :func:`plan` asks the agents to do now."""

    create: list[WorkInstance] = field(default_factory=list)
    conditions: dict[str, bool] = field(default_factory=dict)
    loops: dict[str, int] = field(default_factory=dict)
    status: WorkflowStatus | None = None
    loop_info: dict[str, dict[str, Any]] = field(default_factory=dict)
    status_updates: dict[str, WorkStatus] = field(default_factory=dict)
    errors: dict[str, str] = field(default_factory=dict)

    @property
    def empty(self) -> bool:
        """True when there is nothing to do."""
        return not (
            self.create or self.conditions or self.loops or self.status_updates or self.status
        )


def plan(workflow: Workflow, state: RunState) -> Plan:
    """Decide what to create now from the template and the current run state."""
    return _Planner(state).run(workflow)


def render_job(
    inst: WorkInstance,
    kwargs_item: Mapping[str, Any] | None = None,
    job_index: int = 0,
    file: str | None = None,
) -> dict[str, Any]:
    """Finish the substitution for one job: ``{"command", "function", "kwargs"}``.

    ``kwargs`` (the function's keyword arguments, also kept for command jobs) is
    the work parameters overlaid with this job's sweep item.
    """
    ns: dict[str, Any] = dict(inst.context)
    ns.update(inst.parameters)
    ns["job_index"] = job_index
    if file is not None:
        ns["file"] = file
    item = dict(kwargs_item or {})
    ns.update(item)
    job_params = {k: substitute(v, ns) for k, v in inst.job_parameters.items()}
    ns.update(job_params)
    command: str | list[str] | None = None
    if inst.command is not None:  # values quoted in a string, argv items in a list
        command = render_command(inst.command, ns)
    kwargs = {**inst.parameters, **job_params, **item}
    return {"command": command, "function": inst.work.function, "kwargs": kwargs}


# -- internals ------------------------------------------------------------------------
class _Scope:
    """One naming scope: a workflow (or sub-workflow) level, or one loop iteration of it."""

    def __init__(
        self,
        planner: _Planner,
        wf: Workflow,
        an: Analysis,
        prefix: str,
        params: dict[str, Any],
        parent: str | None = None,
        loop: str | None = None,
        iteration: int | None = None,
        force_skip: str | None = None,
    ) -> None:
        self.planner = planner
        self.wf = wf
        self.an = an
        self.prefix = prefix
        self.params = params
        self.parent = parent
        self.loop = loop
        self.iteration = iteration
        self.force_skip = force_skip
        self.iter_prefix = f"{prefix}{loop}[{iteration}]." if loop is not None else prefix
        self.ns = _Namespace(self)

    def inst(self, name: str) -> str:
        """Instance name of element ``name`` as seen from this scope."""
        lp = self.an.body_of.get(name)
        if lp is None:
            return self.prefix + name
        if lp == self.loop:
            return self.iter_prefix + name
        n = self.planner.iterations(self.prefix + lp)
        return f"{self.prefix}{lp}[{max(n - 1, 0)}].{name}"

    def iteration_scope(self, loop: str, i: int, force_skip: str | None = None) -> _Scope:
        return _Scope(
            self.planner,
            self.wf,
            self.an,
            self.prefix,
            self.params,
            self.parent,
            loop,
            i,
            force_skip,
        )

    def edges(self, name: str) -> dict[str, str]:
        return self.an.sched[name] if name in self.an.sched else self.an.scoped[name]


class _WorkRecord(Mapping[str, Any]):
    """What a work name means in an expression: name, status and (lazily) result."""

    __slots__ = ("_planner", "_inst")
    _KEYS = ("name", "status", "result")

    def __init__(self, planner: _Planner, inst: str) -> None:
        self._planner = planner
        self._inst = inst

    def __getitem__(self, key: str) -> Any:
        if key == "name":
            return self._inst
        if key == "status":
            st = self._planner.work_status(self._inst)
            return None if st is None else str(st)
        if key == "result":
            ws = self._planner.state.works.get(self._inst)
            return None if ws is None else ws.result
        raise KeyError(key)

    def __iter__(self) -> Iterator[str]:
        return iter(self._KEYS)

    def __len__(self) -> int:
        return len(self._KEYS)


class _Previous(Mapping[str, Any]):
    """``previous``: body names of the loop mapped to the previous iteration's instances."""

    def __init__(self, scope: _Scope) -> None:
        self._scope = scope
        assert scope.loop is not None and scope.iteration is not None
        self._members = scope.an.loops[scope.loop].works
        self._prefix = f"{scope.prefix}{scope.loop}[{scope.iteration - 1}]."

    def __getitem__(self, key: str) -> Any:
        if key not in self._members:
            raise KeyError(key)
        return self._scope.planner.record(self._scope.an.kinds[key], self._prefix + key)

    def __iter__(self) -> Iterator[str]:
        return iter(self._members)

    def __len__(self) -> int:
        return len(self._members)


class _Namespace(Mapping[str, Any]):
    """Names visible to expressions in a scope, built lazily on lookup."""

    def __init__(self, scope: _Scope) -> None:
        self._scope = scope

    def __getitem__(self, key: str) -> Any:
        sc = self._scope
        kind = sc.an.kinds.get(key)
        if kind is not None:
            return sc.planner.record(kind, sc.inst(key))
        if key in sc.params:
            return sc.params[key]
        if key == "params":
            return sc.params
        if sc.loop is not None and sc.iteration is not None:
            if key == "iteration":
                return sc.iteration
            if key == "previous":
                return _Previous(sc) if sc.iteration > 0 else None
        raise KeyError(key)

    def _keys(self) -> list[str]:
        sc = self._scope
        keys = [*sc.an.kinds, *sc.params, "params"]
        if sc.loop is not None:
            keys += ["iteration", "previous"]
        return list(dict.fromkeys(keys))

    def __iter__(self) -> Iterator[str]:
        return iter(self._keys())

    def __len__(self) -> int:
        return len(self._keys())


class _Overlay(Mapping[str, Any]):
    """``top`` over ``base`` (work parameters over the scope namespace)."""

    def __init__(self, top: Mapping[str, Any], base: Mapping[str, Any]) -> None:
        self._top = top
        self._base = base

    def __getitem__(self, key: str) -> Any:
        if key in self._top:
            return self._top[key]
        return self._base[key]

    def __iter__(self) -> Iterator[str]:
        return iter(dict.fromkeys([*self._top, *self._base]))

    def __len__(self) -> int:
        return len(dict.fromkeys([*self._top, *self._base]))


def _plain(value: Any) -> Any:
    """Materialise lazy records into plain JSON-like data (for WorkInstance.context)."""
    if isinstance(value, Mapping):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    return value


class _Planner:
    def __init__(self, state: RunState) -> None:
        self.state = state
        self.out = Plan()
        self.created: dict[str, WorkInstance] = {}
        self.derived: dict[str, WorkStatus] = {}  # sub-workflow and loop instances, this call
        self.cond: dict[str, bool | str] = {}  # True/False, "skip" or "error"
        self.loop_n: dict[str, int] = {}
        self.converged: dict[str, bool] = {}
        self._analyses: dict[int, Analysis] = {}

    # -- entry -------------------------------------------------------------------
    def run(self, wf: Workflow) -> Plan:
        sc = _Scope(self, wf, self.analysis(wf, ""), "", dict(self.state.params))
        self.out.status = self.run_scope(sc, sc.an.order)
        return self.out

    def analysis(self, wf: Workflow, qual: str) -> Analysis:
        key = id(wf)
        if key not in self._analyses:
            self._analyses[key] = analyze(wf, qual)
        return self._analyses[key]

    # -- state lookups -------------------------------------------------------------
    def work_status(self, inst: str) -> WorkStatus | None:
        if inst in self.derived:
            return self.derived[inst]
        if inst in self.created:
            return self.created[inst].status
        ws = self.state.works.get(inst)
        return None if ws is None else WorkStatus(ws.status)

    def iterations(self, loop_inst: str) -> int:
        if loop_inst in self.loop_n:
            return self.loop_n[loop_inst]
        return self.out.loops.get(loop_inst, self.state.loops.get(loop_inst, 0))

    def cond_value(self, inst: str) -> bool | str | None:
        if inst in self.cond:
            return self.cond[inst]
        if inst in self.state.conditions:
            return bool(self.state.conditions[inst])
        return None

    def record(self, kind: str, inst: str) -> Any:
        if kind == "work":
            return _WorkRecord(self, inst)
        if kind == "condition":
            v = self.cond_value(inst)
            return v if isinstance(v, bool) else None
        st = self.derived.get(inst)
        return {
            "name": inst,
            "status": None if st is None else str(st),
            "iterations": self.iterations(inst),
            "converged": self.converged.get(inst, False),
        }

    # -- dependencies --------------------------------------------------------------
    def edge_state(self, sc: _Scope, up: str, kind: str) -> tuple[str, str]:
        """``("ok"|"wait"|"block", reason)`` for one dependency edge."""
        up_kind = sc.an.kinds[up]
        inst = sc.inst(up)
        if up_kind == "condition":
            v = self.cond_value(inst)
            if v is None:
                return "wait", ""
            if v == "skip" or v == "error":
                return "block", f"condition {inst!r} was {'skipped' if v == 'skip' else 'in error'}"
            if kind == "true" and v is not True:
                return "block", f"condition {inst!r} is false"
            if kind == "false" and v is not False:
                return "block", f"condition {inst!r} is true"
            return "ok", ""
        if up_kind == "loop":
            st = self.derived.get(inst)
            if st is None or st == WorkStatus.RUNNING:
                return "wait", ""
            if st == WorkStatus.FINISHED or (kind == "ref" and st != WorkStatus.SKIPPED):
                return "ok", ""
            return "block", f"loop {inst!r} {st}"
        st = self.work_status(inst)
        if kind == "job_dep":
            if st is None:
                return "wait", ""
            if st in (WorkStatus.SKIPPED, WorkStatus.FAILED, WorkStatus.ABORTED):
                return "block", f"job-level parent {inst!r} {st}"
            return "ok", ""
        if st is None or not WORK_MACHINE.is_terminal(st):
            return "wait", ""
        if kind == "on_failure":
            if st in (WorkStatus.FAILED, WorkStatus.SUBFINISHED):
                return "ok", ""
            return "block", f"{inst!r} {st}, its on_failure handler is not needed"
        if kind == "ref":
            return ("block", f"{inst!r} skipped") if st == WorkStatus.SKIPPED else ("ok", "")
        if st == WorkStatus.FINISHED:
            return "ok", ""
        return "block", f"dependency {inst!r} {st}"

    def decide(self, sc: _Scope, name: str) -> tuple[str, str]:
        if sc.force_skip is not None:
            return "block", sc.force_skip
        waiting = False
        for up, kind in sc.edges(name).items():
            verdict, reason = self.edge_state(sc, up, kind)
            if verdict == "block":
                return verdict, reason
            waiting = waiting or verdict == "wait"
        return ("wait" if waiting else "ok"), ""

    # -- scopes ----------------------------------------------------------------------
    def run_scope(self, sc: _Scope, names: list[str]) -> WorkflowStatus | None:
        for name in names:
            kind = sc.an.kinds[name]
            if kind == "work":
                self.process_work(sc, name)
            elif kind == "condition":
                self.process_condition(sc, name)
            else:
                self.process_loop(sc, name)
        return self.scope_status(sc, names)

    def scope_status(self, sc: _Scope, names: list[str]) -> WorkflowStatus | None:
        """Terminal status of a scope once all its elements are at rest, else None."""
        finished = 0
        failures: list[str] = []
        for name in names:
            kind = sc.an.kinds[name]
            inst = sc.inst(name)
            if kind == "condition":
                v = self.cond_value(inst)
                if v is None:
                    return None
                if v == "error":
                    failures.append(name)
                continue
            st = self.work_status(inst)
            if st is None or not WORK_MACHINE.is_terminal(st):
                return None
            if st == WorkStatus.FINISHED:
                finished += 1
            elif st in FAILED_LIKE:
                failures.append(name)
        unhandled = [f for f in failures if not self.handled(sc, f)]
        return scope_outcome(finished, len(unhandled))

    def handled(self, sc: _Scope, name: str) -> bool:
        handlers = sc.an.handlers.get(name)
        return bool(handlers) and all(
            self.work_status(sc.inst(h)) == WorkStatus.FINISHED for h in handlers or ()
        )

    # -- works -----------------------------------------------------------------------
    def process_work(self, sc: _Scope, name: str) -> None:
        w = sc.an.works[name]
        inst = sc.inst(name)
        status = self.work_status(inst)
        resolved: WorkInstance | None = None
        if status is None:
            verdict, reason = self.decide(sc, name)
            if verdict == "wait":
                return
            if verdict == "block":
                self.add(self.skipped(sc, w, inst, reason))
                return
            resolved = self.resolve(sc, w, inst)
            self.add(resolved)
            status = resolved.status
        if w.workflow is not None and status not in (WorkStatus.SKIPPED, None):
            if resolved is None:  # stored earlier: re-derive its inner scope (deterministic)
                resolved = self.resolve(sc, w, inst)
            if resolved.reason is None:
                self.process_sub(sc, w, inst, resolved)

    def add(self, wi: WorkInstance) -> None:
        self.created[wi.name] = wi
        self.out.create.append(wi)

    def base_instance(self, sc: _Scope, w: Work, inst: str) -> WorkInstance:
        depends = [sc.inst(up) for up, kind in sc.edges(w.name).items() if kind != "job_dep"]
        job_deps = [(sc.inst(jd.work), jd) for jd in w.job_deps]
        return WorkInstance(
            name=inst,
            work=w,
            parameters={},
            command=None,
            kwargs_list=None,
            depends_on=depends,
            job_deps=job_deps,
            loop=(sc.prefix + sc.loop) if sc.loop is not None else None,
            iteration=sc.iteration,
            parent=sc.parent,
        )

    def skipped(self, sc: _Scope, w: Work, inst: str, reason: str) -> WorkInstance:
        wi = self.base_instance(sc, w, inst)
        wi.parameters = dict(w.parameters)
        wi.command = w.command
        wi.kwargs_list = w.kwargs_list if isinstance(w.kwargs_list, list) else None
        wi.status = WorkStatus.SKIPPED
        wi.reason = reason
        return wi

    def resolve(self, sc: _Scope, w: Work, inst: str) -> WorkInstance:
        """Substitute what is known now; per-job placeholders are left for render_job."""
        wi = self.base_instance(sc, w, inst)
        if w.workflow is not None:
            wi.status = WorkStatus.RUNNING
        try:
            self._resolve_into(sc, w, wi)
        except (ExpressionError, TemplateError) as exc:
            wi.status = WorkStatus.FAILED
            wi.reason = f"cannot resolve work {inst!r}: {exc}"
            wi.parameters = dict(w.parameters)
            wi.command = w.command
            self.out.errors[inst] = wi.reason
        return wi

    def _resolve_into(self, sc: _Scope, w: Work, wi: WorkInstance) -> None:
        ns = sc.ns
        kl: list[dict[str, Any]] | None = None
        if isinstance(w.kwargs_list, str):
            value = substitute(w.kwargs_list, ns)
            if isinstance(value, tuple):
                value = list(value)
            if not isinstance(value, list) or not all(isinstance(x, Mapping) for x in value):
                raise TemplateError(
                    wi.name,
                    "kwargs_list",
                    f"{w.kwargs_list!r} must give a list of dicts, got {_short(value)}",
                )
            most = RUNTIME.max_jobs_per_work
            if most and len(value) > most:
                raise TemplateError(
                    wi.name,
                    "kwargs_list",
                    f"{w.kwargs_list!r} gives {len(value)} jobs, over "
                    f"the limit of {most} (max_jobs_per_work)",
                )
            kl = [dict(_plain(x)) for x in value]
        elif w.kwargs_list is not None:
            kl = [dict(substitute(item, ns)) for item in w.kwargs_list]
        wi.kwargs_list = kl
        per_job = set(JOB_NAMES)
        for item in kl or ():
            per_job |= set(item)
        deferred_names: set[str] = set()
        for key, value in w.parameters.items():
            names = {n for e in placeholders(value) for n in e.names}
            if names & per_job or any(n not in ns for n in names):
                wi.job_parameters[key] = value
                deferred_names |= names
            else:
                wi.parameters[key] = substitute(value, ns)
        if w.command is not None:
            local = _Overlay(wi.parameters, ns)
            defer = per_job | set(wi.job_parameters)
            wi.command = render_command(w.command, local, defer)
            for e in placeholders(w.command):
                if e.names & defer or any(n not in local for n in e.names):
                    deferred_names |= e.names
        skip = per_job | set(wi.parameters) | set(wi.job_parameters)
        for n in sorted(deferred_names - skip):
            if n in ns:
                wi.context[n] = _plain(ns[n])

    def process_sub(self, sc: _Scope, w: Work, inst: str, wi: WorkInstance) -> None:
        assert w.workflow is not None
        sub = w.workflow
        try:
            params = sub.resolve_params(wi.parameters)
            an = self.analysis(sub, inst + ".")
        except TemplateError as exc:
            self.set_container(inst, WorkStatus.FAILED)
            self.out.errors[inst] = str(exc)
            return
        ssc = _Scope(self, sub, an, inst + ".", params, parent=inst)
        st = self.run_scope(ssc, an.order)
        self.set_container(inst, WorkStatus.RUNNING if st is None else _TO_WORK[st])

    def set_container(
        self, inst: str, target: WorkStatus, info: dict[str, Any] | None = None
    ) -> None:
        """Record the derived status of a sub-workflow or loop instance and report changes."""
        ws = self.state.works.get(inst)
        if ws is None:
            self.derived[inst] = target
            if inst in self.created:
                self.created[inst].status = target  # not yet stored: create it with this status
            elif WORK_MACHINE.is_terminal(target):
                self.out.status_updates[inst] = target
                if info is not None:
                    self.out.loop_info[inst] = info
            return
        stored = WorkStatus(ws.status)
        if stored in (WorkStatus.ABORTED, WorkStatus.SUSPENDED):
            self.derived[inst] = stored  # a user action wins over derivation
            return
        self.derived[inst] = target
        if stored == target:
            return
        if WORK_MACHINE.allowed(stored, target):
            self.out.status_updates[inst] = target
            if info is not None and WORK_MACHINE.is_terminal(target):
                self.out.loop_info[inst] = info
        elif WORK_MACHINE.allowed(stored, WorkStatus.RUNNING) and WORK_MACHINE.allowed(
            WorkStatus.RUNNING, target
        ):
            self.out.status_updates[inst] = WorkStatus.RUNNING

    # -- conditions ------------------------------------------------------------------
    def process_condition(self, sc: _Scope, name: str) -> None:
        inst = sc.inst(name)
        if self.cond_value(inst) is not None:
            return
        verdict, reason = self.decide(sc, name)
        if verdict == "wait":
            return
        if verdict == "block":
            self.cond[inst] = "skip"
            return
        try:
            value = sc.an.conditions[name].evaluate(sc.ns)
        except ExpressionError as exc:
            self.cond[inst] = "error"
            self.out.errors[inst] = f"condition {inst!r}: {exc}"
            return
        self.cond[inst] = value
        self.out.conditions[inst] = value

    # -- loops -----------------------------------------------------------------------
    def process_loop(self, sc: _Scope, name: str) -> None:
        lp = sc.an.loops[name]
        inst = sc.inst(name)
        body = sc.an.body_order[name]
        n = self.iterations(inst)
        verdict, reason = self.decide(sc, name)
        if verdict == "wait" and n == 0:
            return
        if verdict == "block":
            if n == 0:
                self.out.loops[inst] = 1
            self.loop_n[inst] = max(n, 1)
            self.run_scope(
                sc.iteration_scope(name, 0, force_skip=f"loop {inst!r} skipped: {reason}"), body
            )
            self.finish_loop(inst, WorkStatus.SKIPPED, max(n, 1), False)
            return
        if n == 0:
            n = 1
            self.out.loops[inst] = n
        while True:
            self.loop_n[inst] = n
            isc = sc.iteration_scope(name, n - 1)
            it_status = self.run_scope(isc, body)
            if it_status is None:
                self.set_container(inst, WorkStatus.RUNNING)
                return
            if it_status != WorkflowStatus.FINISHED:
                self.finish_loop(inst, WorkStatus.FAILED, n, False)
                return
            try:
                done = bool(lp.expression.evaluate(isc.ns))
            except ExpressionError as exc:
                self.out.errors[inst] = f"loop {inst!r} until: {exc}"
                self.finish_loop(inst, WorkStatus.FAILED, n, False)
                return
            if done or n >= lp.max_iterations:
                self.finish_loop(inst, WorkStatus.FINISHED, n, done)
                return
            n += 1
            self.out.loops[inst] = n

    def finish_loop(self, inst: str, status: WorkStatus, n: int, converged: bool) -> None:
        self.converged[inst] = converged
        info = {"iterations": n, "converged": converged, "status": str(status)}
        self.set_container(inst, status, info)


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."
