"""What an exported workflow's jobs run, on the worker: no Jupyter server, no store.

Two callables, named by the templates that :mod:`idds_jupyter.export` writes:

- :func:`run_notebook` (whole-notebook mode) executes a notebook headless with
  nbclient in the notebook's own kernel, the parameters injected as papermill
  would; the executed notebook is kept next to the job's log
  (``<log dir>/job-<id>.<attempt>.ipynb``, served by ``GET /logs/{job_id}/notebook``);
  the job's result is the JSON of the variables the last code cell defines. A
  failing cell fails the job with the cell number and the kernel's traceback.
- :func:`run_cell` (cell-graph mode) runs the source of one cell (or group of
  cells) in a fresh namespace in the worker process: the names it reads come
  from the upstream works' values, the names later cells read are pickled into
  the run's value store (content-addressed by sha256) and travel as references
  in the job's JSON result. Only workers unpickle them, never the service.

This module imports nothing of the service (it runs where only the worker runs).
"""

from __future__ import annotations

import base64
import hashlib
import json
import linecache
import os
import re
import sys
import tempfile
import traceback
from typing import Any

__all__ = [
    "CellError",
    "NotebookCellError",
    "map_cell",
    "map_cells_in_kernel",
    "run_cell",
    "run_notebook",
    "value_dir",
]

_INLINE_JSON_MAX = 4096
#: pickles up to this size travel in their reference (the job's result), not in the store
_INLINE_PICKLE_MAX = 65536
_MARK = "__IDDS_EXPORT_VALUES__"
_ANSI = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")


class NotebookCellError(RuntimeError):
    """A cell of an executed notebook raised: the message names the cell and holds its traceback."""


class CellError(RuntimeError):
    """A cell run as a work raised: the message names the notebook cell."""


def _job() -> Any:
    try:
        from idds_jupyter.worker import context
    except ImportError:  # pragma: no cover - the worker is always there in a job
        return None
    return context()


def _job_dir() -> str:
    ctx = _job()
    if ctx is not None and ctx.log_dir:
        return str(ctx.log_dir)
    return os.path.join(tempfile.gettempdir(), "idds-export")


def value_dir() -> str:
    """Where this run's cell values are pickled: ``values/`` in the run's log directory
    (``IDDS_EXPORT_VALUES`` overrides it, e.g. a shared filesystem of a batch system)."""
    return os.environ.get("IDDS_EXPORT_VALUES") or os.path.join(_job_dir(), "values")


def _json_or_repr(value: Any) -> Any:
    try:
        json.dumps(value, allow_nan=False)
        return value
    except (TypeError, ValueError, OverflowError, RecursionError):
        text = repr(value)
        return {"__repr__": text[:2000]}


# ------------------------------------------------------------------ whole-notebook mode
def _collector(outputs: list[str]) -> str:
    names = json.dumps(list(outputs))
    return (
        "def __idds_collect():\n"
        "    import json as _j\n"
        "    _g = globals()\n"
        "    _out = {}\n"
        f"    for _n in {names}:\n"
        "        if _n not in _g:\n"
        "            continue\n"
        "        try:\n"
        "            _j.dumps(_g[_n], allow_nan=False)\n"
        "            _out[_n] = _g[_n]\n"
        "        except (TypeError, ValueError, OverflowError, RecursionError):\n"
        "            _out[_n] = {'__repr__': repr(_g[_n])[:2000]}\n"
        f"    print({_MARK!r} + _j.dumps(_out))\n"
        "__idds_collect()\n"
        "del __idds_collect\n"
    )


def _error_of(nb: Any) -> tuple[int, str] | None:
    """``(index, text)`` of the first cell with an error output."""
    for i, cell in enumerate(nb.cells):
        for out in cell.get("outputs", []) or []:
            if out.get("output_type") == "error":
                tb = "\n".join(out.get("traceback") or [])
                text = _ANSI.sub("", tb) or f"{out.get('ename')}: {out.get('evalue')}"
                return i, f"{out.get('ename')}: {out.get('evalue')}\n{text}"
    return None


