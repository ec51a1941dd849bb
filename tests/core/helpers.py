"""Workflows and runners the core tests share."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

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


def run_to_end(cfg: Config, wf: Workflow | str, params: dict[str, Any] | None = None,
               timeout: float = 120) -> tuple[Orchestrator, int, str]:
    with Runner(cfg) as runner:
        orch = Orchestrator(cfg, engine=runner.engine, bus=runner.bus)
        wid = orch.submit(wf, params)
        status = orch.wait(wid, timeout=timeout)
    return orch, wid, status


def wait_for(pred: Any, timeout: float = 60, interval: float = 0.1) -> None:
    deadline = time.monotonic() + timeout
    while not pred():
        if time.monotonic() > deadline:
            raise TimeoutError("condition not met in time")
        time.sleep(interval)
