"""``%idds export`` and ``%idds submit-notebook`` in a real IPython shell, against a real server."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import nbs
import pytest
import yaml
from IPython.core.error import UsageError
from IPython.testing.globalipapp import start_ipython

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "api"))

from api_helpers import Served, _serve  # noqa: E402


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    tmp = tmp_path_factory.mktemp("export-magics")
    s = _serve(tmp / "home", f"sqlite:///{tmp / 'idds.db'}")
    try:
        yield s
    finally:
        s.handle.stop()


@pytest.fixture(scope="module")
def ip() -> Any:
    shell = start_ipython()
    shell.run_line_magic("load_ext", "idds_jupyter.kernel")
    return shell


def test_export_magic_prints_and_writes(
    ip: Any, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = nbs.branches(tmp_path)
    ip.run_line_magic("idds", f"export {path} --mode cells")
    tmpl = yaml.safe_load(capsys.readouterr().out)
    assert [w["name"] for w in tmpl["works"]] == ["evens", "odds", "join"]
    out = tmp_path / "wf.yaml"
    ip.run_line_magic("idds", f"export {path} -o {out} --sweep seed=1,2")
    assert capsys.readouterr().out.strip() == f"wrote {out}: 1 works, valid"
    assert yaml.safe_load(out.read_text())["works"][0]["kwargs_list"] == [{"seed": 1}, {"seed": 2}]
    bad = nbs.write(tmp_path / "bad.ipynb", nbs._code("x = 1"), nbs._code("%run x.py"))
    with pytest.raises(UsageError, match=r"bad.ipynb: cell 2, line 1: '%run x.py'"):
        ip.run_line_magic("idds", f"export {bad} --mode cells")


def test_submit_notebook_magic_runs_it_on_the_server(
    ip: Any, served: Served, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    ip.run_line_magic("idds", f"connect {served.handle.url} --token {served.alice.token}")
    path = nbs.branches(tmp_path)
    run = ip.run_line_magic("idds", f"submit-notebook {path} --mode cells -p n=7")
    assert f"as run {run.id} (cells mode, 3 works)" in capsys.readouterr().out
    assert served.alice.wait(run.id, timeout=120)["status"] == "finished"
    expected, _ = nbs.reference(path, ["total", "tag", "pair"], {"n": 7})
    r = served.alice.get(f"/requests/{run.id}/works/join/results")
    [job] = r.json["results"]
    assert job["result"]["values"] == expected
