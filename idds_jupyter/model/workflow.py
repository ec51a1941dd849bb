"""The Workflow concept: works, conditions and loops joined by dependencies.

This module holds the template format (dict/YAML/JSON, checked against
``workflow.schema.json``), semantic validation with messages naming the work and
field, and the static dependency analysis shared by the graph view, the
topological order and the run-time planner (:mod:`.plan`).
"""

from __future__ import annotations

import difflib
import heapq
import json
import keyword
import re
from collections.abc import Container, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from functools import lru_cache
from importlib import resources
from typing import Any

import yaml

from .condition import Condition
from .errors import ExpressionError, TemplateError
from .expression import FUNCTIONS, LITERAL_NAMES
from .loop import Loop
from .parameter import Parameter, RawExpression, placeholders
from .work import Work

__all__ = [
    "BUILTIN_NAMES",
    "EDGE_KINDS",
    "JOB_NAMES",
    "Workflow",
    "analyze",
    "load_schema",
]

#: Per-job names available to commands/parameters, resolved when jobs are expanded.
JOB_NAMES = frozenset({"job_index", "file"})
#: Names every template may read besides its parameters and elements.
BUILTIN_NAMES = frozenset({"params", "iteration", "previous"}) | JOB_NAMES
#: Edge kinds of :meth:`Workflow.graph`.
EDGE_KINDS = ("dep", "job_dep", "true", "false", "on_failure", "loop")
_RESERVED = BUILTIN_NAMES | set(LITERAL_NAMES) | set(FUNCTIONS)
_NAME = re.compile(r"^[A-Za-z][A-Za-z0-9_]*$")
# When one element reaches another by several routes, the most specific kind wins:
# an on_failure handler referencing {train.status} must not wait for train to finish.
_PRIORITY = {"on_failure": 5, "true": 4, "false": 4, "dep": 3, "ref": 2, "job_dep": 1}


@lru_cache(maxsize=1)
def load_schema() -> dict[str, Any]:
    """The JSON Schema of the template format, shipped inside the package."""
    text = resources.files("idds_jupyter.model").joinpath("workflow.schema.json").read_text("utf-8")
    schema: dict[str, Any] = json.loads(text)
    return schema


@lru_cache(maxsize=1)
def _validator() -> Any:
    import jsonschema

    schema = load_schema()
    cls = jsonschema.validators.validator_for(schema)
    cls.check_schema(schema)
    return cls(schema)


