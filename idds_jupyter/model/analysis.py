"""The static analysis of a workflow template: its names, dependencies and orders.

One scope at a time (a sub-workflow is a scope of its own): every element is
declared once in one namespace, each dependency becomes an edge with a kind,
loop bodies are collapsed into their loop for the top-level schedule, and both
levels are put in topological order. The graph view, the topological order, the
template validation (:mod:`.template`) and the run-time planner (:mod:`.plan`)
share this one analysis.
"""

from __future__ import annotations

import difflib
import heapq
import keyword
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from .condition import Condition
from .errors import ExpressionError, TemplateError
from .expression import FUNCTIONS, LITERAL_NAMES
from .loop import Loop
from .parameter import placeholders
from .work import Work

if TYPE_CHECKING:
    from .workflow import Workflow

__all__ = [
    "BUILTIN_NAMES",
    "EDGE_KINDS",
    "JOB_NAMES",
    "RESERVED_NAMES",
    "Analysis",
    "analyze",
    "grow_analysis",
]

#: Per-job names available to commands/parameters, resolved when jobs are expanded.
JOB_NAMES = frozenset({"job_index", "file"})
#: Names every template may read besides its parameters and elements.
BUILTIN_NAMES = frozenset({"params", "iteration", "previous"}) | JOB_NAMES
#: Edge kinds of :meth:`Workflow.graph`.
EDGE_KINDS = ("dep", "job_dep", "true", "false", "on_failure", "loop")
#: Names no work, condition or loop may take.
RESERVED_NAMES = BUILTIN_NAMES | set(LITERAL_NAMES) | set(FUNCTIONS)
_NAME = re.compile(r"^[A-Za-z][A-Za-z0-9_]*$")
# When one element reaches another by several routes, the most specific kind wins:
# an on_failure handler referencing {train.status} must not wait for train to finish.
_PRIORITY = {"on_failure": 5, "true": 4, "false": 4, "dep": 3, "ref": 2, "job_dep": 1}

Edges = dict[str, dict[str, str]]


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
    edges: Edges
    scoped: Edges
    sched: Edges
    inner: dict[str, Edges]
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


def grow_analysis(old: Workflow, new: Workflow, added: Sequence[Work]) -> None:
    """Remember on ``new`` (``old`` grown by ``added``) its analysis when it can be had
    from ``old``'s remembered one in O(new works); otherwise leave it to :func:`analyze`."""
    memo = old.__dict__.get("_analysis")
    if memo is not None and memo[0] == _memo_key(old, ""):
        grown = _grown_analysis(memo[1], added)
        if grown is not None:
            new.__dict__["_analysis"] = (_memo_key(new, ""), grown)


def _memo_key(wf: Workflow, qual: str) -> tuple[Any, ...]:
    return (
        qual,
        id(wf.works),
        len(wf.works),
        id(wf.conditions),
        len(wf.conditions),
        id(wf.loops),
        len(wf.loops),
    )