def run_notebook(
    idds_notebook: str,
    idds_outputs: list[str] | None = None,
    idds_kernel: str | None = None,
    idds_timeout_s: float | None = None,
    **parameters: Any,
) -> dict[str, Any]:
    """Execute ``idds_notebook`` with ``parameters`` injected; return the last cell's values.

    :param idds_outputs: the names the notebook's last code cell defines (the result)
    :param idds_kernel: the kernel to run it in (default: the notebook's own kernelspec)
    :param idds_timeout_s: per-cell timeout (default none)
    """
    import nbformat
    from nbclient import NotebookClient
    from nbclient.exceptions import CellExecutionError

    from idds_jupyter.export.params import inject_parameters

    with open(idds_notebook, encoding="utf-8") as fh:
        nb = nbformat.read(fh, as_version=4)
    if parameters:
        inject_parameters(nb, parameters)
    kept = map_cells_in_kernel(nb)
    extra = nbformat.v4.new_code_cell(source=_collector(list(idds_outputs or [])))
    nb.cells.append(extra)
    kernel = idds_kernel or (nb.metadata.get("kernelspec") or {}).get("name") or "python3"
    cwd = os.path.dirname(os.path.abspath(idds_notebook))
    client = NotebookClient(
        nb,
        kernel_name=kernel,
        timeout=idds_timeout_s or None,
        resources={"metadata": {"path": cwd}},
    )
    failure: BaseException | None = None
    try:
        client.execute(cwd=cwd)
    except CellExecutionError as exc:
        failure = exc
    nb.cells.remove(extra)
    for cell, source in kept:
        cell.source = source
    values: dict[str, Any] = {}
    for out in extra.get("outputs", []):
        text = out.get("text", "") if out.get("output_type") == "stream" else ""
        for line in str(text).splitlines():
            if line.startswith(_MARK):
                values = json.loads(line[len(_MARK) :])
    path = _save_executed(nb)
    if path:
        print(f"executed notebook: {path}")  # also makes sure the job has a log
    if failure is not None:
        found = _error_of(nb)
        if found is None:
            raise NotebookCellError(str(failure)) from None
        idx, text = found
        first, _, rest = text.partition("\n")
        raise NotebookCellError(f"cell {idx + 1} failed: {first}\n{rest}") from None
    return {"values": values, "notebook": os.path.basename(path) if path else None}


def map_cells_in_kernel(nb: Any) -> list[tuple[Any, str]]:
    """Give cells tagged ``idds:map=VAR`` their meaning in one kernel too: the cell runs once
    per item of ``VAR`` (bound to the item), the names it assigns become lists, in item
    order, as in cell-graph mode and ``%%idds work --map``. Returns ``(cell, source)`` pairs
    to put the sources back after execution."""
    from idds_jupyter.export.analysis import cell_names
    from idds_jupyter.export.params import cell_tags
    from idds_jupyter.export.translate import translate_cell

    kept: list[tuple[Any, str]] = []
    for i, cell in enumerate(nb.cells):
        if cell.cell_type != "code":
            continue
        var = next(
            (t.split("=", 1)[1].strip() for t in cell_tags(cell) if t.startswith("idds:map=")), None
        )
        if not var:
            continue
        src = translate_cell(cell.source, i + 1)
        outs = [n for n in cell_names(src)[1] if n != var]
        kept.append((cell, cell.source))
        cell.source = (
            f"__import__('idds_jupyter.export.runtime', fromlist=['_']).map_cell("
            f"{src!r}, {var!r}, {outs!r}, globals())"
        )
    return kept


def map_cell(source: str, var: str, outputs: list[str], g: dict[str, Any]) -> None:
    """Run ``source`` once per item of ``g[var]``; bind each of ``outputs`` to the list of its values."""
    items = list(g[var])
    res: dict[str, list[Any]] = {n: [] for n in outputs}
    code = compile(source, f"<idds:map={var}>", "exec")
    for item in items:
        ns = dict(g)
        ns[var] = item
        exec(code, ns)
        for n in outputs:
            res[n].append(ns.get(n))
    g.update(res)


def _save_executed(nb: Any) -> str | None:
    import nbformat

    ctx = _job()
    if ctx is None or not ctx.log_dir:
        return None
    from idds_jupyter.worker.job import notebook_path

    path = notebook_path(ctx.log_dir, ctx.job_id, ctx.attempt)
    try:
        os.makedirs(ctx.log_dir, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=ctx.log_dir, prefix=".nb-")
    except OSError as exc:  # e.g. a batch job of another account: the run's values still count
        print(f"the executed notebook is not kept: {ctx.log_dir}: {exc}", file=sys.stderr)
        return None
    with os.fdopen(fd, "w", encoding="utf-8") as fh:
        nbformat.write(nb, fh)
    os.replace(tmp, path)
    return path


# ------------------------------------------------------------------ cell-graph mode
def _put(value: Any) -> dict[str, Any]:
    """Pickle ``value``; its reference (and its JSON when small).

    A small pickle (at most :data:`_INLINE_PICKLE_MAX` bytes) travels in the reference
    itself (``pickle``: base64), so the downstream job needs no path the upstream job
    wrote: batch jobs running as another account, or on another node, get it through
    their spec. A larger one goes into the value store (:func:`value_dir`).
    """
    import cloudpickle

    data = cloudpickle.dumps(value)
    sha = hashlib.sha256(data).hexdigest()
    ref: dict[str, Any] = {"sha256": sha}
    if len(data) <= _INLINE_PICKLE_MAX:
        ref["pickle"] = base64.b64encode(data).decode("ascii")
    else:
        root = value_dir()
        path = os.path.join(root, sha[:2], sha)
        if not os.path.exists(path):
            try:
                os.makedirs(os.path.dirname(path), exist_ok=True)
                fd, tmp = tempfile.mkstemp(dir=os.path.dirname(path), prefix=".tmp-")
            except OSError as exc:
                raise OSError(
                    f"the value store {root} is not writable here ({exc}); set "
                    "IDDS_EXPORT_VALUES to a directory every job can write and "
                    "read"
                ) from None
            with os.fdopen(fd, "wb") as fh:
                fh.write(data)
            os.replace(tmp, path)
    try:
        text = json.dumps(value, allow_nan=False)
        if len(text) <= _INLINE_JSON_MAX:
            ref["json"] = value
    except (TypeError, ValueError, OverflowError, RecursionError):
        pass
    return ref