@dataclass
class Workflow:
    """A workflow template: the static part, validated before anything runs.

    ``parameters`` holds defaults; ``parameter_specs`` optionally declares
    parameters with a type (and a default when not in ``parameters``).
    """

    name: str = ""
    description: str = ""
    parameters: dict[str, Any] = field(default_factory=dict)
    parameter_specs: list[Parameter] = field(default_factory=list)
    works: list[Work] = field(default_factory=list)
    conditions: list[Condition] = field(default_factory=list)
    loops: list[Loop] = field(default_factory=list)

    # -- lookups -----------------------------------------------------------------
    def element(self, name: str) -> Work | Condition | Loop:
        """The work, condition or loop called ``name`` (KeyError if none)."""
        for group in (self.works, self.conditions, self.loops):
            for el in group:
                if el.name == name:
                    return el
        raise KeyError(name)

    def work(self, name: str) -> Work:
        """The work called ``name`` (KeyError if none)."""
        for w in self.works:
            if w.name == name:
                return w
        raise KeyError(name)

    # -- parameters --------------------------------------------------------------
    def defaults(self) -> dict[str, Any]:
        """Default parameter values: ``parameters`` over the declared specs' defaults."""
        out = {p.name: p.default for p in self.parameter_specs if not p.required}
        out.update(self.parameters)
        return out

    def resolve_params(self, submitted: Mapping[str, Any] | None = None) -> dict[str, Any]:
        """Defaults merged with ``submitted``, coerced to declared types (TemplateError if bad)."""
        values = self.defaults()
        values.update(submitted or {})
        for spec in self.parameter_specs:
            if spec.name in values:
                values[spec.name] = spec.coerce(values[spec.name])
            else:
                spec.coerce()  # raises for a required parameter without a value
        return values

    # -- validation --------------------------------------------------------------
    def validate(self, params: Mapping[str, Any] | None = None) -> None:
        """Check the template (and ``params`` if given); raise :class:`TemplateError` naming work and field."""
        resolved = self.resolve_params(params) if params is not None else None
        _validate(self, "", resolved)

    def topological_order(self) -> list[str]:
        """Names of works, conditions and loops so that each comes after what it depends on.

        A loop's body members come right before the loop itself.
        """
        an = analyze(self)
        out: list[str] = []
        for name in an.order:
            if an.kinds[name] == "loop":
                out.extend(an.body_order[name])
            out.append(name)
        return out

    def graph(self) -> dict[str, Any]:
        """Static description for UIs: ``{"nodes": [...], "edges": [...]}``.

        Nodes have ``name``, ``kind`` (work/condition/loop) and ``loop`` (the loop a
        body member belongs to); works add ``type`` and ``jobs`` (None if known only
        at run time) and a nested ``graph`` for a sub-workflow. Edges go from
        ``source`` (upstream) to ``target`` with ``kind`` in :data:`EDGE_KINDS`.
        """
        an = analyze(self)
        nodes: list[dict[str, Any]] = []
        for w in self.works:
            node: dict[str, Any] = {"name": w.name, "kind": "work", "type": w.kind, "loop": an.body_of.get(w.name)}
            node["jobs"] = w.fixed_job_count()
            if w.workflow is not None:
                node["graph"] = w.workflow.graph()
            nodes.append(node)
        for c in self.conditions:
            nodes.append({"name": c.name, "kind": "condition", "expr": c.expr, "loop": an.body_of.get(c.name)})
        for lp in self.loops:
            nodes.append(
                {"name": lp.name, "kind": "loop", "until": lp.until, "max_iterations": lp.max_iterations, "loop": None}
            )
        edges: list[dict[str, str]] = []
        for target in an.declared:
            for source, kind in an.edges[target].items():
                edges.append({"source": source, "target": target, "kind": "dep" if kind == "ref" else kind})
        for lp in self.loops:
            for member in lp.works:
                edges.append({"source": lp.name, "target": member, "kind": "loop"})
        return {"name": self.name, "nodes": nodes, "edges": edges}

    # -- serialisation -----------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-able dict in the template format (defaults left out)."""
        d: dict[str, Any] = {"name": self.name}
        if self.description:
            d["description"] = self.description
        if self.parameters:
            d["parameters"] = dict(self.parameters)
        if self.parameter_specs:
            d["parameter_specs"] = [_spec_to_dict(p) for p in self.parameter_specs]
        d["works"] = [w.to_dict() for w in self.works]
        if self.conditions:
            d["conditions"] = [_condition_to_dict(c) for c in self.conditions]
        if self.loops:
            d["loops"] = [lp.to_dict() for lp in self.loops]
        return d

    @classmethod
    def from_dict(cls, d: Mapping[str, Any], *, validate: bool = True, semantic: bool = True) -> Workflow:
        """Build from the template format: JSON Schema first, then semantic validation
        (``semantic=False``: left to the caller, who validates with the run's parameters)."""
        if not isinstance(d, Mapping):
            raise TemplateError(None, "workflow", f"a workflow template must be a mapping, got {type(d).__name__}")
        if validate:
            d = _normalize(d)
            _schema_check(d)
        wf = cls(
            name=d.get("name", ""),
            description=d.get("description", ""),
            parameters=dict(d.get("parameters") or {}),
            parameter_specs=[_spec_from_dict(p) for p in d.get("parameter_specs") or []],
            works=[Work.from_dict(w) for w in d.get("works") or []],
            conditions=[_condition_from_dict(c) for c in d.get("conditions") or []],
            loops=[Loop.from_dict(lp) for lp in d.get("loops") or []],
        )
        if validate and semantic:
            wf.validate()
        return wf

    def grown(self, new_works: Sequence[Mapping[str, Any]],
              params: Mapping[str, Any] | None = None) -> Workflow:
        """This workflow with ``new_works`` appended (a FaaT body growing its run), validated.

        Only the new works are checked against the schema: the existing ones were
        already, so a run that grows by one work at a time stays cheap to extend.
        """
        new = [_normalize({"works": [w]})["works"][0] for w in new_works]
        _schema_check({"name": self.name, "works": new})
        added = [Work.from_dict(w) for w in new]
        wf = Workflow(name=self.name, description=self.description, parameters=dict(self.parameters),
                      parameter_specs=list(self.parameter_specs),
                      works=[*self.works, *added],
                      conditions=list(self.conditions), loops=list(self.loops))
        # The graph (names, references, cycles) is checked whole, unless it is one of
        # independent works growing by more (then only the new names and references);
        # the per-work checks only for the new works: the others passed them already.
        memo = self.__dict__.get("_analysis")
        if memo is not None and memo[0] == _memo_key(self, ""):
            grown = _grown_analysis(memo[1], added)
            if grown is not None:
                wf.__dict__["_analysis"] = (_memo_key(wf, ""), grown)
        resolved = wf.resolve_params(params) if params is not None else None
        _validate(wf, "", resolved, only=added)
        return wf

    def independent(self, since: int = 0) -> bool:
        """True when no element waits for or reads another (no edges, conditions, loops,
        sub-workflows or datasets): a plain FaaT run. A work's end then changes
        nothing the plan decides until the run is closed, and a new work plans alone.

        ``since``: the works before that index are known to be independent (a run
        that grows checks its new works only, not the thousands before them).
        """
        if self.conditions or self.loops:
            return False
        new = self.works[since:]
        if any(w.workflow is not None or w.input_dataset for w in new):
            return False
        edges = analyze(self).edges
        # a new work's edges are its own, but for on_failure: that one gives its handler an edge
        return not any(edges.get(w.name) or w.on_failure for w in new)

    def to_yaml(self) -> str:
        return yaml.safe_dump(self.to_dict(), sort_keys=False, allow_unicode=True)

    @classmethod
    def from_yaml(cls, text: str) -> Workflow:
        from .limits import LimitError, load_yaml

        try:
            data = load_yaml(text, what="the template")  # safe, aliases and nesting bounded
        except yaml.YAMLError as exc:
            raise TemplateError(None, "yaml", f"not valid YAML: {exc}") from None
        except LimitError as exc:
            raise TemplateError(None, "yaml", str(exc)) from None
        return cls.from_dict(data)

    def to_json(self, indent: int | None = 2) -> str:
        return json.dumps(self.to_dict(), indent=indent)

    @classmethod
    def from_json(cls, text: str) -> Workflow:
        try:
            data = json.loads(text)
        except json.JSONDecodeError as exc:
            raise TemplateError(None, "json", f"not valid JSON: {exc}") from None
        except RecursionError:  # '[[[[...' thousands deep: the decoder's recursion
            raise TemplateError(None, "json", "not valid JSON: nested too deeply") from None
        return cls.from_dict(data)


