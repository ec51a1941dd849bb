"""Job functions of the engine tests (worker processes import them through PYTHONPATH)."""

from __future__ import annotations

import json
import os
import subprocess
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


def _classad(path: str) -> dict[str, str]:
    """``Attr = value`` lines of an HTCondor ClassAd file (strings keep their quotes)."""
    ad: dict[str, str] = {}
    for line in Path(path).read_text().splitlines():
        key, sep, value = line.partition(" = ")
        if sep:
            ad[key.strip()] = value.strip()
    return ad


def granted() -> dict[str, Any]:
    """What the scheduler asked for and gave this job: cores, memory (MB), scratch disk (MB)."""
    if os.environ.get("_CONDOR_JOB_AD"):
        job = _classad(os.environ["_CONDOR_JOB_AD"])
        slot = _classad(os.environ["_CONDOR_MACHINE_AD"])
        return {
            "asked": {
                "cores": int(job["RequestCpus"]),
                "memory_mb": int(job["RequestMemory"]),
                "disk_mb": int(job["RequestDisk"]) // 1024,
            },
            "slot": {
                "cores": int(float(slot["Cpus"])),
                "memory_mb": int(slot["Memory"]),
                "disk_mb": int(slot["Disk"]) // 1024,
            },
        }
    if os.environ.get("SLURM_JOB_ID"):
        out = subprocess.run(
            ["scontrol", "show", "job", os.environ["SLURM_JOB_ID"]],
            check=True,
            capture_output=True,
            text=True,
        ).stdout
        fields = dict(tok.split("=", 1) for tok in out.split() if "=" in tok)
        tmp = fields["MinTmpDiskNode"]
        return {
            "asked": {
                "cores": int(os.environ["SLURM_CPUS_PER_TASK"]),
                "memory_mb": int(os.environ["SLURM_MEM_PER_NODE"]),
                "disk_mb": int(tmp.rstrip("M")) if tmp.endswith("M") else tmp,
            }
        }
    raise RuntimeError("neither an HTCondor nor a Slurm job")
