"""The ``parameters`` cell (papermill's convention): its defaults, and the injected cell.

A notebook's cell tagged ``parameters`` holds plain assignments (``n = 3``,
``seed: int = 1  # the seed``). Their literal values become the exported
template's ``parameters``. When a run gives other values, a cell tagged
``injected-parameters`` is put right after it, written exactly as papermill's
Python translator writes it (``# Parameters`` then ``name = value`` lines), so
papermill users recognise it and the notebook's own defaults stay visible.
"""

from __future__ import annotations

import ast
import math
from typing import Any

__all__ = [
    "INJECTED_TAG",
    "PARAMETERS_TAG",
    "ParameterError",
    "cell_tags",
    "inject_parameters",
    "injected_source",
    "parameter_defaults",
    "parameters_cell_index",
    "translate_value",
]

PARAMETERS_TAG = "parameters"
INJECTED_TAG = "injected-parameters"


class ParameterError(ValueError):
    """The parameters cell cannot be read as literal defaults."""


def cell_tags(cell: Any) -> list[str]:
    """The tags of a notebook cell (a dict or a NotebookNode)."""
    tags = (cell.get("metadata") or {}).get("tags") or []
    return [str(t) for t in tags]


def _source(cell: Any) -> str:
    src = cell.get("source", "")
    return "".join(src) if isinstance(src, list) else str(src)


def parameters_cell_index(nb: Any, tag: str = PARAMETERS_TAG) -> int:
    """Index of the first cell tagged ``tag``, or -1."""
    for i, cell in enumerate(nb["cells"]):
        if tag in cell_tags(cell):
            return i
    return -1


def parameter_defaults(nb: Any) -> dict[str, Any]:
    """The ``name = literal`` assignments of the ``parameters`` cell, in order ({} without one).

    Values must be literals (numbers, strings, booleans, None, lists, dicts,
    tuples become lists): they are the template's JSON parameters. Anything
    else is refused with the cell number and the line.
    """
    idx = parameters_cell_index(nb)
    if idx < 0:
        return {}
    src = _source(nb["cells"][idx])
    try:
        tree = ast.parse(src)
    except SyntaxError as exc:
        raise ParameterError(f"cell {idx + 1} (parameters): line {exc.lineno}: {exc.msg}") from None
    out: dict[str, Any] = {}
    for node in tree.body:
        if isinstance(node, ast.Assign) and len(node.targets) == 1:
            target, value = node.targets[0], node.value
        elif isinstance(node, ast.AnnAssign) and node.value is not None:
            target, value = node.target, node.value
        elif isinstance(node, ast.Expr) and isinstance(node.value, ast.Constant):
            continue  # a docstring
        else:
            raise ParameterError(
                f"cell {idx + 1} (parameters), line {node.lineno}: only "
                f"'name = value' assignments of literals may be parameters"
            )
        if not isinstance(target, ast.Name):
            raise ParameterError(
                f"cell {idx + 1} (parameters), line {node.lineno}: assign one plain name per line"
            )
        try:
            val = ast.literal_eval(value)
        except (ValueError, SyntaxError, TypeError, MemoryError, RecursionError):
            raise ParameterError(
                f"cell {idx + 1} (parameters), line {node.lineno}: the default of "
                f"{target.id!r} is not a literal ({ast.unparse(value)[:60]})"
            ) from None
        out[target.id] = _jsonable(val, target.id, idx)
    return out


def _jsonable(v: Any, name: str, idx: int) -> Any:
    if v is None or isinstance(v, bool | int | str):
        return v
    if isinstance(v, float):
        return v
    if isinstance(v, list | tuple):
        return [_jsonable(x, name, idx) for x in v]
    if isinstance(v, dict) and all(isinstance(k, str) for k in v):
        return {k: _jsonable(x, name, idx) for k, x in v.items()}
    raise ParameterError(
        f"cell {idx + 1} (parameters): the default of {name!r} "
        f"({type(v).__name__}) is not a JSON value"
    )


# ------------------------------------------------------------- papermill's Python translator
def _escaped_str(val: str) -> str:
    text = val.encode("unicode_escape").decode("utf-8").replace('"', r"\"")
    return f'"{text}"'


def translate_value(val: Any) -> str:
    """A value as papermill's ``PythonTranslator.translate`` writes it."""
    if val is None:
        return "None"
    if isinstance(val, str):
        return _escaped_str(val)
    if isinstance(val, bool | int):
        return f"{val}"
    if isinstance(val, float):
        if math.isfinite(val):
            return f"{val}"
        if math.isnan(val):
            return "float('nan')"
        return "float('-inf')" if val < 0 else "float('inf')"
    if isinstance(val, dict):
        return (
            "{"
            + ", ".join(f"{_escaped_str(str(k))}: {translate_value(v)}" for k, v in val.items())
            + "}"
        )
    if isinstance(val, list | tuple):
        return "[" + ", ".join(translate_value(v) for v in val) + "]"
    return _escaped_str(str(val))


def injected_source(parameters: dict[str, Any], comment: str = "Parameters") -> str:
    """The source of the injected cell (papermill's ``codify`` without black)."""
    out = f"# {comment}".strip() + "\n"
    for name, val in parameters.items():
        out += f"{name} = {translate_value(val)}\n"
    return out


def inject_parameters(nb: Any, parameters: dict[str, Any]) -> int:
    """Put the ``injected-parameters`` cell where papermill puts it; return its index.

    It replaces an existing injected cell, else goes right after the ``parameters``
    cell, else at the top. Also records ``metadata.papermill.parameters``.
    """
    import nbformat

    cell = nbformat.v4.new_code_cell(source=injected_source(parameters))
    cell.metadata["tags"] = [INJECTED_TAG]
    old = parameters_cell_index(nb, INJECTED_TAG)
    if old >= 0:
        nb.cells[old] = cell
        at = old
    else:
        at = parameters_cell_index(nb) + 1  # 0 without a parameters cell
        nb.cells.insert(at, cell)
    nb.metadata.setdefault("papermill", {})["parameters"] = dict(parameters)
    return at