def _declare(kinds: dict[str, str], declared: list[str], name: Any, kind: str, qual: str) -> None:
    if not isinstance(name, str) or not _NAME.match(name):
        raise TemplateError(
            qual + str(name),
            "name",
            f"{kind} name must be an identifier (letters, digits, '_'), got {name!r}",
        )
    if keyword.iskeyword(name) or name in RESERVED_NAMES:
        raise TemplateError(qual + name, "name", f"{name!r} is a reserved name")
    if name in kinds:
        raise TemplateError(
            qual + name,
            "name",
            f"duplicate name {name!r} (works, conditions and loops share one namespace)",
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
                if value is not None and any(
                    n in kinds for e in placeholders(value) for n in e.names
                ):
                    return None
    except ExpressionError:
        return None
    new = [w.name for w in added]
    empty: Edges = {n: {} for n in new}
    return Analysis(
        kinds=kinds,
        works={**old.works, **{w.name: w for w in added}},
        conditions={},
        loops={},
        declared=declared,
        body_of={},
        edges={**old.edges, **empty},
        scoped={**old.scoped, **empty},
        sched={**old.sched, **empty},
        inner={},
        order=[*old.order, *new],
        body_order={},
        handlers=old.handlers,
    )


# -- the whole analysis, step by step --------------------------------------------------------
def _analyze(wf: Workflow, qual: str) -> Analysis:
    kinds, declared = _declare_elements(wf, qual)
    body_of = _loop_bodies(wf, kinds, qual)
    g = _EdgeBuilder(kinds, declared, qual)
    works = {w.name: w for w in wf.works}
    handlers = g.add_work_edges(wf.works, works)
    g.add_condition_edges(wf.conditions)
    g.add_loop_edges(wf.loops, body_of)
    _check_loop_boundaries(g.edges, body_of, qual)
    loops = {lp.name: lp for lp in wf.loops}
    scoped = _scoped_edges(declared, g.edges, body_of, qual)
    sched, inner = _schedules(declared, scoped, body_of, loops, qual)
    index = {n: i for i, n in enumerate(declared)}
    return Analysis(
        kinds=kinds,
        works=works,
        conditions={c.name: c for c in wf.conditions},
        loops=loops,
        declared=declared,
        body_of=body_of,
        edges=g.edges,
        scoped=scoped,
        sched=sched,
        inner=inner,
        order=_toposort(list(sched), sched, index, qual),
        body_order={lp: _toposort(list(loops[lp].works), inner[lp], index, qual) for lp in loops},
        handlers=handlers,
        n_edges=sum(len(e) for e in g.edges.values()),
    )


def _declare_elements(wf: Workflow, qual: str) -> tuple[dict[str, str], list[str]]:
    """Every work, condition and loop in one namespace: each element's kind, and the declaration order."""
    kinds: dict[str, str] = {}
    declared: list[str] = []
    for group, kind in ((wf.works, "work"), (wf.conditions, "condition"), (wf.loops, "loop")):
        for el in group:
            _declare(kinds, declared, el.name, kind, qual)
    return kinds, declared


def _unknown(
    kinds: Mapping[str, str], qual: str, who: str, fld: str, name: str, what: str = "work"
) -> TemplateError:
    hint = difflib.get_close_matches(name, list(kinds), n=1)
    more = f" (did you mean {hint[0]!r}?)" if hint else ""
    return TemplateError(qual + who, fld, f"unknown {what} {name!r}{more}")


def _loop_bodies(wf: Workflow, kinds: Mapping[str, str], qual: str) -> dict[str, str]:
    """The loop each body member belongs to; a member belongs to one loop and is no loop itself."""
    body_of: dict[str, str] = {}
    for lp in wf.loops:
        if not isinstance(lp.works, list) or not lp.works:
            raise TemplateError(
                qual + lp.name, "works", "a loop needs a non-empty list of body works"
            )
        if (
            isinstance(lp.max_iterations, bool)
            or not isinstance(lp.max_iterations, int)
            or lp.max_iterations < 1
        ):
            raise TemplateError(
                qual + lp.name,
                "max_iterations",
                f"must be a positive integer, got {lp.max_iterations!r}",
            )
        for m in lp.works:
            if m not in kinds:
                raise _unknown(kinds, qual, lp.name, "works", m)
            if kinds[m] == "loop":
                raise TemplateError(
                    qual + lp.name,
                    "works",
                    f"loop {m!r} cannot be a loop body member (nest loops in a sub-workflow)",
                )
            if m in body_of:
                raise TemplateError(
                    qual + lp.name, "works", f"{m!r} is already in the body of loop {body_of[m]!r}"
                )
            body_of[m] = lp.name
    return body_of


def _merge(target: dict[str, str], up: str, kind: str) -> None:
    """Record the edge to ``up``, keeping the more specific kind when there is one already."""
    old = target.get(up)
    if old is None or _PRIORITY[kind] > _PRIORITY[old]:
        target[up] = kind


class _EdgeBuilder:
    """The edges of one scope, gathered from the works, conditions and loops that declare them."""

    def __init__(self, kinds: Mapping[str, str], declared: list[str], qual: str) -> None:
        self.kinds = kinds
        self.qual = qual
        self.edges: Edges = {n: {} for n in declared}

    def unknown(self, who: str, fld: str, name: str) -> TemplateError:
        return _unknown(self.kinds, self.qual, who, fld, name)

    def add(self, down: str, up: str, kind: str, fld: str) -> None:
        if up == down:
            raise TemplateError(self.qual + down, fld, f"dependency cycle: {down} -> {down}")
        _merge(self.edges[down], up, kind)

    def add_references(self, down: str, names: Iterable[str], kind: str, fld: str) -> None:
        for n in names:
            if n in self.kinds:
                self.add(down, n, kind, fld)

    def add_work_edges(
        self, works: Sequence[Work], by_name: Mapping[str, Work]
    ) -> dict[str, list[str]]:
        """Edges of ``depends_on``, placeholders reading other elements, ``job_deps`` and
        ``on_failure`` (the handler depends on the work); returns the failure handlers of each work."""
        handlers: dict[str, list[str]] = {}
        for w in works:
            for d in w.depends_on:
                if d not in self.kinds:
                    raise self.unknown(w.name, "depends_on", d)
                self.add(w.name, d, "dep", "depends_on")
            self._add_placeholder_edges(w)
            for i, jd in enumerate(w.job_deps):
                if jd.work not in self.kinds:
                    raise self.unknown(w.name, f"job_deps[{i}].work", jd.work)
                parent = by_name.get(jd.work)
                if parent is None or parent.workflow is not None:
                    raise TemplateError(
                        self.qual + w.name,
                        f"job_deps[{i}].work",
                        f"{jd.work!r} is not a work with jobs",
                    )
                self.add(w.name, jd.work, "job_dep", "job_deps")
            for h in w.on_failure:
                if h not in by_name:
                    raise self.unknown(w.name, "on_failure", h)
                self.add(h, w.name, "on_failure", "on_failure")
                handlers.setdefault(w.name, []).append(h)
        return handlers

    def _add_placeholder_edges(self, w: Work) -> None:
        for fld_name, value in (
            ("parameters", w.parameters),
            ("command", w.command),
            ("kwargs_list", w.kwargs_list),
        ):
            if value is None:
                continue
            try:
                exprs = placeholders(value)
            except ExpressionError as exc:
                raise TemplateError(self.qual + w.name, fld_name, str(exc)) from None
            for e in exprs:
                self.add_references(w.name, e.names, "dep", fld_name)

    def add_condition_edges(self, conditions: Sequence[Condition]) -> None:
        """A condition depends on what its expression reads; its branch targets depend on it."""
        for i, c in enumerate(conditions):
            fld = f"conditions[{i}].expr"
            try:
                names = c.expression.names
            except ExpressionError as exc:
                raise TemplateError(self.qual + c.name, fld, str(exc)) from None
            self.add_references(c.name, names, "ref", fld)
            for branch in ("true", "false"):
                for t in getattr(c, branch):
                    if t not in self.kinds:
                        raise self.unknown(c.name, f"conditions[{i}].{branch}", t)
                    self.add(t, c.name, branch, f"conditions[{i}].{branch}")

    def add_loop_edges(self, loops: Sequence[Loop], body_of: Mapping[str, str]) -> None:
        """A loop depends on its ``depends_on`` and on what ``until`` reads outside its own body."""
        for lp in loops:
            try:
                names = lp.expression.names
            except ExpressionError as exc:
                raise TemplateError(self.qual + lp.name, "until", str(exc)) from None
            self.add_references(
                lp.name, (n for n in names if body_of.get(n) != lp.name), "ref", "until"
            )
            for d in lp.depends_on:
                if d not in self.kinds:
                    raise self.unknown(lp.name, "depends_on", d)
                self.add(lp.name, d, "dep", "depends_on")


def _check_loop_boundaries(edges: Edges, body_of: Mapping[str, str], qual: str) -> None:
    """Branches, failure handlers and job links stay inside one scope."""
    for down, ups in edges.items():
        for up, kind in ups.items():
            lo_down, lo_up = body_of.get(down), body_of.get(up)
            if kind in ("true", "false", "on_failure") and lo_down != lo_up:
                inside = (
                    f"{down!r} is in loop {lo_down!r}"
                    if lo_down
                    else f"{down!r} is outside any loop"
                )
                where = f"{up!r} in loop {lo_up!r}" if lo_up else f"{up!r} outside any loop"
                fld = "on_failure" if kind == "on_failure" else kind
                raise TemplateError(
                    qual + up, fld, f"cannot cross a loop boundary: {inside}, {where}"
                )
            if kind == "job_dep" and lo_up is not None and lo_up != lo_down:
                raise TemplateError(
                    qual + down,
                    "job_deps",
                    f"{up!r} is in loop {lo_up!r}: job dependencies cannot reach into a loop",
                )


def _scoped_edges(
    declared: list[str], edges: Edges, body_of: Mapping[str, str], qual: str
) -> Edges:
    """The edges with a member of another loop reached through that loop."""
    scoped: Edges = {}
    for name in declared:
        scoped[name] = {}
        for up, kind in edges[name].items():
            lo = body_of.get(up)
            _merge(scoped[name], lo if lo is not None and lo != body_of.get(name) else up, kind)
            if lo is not None and lo == name:
                raise TemplateError(
                    qual + name, "depends_on", f"dependency cycle: {name} -> {up} -> {name}"
                )
    return scoped


def _schedules(
    declared: list[str],
    scoped: Edges,
    body_of: Mapping[str, str],
    loops: Mapping[str, Loop],
    qual: str,
) -> tuple[Edges, dict[str, Edges]]:
    """The top-level schedule (each loop standing for its body, taking on the body's outside
    dependencies) and, for each loop, the edges inside one iteration."""
    sched: Edges = {n: dict(scoped[n]) for n in declared if n not in body_of}
    inner: dict[str, Edges] = {lp: {} for lp in loops}
    for lp_name, lp in loops.items():
        for m in lp.works:
            inner[lp_name][m] = {}
            for up, kind in scoped[m].items():
                if body_of.get(up) == lp_name:
                    inner[lp_name][m][up] = kind
                elif up == lp_name:
                    raise TemplateError(
                        qual + m, "depends_on", f"dependency cycle: {m} -> {lp_name} -> {m}"
                    )
                else:
                    _merge(sched[lp_name], up, kind)
    return sched, inner


def _toposort(
    nodes: list[str], ups: Mapping[str, Mapping[str, str]], index: Mapping[str, int], qual: str
) -> list[str]:
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
        raise TemplateError(
            qual + cycle[0],
            "depends_on",
            "dependency cycle: " + " -> ".join(cycle) + " (each depends on the next)",
        )
    return out


def _find_cycle(
    candidates: list[str], ups: Mapping[str, Mapping[str, str]], node_set: set[str]
) -> list[str]:
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