# -- (de)serialisation helpers ---------------------------------------------------------
def _spec_to_dict(p: Parameter) -> dict[str, Any]:
    d: dict[str, Any] = {"name": p.name}
    if p.default is not None:
        d["default"] = p.default
    if p.type is not None:
        d["type"] = p.type
    if p.description:
        d["description"] = p.description
    if p.required:
        d["required"] = True
    return d


def _spec_from_dict(d: Mapping[str, Any]) -> Parameter:
    return Parameter(
        name=d["name"],
        default=d.get("default"),
        type=d.get("type"),
        description=d.get("description", ""),
        required=d.get("required", False),
    )


def _condition_to_dict(c: Condition) -> dict[str, Any]:
    d: dict[str, Any] = {"name": c.name, "expr": c.expr}
    if c.true:
        d["true"] = list(c.true)
    if c.false:
        d["false"] = list(c.false)
    return d


def _condition_from_dict(d: Mapping[str, Any]) -> Condition:
    return Condition(
        name=d["name"], expr=d["expr"], true=list(d.get("true") or []), false=list(d.get("false") or [])
    )


def _normalize(d: Mapping[str, Any]) -> dict[str, Any]:
    """Undo YAML 1.1 turning unquoted ``true:``/``false:`` keys of conditions into booleans."""
    out = dict(d)
    conds = out.get("conditions")
    if isinstance(conds, list):
        fixed = []
        for c in conds:
            if isinstance(c, Mapping):
                c = {("true" if k is True else "false" if k is False else k): v for k, v in c.items()}
            fixed.append(c)
        out["conditions"] = fixed
    works = out.get("works")
    if isinstance(works, list):
        out["works"] = [
            {**w, "workflow": _normalize(w["workflow"])}
            if isinstance(w, Mapping) and isinstance(w.get("workflow"), Mapping)
            else w
            for w in works
        ]
    return out


