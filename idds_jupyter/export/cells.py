"""Cell-graph mode: a notebook becomes a DAG of works, one per cell (or group of cells).

- **Units.** Each code cell is a work; ``group="heading"`` makes each group of code
  cells under a markdown heading one work; cells tagged ``idds:work=NAME`` (anywhere)
  are one work named NAME. The ``parameters`` cell is not a work: its defaults are the
  template's ``parameters`` and each cell that reads one gets it (``n: '{n}'``).
- **Dependencies** come from the names each unit defines and reads
  (:func:`idds_jupyter.export.analysis.cell_names`, the analysis ``%%idds work``'s
  capture uses): a unit reading ``x`` depends on the last unit before it that binds
  ``x`` (or changes it in place: ``x.append(...)``, ``x[k] = v``, ``x.attr = v``).
  Units with no path between them run in parallel.
- **Values** a later unit reads are pickled by the worker into the run's value store
  and passed on as references (:mod:`idds_jupyter.export.runtime`); the service
  sees only their JSON preview.
- **Fan-out.** A cell tagged ``idds:map=VAR`` runs once per item of ``VAR`` (one job
  each); a later unit reading a name it defines gets the list of the values, in
  item order.
- IPython syntax is translated where its meaning is clear, otherwise refused with
  the cell number (:mod:`idds_jupyter.export.translate`).
"""

from __future__ import annotations

import ast
import keyword
import os
import re
from dataclasses import dataclass, field
from typing import Any

from idds_jupyter.export.analysis import cell_names
from idds_jupyter.export.notebook import _esc, read_notebook, result_names, work_name
from idds_jupyter.export.params import INJECTED_TAG, PARAMETERS_TAG, cell_tags, parameter_defaults
from idds_jupyter.export.translate import translate_cell

__all__ = ["RUN_CELL", "ExportError", "Unit", "cells_template", "units"]

RUN_CELL = "idds_jupyter.export.runtime:run_cell"
_GROUPS = ("cell", "heading")


class ExportError(ValueError):
    """The notebook cannot be exported as asked; the message names the cell."""


@dataclass
class Unit:
    """One work-to-be: its cells (1-based numbers), translated source and names."""

    cells: list[int]
    source: str = ""
    name: str = ""
    explicit: bool = False  # named by an idds:work tag
    heading: str = ""
    map_var: str | None = None
    reads: list[str] = field(default_factory=list)
    defines: list[str] = field(default_factory=list)

    @property
    def label(self) -> str:
        if len(self.cells) == 1:
            return f"cell {self.cells[0]}"
        return "cells " + ", ".join(str(c) for c in self.cells)


def _tag_value(tags: list[str], key: str) -> str | None:
    for t in tags:
        if t.startswith(key + "="):
            return t.split("=", 1)[1].strip()
    return None


#: methods taken to change their object in place (a call of another method is a read)
_MUTATORS = frozenset(
    {
        "append",
        "extend",
        "insert",
        "remove",
        "pop",
        "clear",
        "update",
        "add",
        "discard",
        "sort",
        "reverse",
        "setdefault",
        "popitem",
        "fit",
        "partial_fit",
        "write",
        "close",
        "seed",
    }
)


def _base(node: ast.AST) -> str | None:
    while isinstance(node, ast.Attribute | ast.Subscript):
        node = node.value
    return node.id if isinstance(node, ast.Name) else None


def _mutated(tree: ast.Module, modules: set[str]) -> list[str]:
    """Names changed in place at the top level: ``x.append(...)``, ``x[k] = v``, ``x.a = v``,
    ``del x[k]`` (never a module's name: those are not values handed on)."""
    found: list[ast.AST] = []
    for stmt in tree.body:
        if isinstance(stmt, ast.Assign | ast.Delete):
            found += [t for t in stmt.targets if isinstance(t, ast.Attribute | ast.Subscript)]
        elif isinstance(stmt, ast.AugAssign | ast.AnnAssign):
            if isinstance(stmt.target, ast.Attribute | ast.Subscript):
                found.append(stmt.target)
        elif (
            isinstance(stmt, ast.Expr)
            and isinstance(stmt.value, ast.Call)
            and isinstance(stmt.value.func, ast.Attribute)
            and stmt.value.func.attr in _MUTATORS
        ):
            found.append(stmt.value.func.value)
    out: list[str] = []
    for node in found:
        name = _base(node)
        if name and name not in out and name not in modules:
            out.append(name)
    return out


