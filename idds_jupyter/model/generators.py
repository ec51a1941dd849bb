"""Workflow generators: Rubin-like layered job-level DAGs for benchmarks, tests and demos."""

from __future__ import annotations

from typing import Any

from .work import JobDep, Work
from .workflow import Workflow

NOOP = "idds_jupyter.worker.job:noop"


def layered_dag(
    n_jobs: int,
    levels: int = 3,
    function: str = NOOP,
    parameters: dict[str, Any] | None = None,
    fan_in: int = 2,
    name: str = "layered",
) -> Workflow:
    """``levels`` works sharing ``n_jobs`` jobs; each job waits for ``fan_in`` jobs of the level above.

    Job ``i`` of a level depends on jobs ``i .. i+fan_in-1`` (modulo the level's
    size) of the level above, as in a Rubin pipeline's per-detector quanta.
    """
    if n_jobs < levels or levels < 1:
        raise ValueError(f"n_jobs ({n_jobs}) must be at least levels ({levels}) >= 1")
    sizes = [n_jobs // levels + (1 if i < n_jobs % levels else 0) for i in range(levels)]
    works = []
    for i, size in enumerate(sizes):
        deps = [JobDep(work=f"L{i - 1}", pattern="window", size=fan_in)] if i else []
        works.append(
            Work(
                name=f"L{i}",
                function=function,
                n_jobs=size,
                job_deps=deps,
                parameters=dict(parameters or {}),
            )
        )
    return Workflow(name=name, works=works)