@lru_cache(maxsize=1)
def _fast_validator() -> Any:
    import jsonschema_rs

    return jsonschema_rs.validator_for(load_schema())


def _schema_check(d: Mapping[str, Any]) -> None:
    """Valid templates pass the compiled (Rust) validator in microseconds; an invalid
    one is checked again by ``jsonschema``, whose best match names what is wrong."""
    if _fast_validator().is_valid(d):
        return
    import jsonschema

    error = jsonschema.exceptions.best_match(_validator().iter_errors(d))
    if error is None:
        return
    path = list(error.absolute_path)
    work: str | None = None
    prefix = ""
    node: Any = d
    fld_parts: list[str] = []
    i = 0
    while i < len(path):
        key = path[i]
        if key in ("works", "conditions", "loops") and i + 1 < len(path) and isinstance(path[i + 1], int):
            idx = path[i + 1]
            item = node[key][idx] if isinstance(node, Mapping) else None
            name = item.get("name") if isinstance(item, Mapping) else None
            label = name if isinstance(name, str) and name else f"{key}[{idx}]"
            work = prefix + label
            fld_parts = [f"conditions[{idx}]"] if key == "conditions" else []
            node = item
            i += 2
            if key == "works" and i < len(path) and path[i] == "workflow":
                prefix = work + "."
                node = node["workflow"] if isinstance(node, Mapping) else None
                i += 1
                if i == len(path):
                    fld_parts = ["workflow"]
            continue
        fld_parts.append(f"[{key}]" if isinstance(key, int) else str(key))
        node = node[key] if isinstance(node, Mapping | list) else None
        i += 1
    message = error.message
    if error.validator == "required":
        m = re.match(r"'([^']+)' is a required property", message)
        if m:
            fld_parts.append(m.group(1))
    elif error.validator == "additionalProperties":
        m = re.search(r"\('([^']+)'", message)
        if m:
            fld_parts.append(m.group(1))
            message = f"unknown field {m.group(1)!r}"
    fld = ".".join(fld_parts).replace(".[", "[") or "workflow"
    raise TemplateError(work, fld, message)


# -- static analysis ---------------------------------------------------------------------
@dataclass
class Analysis:
    """Dependencies of one workflow scope, as the planner and the views need them.

    ``edges[x]`` maps each element ``x`` depends on to the edge kind ("dep",
    "ref" — a condition/until reading a work, "job_dep", "true", "false",
    "on_failure"). ``scoped`` is the same with members of *other* loops replaced
    by their loop; ``sched`` holds the top-level schedule (loop bodies collapsed
    into their loop), ``inner[loop][member]`` the edges inside one iteration; ``order`` and ``body_order`` are topological orders of those.
    """

    kinds: dict[str, str]
    works: dict[str, Work]
    conditions: dict[str, Condition]
    loops: dict[str, Loop]
    declared: list[str]
    body_of: dict[str, str]
    edges: dict[str, dict[str, str]]
    scoped: dict[str, dict[str, str]]
    sched: dict[str, dict[str, str]]
    inner: dict[str, dict[str, dict[str, str]]]
    order: list[str]
    body_order: dict[str, list[str]]
    handlers: dict[str, list[str]]
    n_edges: int = 0  # of ``edges``: a grown run asks "any edge at all?" without a scan


def analyze(wf: Workflow, qual: str = "", remember: bool = False) -> Analysis:
    """Static dependency analysis of one scope; raises TemplateError for unknown names and cycles.

    ``qual`` prefixes element names in error messages (``sub.`` inside a sub-workflow).
    ``remember`` keeps it on the workflow, for a run grown by the store (which
    nobody edits in place): validating it and planning it next need one analysis.
    """
    key = _memo_key(wf, qual)
    memo = wf.__dict__.get("_analysis")
    if memo is not None and memo[0] == key:
        return memo[1]
    an = _analyze(wf, qual)
    if remember:
        wf.__dict__["_analysis"] = (key, an)
    return an