def _imported(tree: ast.Module) -> set[str]:
    out: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import | ast.ImportFrom):
            out |= {(a.asname or a.name.split(".")[0]) for a in node.names}
    return out


def units(nb: Any, group: str = "cell") -> list[Unit]:
    """The notebook's units of work, in notebook order (sources translated, names analysed)."""
    if group not in _GROUPS:
        raise ExportError(f"group must be one of {', '.join(_GROUPS)}, got {group!r}")
    out: list[Unit] = []
    tagged: dict[str, Unit] = {}
    heading = ""
    current: Unit | None = None
    for i, cell in enumerate(nb.cells):
        no = i + 1
        if cell.cell_type == "markdown":
            m = re.search(r"^\s*#{1,6}\s+(.+)$", "".join(cell.source), re.M)
            if m:
                heading, current = m.group(1).strip(), None
            continue
        if cell.cell_type != "code":
            continue
        tags = cell_tags(cell)
        if PARAMETERS_TAG in tags or INJECTED_TAG in tags or not "".join(cell.source).strip():
            continue
        map_var = _tag_value(tags, "idds:map")
        wname = _tag_value(tags, "idds:work")
        text = "".join(cell.source)
        if text.lstrip().startswith("%%idds work"):  # the magic's own meaning: a work, a map
            first, _, body = text.lstrip().partition("\n")
            opts = _idds_work_options(first, no)
            map_var = opts.get("map") or map_var
            wname = opts.get("name") or wname
            text = body
        src = translate_cell(text, no)
        if wname is not None:
            if not re.fullmatch(r"[A-Za-z][A-Za-z0-9_]*", wname):
                raise ExportError(
                    f"cell {no}: idds:work={wname!r} is not a work name "
                    "(letters, digits, '_', starting with a letter)"
                )
            unit = tagged.get(wname)
            if unit is None:
                unit = tagged[wname] = Unit(cells=[], name=wname, explicit=True)
                out.append(unit)
            unit.cells.append(no)
            unit.source += src
        elif (
            group == "heading"
            and current is not None
            and map_var is None
            and current.map_var is None
        ):
            current.cells.append(no)
            current.source += src
        else:
            unit = Unit(cells=[no], source=src, heading=heading)
            out.append(unit)
            current = unit if group == "heading" else None
        if map_var is not None:
            unit = tagged[wname] if wname is not None else out[-1]
            if not re.fullmatch(r"[A-Za-z_]\w*", map_var):
                raise ExportError(f"cell {no}: idds:map={map_var!r} is not a variable name")
            unit.map_var = map_var
    trees: list[ast.Module] = []
    for unit in out:
        try:
            trees.append(ast.parse(unit.source))
        except SyntaxError as exc:
            raise ExportError(f"{unit.label}: line {exc.lineno}: {exc.msg}") from None
    modules = set().union(*(_imported(t) for t in trees)) if trees else set()
    for unit, tree in zip(out, trees, strict=True):
        reads, defines = cell_names(unit.source)
        for name in _mutated(tree, modules):
            if name not in defines:
                defines.append(name)
            if name not in reads:
                reads.append(name)
        if unit.map_var and unit.map_var not in reads:
            reads.insert(0, unit.map_var)
        unit.reads, unit.defines = reads, defines
    return out


def _idds_work_options(line: str, no: int) -> dict[str, str]:
    """``--name N`` and ``--map VAR`` of a ``%%idds work`` line (the rest of its options,
    resources and backend, are not carried over: say so in the work's template)."""
    import shlex

    words = shlex.split(line)[2:]
    out: dict[str, str] = {}
    i = 0
    while i < len(words):
        w = words[i]
        key, eq, val = w.partition("=")
        if key in ("--name", "--map"):
            if not eq:
                i += 1
                if i >= len(words):
                    raise ExportError(f"cell {no}: %%idds work {key} needs a value")
                val = words[i]
            out[key[2:]] = val
        elif key in ("--out", "--cores", "--memory-mb", "--backend", "--retries"):
            i += 0 if eq else 1
        else:
            raise ExportError(f"cell {no}: %%idds work: unknown option {w!r}")
        i += 1
    if "name" in out and out["name"] == "cell":
        out.pop("name")
    return out


