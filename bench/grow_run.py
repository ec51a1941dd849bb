"""Growing an open run: the cost of adding its n-th work (a ``@work`` call in a workflow body,
a new HPO trial), at n = 100, 1,000, 3,000 and 10,000 works.

Each addition is checked, planned, expanded and its job claimed and sent in one
transaction (``Orchestrator.add_works``, as the API's ``add_works`` and the
Steerer call it). Nothing in that path should grow with the works before: the
figures should stay flat as the run grows.

    .venv/bin/python bench/grow_run.py [--sizes 100,1000,3000,10000] [--sample 50] [--db sqlite|URL]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from idds_jupyter.agents.runner import Runner
from idds_jupyter.config import Config
from idds_jupyter.core import Orchestrator


def _work(i: int) -> dict[str, Any]:
    return {
        "name": f"call_{i}",
        "function": "idds_jupyter.worker.job:noop",
        "kwargs_list": [{"params": {"x": i / 7}, "meta": {"trial": i}}],
    }


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument(
        "--sizes", type=lambda v: [int(x) for x in v.split(",")], default=[100, 1000, 3000, 10000]
    )
    p.add_argument("--sample", type=int, default=50, help="additions timed at each size")
    p.add_argument("--db", default="sqlite", help="sqlite (a temporary file) or a database URL")
    args = p.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="idds-bench-grow-") as tmp:
        url = f"sqlite:///{tmp}/idds.db" if args.db == "sqlite" else args.db
        cfg = Config.load(None, home=Path(tmp) / "home", db_url=url, workers=2)
        with Runner(cfg) as runner:
            orch = Orchestrator(cfg, engine=runner.engine, bus=runner.bus, dispatch=runner.dispatch)
            wid = orch.submit({"name": "grow", "works": []}, open=True)
            n = 0
            print(
                f"adding works one at a time to an open run ({url.split(':')[0]}); "
                f"p50 and p90 of {args.sample} additions at each size"
            )
            for size in args.sizes:
                while n < size - args.sample:
                    orch.add_works(wid, [_work(n)])
                    n += 1
                times = []
                while n < size:
                    time.sleep(0.002)  # let the workers take the job: an addition at rest
                    t0 = time.perf_counter()
                    orch.add_works(wid, [_work(n)])
                    times.append((time.perf_counter() - t0) * 1e3)
                    n += 1
                times.sort()
                print(
                    f"  work {size:6d}: add_works p50 {statistics.median(times):6.3f} ms   "
                    f"p90 {times[int(0.9 * (len(times) - 1))]:6.3f} ms",
                    flush=True,
                )
            orch.close(wid)
    return 0


if __name__ == "__main__":
    sys.exit(main())
