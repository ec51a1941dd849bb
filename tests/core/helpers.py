"""Workflows and runners the core tests share."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from waiting import wait_for as shared_wait_for

__all__ = ["NOOP", "config", "layered_dag", "run_to_end", "wait_for"]

from idds_jupyter.agents.runner import Runner
from idds_jupyter.config import Config
from idds_jupyter.core import Orchestrator
from idds_jupyter.model import Workflow
from idds_jupyter.model.generators import NOOP, layered_dag


def config(tmp_path: Path, db_url: str, **kw: Any) -> Config:
    kw.setdefault("poll_interval", 0.5)
    kw.setdefault("workers", 2)
    return Config.load(None, home=tmp_path / "home", db_url=db_url, **kw)


def run_to_end(
    cfg: Config, wf: Workflow | str, params: dict[str, Any] | None = None, timeout: float = 120
) -> tuple[Orchestrator, int, str]:
    with Runner(cfg) as runner:
        orch = Orchestrator(cfg, engine=runner.engine, bus=runner.bus)
        wid = orch.submit(wf, params)
        status = orch.wait(wid, timeout=timeout)
    return orch, wid, status


def wait_for(pred: Any, timeout: float = 60, interval: float = 0.1) -> None:
    """The shared helper (tests/waiting.py) with the core tests' defaults."""
    shared_wait_for(pred, timeout, interval)
