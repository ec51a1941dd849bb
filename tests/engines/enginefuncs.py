"""Job functions of the engine tests (worker processes import them through PYTHONPATH)."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Any


def simulate(seed: int, events: int = 100) -> dict[str, Any]:
    return {"seed": seed, "events": events, "hits": (seed * 7919) % events}


def reconstruct(seed: int) -> dict[str, Any]:
    return {"seed": seed, "efficiency": round(0.5 + 0.05 * seed, 4)}


def summarize(values: list[dict[str, Any]]) -> dict[str, Any]:
    eff = sum(v["efficiency"] for v in values) / len(values)
    return {"efficiency": round(eff, 4), "n": len(values)}


def publish(efficiency: float) -> dict[str, Any]:
    return {"published": efficiency}


def rerun(efficiency: float) -> dict[str, Any]:
    return {"rerun": efficiency}


def tune(iteration: int) -> dict[str, Any]:
    return {"value": int(iteration) + 1}


def flaky(marker: str) -> str:
    """Fail the first time (leaving a marker), succeed after."""
    p = Path(marker)
    if not p.exists():
        p.write_text("tried")
        raise RuntimeError(f"first try fails ({p.name})")
    return "second try ok"


def die_once(marker: str, seconds: float = 120.0) -> dict[str, Any]:
    """First run: say who runs it (pid, batch task id) in ``marker`` and sleep; later runs: return."""
    p = Path(marker)
    runs = json.loads(p.read_text()) if p.exists() else []
    me = {"pid": os.getpid(), "task": os.environ.get("IDDS_BATCH_TASK"), "at": time.time()}
    runs.append(me)
    tmp = p.with_suffix(".tmp")
    tmp.write_text(json.dumps(runs))
    os.replace(tmp, p)
    if len(runs) == 1:
        time.sleep(seconds)
        return {"runs": 1, "slept": True}
    return {"runs": len(runs)}