def _memo_key(wf: Workflow, qual: str) -> tuple[Any, ...]:
    return (qual, id(wf.works), len(wf.works), id(wf.conditions), len(wf.conditions),
            id(wf.loops), len(wf.loops))


def _declare(kinds: dict[str, str], declared: list[str], name: Any, kind: str, qual: str) -> None:
    if not isinstance(name, str) or not _NAME.match(name):
        raise TemplateError(qual + str(name), "name", f"{kind} name must be an identifier (letters, digits, '_'), got {name!r}")
    if keyword.iskeyword(name) or name in _RESERVED:
        raise TemplateError(qual + name, "name", f"{name!r} is a reserved name")
    if name in kinds:
        raise TemplateError(
            qual + name, "name", f"duplicate name {name!r} (works, conditions and loops share one namespace)"
        )
    kinds[name] = kind
    declared.append(name)


def _grown_analysis(old: Analysis, added: Sequence[Work]) -> Analysis | None:
    """The analysis of a workflow of independent works grown by ``added`` independent works,
    from the old one: O(new works), where a whole analysis is O(all works).

    None when either side has any edge (or anything else than plain works): analyse
    the grown workflow whole, which also words the errors.
    """
    if old.conditions or old.loops or old.n_edges:
        return None
    kinds, declared = dict(old.kinds), list(old.declared)
    for w in added:
        _declare(kinds, declared, w.name, "work", "")
        if w.depends_on or w.job_deps or w.on_failure or w.workflow is not None:
            return None
    try:
        for w in added:
            for value in (w.parameters, w.command, w.kwargs_list):
                if value is not None and any(n in kinds for e in placeholders(value) for n in e.names):
                    return None
    except ExpressionError:
        return None
    new = [w.name for w in added]
    empty: dict[str, dict[str, str]] = {n: {} for n in new}
    return Analysis(
        kinds=kinds, works={**old.works, **{w.name: w for w in added}}, conditions={}, loops={},
        declared=declared, body_of={}, edges={**old.edges, **empty}, scoped={**old.scoped, **empty},
        sched={**old.sched, **empty}, inner={}, order=[*old.order, *new], body_order={},
        handlers=old.handlers,
    )


