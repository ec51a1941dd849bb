"""Rubin-like job-level DAGs: a pipeline of per-detector steps, fan-in to warps and coadds,
fan-out to per-band detection — or plain layers (:func:`idds_jupyter.model.generators.layered_dag`).

::

    wf = rubin_dag(10_000)                 # a Workflow of 10,000 jobs
    client.submit(wf.to_dict())

Shape of ``"pipeline"`` for ``v`` visit-detectors (every job a no-op by default):

=================  ======  ==============================================
work               jobs    waits for
=================  ======  ==============================================
isr                v       —
characterizeImage  v       isr, one to one
calibrate          v       characterizeImage, one to one
makeWarp           v/4     4 calibrate jobs each (fan-in)
assembleCoadd      v/16    4 makeWarp jobs each (fan-in)
detection          v/8     its coadd (fan-out: 2 per coadd)
mergeDetections    rest    2 detection jobs each (fan-in)
=================  ======  ==============================================
"""

from __future__ import annotations

from typing import Any

from idds_jupyter.model import JobDep, Work, Workflow
from idds_jupyter.model.generators import NOOP, layered_dag

__all__ = ["rubin_dag", "SHAPES"]

SHAPES = ("pipeline", "layered")
_RATIOS = (1.0, 1.0, 1.0, 1 / 4, 1 / 16, 1 / 8)  # then mergeDetections takes the rest


def _fan_in(n_child: int, n_parent: int, width: int) -> list[list[int]]:
    """Child ``c`` waits for parents ``c*width .. c*width+width-1`` (the last takes the rest)."""
    rows = []
    for c in range(n_child):
        lo = c * width
        hi = n_parent if c == n_child - 1 else min(n_parent, lo + width)
        rows.append(list(range(min(lo, n_parent - 1), max(hi, min(lo, n_parent - 1) + 1))))
    return rows


def _fan_out(n_child: int, n_parent: int) -> list[list[int]]:
    """Child ``c`` waits for parent ``c * n_parent // n_child``."""
    return [[c * n_parent // n_child] for c in range(n_child)]


def rubin_dag(
    n_jobs: int = 10_000,
    shape: str = "pipeline",
    function: str = NOOP,
    parameters: dict[str, Any] | None = None,
    name: str = "rubin",
    levels: int = 5,
    fan_in: int = 2,
) -> Workflow:
    """A job-level DAG of exactly ``n_jobs`` jobs (``shape``: ``"pipeline"`` or ``"layered"``)."""
    if shape == "layered":
        return layered_dag(
            n_jobs,
            levels=levels,
            function=function,
            parameters=parameters,
            fan_in=fan_in,
            name=name,
        )
    if shape != "pipeline":
        raise ValueError(f"shape must be one of {', '.join(SHAPES)}, got {shape!r}")
    v = max(16, int(n_jobs / (sum(_RATIOS) + 1 / 16)))
    sizes = [max(1, int(v * r)) for r in _RATIOS]
    rest = n_jobs - sum(sizes)
    if rest < 1:
        raise ValueError(f"n_jobs ({n_jobs}) is too small for the pipeline shape (at least 60)")
    sizes.append(rest)
    isr, char, calib, warp, coadd, det, merge = sizes
    params = dict(parameters or {})

    def work(wname: str, n: int, deps: list[JobDep]) -> Work:
        return Work(name=wname, function=function, n_jobs=n, job_deps=deps, parameters=dict(params))

    works = [
        work("isr", isr, []),
        work("characterizeImage", char, [JobDep("isr", "one_to_one")]),
        work("calibrate", calib, [JobDep("characterizeImage", "one_to_one")]),
        work("makeWarp", warp, [JobDep("calibrate", "explicit", map=_fan_in(warp, calib, 4))]),
        work("assembleCoadd", coadd, [JobDep("makeWarp", "explicit", map=_fan_in(coadd, warp, 4))]),
        work("detection", det, [JobDep("assembleCoadd", "explicit", map=_fan_out(det, coadd))]),
        work(
            "mergeDetections",
            merge,
            [JobDep("detection", "explicit", map=_fan_in(merge, det, max(1, -(-det // merge))))],
        ),
    ]
    return Workflow(name=name, works=works)
