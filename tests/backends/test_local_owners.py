"""LocalBackend tenancy: workers per owner (bounded, idle ones reaped), isolation errors."""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

import pytest
from waiting import wait_for

from idds_jupyter.backends import LocalBackend

ECHO = "idds_jupyter.worker.job:echo"
SLEEP = "idds_jupyter.worker.job:sleep"


def spec(job_id: int, owner: str | None, function: str = ECHO, **kwargs: Any) -> dict[str, Any]:
    return {
        "job_id": job_id,
        "attempt": 0,
        "work_id": 1,
        "workflow_id": 1,
        "kind": "function",
        "function": function,
        "command": None,
        "kwargs": kwargs,
        "payload": None,
        "env": {},
        "timeout_s": None,
        "log_dir": None,
        "cwd": None,
        "owner": owner,
    }


def cmd(job_id: int, owner: str, command: str) -> dict[str, Any]:
    return {**spec(job_id, owner), "kind": "command", "function": None, "command": command}


def drain(b: LocalBackend, n: int, timeout: float = 60) -> dict[int, dict[str, Any]]:
    out: dict[int, dict[str, Any]] = {}
    deadline = time.monotonic() + timeout
    while len(out) < n:
        assert time.monotonic() < deadline, f"only {len(out)} of {n} results"
        for r in b.results(0.5):
            if "ok" in r:
                out[r["job_id"]] = r
    return out


def test_owners_get_their_own_workers_within_the_bound() -> None:
    b = LocalBackend(workers=2, batch=10, idle_s=0.6)
    try:
        assert set(b.worker_owners().values()) == {None}  # a warm pool, bound to nobody
        b.submit([cmd(i, "alice", "echo $$; sleep 0.2") for i in range(4)])
        a = drain(b, 4)
        assert all(r["ok"] for r in a.values())
        alice_pids = {pid for pid, o in b.worker_owners().items() if o == "alice"}
        assert alice_pids and len(b.worker_pids()) <= 2
        b.submit([cmd(10 + i, "bob", "echo $$") for i in range(4)])
        bob = drain(b, 4)
        assert all(r["ok"] for r in bob.values())
        owners = b.worker_owners()
        assert len(owners) <= 2 and "bob" in owners.values()
        bob_pids = {pid for pid, o in owners.items() if o == "bob"}
        assert not bob_pids & alice_pids
        # idle owners' workers are ended and replaced by unbound ones
        wait_for(
            lambda: set(b.worker_owners().values()) == {None},
            10,
            0.1,
            message="idle owners' workers replaced by unbound ones",
        )
        assert not (set(b.worker_pids()) & (alice_pids | bob_pids))
        assert len(b.worker_pids()) == 2
    finally:
        b.close()


def test_busy_owner_keeps_its_workers_and_another_waits_its_turn() -> None:
    """One owner keeps both workers busy: another owner's job still runs (it takes the
    first worker that falls idle), never in a worker that ran the first owner's job."""
    b = LocalBackend(workers=2, batch=1)
    try:
        b.submit([spec(i, "alice", SLEEP, seconds=0.3) for i in range(6)])
        time.sleep(0.1)
        b.submit([spec(100, "bob")])
        got = drain(b, 7)
        assert all(r["ok"] for r in got.values())
        assert "bob" in b.worker_owners().values()
    finally:
        b.close()


def test_results_read_in_a_burst_do_not_make_chunks_huge() -> None:
    """A stalled reader (here: the backend's lock held 0.5 s) reads several flushes of
    20 ms jobs at once; the pace that sizes the chunks is the worker's own, so bob's job,
    submitted next, waits for a chunk or two of alice's (about 0.2 s each), not for
    hundreds of her jobs."""
    b = LocalBackend(workers=1, batch=1000)
    try:
        b.submit([spec(i, "alice", SLEEP, seconds=0.02) for i in range(400)])
        drain(b, 30)
        for _ in range(3):  # stall, read a burst, let a chunk or two be sized from it
            with b._lock:
                time.sleep(0.5)
            drain(b, 12)
        b.submit([spec(1000, "bob")])
        order: list[int] = []
        deadline = time.monotonic() + 60
        while 1000 not in order:
            assert time.monotonic() < deadline, "bob's job never ran"
            order += [r["job_id"] for r in b.results(0.5) if "ok" in r]
        ahead = order.index(1000)
        assert ahead <= 40, f"bob's job waited for {ahead} of alice's"
    finally:
        b.close()