def _analyze(wf: Workflow, qual: str) -> Analysis:
    kinds: dict[str, str] = {}
    declared: list[str] = []
    for group, kind in ((wf.works, "work"), (wf.conditions, "condition"), (wf.loops, "loop")):
        for el in group:
            _declare(kinds, declared, el.name, kind, qual)
    works = {w.name: w for w in wf.works}
    conditions = {c.name: c for c in wf.conditions}
    loops = {lp.name: lp for lp in wf.loops}

    def unknown(who: str, fld: str, name: str, what: str = "work") -> TemplateError:
        hint = difflib.get_close_matches(name, list(kinds), n=1)
        more = f" (did you mean {hint[0]!r}?)" if hint else ""
        return TemplateError(qual + who, fld, f"unknown {what} {name!r}{more}")

    body_of: dict[str, str] = {}
    for lp in wf.loops:
        if not isinstance(lp.works, list) or not lp.works:
            raise TemplateError(qual + lp.name, "works", "a loop needs a non-empty list of body works")
        if isinstance(lp.max_iterations, bool) or not isinstance(lp.max_iterations, int) or lp.max_iterations < 1:
            raise TemplateError(qual + lp.name, "max_iterations", f"must be a positive integer, got {lp.max_iterations!r}")
        for m in lp.works:
            if m not in kinds:
                raise unknown(lp.name, "works", m)
            if kinds[m] == "loop":
                raise TemplateError(qual + lp.name, "works", f"loop {m!r} cannot be a loop body member (nest loops in a sub-workflow)")
            if m in body_of:
                raise TemplateError(qual + lp.name, "works", f"{m!r} is already in the body of loop {body_of[m]!r}")
            body_of[m] = lp.name

    edges: dict[str, dict[str, str]] = {n: {} for n in declared}

    def add(down: str, up: str, kind: str, fld: str) -> None:
        if up == down:
            raise TemplateError(qual + down, fld, f"dependency cycle: {down} -> {down}")
        old = edges[down].get(up)
        if old is None or _PRIORITY[kind] > _PRIORITY[old]:
            edges[down][up] = kind

    handlers: dict[str, list[str]] = {}
    for w in wf.works:
        for d in w.depends_on:
            if d not in kinds:
                raise unknown(w.name, "depends_on", d)
            add(w.name, d, "dep", "depends_on")
        for fld_name, value in (("parameters", w.parameters), ("command", w.command), ("kwargs_list", w.kwargs_list)):
            if value is None:
                continue
            try:
                exprs = placeholders(value)
            except ExpressionError as exc:
                raise TemplateError(qual + w.name, fld_name, str(exc)) from None
            for e in exprs:
                for n in e.names:
                    if n in kinds:
                        add(w.name, n, "dep", fld_name)
        for i, jd in enumerate(w.job_deps):
            if jd.work not in kinds:
                raise unknown(w.name, f"job_deps[{i}].work", jd.work)
            parent = works.get(jd.work)
            if parent is None or parent.workflow is not None:
                raise TemplateError(qual + w.name, f"job_deps[{i}].work", f"{jd.work!r} is not a work with jobs")
            add(w.name, jd.work, "job_dep", "job_deps")
        for h in w.on_failure:
            if h not in works:
                raise unknown(w.name, "on_failure", h)
            add(h, w.name, "on_failure", "on_failure")
            handlers.setdefault(w.name, []).append(h)
    for i, c in enumerate(wf.conditions):
        fld = f"conditions[{i}].expr"
        try:
            names = c.expression.names
        except ExpressionError as exc:
            raise TemplateError(qual + c.name, fld, str(exc)) from None
        for n in names:
            if n in kinds:
                add(c.name, n, "ref", fld)
        for branch in ("true", "false"):
            for t in getattr(c, branch):
                if t not in kinds:
                    raise unknown(c.name, f"conditions[{i}].{branch}", t)
                add(t, c.name, branch, f"conditions[{i}].{branch}")
    for lp in wf.loops:
        try:
            names = lp.expression.names
        except ExpressionError as exc:
            raise TemplateError(qual + lp.name, "until", str(exc)) from None
        for n in names:
            if n in kinds and body_of.get(n) != lp.name:
                add(lp.name, n, "ref", "until")
        for d in lp.depends_on:
            if d not in kinds:
                raise unknown(lp.name, "depends_on", d)
            add(lp.name, d, "dep", "depends_on")

    # Loop boundaries: branches, failure handlers and job links stay inside one scope.
    for down, ups in edges.items():
        for up, kind in ups.items():
            lo_down, lo_up = body_of.get(down), body_of.get(up)
            if kind in ("true", "false", "on_failure") and lo_down != lo_up:
                inside = f"{down!r} is in loop {lo_down!r}" if lo_down else f"{down!r} is outside any loop"
                where = f"{up!r} in loop {lo_up!r}" if lo_up else f"{up!r} outside any loop"
                fld = "on_failure" if kind == "on_failure" else kind
                raise TemplateError(qual + up, fld, f"cannot cross a loop boundary: {inside}, {where}")
            if kind == "job_dep" and lo_up is not None and lo_up != lo_down:
                raise TemplateError(
                    qual + down, "job_deps", f"{up!r} is in loop {lo_up!r}: job dependencies cannot reach into a loop"
                )

    def merge(target: dict[str, str], up: str, kind: str) -> None:
        old = target.get(up)
        if old is None or _PRIORITY[kind] > _PRIORITY[old]:
            target[up] = kind

    # Scoped edges: a member of another loop is reached through that loop.
    scoped: dict[str, dict[str, str]] = {}
    for name in declared:
        scoped[name] = {}
        for up, kind in edges[name].items():
            lo = body_of.get(up)
            merge(scoped[name], lo if lo is not None and lo != body_of.get(name) else up, kind)
            if lo is not None and lo == name:
                raise TemplateError(qual + name, "depends_on", f"dependency cycle: {name} -> {up} -> {name}")
    sched: dict[str, dict[str, str]] = {n: dict(scoped[n]) for n in declared if n not in body_of}
    inner: dict[str, dict[str, dict[str, str]]] = {lp: {} for lp in loops}
    for lp_name, lp in loops.items():
        for m in lp.works:
            inner[lp_name][m] = {}
            for up, kind in scoped[m].items():
                if body_of.get(up) == lp_name:
                    inner[lp_name][m][up] = kind
                elif up == lp_name:
                    raise TemplateError(qual + m, "depends_on", f"dependency cycle: {m} -> {lp_name} -> {m}")
                else:
                    merge(sched[lp_name], up, kind)
    index = {n: i for i, n in enumerate(declared)}
    order = _toposort(list(sched), sched, index, qual)
    body_order = {lp: _toposort(list(loops[lp].works), inner[lp], index, qual) for lp in loops}
    return Analysis(
        kinds=kinds,
        works=works,
        conditions=conditions,
        loops=loops,
        declared=declared,
        body_of=body_of,
        edges=edges,
        scoped=scoped,
        sched=sched,
        inner=inner,
        order=order,
        body_order=body_order,
        handlers=handlers,
        n_edges=sum(len(e) for e in edges.values()),
    )


