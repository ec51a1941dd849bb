"""What runs in the job of one HPO trial (imports nothing heavy: it runs on workers).

:func:`run_trial` calls the user's objective with the trial's parameters and
returns the JSON result every trial job records::

    {"objective": float, "params": {...}, "trial": n, "segment": name | None,
     "metrics": {...}}                       # a final evaluation
    {"intermediate": float, "step": k, ...}   # a rung of a pruned (budgeted) trial

The objective is a Python callable (called with the parameters as keyword
arguments) or a shell command template (``"python train.py --lr {lr}"``) whose
last line of output is the number, or a JSON object holding one.
"""

from __future__ import annotations

import json
import math
import subprocess
from collections.abc import Callable, Mapping
from typing import Any

__all__ = ["run_trial", "objective_value", "OBJECTIVE_KEYS"]

#: keys looked up, in order, when an objective returns a dict
OBJECTIVE_KEYS = ("objective", "value", "loss", "score", "metric", "accuracy")


def objective_value(out: Any, key: str | None = None) -> tuple[float, dict[str, float]]:
    """``(value, other numeric metrics)`` of what an objective returned: a number or a dict."""
    if isinstance(out, bool):
        raise TypeError("the objective returned a bool, not a number")
    if isinstance(out, int | float):
        return float(out), {}
    if hasattr(out, "item") and callable(out.item):  # numpy scalars
        return objective_value(out.item(), key)
    if isinstance(out, Mapping):
        metrics = {
            str(k): float(v)
            for k, v in out.items()
            if isinstance(v, int | float) and not isinstance(v, bool)
        }
        keys = (key,) if key else OBJECTIVE_KEYS
        for k in keys:
            if k in metrics:
                value = metrics.pop(k)
                return value, metrics
        if not key and len(metrics) == 1:
            return metrics.popitem()[1], {}
        raise KeyError(
            f"the objective returned a dict without a number under "
            f"{' or '.join(repr(k) for k in keys)}: {sorted(out)}"
        )
    raise TypeError(
        f"the objective must return a number or a dict holding one, got {type(out).__name__}"
    )


def _run_command(template: str, params: Mapping[str, Any]) -> Any:
    # each value one quoted shell word, as in a template's command (imported here: only
    # command objectives need it, and a worker imports little)
    from idds_jupyter.model.shell import format_command

    cmd = format_command(template, params)
    proc = subprocess.run(cmd, shell=True, capture_output=True, text=True)
    if proc.returncode != 0:
        raise RuntimeError(
            f"objective command exited with {proc.returncode}: {cmd}\n{proc.stderr[-2000:]}"
        )
    lines = [ln.strip() for ln in proc.stdout.splitlines() if ln.strip()]
    if not lines:
        raise ValueError(f"objective command printed nothing: {cmd}")
    return json.loads(lines[-1])


def run_trial(
    objective: Callable[..., Any] | str,
    params: dict[str, Any],
    meta: dict[str, Any],
    extra: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Evaluate one trial (or one rung of it); returns the trial's JSON result."""
    kwargs = {**params, **(extra or {})}
    out = _run_command(objective, kwargs) if isinstance(objective, str) else objective(**kwargs)
    value, metrics = objective_value(out, meta.get("key"))
    if math.isnan(value):
        raise ValueError(f"the objective returned NaN for {params}")
    res: dict[str, Any] = {
        "params": params,
        "trial": meta.get("trial"),
        "segment": meta.get("segment"),
    }
    if meta.get("final", True):
        res["objective"] = value
    else:
        res["intermediate"] = value
        res["step"] = meta.get("step")
    if meta.get("budget") is not None:
        res["budget"] = meta["budget"]
    if metrics:
        res["metrics"] = metrics
    return res