def test_uid_isolation_without_an_account_fails_the_job_clearly(tmp_path: Path) -> None:
    if os.geteuid() != 0:
        pytest.fail(
            "isolation tests create OS accounts and run jobs as them: run them as root (CI does)"
        )
    b = LocalBackend(
        workers=1,
        log_dir=str(tmp_path / "logs"),
        isolation="uid",
        user_map={"alice": "no-such-account-xyz"},
    )
    try:
        assert b.worker_pids() == []  # uid: workers start per owner, on demand
        b.submit([spec(1, "alice"), spec(2, None)])
        got = drain(b, 2)
        assert "no OS account 'no-such-account-xyz'" in (got[1]["error"] or "")
        assert "without an owner" in (got[2]["error"] or "")
    finally:
        b.close()


def test_account_isolation_names_an_unreachable_path(tmp_path: Path) -> None:
    if os.geteuid() != 0:
        pytest.fail(
            "isolation tests create OS accounts and run jobs as them: run them as root (CI does)"
        )
    import sys

    sys.path.insert(0, str(Path(__file__).parent.parent / "api"))
    from isolation_helpers import JOB_ACCOUNT, ensure_account

    ensure_account(JOB_ACCOUNT)
    closed = tmp_path / "closed"
    closed.mkdir(mode=0o700)
    closed.chmod(0o700)
    # the first directory on the way the account cannot enter (the interpreter's, when the
    # checkout is in a closed directory; else the job area's)
    with pytest.raises(ValueError, match=r"account 'idds-test-job' cannot enter /.*chmod o\+x"):
        LocalBackend(
            workers=1, isolation="account", job_account=JOB_ACCOUNT, jobs_dir=str(closed / "jobs")
        )
    with pytest.raises(ValueError, match="isolation must be one of"):
        LocalBackend(workers=1, isolation="sandbox")


def test_uid_isolation_takes_an_account_created_after_a_failure(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An owner whose account does not exist yet fails clearly; once the operator creates it,
    the owner's next jobs run as it, without a restart (the failure is not kept forever)."""
    if os.geteuid() != 0:
        pytest.fail(
            "isolation tests create OS accounts and run jobs as them: run them as root (CI does)"
        )
    import subprocess
    import sys

    sys.path.insert(0, str(Path(__file__).parent.parent / "api"))
    from isolation_helpers import ensure_account, job_paths
    from pathtrap import reachable

    from idds_jupyter.backends import local

    late = "idds-test-late"
    subprocess.run(["userdel", late], capture_output=True)
    home = tmp_path / "home"
    home.mkdir()
    with reachable(job_paths(home)):
        b = LocalBackend(
            workers=1,
            log_dir=str(home / "logs"),
            isolation="uid",
            user_map={"dora": late},
            jobs_dir=str(home / "jobs"),
        )
        try:
            b.submit([cmd(1, "dora", "id -un")])
            assert f"no OS account '{late}'" in (drain(b, 1)[1]["error"] or "")
            acct = ensure_account(late)
            b.submit([cmd(2, "dora", "id -un")])  # within the retry period: the same answer
            assert f"no OS account '{late}'" in (drain(b, 1)[2]["error"] or "")
            monkeypatch.setattr(local, "ACCT_RETRY_S", 0.0)
            b.submit(
                [spec(3, "dora", "idds_jupyter.worker.job:echo", x=1), cmd(4, "dora", "id -u")]
            )
            got = drain(b, 2)
            assert got[3]["ok"] and got[4]["ok"], got
            assert {pid for pid, o in b.worker_owners().items() if o == "dora"}
            assert all(os.stat(f"/proc/{pid}").st_uid == acct.pw_uid for pid in b.worker_pids())
        finally:
            b.close()
            subprocess.run(["userdel", late], capture_output=True)
