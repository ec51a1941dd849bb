"""The command line: `idds-jupyter export` writes a template that `idds-jupyter run` runs with
`-p`, as papermill would with `-p n 9`; `run`/`submit` also take the notebook itself."""

from __future__ import annotations

import json
from pathlib import Path

import nbs
import pytest
import yaml
from exporthelpers import cli

from idds_jupyter.config import Config
from idds_jupyter.core import Orchestrator
from idds_jupyter.model import Workflow


def _values(home: Path, wid: int, work: str) -> list[dict]:
    orch = Orchestrator(Config.load(None, home=home, db_url=f"sqlite:///{home / 'idds.db'}"))
    return [j["result"]["values"] for j in orch.jobs(wid, work)]


@pytest.mark.parametrize("mode", ["notebook", "cells"])
def test_export_then_run_with_a_parameter(tmp_path: Path, mode: str) -> None:
    path = nbs.branches(tmp_path)
    out = tmp_path / "wf.yaml"
    res = cli(tmp_path, "export", str(path), "--mode", mode, "-o", str(out))
    assert res.returncode == 0, res.stderr
    assert res.stdout.strip() == f"wrote {out}"
    tmpl = yaml.safe_load(out.read_text())
    Workflow.from_dict(tmpl)  # validates
    assert tmpl["parameters"] == {"n": 4, "seed": 1, "label": "run"}
    if mode == "cells":  # works named from the cells' first comments, the join after both
        assert [w["name"] for w in tmpl["works"]] == ["evens", "odds", "join"]
        assert "depends_on" not in tmpl["works"][0] and "depends_on" not in tmpl["works"][1]
        assert tmpl["works"][2]["depends_on"] == ["evens", "odds"]
    res = cli(tmp_path, "run", str(out), "-q", "-p", "n=9")
    assert res.returncode == 0, res.stdout + res.stderr
    wid = int(res.stdout.split("workflow ")[1].split()[0])
    expected, _ = nbs.reference(path, ["total", "tag", "pair"], {"n": 9})
    assert _values(tmp_path, wid, tmpl["works"][-1]["name"]) == [expected]
    assert expected["tag"] == "run-9"


def test_run_a_notebook_directly_with_a_sweep(tmp_path: Path) -> None:
    path = nbs.branches(tmp_path)
    res = cli(tmp_path, "run", str(path), "-q", "--sweep", "seed=1,2", "--sweep", "n=2,3")
    assert res.returncode == 0, res.stdout + res.stderr
    assert "finished=4" in res.stdout
    wid = int(res.stdout.split("workflow ")[1].split()[0])
    got = _values(tmp_path, wid, "branches")
    want = [
        nbs.reference(path, ["total", "tag", "pair"], {"seed": s, "n": n})[0]
        for s in (1, 2)
        for n in (2, 3)
    ]
    assert got == want


def test_magics_without_a_batch_meaning_are_refused_with_the_cell_number(tmp_path: Path) -> None:
    path = nbs.write(tmp_path / "bad.ipynb", nbs._code("x = 1"), nbs._code("files = !ls\ny = 2"))
    res = cli(tmp_path, "export", str(path), "--mode", "cells")
    assert res.returncode == 2
    assert "cell 2, line 1: 'files = !ls'" in res.stderr and "no batch equivalent" in res.stderr
    assert "Traceback" not in res.stderr
    path = nbs.write(tmp_path / "bad2.ipynb", nbs._code("%run other.py\nx = 1"))
    res = cli(tmp_path, "export", str(path), "--mode", "cells")
    assert res.returncode == 2 and "cell 1, line 1: '%run other.py'" in res.stderr


def test_a_bad_parameters_cell_is_named(tmp_path: Path) -> None:
    path = nbs.write(tmp_path / "p.ipynb", nbs._code("n = 3\nm = n * 2", "parameters"))
    res = cli(tmp_path, "export", str(path))
    assert res.returncode == 2
    assert "cell 1 (parameters), line 2: the default of 'm' is not a literal (n * 2)" in res.stderr


def test_export_to_stdout_is_yaml(tmp_path: Path) -> None:
    path = nbs.mapped(tmp_path)
    res = cli(tmp_path, "export", str(path), "--mode", "cells")
    assert res.returncode == 0, res.stderr
    tmpl = yaml.safe_load(res.stdout)
    square = next(w for w in tmpl["works"] if w["name"] == "square")
    assert square["kwargs_list"] == "{items_scale.result.split.items}"
    assert square["parameters"]["idds_map"] == "items"
    assert json.dumps(tmpl)  # plain data