def _first_comment(source: str) -> str:
    for line in source.splitlines():
        s = line.strip()
        if s.startswith("#") and s.lstrip("#").strip():
            return s.lstrip("#").strip()
        if s:
            return ""
    return ""


def _name_units(us: list[Unit], group: str, params: set[str]) -> None:
    from idds_jupyter.model.analysis import RESERVED_NAMES

    taken: set[str] = {u.name for u in us if u.explicit} | params
    for u in us:
        if u.explicit:
            continue
        text = (
            (u.heading if group == "heading" and u.heading else "")
            or _first_comment(u.source)
            or "_".join(u.defines[:3])
        )
        base = work_name(text, fallback=f"cell_{u.cells[0]}") if text else f"cell_{u.cells[0]}"
        if keyword.iskeyword(base) or base in RESERVED_NAMES:
            base = f"{base}_cell"
        name, k = base, 2
        while name in taken:
            name, k = f"{base}_{k}", k + 1
        taken.add(name)
        u.name = name


def cells_template(
    path: str, nb: Any | None = None, group: str = "cell", name: str | None = None
) -> dict[str, Any]:
    """The template (a dict) of cell-graph mode for the notebook at ``path``."""
    nb = nb if nb is not None else read_notebook(path)
    defaults = parameter_defaults(nb)
    us = units(nb, group)
    if not us:
        raise ExportError(f"{path}: no code cell to export")
    _name_units(us, group, set(defaults))
    producer: dict[str, Unit] = {}
    inputs: dict[str, dict[str, Unit]] = {}
    wanted: dict[str, list[str]] = {u.name: [] for u in us}
    split: dict[str, list[str]] = {u.name: [] for u in us}
    deps: dict[str, list[str]] = {u.name: [] for u in us}
    params_of: dict[str, list[str]] = {u.name: [] for u in us}
    map_from: dict[str, Unit] = {}
    for u in us:
        inputs[u.name] = {}
        for r in u.reads:
            if u.map_var == r:
                src = producer.get(r)
                if src is None:
                    raise ExportError(
                        f"{u.label}: idds:map={r}: no earlier cell defines {r!r}"
                        + (
                            " (a parameter cannot be mapped over directly: bind it in a cell, "
                            f"e.g. '{r}_items = list({r})')"
                            if r in defaults
                            else ""
                        )
                    )
                if src.map_var is not None:
                    raise ExportError(
                        f"{u.label}: idds:map={r}: {r!r} comes from {src.label}, "
                        "itself fanned out; nested fan-out is not supported"
                    )
                map_from[u.name] = src
                if r not in split[src.name]:
                    split[src.name].append(r)
                if src.name not in deps[u.name]:
                    deps[u.name].append(src.name)
            elif r in producer:
                src = producer[r]
                inputs[u.name][r] = src
                if r not in wanted[src.name]:
                    wanted[src.name].append(r)
                if src.name not in deps[u.name]:
                    deps[u.name].append(src.name)
            elif r in defaults:
                params_of[u.name].append(r)
        for d in u.defines:
            producer[d] = u
    last = us[-1]
    for d in result_names(last.source):
        if d not in wanted[last.name]:
            wanted[last.name].append(d)
    works: list[dict[str, Any]] = []
    for u in us:
        p: dict[str, Any] = {
            "idds_cell": u.label,
            "idds_source": _esc(u.source),
            "idds_dir": _esc(os.path.dirname(os.path.abspath(path))),
        }
        if inputs[u.name]:
            p["idds_inputs"] = {n: "{" + src.name + ".result}" for n, src in inputs[u.name].items()}
        if wanted[u.name]:
            p["idds_outputs"] = list(wanted[u.name])
        if split[u.name]:
            p["idds_split"] = list(split[u.name])
        if u.map_var:
            p["idds_map"] = u.map_var
        p.update({n: "{" + n + "}" for n in params_of[u.name]})
        work: dict[str, Any] = {"name": u.name, "function": RUN_CELL, "parameters": p}
        if u.map_var:
            work["kwargs_list"] = "{" + f"{map_from[u.name].name}.result.split.{u.map_var}" + "}"
        if deps[u.name]:
            work["depends_on"] = deps[u.name]
        works.append(work)
    base = work_name(name or os.path.splitext(os.path.basename(path))[0])
    return {
        "name": base.replace("_", "-"),
        "description": f"{os.path.basename(path)} as a graph of its cells (cell-graph mode)",
        "parameters": defaults,
        "works": works,
    }
