"""Job-level DAGs whose parents finish far apart: a child starts only after ALL its parents.

``test_core_dag.py``'s parents are uniform no-ops that finish together, so a release
rule that fires one parent early (``pending <= 1`` instead of ``pending <= 0`` in
``store/jobs.py``) goes unseen there. Here one parent of every child sleeps 2 s while
its other parents finish at once: a child released early starts seconds before its
slow parent ends, which the jobs' own recorded times show.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from helpers import NOOP, config, run_to_end
from sqlalchemy import func, select

from idds_jupyter.model import JobDep, Work, Workflow
from idds_jupyter.store.jobs import release_children
from idds_jupyter.store.tables import job_deps, jobs

SLEEP = "idds_jupyter.worker.job:sleep"
SLOW = 2.0


def uneven() -> Workflow:
    """Two shapes in one run.

    * ``p`` → ``c`` (``all``): ``p``'s job 0 sleeps 2 s, job 1 returns at once; each of
      ``c``'s 2 jobs waits for both.
    * ``slow`` (1 job, 2 s) and ``fast`` (3 no-ops) → ``join`` (3 jobs): each ``join`` job
      waits for the slow job (``all``) and for its own fast job (``one_to_one``).
    """
    return Workflow(
        name="uneven",
        works=[
            Work(name="p", function=SLEEP, kwargs_list=[{"seconds": SLOW}, {"seconds": 0}]),
            Work(name="c", function=NOOP, n_jobs=2, job_deps=[JobDep(work="p", pattern="all")]),
            Work(name="slow", function=SLEEP, kwargs_list=[{"seconds": SLOW}]),
            Work(name="fast", function=NOOP, n_jobs=3),
            Work(
                name="join",
                function=NOOP,
                n_jobs=3,
                job_deps=[
                    JobDep(work="slow", pattern="all"),
                    JobDep(work="fast", pattern="one_to_one"),
                ],
            ),
        ],
    )


def test_child_starts_after_both_uneven_parents(tmp_path: Path, db_url: str) -> None:
    # 3 workers: the fast parents are not queued behind the slow ones.
    orch, wid, status = run_to_end(
        config(tmp_path, db_url, workers=3, poll_interval=0.2), uneven(), timeout=90
    )
    assert status == "finished"
    parent, child = jobs.alias("p"), jobs.alias("c")
    with orch.engine.begin() as conn:
        edges = conn.execute(
            select(
                child.c.id,
                parent.c.id,
                child.c.started_at,
                parent.c.started_at,
                parent.c.finished_at,
            )
            .select_from(
                job_deps.join(parent, parent.c.id == job_deps.c.parent_id).join(
                    child, child.c.id == job_deps.c.child_id
                )
            )
            .where(parent.c.workflow_id == wid)
        ).all()
        n, ok, min_rel, max_rel, max_ok = conn.execute(
            select(
                func.count(),
                func.sum(jobs.c.success_count),
                func.min(jobs.c.release_count),
                func.max(jobs.c.release_count),
                func.max(jobs.c.success_count),
            ).where(jobs.c.workflow_id == wid)
        ).one()
    assert len(edges) == 2 * 2 + 3 * 2  # c: 2 jobs x 2 parents; join: 3 jobs x (slow + own fast)
    assert all(e[2] is not None and e[4] is not None for e in edges), edges
    early = [
        (c_id, p_id, p_end - c_start) for c_id, p_id, c_start, _, p_end in edges if c_start < p_end
    ]
    assert early == [], (
        f"children started before a parent ended (child, parent, seconds early): {early}"
    )
    # The test has teeth only if parents really finished apart: in each shape, a child
    # has a parent that ended >= 1.5 s after another of its parents. (Not every child:
    # a fast parent may be queued behind a slow job on the same worker.)
    ends: dict[int, list[float]] = {}
    for c_id, _, _, _, p_end in edges:
        ends.setdefault(c_id, []).append(p_end)
    assert len(ends) == 5
    spread = sorted(c_id for c_id, v in ends.items() if max(v) - min(v) >= SLOW * 0.75)
    c_ids, join_ids = sorted(ends)[:2], sorted(ends)[2:]
    assert set(spread) & set(c_ids) and set(spread) & set(join_ids), ends
    # and each child job was released once and succeeded once
    with orch.engine.begin() as conn:
        kids = conn.execute(
            select(jobs.c.release_count, jobs.c.success_count).where(jobs.c.id.in_(list(ends)))
        ).all()
    assert sorted(kids) == [(1, 1)] * 5
    assert (n, ok, max_ok, min_rel, max_rel) == (11, 11, 1, 1, 1)
    # The Trigger counts what it released (the agents' wake-up hint): nothing for no
    # parents, and nothing for parents whose children were released already (a
    # duplicated result). mutmut: `return 0` -> `return 1` survived without this.
    with orch.engine.begin() as conn:
        assert release_children(conn, []) == 0
        assert release_children(conn, sorted({p_id for _, p_id, _, _, _ in edges})) == 0
        assert (
            conn.execute(
                select(func.max(jobs.c.release_count)).where(jobs.c.workflow_id == wid)
            ).scalar()
            == 1
        )


def test_a_job_shows_running_while_it_runs(tmp_path: Path, db_url: str) -> None:
    """The backend's start report marks the job running (with its start time) while it
    runs, not only once its result comes (the run view's and the monitor's 'running')."""
    import time

    from helpers import wait_for

    from idds_jupyter.agents.runner import Runner
    from idds_jupyter.core import Orchestrator

    cfg = config(tmp_path, db_url, workers=1, poll_interval=0.2)
    wf = Workflow(name="one", works=[Work(name="s", function=SLEEP, kwargs_list=[{"seconds": 3}])])
    with Runner(cfg) as runner:
        orch = Orchestrator(cfg, engine=runner.engine, bus=runner.bus)
        wid = orch.submit(wf)
        seen: dict[str, object] = {}

        def running() -> bool:
            with orch.engine.begin() as conn:
                row = conn.execute(
                    select(jobs.c.status, jobs.c.started_at).where(jobs.c.workflow_id == wid)
                ).one()
            seen.update(row._mapping)
            return row.status == "running"

        wait_for(running, timeout=30, interval=0.05)
        assert seen["started_at"] and abs(float(seen["started_at"]) - time.time()) < 10, seen
        assert orch.wait(wid, timeout=60) == "finished"
    with orch.engine.begin() as conn:
        started = conn.execute(select(jobs.c.started_at).where(jobs.c.workflow_id == wid)).scalar()
    assert started == pytest.approx(seen["started_at"], abs=1.0)  # the reported start stays
