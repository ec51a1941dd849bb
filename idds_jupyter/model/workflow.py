"""The Workflow concept: works, conditions and loops joined by dependencies.

A :class:`Workflow` is the template of a run, the static part validated before
anything runs. Its format, reading and validation are in :mod:`.template`; the
dependency analysis shared by the graph view, the topological order and the
run-time planner (:mod:`.plan`) is in :mod:`.analysis`.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import yaml

from . import template
from .analysis import analyze, grow_analysis
from .condition import Condition
from .errors import TemplateError
from .loop import Loop
from .parameter import Parameter
from .work import Work

__all__ = ["Workflow"]


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
        template.validate(self, "", resolved)

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
            node: dict[str, Any] = {
                "name": w.name,
                "kind": "work",
                "type": w.kind,
                "loop": an.body_of.get(w.name),
            }
            node["jobs"] = w.fixed_job_count()
            if w.workflow is not None:
                node["graph"] = w.workflow.graph()
            nodes.append(node)
        for c in self.conditions:
            nodes.append(
                {
                    "name": c.name,
                    "kind": "condition",
                    "expr": c.expr,
                    "loop": an.body_of.get(c.name),
                }
            )
        for lp in self.loops:
            nodes.append(
                {
                    "name": lp.name,
                    "kind": "loop",
                    "until": lp.until,
                    "max_iterations": lp.max_iterations,
                    "loop": None,
                }
            )
        edges: list[dict[str, str]] = []
        for target in an.declared:
            for source, kind in an.edges[target].items():
                edges.append(
                    {"source": source, "target": target, "kind": "dep" if kind == "ref" else kind}
                )
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
            d["parameter_specs"] = [p.to_dict() for p in self.parameter_specs]
        d["works"] = [w.to_dict() for w in self.works]
        if self.conditions:
            d["conditions"] = [c.to_dict() for c in self.conditions]
        if self.loops:
            d["loops"] = [lp.to_dict() for lp in self.loops]
        return d

    @classmethod
    def from_dict(
        cls, d: Mapping[str, Any], *, validate: bool = True, semantic: bool = True
    ) -> Workflow:
        """Build from the template format: JSON Schema first, then semantic validation
        (``semantic=False``: left to the caller, who validates with the run's parameters)."""
        if not isinstance(d, Mapping):
            raise TemplateError(
                None, "workflow", f"a workflow template must be a mapping, got {type(d).__name__}"
            )
        if validate:
            d = template.normalize(d)
            template.schema_check(d)
        wf = cls(
            name=d.get("name", ""),
            description=d.get("description", ""),
            parameters=dict(d.get("parameters") or {}),
            parameter_specs=[Parameter.from_dict(p) for p in d.get("parameter_specs") or []],
            works=[Work.from_dict(w) for w in d.get("works") or []],
            conditions=[Condition.from_dict(c) for c in d.get("conditions") or []],
            loops=[Loop.from_dict(lp) for lp in d.get("loops") or []],
        )
        if validate and semantic:
            wf.validate()
        return wf

    def grown(
        self, new_works: Sequence[Mapping[str, Any]], params: Mapping[str, Any] | None = None
    ) -> Workflow:
        """This workflow with ``new_works`` appended (a FaaT body growing its run), validated.

        Only the new works are checked against the schema: the existing ones were
        already, so a run that grows by one work at a time stays cheap to extend.
        """
        new = [template.normalize({"works": [w]})["works"][0] for w in new_works]
        template.schema_check({"name": self.name, "works": new})
        added = [Work.from_dict(w) for w in new]
        wf = Workflow(
            name=self.name,
            description=self.description,
            parameters=dict(self.parameters),
            parameter_specs=list(self.parameter_specs),
            works=[*self.works, *added],
            conditions=list(self.conditions),
            loops=list(self.loops),
        )
        # The graph (names, references, cycles) is checked whole, unless it is one of
        # independent works growing by more (then only the new names and references);
        # the per-work checks only for the new works: the others passed them already.
        grow_analysis(self, wf, added)
        resolved = wf.resolve_params(params) if params is not None else None
        template.validate(wf, "", resolved, only=added)
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
        return cls.from_dict(template.parse_yaml(text))

    def to_json(self, indent: int | None = 2) -> str:
        return json.dumps(self.to_dict(), indent=indent)

    @classmethod
    def from_json(cls, text: str) -> Workflow:
        return cls.from_dict(template.parse_json(text))
