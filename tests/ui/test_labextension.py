"""The JupyterLab extension's tests, run from pytest so they are part of ``make test``.

- ``test_labextension_unit``: the unit tests (vitest) of the run-to-graph,
  layout, aggregation, study and coalescing code in ``labextension/test``.
- ``test_labextension_ui``: the UI tests in a real browser (Galata/Playwright on
  Debian's Chromium, ``/usr/bin/chromium``) in ``labextension/ui-tests``: they
  start their own JupyterLab (from this venv, with the idds server extension)
  on a free port, submit runs from a notebook cell and through the REST API,
  and measure render times in the browser. Screenshots are written to
  ``labextension/ui-tests/test-results/screenshots/``, the figures to
  ``labextension/ui-tests/test-results/figures.json`` and printed here.

``make test`` installs what they need first (Chromium from Debian, ``npm ci`` of
both JavaScript packages, the built extension in the venv); run alone, each
test is skipped with the reason when a prerequisite is missing.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
LABEXT = ROOT / "labextension"
UI = LABEXT / "ui-tests"
CHROMIUM = os.environ.get("CHROMIUM", "/usr/bin/chromium")
INSTALLED = (
    Path(sys.prefix) / "share" / "jupyter" / "labextensions" / "idds-jupyter" / "package.json"
)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _need(path: Path, what: str) -> None:
    if not path.exists():
        pytest.fail(f"{what} missing ({path}); `make test` installs it")


def _tail(text: str, n: int = 80) -> str:
    return "\n".join(text.splitlines()[-n:])


def test_labextension_unit() -> None:
    assert shutil.which("node"), "node is not installed (the labextension needs Node.js)"
    _need(LABEXT / "node_modules" / ".bin" / "vitest", "labextension/node_modules (npm ci)")
    proc = subprocess.run(
        [str(LABEXT / "node_modules" / ".bin" / "vitest"), "run"],
        cwd=LABEXT,
        capture_output=True,
        text=True,
        timeout=300,
        env=dict(os.environ, CI="1", NO_COLOR="1"),
    )
    assert proc.returncode == 0, f"vitest failed:\n{_tail(proc.stdout + proc.stderr)}"
    assert " passed" in proc.stdout


def test_labextension_ui(capsys: pytest.CaptureFixture[str]) -> None:
    assert shutil.which("node"), "node is not installed (the UI tests need Node.js)"
    _need(Path(CHROMIUM), "Chromium (apt-get install chromium)")
    _need(
        UI / "node_modules" / ".bin" / "playwright", "labextension/ui-tests/node_modules (npm ci)"
    )
    assert INSTALLED.exists(), (
        f"the labextension is not installed in this environment ({INSTALLED}): "
        "`pip install -e .` builds and installs it"
    )
    env = dict(
        os.environ,
        CI="1",
        NO_COLOR="1",
        IDDS_UI_PORT=str(_free_port()),
        IDDS_VENV_BIN=str(Path(sys.executable).parent),
        CHROMIUM=CHROMIUM,
    )
    for var in ("IDDS_URL", "IDDS_TOKEN", "IDDS_DB_URL", "IDDS_HOME", "JUPYTER_RUNTIME_DIR"):
        env.pop(var, None)
    proc = subprocess.run(
        [str(UI / "node_modules" / ".bin" / "playwright"), "test"],
        cwd=UI,
        capture_output=True,
        text=True,
        timeout=540,
        env=env,
    )
    out = proc.stdout + proc.stderr
    lines = [ln for ln in out.splitlines() if not ln.startswith("[WebServer]")]
    report = [
        ln
        for ln in lines
        if ln.startswith(("[figure]", "[screenshot]"))
        or " passed" in ln
        or " failed" in ln
        or ln.lstrip().startswith(("✓", "✘"))
    ]
    with capsys.disabled():  # the figures and screenshot paths belong in the log of `make test`
        print("\n--- labextension UI tests (Galata on " + CHROMIUM + ") ---")
        print("\n".join(report))
    assert proc.returncode == 0, "playwright tests failed:\n" + _tail("\n".join(lines), 150)
    figures = json.loads((UI / "test-results" / "figures.json").read_text())
    assert float(figures["run_100k_finished"]["renderMs"]) < 1000
    assert float(figures["dag_1000_works"]["layoutMs"]) < 2000
