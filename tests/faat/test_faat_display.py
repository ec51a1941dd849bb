"""Runs and views reach the notebook through IPython's display machinery.

faat/, hpo/ and al/ build no widgets and import nothing of the kernel: the kernel
registers, by type name, how IPython shows a Run and a View (idds_jupyter.kernel.display).
"""

from __future__ import annotations

import ast
import json
import pathlib
import subprocess
import sys

import pytest

import idds_jupyter
from idds_jupyter.views import View

PACKAGE = pathlib.Path(idds_jupyter.__file__).parent


@pytest.mark.parametrize("layer", ["faat", "hpo", "al"])
def test_use_case_layers_do_not_import_the_kernel(layer: str) -> None:
    for path in sorted((PACKAGE / layer).rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text("utf-8"))):
            names = (
                [a.name for a in node.names]
                if isinstance(node, ast.Import)
                else [node.module or ""]
                if isinstance(node, ast.ImportFrom)
                else []
            )
            for name in names:
                assert not name.startswith("idds_jupyter.kernel"), f"{path.name} imports {name}"


def test_a_view_names_its_kind() -> None:
    assert repr(View("hpo", None, 7, {"direction": "maximize"})) == "<idds hpo view of run 7>"
    with pytest.raises(ValueError, match="unknown view kind 'plot'"):
        View("plot", None, 7)


_SHELL = r"""
import json, sys
from IPython.core.interactiveshell import InteractiveShell
shell = InteractiveShell.instance()
from idds_jupyter.faat.workflow import Run   # importing idds_jupyter registers the printers
from idds_jupyter.views import View
widgets_before = "idds_jupyter.kernel.widgets" in sys.modules

class Client:
    def status(self, run_id):
        return {"id": run_id, "name": "demo", "status": "running",
                "works": [{"name": "train", "status": "running", "jobs": {"finished": 1, "running": 1}}]}
    def on_message(self, fn):
        return lambda: None

class Broken:
    def status(self, run_id):
        raise ConnectionError("no server")

out = {"widgets_before": widgets_before}
for label, obj in [("run", Run(Client(), 3, name="demo")), ("view", View("run", Client(), 4)),
                   ("broken", Run(Broken(), 5, name="gone"))]:
    data, _ = shell.display_formatter.format(obj)
    out[label] = sorted(data), data.get("text/plain")
print(json.dumps(out))
"""


def test_ipython_shows_runs_and_views_as_widgets_and_falls_back_to_text() -> None:
    pytest.importorskip("ipywidgets")
    proc = subprocess.run(
        [sys.executable, "-c", _SHELL], capture_output=True, text=True, timeout=120
    )
    assert proc.returncode == 0, proc.stderr
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    assert out["widgets_before"] is False  # nothing of the widgets until something is shown
    widget_mime = "application/vnd.jupyter.widget-view+json"
    assert widget_mime in out["run"][0] and out["run"][1] == "<Run 3 demo ?>"
    assert widget_mime in out["view"][0] and out["view"][1] == "<idds run view of run 4>"
    assert out["broken"] == [["text/plain"], "<Run 5 gone ?>"]  # no server: its text, no traceback
    assert "Traceback" not in proc.stderr
