"""Toy analysis steps for the example workflows: each prints its JSON result on the last line.

    python3 examples/steps.py simulate --seed 3 --events 1000
"""

from __future__ import annotations

import argparse
import json
import random


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("step", choices=["simulate", "reconstruct", "summarize", "publish", "rerun", "tune"])
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--events", type=int, default=100)
    ap.add_argument("--values", default="[]", help="JSON list of earlier results")
    ap.add_argument("--iteration", type=int, default=0)
    ap.add_argument("--efficiency", type=float, default=0.0)
    a = ap.parse_args()
    if a.step == "simulate":
        rng = random.Random(a.seed)
        hits = sum(rng.random() < 0.5 for _ in range(a.events))
        out = {"seed": a.seed, "events": a.events, "hits": hits}
    elif a.step == "reconstruct":
        out = {"seed": a.seed, "efficiency": round(0.5 + 0.05 * a.seed, 4)}
    elif a.step == "summarize":
        values = json.loads(a.values)
        eff = sum(v["efficiency"] for v in values) / len(values)
        out = {"n": len(values), "efficiency": round(eff, 4)}
    elif a.step == "tune":
        out = {"iteration": a.iteration, "value": a.iteration + 1}
    else:
        out = {"step": a.step, "efficiency": a.efficiency}
    print(f"{a.step}: done")
    print(json.dumps(out))


if __name__ == "__main__":
    main()
