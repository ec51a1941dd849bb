"""Whole-notebook mode: one work that runs the notebook headless, papermill-style.

``idds-jupyter export NB.ipynb --mode notebook -o wf.yaml`` writes::

    name: analysis
    parameters: {n: 3, seed: 1}          # the defaults of the 'parameters' cell
    works:
      - name: analysis
        function: idds_jupyter.export.runtime:run_notebook
        parameters:
          idds_notebook: /abs/path/analysis.ipynb
          idds_outputs: [total, mean]    # what the last code cell defines: the result
          n: '{n}'
          seed: '{seed}'
        kwargs_list: [{seed: 1}, {seed: 2}]   # with --sweep seed=1,2

so ``idds-jupyter run wf.yaml -p n=9`` runs it as ``papermill -p n 9`` would.
"""

from __future__ import annotations

import os
import re
from typing import Any

from idds_jupyter.export.analysis import cell_names
from idds_jupyter.export.params import parameter_defaults
from idds_jupyter.export.translate import translate_cell

__all__ = [
    "RUN_NOTEBOOK",
    "last_cell_outputs",
    "notebook_template",
    "read_notebook",
    "result_names",
    "work_name",
]

RUN_NOTEBOOK = "idds_jupyter.export.runtime:run_notebook"


def read_notebook(path: str) -> Any:
    import nbformat

    with open(path, encoding="utf-8") as fh:
        return nbformat.read(fh, as_version=4)


def work_name(text: str, fallback: str = "notebook") -> str:
    """An identifier from free text (letters, digits, ``_``; starts with a letter)."""
    name = re.sub(r"\W+", "_", text.strip()).strip("_").lower()
    name = re.sub(r"_+", "_", name)[:48].strip("_")
    if not name or not name[0].isalpha() or not name.isascii():
        name = f"{fallback}_{name}" if name and name.isascii() else fallback
    return name


def _esc(text: str) -> str:
    """Literal text in a template value (``{`` and ``}`` are placeholders there)."""
    return text.replace("{", "{{").replace("}", "}}")


def result_names(source: str) -> list[str]:
    """The names a cell defines that make a result: not those its imports bind (modules)."""
    import ast

    imported: set[str] = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import | ast.ImportFrom):
            imported |= {a.asname or a.name.split(".")[0] for a in node.names}
    return [n for n in cell_names(source)[1] if n not in imported]


def last_cell_outputs(nb: Any) -> list[str]:
    """The names the notebook's last code cell defines (after translating its magics)."""
    for i in range(len(nb.cells) - 1, -1, -1):
        cell = nb.cells[i]
        if cell.cell_type == "code" and "".join(cell.source).strip():
            return result_names(translate_cell(cell.source, i + 1))
    return []


def notebook_template(
    path: str,
    nb: Any | None = None,
    sweep: list[dict[str, Any]] | None = None,
    name: str | None = None,
    kernel: str | None = None,
    timeout_s: float | None = None,
) -> dict[str, Any]:
    """The template (a dict) of whole-notebook mode for the notebook at ``path``."""
    nb = nb if nb is not None else read_notebook(path)
    path = os.path.abspath(path)
    defaults = parameter_defaults(nb)
    wname = work_name(name or os.path.splitext(os.path.basename(path))[0])
    params: dict[str, Any] = {"idds_notebook": _esc(path), "idds_outputs": last_cell_outputs(nb)}
    if kernel:
        params["idds_kernel"] = kernel
    if timeout_s:
        params["idds_timeout_s"] = timeout_s
    params.update({k: "{" + k + "}" for k in defaults})
    work: dict[str, Any] = {"name": wname, "function": RUN_NOTEBOOK, "parameters": params}
    if sweep:
        work["kwargs_list"] = sweep
    return {
        "name": wname.replace("_", "-"),
        "description": f"{os.path.basename(path)} run headless (whole-notebook mode)",
        "parameters": defaults,
        "works": [work],
    }
