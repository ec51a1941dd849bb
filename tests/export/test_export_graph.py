"""Cell-graph mode's analysis: units, names, dependencies, translation of IPython syntax."""

from __future__ import annotations

from pathlib import Path

import nbformat
import nbs
import pytest

from idds_jupyter.export import export_template, parse_sweep, to_yaml
from idds_jupyter.export.analysis import cell_names
from idds_jupyter.export.cells import ExportError, units
from idds_jupyter.export.translate import MagicError, translate_cell
from idds_jupyter.model import Workflow


def _deps(tmpl: dict) -> dict[str, list[str]]:
    return {w["name"]: w.get("depends_on", []) for w in tmpl["works"]}


def test_the_analysis_is_the_one_of_the_idds_work_magic() -> None:
    import idds_jupyter.kernel.magics as magics

    assert magics.cell_names is cell_names
    assert cell_names("total += x\ny = [i for i in z]\ndef f(a):\n    return a + w\n") == (
        ["total", "x", "z", "w"],
        ["total", "y", "f"],
    )


def test_in_place_changes_order_cells_and_modules_do_not(tmp_path: Path) -> None:
    path = nbs.write(
        tmp_path / "m.ipynb",
        nbs._code("import math\ndata = []"),
        nbs._code("# fill\ndata.append(math.pi)"),
        nbs._code("# other\nr = math.sqrt(4)"),
        nbs._code("# use\nn = len(data) + r"),
    )
    tmpl = export_template(str(path), "cells")
    assert _deps(tmpl) == {
        "math_data": [],
        "fill": ["math_data"],
        "other": ["math_data"],
        "use": ["fill", "other"],
    }
    use = tmpl["works"][-1]["parameters"]["idds_inputs"]
    assert use == {"data": "{fill.result}", "r": "{other.result}"}


def test_grouping_by_heading_and_by_tag(tmp_path: Path) -> None:
    path = nbs.write(
        tmp_path / "g.ipynb",
        nbformat.v4.new_markdown_cell("## Load the data"),
        nbs._code("a = 1"),
        nbs._code("b = a + 1"),
        nbformat.v4.new_markdown_cell("## Fit"),
        nbs._code("c = b * 2"),
        nbs._code("d = 5", "idds:work=extra"),
        nbs._code("e = d + c", "idds:work=extra"),
    )
    nb = nbformat.read(str(path), as_version=4)
    assert [(u.name or None, u.cells) for u in units(nb, "heading")] == [
        (None, [2, 3]),
        (None, [5]),
        ("extra", [6, 7]),
    ]
    tmpl = export_template(str(path), "cells", group="heading")
    assert _deps(tmpl) == {"load_the_data": [], "fit": ["load_the_data"], "extra": ["fit"]}
    tmpl = export_template(str(path), "cells")
    assert [w["name"] for w in tmpl["works"]] == ["a", "b", "c", "extra"]


def test_the_yaml_is_readable_and_validates(tmp_path: Path) -> None:
    path = nbs.branches(tmp_path)
    for mode in ("notebook", "cells"):
        text = to_yaml(export_template(str(path), mode))
        Workflow.from_yaml(text)
        assert "idds_source: |" in text or mode == "notebook"
    assert "tag = f'{{label}}-{{n}}'" in to_yaml(export_template(str(path), "cells"))


@pytest.mark.parametrize(
    "src, out",
    [
        ("!echo hi", "__import__('subprocess').run('echo hi', shell=True, check=True)\n"),
        ("%time x = 1", "x = 1\n"),
        ("%%time\nx = 1", "x = 1\n"),
        ("%env A=b c", "__import__('os').environ['A'] = 'b c'\n"),
        (
            "%%bash\necho hi",
            "__import__('subprocess').run(['bash'], input='echo hi\\n', text=True, check=True)\n",
        ),
        (
            "%%writefile out.txt\nhello",
            "with open('out.txt', 'w') as __f:\n    __f.write('hello\\n')\n",
        ),
        ("s = '''\n%not a magic\n'''", "s = '''\n%not a magic\n'''\n"),
        (
            "for i in range(2):\n    !echo {i}",
            "for i in range(2):\n    __import__('subprocess').run('echo {i}', shell=True, check=True)\n",
        ),
    ],
)
def test_translated(src: str, out: str) -> None:
    assert translate_cell(src, 1) == out


