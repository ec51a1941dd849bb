"""The command line against a standalone core: `serve` in one process, `submit --wait` in another."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from idds_jupyter.config import Config
from idds_jupyter.core import Orchestrator

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE = "examples/branch_and_loop.yaml"


def cli(env: dict[str, str], *args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "idds_jupyter.cli", *args],
        env=env,
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


@pytest.fixture
def served(tmp_path: Path, db_url: str) -> Iterator[dict[str, str]]:
    env = dict(
        os.environ,
        IDDS_DB_URL=db_url,
        IDDS_HOME=str(tmp_path / "home"),
        IDDS_POLL_INTERVAL="0.3",
        IDDS_WORKERS="2",
    )
    assert cli(env, "db", "upgrade").returncode == 0
    server = subprocess.Popen(
        [sys.executable, "-m", "idds_jupyter.cli", "serve"],
        env=env,
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        yield env
    finally:
        server.send_signal(signal.SIGTERM)
        out, _ = server.communicate(timeout=30)
        assert server.returncode == 0, out


@pytest.mark.parametrize(
    "threshold, taken, skipped", [(0.5, "publish", "rerun"), (0.9, "rerun", "publish")]
)
def test_submit_wait_takes_the_right_branch_and_loops(
    served: dict[str, str], threshold: float, taken: str, skipped: str
) -> None:
    res = cli(served, "submit", EXAMPLE, "--wait", "--param", f"threshold={threshold}")
    assert res.returncode == 0, res.stdout + res.stderr
    assert "'branch-and-loop': finished" in res.stdout
    wid = int(res.stdout.split("submitted workflow ")[1].split()[0])
    orch = Orchestrator(
        Config.load(None, db_url=served["IDDS_DB_URL"], home=Path(served["IDDS_HOME"]))
    )
    st = orch.status(wid)
    works = {w["name"]: w for w in st["works"]}
    assert st["status"] == "finished"
    for name in ("simulate", "reconstruct"):
        assert works[name]["jobs"] == {"finished": 4}
    assert works["summarize"]["status"] == "finished"
    assert works[taken]["status"] == "finished"
    assert works[skipped]["status"] == "skipped"
    assert st["conditions"] == {"good_enough": threshold < 0.625}
    tunes = sorted(n for n in works if n.startswith("tuning["))
    assert tunes == ["tuning[0].tune", "tuning[1].tune", "tuning[2].tune"]
    assert st["loop_info"]["tuning"]["iterations"] == 3 and st["loop_info"]["tuning"]["converged"]
    [summary] = orch.jobs(wid, "summarize")
    assert summary["result"] == {"n": 4, "efficiency": 0.625}

    res = cli(served, "status", str(wid))
    assert res.returncode == 0 and f"workflow {wid}" in res.stdout
    res = cli(served, "runs")
    assert f"{wid}  finished" in res.stdout.replace("   ", "  ")


def test_cli_errors_are_one_clear_line(served: dict[str, str], tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("name: bad\nworks:\n  - name: a\n    command: echo {nope}\n")
    res = cli(served, "submit", str(bad))
    assert res.returncode == 2
    assert "work 'a', field 'command'" in res.stderr and "nope" in res.stderr
    assert "Traceback" not in res.stderr
    res = cli(served, "abort", "999999")
    assert res.returncode == 2 and "no workflow with id 999999" in res.stderr