def _get(ref: Any, name: str) -> Any:
    if not isinstance(ref, dict) or "sha256" not in ref:
        raise CellError(f"no value for {name!r}: {str(ref)[:200]}")
    import cloudpickle

    sha = str(ref["sha256"])
    if not re.fullmatch(r"[0-9a-f]{64}", sha):
        raise CellError(f"value of {name!r}: bad reference {sha[:80]!r}")
    if "pickle" in ref:
        where = "its reference"
        data = base64.b64decode(str(ref["pickle"]))
    else:
        where = os.path.join(value_dir(), sha[:2], sha)
        with open(where, "rb") as fh:
            data = fh.read()
    if hashlib.sha256(data).hexdigest() != sha:
        raise CellError(f"value of {name!r}: {where} does not match its digest")
    return cloudpickle.loads(data)


def _input(name: str, result: Any) -> Any:
    """The value of ``name`` from an upstream work's result (a list of job results for a map)."""
    if isinstance(result, list):  # a fanned-out work: one value per job, in job order
        return [_input(name, r) for r in result]
    if not isinstance(result, dict) or name not in (result.get("refs") or {}):
        raise CellError(f"the upstream work did not deliver {name!r}")
    return _get(result["refs"][name], name)


def run_cell(
    idds_source: str,
    idds_cell: str = "",
    idds_inputs: dict[str, Any] | None = None,
    idds_outputs: list[str] | None = None,
    idds_split: list[str] | None = None,
    idds_map: str | None = None,
    idds_item: dict[str, Any] | None = None,
    idds_dir: str | None = None,
    **parameters: Any,
) -> dict[str, Any]:
    """Run one cell's source; return references to the values later cells read.

    :param idds_source: the (translated) Python source of the cell(s)
    :param idds_cell: which notebook cell(s) this is, for messages ("cell 4")
    :param idds_inputs: name -> the result of the upstream work that defines it
    :param idds_outputs: names to hand on (pickled into the value store)
    :param idds_split: names also handed on item by item, for a fanned-out cell
    :param idds_map: this job binds ``idds_map`` to the item ``idds_item`` refers to
    :param idds_dir: the notebook's directory: the cell runs there, as in the notebook
    :param parameters: the notebook's parameters the cell reads
    """
    ns: dict[str, Any] = {"__name__": "__main__", "__builtins__": __builtins__}
    ns.update(parameters)
    for name, result in (idds_inputs or {}).items():
        ns[name] = _input(name, result)
    if idds_map:
        ns[idds_map] = _get(idds_item, idds_map)
    where = idds_cell or "the cell"
    filename = f"<{where}>"
    linecache.cache[filename] = (len(idds_source), None, idds_source.splitlines(True), filename)
    code = compile(idds_source, filename, "exec")
    here = os.getcwd()
    try:
        if idds_dir and os.path.isdir(idds_dir):
            os.chdir(idds_dir)
        exec(code, ns)
    except Exception as exc:
        # the cell's own traceback (from its first line on), as the notebook would show it
        tb = "".join(
            traceback.format_exception(
                type(exc), exc, exc.__traceback__.tb_next if exc.__traceback__ else None
            )
        )
        raise CellError(f"{where} failed: {type(exc).__name__}: {exc}\n{tb}") from None
    finally:
        os.chdir(here)
    refs: dict[str, Any] = {}
    values: dict[str, Any] = {}
    for name in idds_outputs or []:
        if name not in ns:
            continue
        try:
            refs[name] = _put(ns[name])
        except Exception as exc:
            print(
                f"{where}: {name!r} cannot be handed on ({type(exc).__name__}: {exc})",
                file=sys.stderr,
            )
            continue
        values[name] = refs[name].pop("json", {"__repr__": repr(ns[name])[:200]})
    out: dict[str, Any] = {"refs": refs, "values": values}
    if idds_split:
        out["split"] = {}
        for name in idds_split:
            items = ns.get(name)
            if items is None:
                raise CellError(f"{where}: {name!r}, which a later cell maps over, is not defined")
            out["split"][name] = [{"idds_item": _put(v)} for v in list(items)]
    return out
