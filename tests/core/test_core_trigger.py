"""The release, statement by statement (``store/trigger.py``): a child's pending count
falls by the number of its parents that ended and it is released at zero, once; the
jobs reading a file are released when it becomes available; a failed job's descendants
are cancelled level by level. SQLite and PostgreSQL; the DAG tests run the same code
through real agents."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pytest
from helpers import config
from sqlalchemy import insert, select, update

from idds_jupyter.core import Orchestrator
from idds_jupyter.model.generators import layered_dag
from idds_jupyter.store.jobs import Outcome
from idds_jupyter.store.tables import datasets, files, jobs, works
from idds_jupyter.store.trigger import cancel_descendants, release_children, release_on_files
from idds_jupyter.store.works import expand_workflow


def _levels(orch: Orchestrator, wid: int) -> tuple[dict[str, list[int]], dict[str, int]]:
    """Job ids per work name (by index) and work ids per name."""
    with orch.engine.begin() as conn:
        rows = conn.execute(
            select(jobs.c.id, works.c.name, works.c.id.label("work_id"))
            .join(works, works.c.id == jobs.c.work_id)
            .where(jobs.c.workflow_id == wid)
            .order_by(jobs.c.idx)
        ).all()
    out: dict[str, list[int]] = {}
    for r in rows:
        out.setdefault(r.name, []).append(int(r.id))
    return out, {r.name: int(r.work_id) for r in rows}


def _rows(orch: Orchestrator, ids: list[int]) -> list[Any]:
    with orch.engine.begin() as conn:
        return list(conn.execute(select(jobs).where(jobs.c.id.in_(ids)).order_by(jobs.c.id)).all())


def _dag(tmp_path: Path, db_url: str) -> tuple[Orchestrator, dict[str, list[int]], dict[str, int]]:
    """Three levels of two jobs; each job waits for both jobs of the level above."""
    orch = Orchestrator(config(tmp_path, db_url))
    wid = orch.submit(layered_dag(6, levels=3, fan_in=2))
    with orch.engine.begin() as conn:  # the Transformer's step: the works' jobs and deps
        expand_workflow(conn, wid, None, "local", Outcome())
    lv, wk = _levels(orch, wid)
    assert [len(lv[n]) for n in ("L0", "L1", "L2")] == [2, 2, 2]
    return orch, lv, wk


def test_a_child_is_released_once_when_its_last_parent_ends(tmp_path: Path, db_url: str) -> None:
    orch, lv, _ = _dag(tmp_path, db_url)
    try:
        assert [(r.status, r.pending) for r in _rows(orch, lv["L1"])] == [("pending", 2)] * 2
        with orch.engine.begin() as conn:
            assert release_children(conn, []) == 0
            assert release_children(conn, [lv["L0"][0]]) == 0  # one of two parents
        assert [(r.status, r.pending) for r in _rows(orch, lv["L1"])] == [("pending", 1)] * 2
        with orch.engine.begin() as conn:
            assert release_children(conn, [lv["L0"][1]]) == 2
        got = _rows(orch, lv["L1"])
        assert [(r.status, r.pending, r.release_count) for r in got] == [("ready", 0, 1)] * 2
        with orch.engine.begin() as conn:  # a parent reported twice releases nothing again
            assert release_children(conn, [lv["L0"][1]]) == 0
        assert [(r.status, r.release_count) for r in _rows(orch, lv["L1"])] == [("ready", 1)] * 2
        # both parents in one call: each child counts both
        assert [r.pending for r in _rows(orch, lv["L2"])] == [2, 2]
        with orch.engine.begin() as conn:
            assert release_children(conn, lv["L1"]) == 2
        got = _rows(orch, lv["L2"])
        assert [(r.status, r.pending, r.release_count) for r in got] == [("ready", 0, 1)] * 2
    finally:
        orch.engine.dispose()


def test_a_failed_jobs_descendants_are_cancelled_level_by_level(
    tmp_path: Path, db_url: str
) -> None:
    orch, lv, wk = _dag(tmp_path, db_url)
    try:
        other = orch.submit(layered_dag(4, levels=2, fan_in=2, name="other"))
        with orch.engine.begin() as conn:
            expand_workflow(conn, other, None, "local", Outcome())
        others, _ = _levels(orch, other)
        with orch.engine.begin() as conn:
            got = cancel_descendants(conn, [lv["L0"][0]])
        assert got == {wk["L1"]: 2, wk["L2"]: 2}
        for r in _rows(orch, lv["L1"] + lv["L2"]):
            assert (r.status, r.error) == ("cancelled", "upstream job failed")
        assert [r.status for r in _rows(orch, lv["L0"])] == ["ready", "ready"]
        assert [r.status for r in _rows(orch, others["L1"])] == ["pending", "pending"]
        with orch.engine.begin() as conn:
            assert cancel_descendants(conn, [lv["L0"][1]]) == {}  # nothing pending left
            assert cancel_descendants(conn, []) == {}
    finally:
        orch.engine.dispose()


def test_jobs_reading_a_file_are_released_when_it_is_available(tmp_path: Path, db_url: str) -> None:
    orch, lv, _ = _dag(tmp_path, db_url)
    try:
        t = time.time()
        with orch.engine.begin() as conn:
            ds = conn.execute(
                insert(datasets)
                .values(name="d", owner="local", created_at=t)
                .returning(datasets.c.id)
            ).scalar_one()
            f1, f2 = (
                conn.execute(
                    insert(files).values(dataset_id=ds, name=n, created_at=t).returning(files.c.id)
                ).scalar_one()
                for n in ("f1", "f2")
            )
            # L2's jobs read one file each and wait for nothing else
            for jid, fid, pending in ((lv["L2"][0], f1, 1), (lv["L2"][1], f2, 2)):
                conn.execute(
                    update(jobs).where(jobs.c.id == jid).values(file_id=fid, pending=pending)
                )
            assert release_on_files(conn, [f1]) == 1
        a, b = _rows(orch, lv["L2"])
        assert (a.status, a.pending, a.release_count) == ("ready", 0, 1)
        assert (b.status, b.pending) == ("pending", 2)  # another file's job
        with orch.engine.begin() as conn:
            assert release_on_files(conn, [f2]) == 0  # it still waits for something else
            assert release_on_files(conn, [f1]) == 0  # released already: not again
            assert release_on_files(conn, []) == 0
        a, b = _rows(orch, lv["L2"])
        assert (a.status, a.pending, a.release_count) == ("ready", 0, 1)
        assert (b.status, b.pending) == ("pending", 1)
    finally:
        orch.engine.dispose()


def test_releases_are_counted_over_every_chunk(
    tmp_path: Path, db_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Ids go to the database in chunks (5,000): what each chunk releases adds up."""
    from idds_jupyter.store import sql, trigger

    monkeypatch.setattr(trigger, "chunks", lambda seq: sql.chunks(seq, 1))
    orch, lv, _ = _dag(tmp_path, db_url)
    try:
        t = time.time()
        with orch.engine.begin() as conn:
            assert release_children(conn, lv["L0"]) == 2  # the first chunk releases both
            ds = conn.execute(
                insert(datasets)
                .values(name="d", owner="local", created_at=t)
                .returning(datasets.c.id)
            ).scalar_one()
            fids = [
                conn.execute(
                    insert(files).values(dataset_id=ds, name=n, created_at=t).returning(files.c.id)
                ).scalar_one()
                for n in ("f1", "f2")
            ]
            for jid, fid in zip(lv["L2"], fids, strict=True):
                conn.execute(update(jobs).where(jobs.c.id == jid).values(file_id=fid, pending=1))
            assert release_on_files(conn, fids) == 2  # one in each chunk
        assert [r.status for r in _rows(orch, lv["L1"] + lv["L2"])] == ["ready"] * 4
    finally:
        orch.engine.dispose()
