"""The injected-parameters cell is what papermill itself writes for the same parameters."""

from __future__ import annotations

from pathlib import Path

import nbformat
import nbs
import pytest

from idds_jupyter.export.params import inject_parameters, parameter_defaults

PARAMS = [
    {"n": 9},
    {"seed": 3, "lr": 0.25, "name": 'it\'s a "test"\n\ttab', "flag": True, "none": None},
    {"grid": [1, 2.5, "x", [True, None]], "opts": {"a": 1, "b": {"c": "d"}}},
    {
        "big": 10**20,
        "tiny": 1e-12,
        "neg": -7,
        "nan": float("nan"),
        "inf": float("inf"),
        "minf": float("-inf"),
        "uni": "π ≈ 3.14 — ok",
    },
]


def _load(path: Path) -> nbformat.NotebookNode:
    """As papermill reads a notebook (every cell gets its tags list)."""
    from papermill.iorw import load_notebook_node

    return load_notebook_node(str(path))


@pytest.mark.parametrize("params", PARAMS, ids=["one", "scalars", "nested", "numbers"])
def test_injected_cell_is_papermills(tmp_path: Path, params: dict) -> None:
    parameterize = pytest.importorskip("papermill.parameterize")
    path = nbs.branches(tmp_path)
    ours = nbformat.read(str(path), as_version=4)
    at = inject_parameters(ours, params)
    theirs = parameterize.parameterize_notebook(_load(path), params)
    [their_cell] = [c for c in theirs.cells if "injected-parameters" in c.metadata.get("tags", [])]
    assert at == theirs.cells.index(their_cell) == 2  # right after the parameters cell
    assert ours.cells[at].source == their_cell.source
    assert ours.cells[at].metadata["tags"] == ["injected-parameters"]
    assert ours.metadata["papermill"]["parameters"] == params or "nan" in params
    # and it runs: the values arrive as themselves
    if "nan" not in params:
        ns: dict = {}
        exec(ours.cells[at].source, ns)
        assert {k: ns[k] for k in params} == params


def test_a_second_injection_replaces_the_first_as_papermill_does(tmp_path: Path) -> None:
    parameterize = pytest.importorskip("papermill.parameterize")
    path = nbs.branches(tmp_path)
    ours = nbformat.read(str(path), as_version=4)
    inject_parameters(ours, {"n": 1})
    inject_parameters(ours, {"n": 2})
    theirs = parameterize.parameterize_notebook(
        parameterize.parameterize_notebook(_load(path), {"n": 1}), {"n": 2}
    )
    assert [c.source for c in ours.cells] == [c.source for c in theirs.cells]


def test_without_a_parameters_cell_it_goes_first(tmp_path: Path) -> None:
    path = nbs.failing(tmp_path)
    nb = nbformat.read(str(path), as_version=4)
    assert parameter_defaults(nb) == {}
    assert inject_parameters(nb, {"x": 5}) == 0 and nb.cells[0].source == "# Parameters\nx = 5\n"


def test_defaults_of_the_parameters_cell(tmp_path: Path) -> None:
    path = nbs.write(
        tmp_path / "p.ipynb",
        nbs._code(
            '"""defaults"""\nn: int = 3  # how many\nnames = ("a", "b")\nopts = {"k": [1, None]}\nok = False',
            "parameters",
        ),
    )
    nb = nbformat.read(str(path), as_version=4)
    assert parameter_defaults(nb) == {
        "n": 3,
        "names": ["a", "b"],
        "opts": {"k": [1, None]},
        "ok": False,
    }
