"""Round trips: a notebook executed with nbclient and its exported workflow give the same
values (the variables the last cell defines), in both modes, on the local backend."""

from __future__ import annotations

from pathlib import Path

import nbs
import pytest
from exporthelpers import config, last_values, run

from idds_jupyter.export import export_template

CASES = [  # (notebook, names its last cell defines, parameters, notebook has a map cell)
    (nbs.branches, ["total", "tag", "pair"], {"n": 9}),
    (nbs.mapped, ["total", "count", "first"], {"n": 7}),
    (nbs.magics, ["n_shapes", "result"], {}),
    (nbs.files, ["median", "largest"], {}),
]


@pytest.mark.parametrize("mode", ["notebook", "cells"])
@pytest.mark.parametrize(
    "make, names, params", CASES, ids=["branches", "mapped", "magics", "files"]
)
def test_same_values_as_nbclient(tmp_path: Path, mode: str, make, names, params) -> None:
    path = make(tmp_path)
    maps = make is nbs.mapped
    expected, error = nbs.reference(path, names, params, maps=maps)
    assert error is None and set(expected) == set(names)
    tmpl = export_template(str(path), mode)
    orch, wid, status = run(config(tmp_path), tmpl, params)
    assert status == "finished", orch.jobs(wid)
    assert last_values(orch, wid, tmpl) == [expected]
    if mode == "cells" and maps:  # one job per item of the mapped list
        [square] = [w for w in tmpl["works"] if w.get("kwargs_list")]
        assert len(orch.jobs(wid, square["name"])) == params["n"]


@pytest.mark.parametrize("mode", ["notebook", "cells"])
def test_a_failing_cell_fails_the_job_with_its_number_and_traceback(
    tmp_path: Path, mode: str
) -> None:
    path = nbs.failing(tmp_path)
    _, error = nbs.reference(path, ["z"])
    assert error == "ZeroDivisionError: division by zero"
    tmpl = export_template(str(path), mode)
    orch, wid, status = run(config(tmp_path), tmpl)
    # the run did not finish: failed (one job) or, with the cells before it done, subfinished
    assert status == ("failed" if mode == "notebook" else "subfinished")
    failed = [j for j in orch.jobs(wid) if j["status"] == "failed"]
    assert len(failed) == 1
    err = failed[0]["error"]
    assert "cell 3 failed: ZeroDivisionError: division by zero" in err
    assert "y = x / 0" in err  # the traceback, with the line of the cell
    if mode == "cells":  # the cell after it never ran
        works = {w["name"]: w["status"] for w in orch.status(wid)["works"]}
        assert works["x"] == "finished" and works["y"] == "failed"
        assert works["z"] not in ("finished", "running")


def test_whole_notebook_sweep_one_job_per_parameter_set(tmp_path: Path) -> None:
    path = nbs.branches(tmp_path)
    tmpl = export_template(str(path), "notebook", sweep=[{"seed": s} for s in (1, 2, 3)])
    orch, wid, status = run(config(tmp_path), tmpl, {"n": 3})
    assert status == "finished"
    got = last_values(orch, wid, tmpl)
    want = [
        nbs.reference(path, ["total", "tag", "pair"], {"n": 3, "seed": s})[0] for s in (1, 2, 3)
    ]
    assert got == want and len({v["total"] for v in got}) == 3
    for job in orch.jobs(wid):  # each executed notebook is kept beside its log
        nb = Path(job["log_path"]).with_suffix(".ipynb")
        text = nb.read_text()
        assert "injected-parameters" in text and "seed = " in text
