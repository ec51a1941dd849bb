"""Four independent one-second cells: in parallel in cell-graph mode (4 workers), in sequence
in one kernel."""

from __future__ import annotations

import time
from pathlib import Path

import nbs
from exporthelpers import config, last_values, run

from idds_jupyter.export import export_template


def test_independent_cells_run_in_parallel(tmp_path: Path) -> None:
    path = nbs.sleepers(tmp_path)
    t0 = time.perf_counter()
    expected, error = nbs.reference(path, ["total"])
    sequential = time.perf_counter() - t0
    assert error is None and expected == {"total": 10}
    assert sequential >= 4.0  # one kernel runs the four cells one after the other

    tmpl = export_template(str(path), "cells")
    sleepers = [w["name"] for w in tmpl["works"][:4]]
    assert all("depends_on" not in w for w in tmpl["works"][:4])
    assert tmpl["works"][4]["depends_on"] == sleepers
    orch, wid, status = run(config(tmp_path, workers=4), tmpl)
    assert status == "finished"
    assert last_values(orch, wid, tmpl) == [expected]
    from sqlalchemy import select

    from idds_jupyter.store.tables import jobs, works

    with orch.engine.begin() as conn:
        rows = conn.execute(
            select(jobs.c.started_at, jobs.c.finished_at)
            .select_from(jobs.join(works, works.c.id == jobs.c.work_id))
            .where(jobs.c.workflow_id == wid, works.c.name.in_(sleepers))
        ).all()
    assert len(rows) == 4
    span = max(r.finished_at for r in rows) - min(r.started_at for r in rows)
    print(
        f"four 1-second cells: {span:.2f} s of job time on 4 workers, "
        f"{sequential:.2f} s in one kernel (its start included)"
    )
    assert span < 1.5
