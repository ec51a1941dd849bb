"""Running exported notebooks: an embedded core (agents in this process) on SQLite."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

from idds_jupyter.agents.runner import Runner
from idds_jupyter.config import Config
from idds_jupyter.core import Orchestrator

ROOT = Path(__file__).resolve().parents[2]


def config(tmp: Path, workers: int = 2, **kw: Any) -> Config:
    return Config.load(
        None,
        home=tmp / "home",
        db_url=f"sqlite:///{tmp / 'idds.db'}",
        workers=workers,
        poll_interval=0.3,
        **kw,
    )


def run(
    cfg: Config, tmpl: Any, params: dict[str, Any] | None = None, timeout: float = 180
) -> tuple[Orchestrator, int, str]:
    with Runner(cfg) as runner:
        orch = Orchestrator(cfg, engine=runner.engine, bus=runner.bus)
        wid = orch.submit(tmpl, params)
        status = orch.wait(wid, timeout=timeout)
    return orch, wid, str(status)


def last_values(orch: Orchestrator, wid: int, tmpl: dict[str, Any]) -> list[dict[str, Any]]:
    """The values of the last work's jobs (whole-notebook: one per parameter set)."""
    last = tmpl["works"][-1]["name"]
    return [j["result"]["values"] for j in orch.jobs(wid, last)]


def cli(env_home: Path, *args: str, timeout: float = 180) -> subprocess.CompletedProcess[str]:
    env = dict(
        os.environ,
        IDDS_HOME=str(env_home),
        IDDS_POLL_INTERVAL="0.3",
        IDDS_WORKERS="2",
        IDDS_DB_URL=f"sqlite:///{env_home / 'idds.db'}",
    )
    return subprocess.run(
        [sys.executable, "-m", "idds_jupyter.cli", *args],
        env=env,
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=timeout,
    )
