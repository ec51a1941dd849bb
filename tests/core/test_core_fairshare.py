"""Fair share: one user's big run does not starve another's small one (issue 20 item 4).

The claims are shared between the users who have released jobs (SQLite and
PostgreSQL), and through the whole core with real local workers bob's 3-job run ends
while alice's run, submitted first and far larger, is still far from done.
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import pytest
from helpers import config, wait_for
from sqlalchemy import select

from idds_jupyter.agents.runner import Runner
from idds_jupyter.core import Orchestrator
from idds_jupyter.model.generators import layered_dag
from idds_jupyter.store.fairshare import claim_fair, split, users_with_ready_jobs
from idds_jupyter.store.tables import workflows

SLEEP = "idds_jupyter.worker.job:sleep"


def test_split_shares_the_slots_and_rotates_the_odd_one() -> None:
    assert split(10, ["a", "b"]) == {"a": 5, "b": 5}
    assert split(7, ["a", "b", "c"], first=0) == {"a": 3, "b": 2, "c": 2}
    assert split(7, ["a", "b", "c"], first=1) == {"a": 2, "b": 3, "c": 2}
    assert split(2, ["a", "b", "c"], first=2) == {"a": 1, "b": 0, "c": 1}


def _owners(orch: Orchestrator, rows: list[dict[str, object]]) -> Counter[str]:
    with orch.engine.begin() as conn:
        owner = dict(conn.execute(select(workflows.c.id, workflows.c.owner)).all())
    return Counter(owner[r["workflow_id"]] for r in rows)


def test_claims_are_shared_between_the_users_with_released_jobs(
    tmp_path: Path, db_url: str
) -> None:
    orch = Orchestrator(config(tmp_path, db_url))
    orch.submit(layered_dag(300, 1, name="alice-big"), owner="alice")
    orch.submit(layered_dag(3, 1, name="bob-small"), owner="bob")
    orch.submit(layered_dag(50, 1, name="carol"), owner="carol")
    with orch.engine.begin() as conn:
        assert users_with_ready_jobs(conn, ["local"]) == ["alice", "bob", "carol"]
        first = claim_fair(conn, "runner-1", ["local"], 20, ttl=60)
    # bob's 3 jobs all come in the first claim; the room he leaves goes to the others
    got = _owners(orch, first)
    assert sum(got.values()) == 20 and got["bob"] == 3
    assert {got["alice"], got["carol"]} == {8, 9}
    with orch.engine.begin() as conn:
        assert users_with_ready_jobs(conn, ["local"]) == ["alice", "carol"]
        second = claim_fair(conn, "runner-1", ["local"], 20, ttl=60, turn=1)
    assert _owners(orch, second) == Counter(alice=10, carol=10)
    with orch.engine.begin() as conn:  # one user left: every slot is hers
        claim_fair(conn, "runner-1", ["local"], 100, ttl=60)
        assert users_with_ready_jobs(conn, ["local"]) == ["alice"]
        last = claim_fair(conn, "runner-1", ["local"], 100, ttl=60)
    assert _owners(orch, last) == Counter(alice=100)


def test_bobs_small_run_ends_long_before_alices_big_one(tmp_path: Path) -> None:
    """One worker, alice's 600 jobs of 20 ms (12 s of work) first: bob's 3 jobs, submitted
    once alice's are running, end while most of alice's have still to run."""
    cfg = config(tmp_path, f"sqlite:///{tmp_path / 'idds.db'}", workers=1)
    with Runner(cfg) as runner:
        orch = Orchestrator(cfg, engine=runner.engine, bus=runner.bus)
        alice = orch.submit(
            layered_dag(600, 1, function=SLEEP, parameters={"seconds": 0.02}, name="big"),
            owner="alice",
        )
        wait_for(lambda: orch.job_counts(alice).get("finished", 0) >= 20, timeout=60)
        bob = orch.submit(layered_dag(3, 1, name="small"), owner="bob")
        assert orch.wait(bob, timeout=60, interval=0.05) == "finished"
        alice_done = orch.job_counts(alice).get("finished", 0)
        assert orch.status(alice, with_works=False)["status"] == "running"
        assert alice_done < 300, f"bob's run waited for {alice_done} of alice's 600 jobs"
        orch.abort(alice)
        assert orch.wait(alice, timeout=60) == "aborted"


@pytest.mark.parametrize("workers", [2])
def test_one_user_still_gets_every_worker(tmp_path: Path, workers: int) -> None:
    """Alone, a user's run uses all the workers and every job runs once."""
    cfg = config(tmp_path, f"sqlite:///{tmp_path / 'idds.db'}", workers=workers)
    with Runner(cfg) as runner:
        orch = Orchestrator(cfg, engine=runner.engine, bus=runner.bus)
        wid = orch.submit(layered_dag(2000, 4), owner="alice")
        assert orch.wait(wid, timeout=120) == "finished"
        assert orch.job_counts(wid) == {"finished": 2000}
