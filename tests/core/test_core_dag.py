"""The engine end to end, on SQLite and on the real PostgreSQL: DAGs, failures, control."""

from __future__ import annotations

import time
from pathlib import Path

from helpers import NOOP, config, layered_dag, run_to_end, wait_for
from sqlalchemy import func, select
from waiting import holds_for

from idds_jupyter.agents.runner import Runner
from idds_jupyter.core import Orchestrator
from idds_jupyter.model import JobDep, Work, Workflow
from idds_jupyter.store.tables import job_deps, jobs

FAIL = "idds_jupyter.worker.job:fail"
SLEEP = "idds_jupyter.worker.job:sleep"


def audit(orch: Orchestrator, wid: int) -> tuple[int, int, int, int]:
    with orch.engine.begin() as conn:
        return tuple(
            conn.execute(
                select(
                    func.count(),
                    func.sum(jobs.c.success_count),
                    func.max(jobs.c.release_count),
                    func.max(jobs.c.success_count),
                ).where(jobs.c.workflow_id == wid)
            ).one()
        )  # type: ignore[return-value]


def test_job_level_dag_releases_each_job_once(tmp_path: Path, db_url: str) -> None:
    orch, wid, status = run_to_end(config(tmp_path, db_url), layered_dag(600))
    assert status == "finished"
    n, succeeded, max_release, max_success = audit(orch, wid)
    assert (n, succeeded, max_release, max_success) == (600, 600, 1, 1)
    with orch.engine.begin() as conn:
        assert conn.execute(select(func.count()).select_from(job_deps)).scalar() == 2 * 400
        # A child never finished before both its parents did.
        parent = jobs.alias("p")
        child = jobs.alias("c")
        early = conn.execute(
            select(func.count())
            .select_from(
                job_deps.join(parent, parent.c.id == job_deps.c.parent_id).join(
                    child, child.c.id == job_deps.c.child_id
                )
            )
            .where(child.c.started_at < parent.c.finished_at)
        ).scalar()
    assert early == 0
    assert [w["status"] for w in orch.status(wid)["works"]] == ["finished"] * 3


def test_failed_job_retries_then_blocks_its_children(tmp_path: Path, db_url: str) -> None:
    wf = Workflow(
        name="fails",
        works=[
            Work(name="a", function=FAIL, kwargs_list=[{"message": "bad"}], retries=2),
            Work(name="ok", function=NOOP, n_jobs=2),
            Work(name="b", function=NOOP, job_deps=[JobDep(work="a", pattern="all")], n_jobs=3),
        ],
    )
    orch, wid, status = run_to_end(config(tmp_path, db_url), wf)
    st = orch.status(wid)
    by_name = {w["name"]: w for w in st["works"]}
    assert by_name["a"]["status"] == "failed"
    assert by_name["ok"]["status"] == "finished"
    assert by_name["b"]["jobs"] == {"cancelled": 3}
    assert status == "subfinished"
    [job] = orch.jobs(wid, "a")
    assert job["attempt"] == 3  # the first try and two retries
    assert "RuntimeError: bad" in job["error"]
    assert "raise RuntimeError" in job["error"]  # the remote traceback is kept


def test_workflow_finishes_by_polling_with_the_bus_disabled(tmp_path: Path, db_url: str) -> None:
    cfg = config(tmp_path, db_url, bus="none", poll_interval=0.2)
    orch, wid, status = run_to_end(cfg, layered_dag(90), timeout=120)
    assert status == "finished"
    assert audit(orch, wid) == (90, 90, 1, 1)


def test_abort_suspend_resume_retry(tmp_path: Path, db_url: str) -> None:
    cfg = config(tmp_path, db_url)
    with Runner(cfg) as runner:
        orch = Orchestrator(cfg, engine=runner.engine, bus=runner.bus)
        slow = orch.submit(
            Workflow(
                name="slow",
                works=[Work(name="s", function=SLEEP, kwargs_list=[{"seconds": 30}] * 4)],
            )
        )
        wait_for(
            lambda: (
                orch.job_counts(slow).get("running", 0) + orch.job_counts(slow).get("submitted", 0)
                > 0
            )
        )
        t0 = time.monotonic()
        assert orch.abort(slow).changed
        assert orch.wait(slow, timeout=30) == "aborted"
        assert not orch.abort(slow).changed  # idempotent
        assert set(orch.job_counts(slow)) == {"cancelled"}
        # the sleeping workers were killed, so new work runs at once
        quick = orch.submit(Workflow(name="quick", works=[Work(name="q", function=NOOP, n_jobs=4)]))
        assert orch.wait(quick, timeout=30) == "finished"
        assert time.monotonic() - t0 < 25

        paused = orch.submit(
            Workflow(
                name="paused",
                works=[
                    Work(name="a", function=SLEEP, kwargs_list=[{"seconds": 0.5}]),
                    Work(name="b", function=NOOP, n_jobs=5, depends_on=["a"]),
                ],
            )
        )
        wait_for(lambda: any(w["name"] == "a" for w in orch.status(paused)["works"]))
        assert orch.suspend(paused).changed
        assert not orch.suspend(paused).changed
        assert orch.status(paused)["status"] == "suspended"
        holds_for(
            lambda: orch.status(paused)["status"] == "suspended",
            1.5,
            0.1,
            message="a suspended run stays suspended",
        )
        assert orch.resume(paused).changed
        assert orch.wait(paused, timeout=30) == "finished"

        marks = [{"marker": str(tmp_path / f"m{i}")} for i in range(2)]
        flaky = orch.submit(
            Workflow(
                name="flaky",
                works=[
                    Work(name="f", function="corefuncs:flaky", kwargs_list=marks),
                    Work(
                        name="g",
                        function=NOOP,
                        n_jobs=2,
                        job_deps=[JobDep(work="f", pattern="one_to_one")],
                    ),
                    Work(name="h", function=NOOP, depends_on=["g"]),
                ],
            )
        )
        assert orch.wait(flaky, timeout=30) == "failed"
        assert orch.job_counts(flaky) == {"failed": 2, "cancelled": 2}
        assert orch.retry(flaky).changed
        assert orch.wait(flaky, timeout=30) == "finished"
        st = orch.status(flaky)
        assert [(w["name"], w["status"]) for w in st["works"]] == [
            ("f", "finished"),
            ("g", "finished"),
            ("h", "finished"),
        ]
        assert all(j["attempt"] == 2 for j in orch.jobs(flaky, "f"))
        assert not orch.retry(flaky).changed
