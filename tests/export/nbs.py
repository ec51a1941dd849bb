"""The notebooks the export tests run, written with nbformat (one function each)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import nbformat
from nbclient import NotebookClient
from nbclient.exceptions import CellExecutionError

v4 = nbformat.v4
KERNEL = {"name": "python3", "display_name": "Python 3", "language": "python"}


def _code(src: str, *tags: str) -> Any:
    cell = v4.new_code_cell(src)
    if tags:
        cell.metadata["tags"] = list(tags)
    return cell


def write(path: Path, *cells: Any) -> Path:
    nb = v4.new_notebook(metadata={"kernelspec": KERNEL})
    nb.cells = list(cells)
    nbformat.write(nb, str(path))
    return path


def branches(d: Path) -> Path:
    """A parameters cell and two independent branches joined by the last cell."""
    return write(
        d / "branches.ipynb",
        v4.new_markdown_cell("# Two branches"),
        _code("n = 4\nseed = 1\nlabel = 'run'", "parameters"),
        _code("# evens\nevens = [2 * i for i in range(n)]"),
        _code("# odds\nodds = [2 * i + 1 + seed for i in range(n)]"),
        _code(
            "# join\ntotal = sum(evens) + sum(odds)\ntag = f'{label}-{n}'\n"
            "pair = {'evens': evens[-1], 'odds': odds[-1]}"
        ),
    )


def mapped(d: Path) -> Path:
    """A cell fanned out over ``items``: one job per item, ``items`` bound to the item in it."""
    return write(
        d / "mapped.ipynb",
        _code("n = 5", "parameters"),
        _code("items = list(range(1, n + 1))\nscale = 10"),
        _code("square = items * items * scale", "idds:map=items"),
        _code("total = sum(square)\ncount = len(square)\nfirst = items[0]"),
    )


def failing(d: Path) -> Path:
    """The third cell raises ZeroDivisionError."""
    return write(
        d / "failing.ipynb",
        _code("x = 1"),
        v4.new_markdown_cell("the next cell divides by zero"),
        _code("y = x / 0"),
        _code("z = y + 1"),
    )


def magics(d: Path) -> Path:
    """Magics and shell lines with a clear batch meaning, a value that is not JSON."""
    return write(
        d / "magics.ipynb",
        _code("%load_ext autoreload\n%autoreload 2\nimport math"),
        _code("%time root = math.sqrt(16)"),
        _code("!echo hello from the shell\nshapes = {'square', 'circle'}"),
        _code("%%time\ncube = 3 ** 3"),
        _code("n_shapes = len(shapes)\nresult = root + cube"),
    )


def sleepers(d: Path) -> Path:
    """Four independent one-second cells, then a cell that adds their values."""
    cells = [
        _code(f"import time\ntime.sleep(1)\n{name} = {i}")
        for i, name in enumerate(("a", "b", "c", "d"), 1)
    ]
    return write(d / "sleepers.ipynb", *cells, _code("total = a + b + c + d"))


def reference(
    path: Path, names: list[str], parameters: dict[str, Any] | None = None, maps: bool = False
) -> tuple[dict[str, Any], str | None]:
    """Execute the notebook with nbclient in one kernel, as a person would: the values of
    ``names`` (JSON) and the error of the failing cell, if one failed."""
    from idds_jupyter.export.params import inject_parameters
    from idds_jupyter.export.runtime import map_cells_in_kernel

    nb = nbformat.read(str(path), as_version=4)
    if parameters:
        inject_parameters(nb, parameters)
    if maps:
        map_cells_in_kernel(nb)
    probe = v4.new_code_cell(
        "import json\nprint('VALUES' + json.dumps({k: v for k, v in "
        f"globals().items() if k in {names!r}}}))"
    )
    nb.cells.append(probe)
    error = None
    try:
        NotebookClient(
            nb, kernel_name="python3", resources={"metadata": {"path": str(path.parent)}}
        ).execute()
    except CellExecutionError as exc:
        error = f"{exc.ename}: {exc.evalue}"
    values: dict[str, Any] = {}
    for out in probe.get("outputs", []):
        for line in out.get("text", "").splitlines():
            if line.startswith("VALUES"):
                values = json.loads(line[len("VALUES") :])
    return values, error


def files(d: Path) -> Path:
    """Reads a data file beside the notebook by a relative path (cells run in its directory)."""
    (d / "data.txt").write_text("3 1 4 1 5 9 2 6\n")
    return write(
        d / "files.ipynb",
        _code("with open('data.txt') as fh:\n    numbers = [int(x) for x in fh.read().split()]"),
        _code("import statistics\nmedian = statistics.median(numbers)\nlargest = max(numbers)"),
    )
