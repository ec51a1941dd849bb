"""Locks and clocks: claim expiry is measured on the database's clock, not each process's.

A second agents process whose wall clock runs 120 s ahead must reclaim nothing from a
healthy owner, and one whose clock runs 120 s behind must not write locks that a healthy
process finds already expired. A dead owner's locks are still reclaimed once their time
is up on the database's clock, whatever the dead owner's clock said. SQLite and
PostgreSQL; the skewed process is a real ``idds-jupyter agents`` with a shifted
``time.time`` (tests/core/skewed_agents.py), the healthy one is this test's process.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
from helpers import config, wait_for
from sqlalchemy import select, update

from idds_jupyter.agents.runner import Runner
from idds_jupyter.core import Orchestrator
from idds_jupyter.store.jobs import claim_ready
from idds_jupyter.store.sql import db_now
from idds_jupyter.store.tables import agents, jobs

HERE = Path(__file__).parent
TTL = 10.0  # renewed every TTL/3 s; far less than the 120 s skew


def gated_once(tmp_path: Path) -> tuple[dict[str, Any], Path, Path]:
    """One command job that waits for a go file, then appends one line: each execution
    of it leaves a line, however the executions overlap."""
    go, out = tmp_path / "go", tmp_path / "ran.txt"
    wf = {
        "name": "clock",
        "works": [
            {
                "name": "once",
                "command": f"while [ ! -e {go} ]; do sleep 0.1; done; echo once >> {out}",
            }
        ],
    }
    return wf, go, out


def skewed_agents(tmp_path: Path, db_url: str, shift: float, tag: str) -> subprocess.Popen[bytes]:
    env = dict(
        os.environ,
        IDDS_DB_URL=db_url,
        IDDS_HOME=str(tmp_path / "home"),
        IDDS_BUS="none",
        IDDS_LOCK_TTL=str(TTL),
        IDDS_POLL_INTERVAL="0.5",
        IDDS_WORKERS="1",
    )
    log = open(tmp_path / f"agents-{tag}.log", "wb")  # noqa: SIM115 - lives as long as the process
    return subprocess.Popen(
        [sys.executable, str(HERE / "skewed_agents.py"), str(shift), "agents", "--only", "carrier"],
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
    )


def the_job(orch: Orchestrator, wid: int) -> Any:
    with orch.engine.begin() as conn:
        return conn.execute(select(jobs).where(jobs.c.workflow_id == wid)).one()


def has_beaten(orch: Orchestrator, owner_other_than: str) -> bool:
    """Another runner is registered and its Poller has run once (heart-beat after start):
    its reclaim pass runs right after that beat."""
    with orch.engine.begin() as conn:
        rows = conn.execute(select(agents.c.id, agents.c.started_at, agents.c.heartbeat)).all()
    return any(r.id != owner_other_than and r.heartbeat > r.started_at for r in rows)


def stop(proc: subprocess.Popen[bytes]) -> None:
    proc.terminate()
    try:
        proc.wait(30)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


@pytest.mark.parametrize("skew", ["reclaimer_ahead", "owner_behind"])
def test_skewed_clock_reclaims_nothing_healthy(tmp_path: Path, db_url: str, skew: str) -> None:
    """reclaimer_ahead: the healthy owner runs the job, a second process 120 s ahead
    polls meanwhile. owner_behind: a process 120 s behind owns the job, the healthy
    process polls meanwhile. Either way the command runs exactly once, at attempt 1."""
    cfg = config(tmp_path, db_url, lock_ttl=TTL, workers=1)
    orch = Orchestrator(cfg)
    wf, go, out = gated_once(tmp_path)
    healthy: Runner | None = None
    skewed: subprocess.Popen[bytes] | None = None
    try:
        if skew == "reclaimer_ahead":
            healthy = Runner(cfg, roles=("carrier",)).start()
            owner_id = healthy.owner
        else:
            skewed = skewed_agents(tmp_path, db_url, -120.0, "behind")
        wid = orch.submit(wf)
        wait_for(lambda: the_job(orch, wid).status == "running", timeout=60)
        owner = the_job(orch, wid).lock_owner
        if skew == "reclaimer_ahead":
            assert owner == owner_id
            skewed = skewed_agents(tmp_path, db_url, +120.0, "ahead")
        else:
            healthy = Runner(cfg, roles=("carrier",)).start()
            assert owner != healthy.owner
        wait_for(lambda: has_beaten(orch, owner), timeout=60)
        time.sleep(TTL / 3 + 2)  # the owner renewed, the other polled (and reclaimed) again
        held = the_job(orch, wid)
        assert (held.status, held.lock_owner, held.attempt) == ("running", owner, 1), (
            f"a healthy job was reclaimed: {held.status}, owner {held.lock_owner}, "
            f"attempt {held.attempt}, error {held.error!r}"
        )
        go.touch()
        assert orch.wait(wid, timeout=60) == "finished"
        done = the_job(orch, wid)
    finally:
        go.touch()
        if skewed is not None:
            stop(skewed)
        if healthy is not None:
            healthy.stop()
        orch.engine.dispose()
    assert out.read_text().splitlines() == ["once"], "the command ran more than once"
    assert (done.attempt, done.success_count, done.release_count) == (1, 1, 1)


def test_locks_that_look_expired_of_a_live_owner_are_not_reclaimed(
    tmp_path: Path, db_url: str
) -> None:
    """The clock itself jumps (a host resumed from sleep, a stepped clock: the database's
    clock too, for SQLite it is the host's): every lock written before looks expired.
    Emulated by moving the running job's lock expiry 120 s into the past again and again
    while a second agents process polls, for longer than a lock's whole ttl. The owner
    goes on heart-beating: its job is not reclaimed and runs once."""
    cfg = config(tmp_path, db_url, lock_ttl=TTL, workers=1)
    orch = Orchestrator(cfg)
    wf, go, out = gated_once(tmp_path)
    other: subprocess.Popen[bytes] | None = None
    healthy = Runner(cfg, roles=("carrier",)).start()
    try:
        wid = orch.submit(wf)
        wait_for(lambda: the_job(orch, wid).status == "running", timeout=60)
        jid = the_job(orch, wid).id
        other = skewed_agents(tmp_path, db_url, 0.0, "other")
        wait_for(lambda: has_beaten(orch, healthy.owner), timeout=60)
        back = update(jobs).where(jobs.c.id == jid).values(lock_expiry=db_now() - 120)
        until = time.monotonic() + TTL + TTL / 3 + 2  # past the other's first-seen grace
        while time.monotonic() < until:
            with orch.engine.begin() as conn:
                conn.execute(back)
            time.sleep(0.1)
        held = the_job(orch, wid)
        assert (held.status, held.lock_owner, held.attempt) == ("running", healthy.owner, 1), (
            f"a live owner's job was reclaimed: {held.status}, owner {held.lock_owner}, "
            f"attempt {held.attempt}, error {held.error!r}"
        )
        go.touch()
        assert orch.wait(wid, timeout=60) == "finished"
        done = the_job(orch, wid)
    finally:
        go.touch()
        if other is not None:
            stop(other)
        healthy.stop()
        orch.engine.dispose()
    assert out.read_text().splitlines() == ["once"], "the command ran more than once"
    assert (done.attempt, done.success_count) == (1, 1)


@pytest.mark.parametrize(
    ("shift", "registered"),
    [(0.0, False), (120.0, False), (120.0, True)],
    ids=["no-skew", "ahead-unregistered", "ahead-registered"],
)
def test_dead_owner_is_reclaimed_on_the_database_clock(
    tmp_path: Path, db_url: str, shift: float, registered: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An owner claims the job for 4 s and dies without running it. Its lock ends 4 s later
    on the database's clock even when its own clock ran 120 s ahead (then the lock used
    to last 124 s): a healthy runner reclaims it then, not before, and runs it once.
    ``registered``: the dead owner left its agents row, whose heartbeat no longer moves."""
    cfg = config(tmp_path, db_url, lock_ttl=1.0, workers=1)
    orch = Orchestrator(cfg)
    wf, go, out = gated_once(tmp_path)
    go.touch()
    wid = orch.submit(wf)
    real = time.time
    monkeypatch.setattr(time, "time", lambda: real() + shift)  # the dead owner's clock
    with orch.engine.begin() as conn:
        if registered:
            conn.execute(
                agents.insert().values(
                    id="dead-host:1:feedface",
                    roles="carrier",
                    started_at=time.time(),
                    heartbeat=time.time(),
                )
            )
        claimed = claim_ready(conn, "dead-host:1:feedface", ["local"], 10, ttl=4.0)
    monkeypatch.setattr(time, "time", real)
    claimed_at = time.monotonic()
    assert [c["id"] for c in claimed] == [the_job(orch, wid).id]
    healthy = Runner(cfg, roles=("carrier",)).start()
    try:
        time.sleep(max(0.0, 2.5 - (time.monotonic() - claimed_at)))
        early = the_job(orch, wid)
        assert (early.status, early.lock_owner) == ("submitted", "dead-host:1:feedface"), (
            "the dead owner's lock was reclaimed before it expired"
        )
        assert orch.wait(wid, timeout=30) == "finished", "the dead owner's job was never reclaimed"
        reclaimed_after = time.monotonic() - claimed_at
    finally:
        healthy.stop()
        orch.engine.dispose()
    assert reclaimed_after < 20, f"reclaimed only after {reclaimed_after:.1f} s (lock of 4 s)"
    done = the_job(orch, wid)
    assert (done.status, done.attempt, done.success_count) == ("finished", 2, 1)
    assert out.read_text().splitlines() == ["once"]