def _toposort(nodes: list[str], ups: Mapping[str, Mapping[str, str]], index: Mapping[str, int], qual: str) -> list[str]:
    """Kahn's algorithm, ties broken by declaration order so plans are deterministic."""
    node_set = set(nodes)
    indeg = {n: sum(1 for u in ups[n] if u in node_set) for n in nodes}
    downs: dict[str, list[str]] = {n: [] for n in nodes}
    for n in nodes:
        for u in ups[n]:
            if u in node_set:
                downs[u].append(n)
    heap = [(index[n], n) for n in nodes if indeg[n] == 0]
    heapq.heapify(heap)
    out: list[str] = []
    while heap:
        _, n = heapq.heappop(heap)
        out.append(n)
        for d in downs[n]:
            indeg[d] -= 1
            if indeg[d] == 0:
                heapq.heappush(heap, (index[d], d))
    if len(out) < len(nodes):
        cycle = _find_cycle([n for n in nodes if indeg[n] > 0], ups, node_set)
        raise TemplateError(qual + cycle[0], "depends_on", "dependency cycle: " + " -> ".join(cycle) + " (each depends on the next)")
    return out


def _find_cycle(candidates: list[str], ups: Mapping[str, Mapping[str, str]], node_set: set[str]) -> list[str]:
    color: dict[str, int] = {}
    stack: list[str] = []

    def dfs(n: str) -> list[str] | None:
        color[n] = 1
        stack.append(n)
        for u in ups[n]:
            if u not in node_set:
                continue
            if color.get(u) == 1:
                return stack[stack.index(u) :] + [u]
            if color.get(u) is None:
                found = dfs(u)
                if found:
                    return found
        stack.pop()
        color[n] = 2
        return None

    for n in candidates:
        if color.get(n) is None:
            found = dfs(n)
            if found:
                return found
    return candidates[:1] * 2  # pragma: no cover - Kahn left nodes, so a cycle exists


# -- semantic validation -----------------------------------------------------------------
def _names(value: Any) -> set[str]:
    """The root names the placeholders of ``value`` read."""
    return {n for e in placeholders(value) for n in e.names}


def _raw_names(w: Work, chosen: set[str]) -> set[str]:
    """The names ``{x!raw}`` may read in ``w``'s command: ``chosen`` names, and work-local
    names (parameters, sweep keys) whose values are built only from chosen ones.

    A sweep resolved at run time (``kwargs_list: "{gen.result}"``) may bind any name,
    so it allows none.
    """
    if isinstance(w.kwargs_list, str):
        return set()
    items = w.kwargs_list or []
    local = set(w.parameters) | {k for item in items for k in item}
    ok = chosen - local
    ok |= {k for k, v in w.parameters.items() if _names(v) <= chosen and not any(k in item for item in items)}
    ok |= {k for k in local - set(w.parameters) if all(k in it and _names(it[k]) <= chosen for it in items)}
    return ok