@pytest.mark.parametrize(
    "src, where",
    [
        ("x = !ls", "cell 4, line 1"),
        ("y = 1\n%run a.py", "cell 4, line 2"),
        ("%%idds work\nx = 1", "cell 4, line 1"),
        ("len?", "cell 4, line 1"),
        ("%timeit f()", "cell 4, line 1"),
        ("%%capture out\nx = 1", "cell 4, line 1"),
    ],
)
def test_refused_with_the_cell_number(src: str, where: str) -> None:
    with pytest.raises(MagicError, match=where):
        translate_cell(src, 4)


def test_map_needs_a_cell_defining_the_list(tmp_path: Path) -> None:
    path = nbs.write(
        tmp_path / "m.ipynb",
        nbs._code("seeds = [1, 2]", "parameters"),
        nbs._code("y = seeds * 2", "idds:map=seeds"),
    )
    with pytest.raises(
        ExportError,
        match=r"cell 2: idds:map=seeds: no earlier cell defines 'seeds' "
        r"\(a parameter cannot be mapped over directly",
    ):
        export_template(str(path), "cells")


def test_sweep_is_the_product() -> None:
    assert parse_sweep(["seed=1,2", "lr=0.1,x"]) == [
        {"seed": 1, "lr": 0.1},
        {"seed": 1, "lr": "x"},
        {"seed": 2, "lr": 0.1},
        {"seed": 2, "lr": "x"},
    ]
    with pytest.raises(ValueError, match="expected NAME=V1,V2"):
        parse_sweep(["seed"])


def test_idds_work_cells_keep_their_meaning(tmp_path: Path) -> None:
    path = nbs.write(
        tmp_path / "w.ipynb",
        nbs._code("data = [1, 2, 3]\nscale = 2"),
        nbs._code("%%idds work --name squares --map data --out sq\nsq = data * data * scale"),
        nbs._code("%%idds work --name total\ntotal = sum(sq)"),
    )
    tmpl = export_template(str(path), "cells")
    squares, total = tmpl["works"][1], tmpl["works"][2]
    assert squares["name"] == "squares" and squares["parameters"]["idds_map"] == "data"
    assert squares["kwargs_list"] == "{data_scale.result.split.data}"
    assert total["name"] == "total" and total["depends_on"] == ["squares"]
    bad = nbs.write(tmp_path / "b.ipynb", nbs._code("%%idds work --bogus\nx = 1"))
    with pytest.raises(ExportError, match="cell 1: %%idds work: unknown option '--bogus'"):
        export_template(str(bad), "cells")


def test_a_cell_rebinding_a_parameter_is_named_apart_from_it(tmp_path: Path) -> None:
    path = nbs.write(
        tmp_path / "p.ipynb",
        nbs._code("seed = 1", "parameters"),
        nbs._code("seed = seed + 1"),
        nbs._code("x = seed"),
    )
    tmpl = export_template(str(path), "cells")
    assert _deps(tmpl) == {"seed_2": [], "x": ["seed_2"]}
    assert tmpl["works"][0]["parameters"]["seed"] == "{seed}"
    assert tmpl["works"][1]["parameters"]["idds_inputs"] == {"seed": "{seed_2.result}"}


@pytest.mark.parametrize(
    "src, reads, assigns",
    [
        ("x = x + 1", ["x"], ["x"]),
        ("y: int = y * 2", ["y"], ["y"]),
        ("for i in items:\n    acc = i", ["items"], ["i", "acc"]),
        ("if (n := n + 1) > 2:\n    pass", ["n"], ["n"]),
    ],
)
def test_the_right_hand_side_is_read_before_the_target_is_bound(
    src: str, reads: list[str], assigns: list[str]
) -> None:
    assert cell_names(src) == (reads, assigns)