def _validate(wf: Workflow, qual: str, params: Mapping[str, Any] | None,
              only: Sequence[Work] | None = None, trusted: frozenset[str] | None = None) -> None:
    """Check ``wf``; with ``only`` (works of ``wf``), the per-work checks cover just those.

    Nothing here is O(all works) then: a run that grows one work at a time stays
    cheap to extend at its ten-thousandth work. ``trusted``: the parameters of a
    sub-workflow whose values the submitter chose (``{x!raw}`` may read only those).
    """
    if not isinstance(wf.parameters, dict):
        raise TemplateError(qual.rstrip(".") or None, "parameters", "must be a mapping of names to default values")
    seen: set[str] = set()
    for spec in wf.parameter_specs:
        if spec.name in seen:
            raise TemplateError(qual.rstrip(".") or None, f"parameters.{spec.name}", "declared twice")
        seen.add(spec.name)
        if spec.name in wf.parameters:
            spec.check(wf.parameters[spec.name])
        elif spec.default is not None:
            spec.check(spec.default)
        else:
            spec.check(None)
    checked = wf.works if only is None else only
    for w in checked:
        w.check(qual + w.name)
    an = analyze(wf, qual, remember=only is not None)
    bound_params = set(params) if params is not None else set(wf.defaults())
    bound_params |= {p.name for p in wf.parameter_specs}

    def unbound(names: Iterable[str], local: Container[str] = ()) -> list[str]:
        return sorted(n for n in names if n not in local and n not in bound_params
                      and n not in an.kinds and n not in BUILTIN_NAMES)

    # what the submitter chose: the only values ``{x!raw}`` may insert into a shell command
    chosen = (bound_params | {"params"}) if trusted is None else set(trusted)
    chosen = (chosen - set(an.kinds)) | {"job_index", "iteration"}
    for w in checked:
        who = qual + w.name
        local = set(w.parameters)
        kl = w.kwargs_list
        dynamic_keys = isinstance(kl, str)
        if isinstance(kl, list):
            for item in kl:
                local |= set(item)
        for fld_name, value in (("parameters", w.parameters), ("command", w.command), ("kwargs_list", w.kwargs_list)):
            if value is None or dynamic_keys and fld_name != "kwargs_list":
                continue
            also = () if fld_name == "kwargs_list" else local
            for e in placeholders(value):
                for n in unbound(e.names, also):
                    raise TemplateError(who, fld_name, f"unbound parameter {n!r} in placeholder {{{e.text}}}")
        for i, jd in enumerate(w.job_deps):
            parent = an.works[jd.work]
            n_child, n_parent = w.fixed_job_count(), parent.fixed_job_count()
            if jd.pattern == "one_to_one" and n_child is not None and n_parent is not None and n_child != n_parent:
                raise TemplateError(
                    who, f"job_deps[{i}]",
                    f"one_to_one with {jd.work!r} needs equal job counts, got {n_child} and {n_parent}",
                )
            if jd.pattern == "explicit" and jd.map is not None:
                if n_child is not None and len(jd.map) != n_child:
                    raise TemplateError(who, f"job_deps[{i}].map", f"has {len(jd.map)} rows for {n_child} jobs")
                if n_parent is not None and any(p >= n_parent for row in jd.map for p in row):
                    raise TemplateError(who, f"job_deps[{i}].map", f"parent index out of range: {jd.work!r} has {n_parent} jobs")
        raw_ok = _raw_names(w, chosen)
        if isinstance(w.command, str):
            for e in placeholders(w.command):
                bad = sorted(e.names - raw_ok) if isinstance(e, RawExpression) else []
                if bad:
                    raise TemplateError(who, "command", (
                        f"{{{e.text}!raw}} reads {bad[0]!r}: raw (unquoted) insertion is allowed only for "
                        "workflow parameters the submitter chose, never for job results, files, "
                        "run-time sweeps or values built from them; drop '!raw' to have it quoted"))
        if w.workflow is not None:
            inner_params = {**w.workflow.defaults(), **{k: None for k in w.parameters}}
            inner_ok = frozenset(k for k in inner_params
                                 if k not in w.parameters or _names(w.parameters[k]) <= raw_ok)
            if inner_ok >= set(inner_params):
                inner_ok |= {"params"}
            _validate(w.workflow, who + ".", inner_params, trusted=inner_ok)

    for i, c in enumerate(wf.conditions):
        for n in unbound(c.expression.names):
            raise TemplateError(qual + c.name, f"conditions[{i}].expr", f"unknown name {n!r} in {c.expr!r}")
    for lp in wf.loops:
        for n in unbound(lp.expression.names):
            raise TemplateError(qual + lp.name, "until", f"unknown name {n!r} in {lp.until!r}")

