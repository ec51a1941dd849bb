"""Issue 19, item 1 — jobs cannot reach the service or other users.

Each test performs the attack against a real running server (agents + REST API in
this process, real local worker processes) and asserts that it fails:

* a job reads the service's environment (tokens, database URL);
* one owner's cloudpickled function patches a module in its worker, and another
  owner's job runs in that worker (and leaks its value back);
* SIGKILL of a worker leaves its shell child running (an orphan that finishes later);
* under ``isolation: account`` / ``uid`` a shell job reads the service's admin token,
  database, job-token key (and, under ``uid``, another owner's job files);
* the service's state is readable by other OS users (modes).

Tests that run jobs as other accounts create them (``useradd -M -r``) and need root.
They also handle the path trap (a checkout inside a 0700 directory, e.g. a clone in
``mktemp -d``): see :mod:`pathtrap`.
"""

from __future__ import annotations

import os
import signal
import stat
import subprocess
import sys
import textwrap
import time
from pathlib import Path
from typing import Any

import pytest

sys.path.insert(0, str(Path(__file__).parent))

from isolation_helpers import (  # noqa: E402
    ALICE_OS,
    BOB_OS,
    JOB_ACCOUNT,
    SECRETS,
    assert_denied,
    ensure_account,
    job_logs,
    job_paths,
    my_workers,
    proc_stat,
    processes,
    serve,
    steal_script,
    submit,
    uid_of,
    wait_for,
)
from pathtrap import reachable  # noqa: E402

from idds_jupyter.client import Client  # noqa: E402
from idds_jupyter.faat.work import work  # noqa: E402

pytestmark = pytest.mark.timeout(300)


def _require_root() -> None:
    """These tests create OS accounts and run jobs as them: as root (CI is), never skipped."""
    if os.geteuid() != 0:
        pytest.fail("isolation tests create OS accounts and run jobs as them: run them as root")


needs_root = pytest.mark.usefixtures("_root")


@pytest.fixture
def _root() -> None:
    _require_root()


def _main(source: str) -> dict[str, Any]:
    """Functions defined as in a notebook cell (``__main__``: cloudpickled by value)."""
    ns: dict[str, Any] = {"__name__": "__main__"}
    exec(compile(textwrap.dedent(source), "<cell>", "exec"), ns)
    return ns


def _secret_values(token: str) -> list[str]:
    return [*SECRETS.values(), token]


# ----------------------------------------------------------------------------- environment


def test_jobs_see_no_service_environment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A shell job's ``env`` and a function's ``os.environ`` hold the allow-list and what the
    work declares, never the service's tokens or database URL (isolation none)."""
    for k, v in SECRETS.items():
        monkeypatch.setenv(k, v)
    s = serve(tmp_path / "home")
    try:
        wid = submit(
            s.alice,
            """
            name: env-leak
            works:
              - name: dump
                command: "env; echo DECLARED=$MY_SETTING"
                env: {MY_SETTING: declared-value}
        """,
        )
        assert s.alice.wait(wid)["status"] == "finished"
        (log,) = job_logs(s.alice, wid, "dump")
        assert "DECLARED=declared-value" in log and "PATH=" in log
        for secret in _secret_values(s.handle.token):
            assert secret not in log, f"a shell job saw {secret!r}"
        names = {line.split("=", 1)[0] for line in log.splitlines() if "=" in line}
        assert not names & set(SECRETS), names & set(SECRETS)

        ns = _main("""
            def environ():
                import os
                return dict(os.environ)
        """)
        client = Client(s.handle.url, s.alice.token)
        try:
            seen = work(ns["environ"], client=client, env={"MINE": "yes"})()
        finally:
            client.shutdown()
        assert seen.get("MINE") == "yes"
        assert not set(seen) & set(SECRETS), set(seen) & set(SECRETS)
        assert not [v for v in seen.values() if any(x in v for x in _secret_values(s.handle.token))]
    finally:
        s.handle.stop()


# ----------------------------------------------------------------------------- per-owner workers


def test_a_worker_never_runs_two_owners_jobs(tmp_path: Path) -> None:
    """Alice's function patches ``json.dumps`` and spies on values in every worker it reaches;
    Bob's ordinary jobs then return their own values, in other processes, and Alice's spy
    saw none of them."""
    s = serve(tmp_path / "home")
    alice = Client(s.handle.url, s.alice.token)
    bob = Client(s.handle.url, s.bob.token)
    try:
        ns = _main("""
            def attack(i):
                import json, os, time
                import idds_jupyter.worker.job as j
                json.dumps = lambda *a, **k: '"pwned"'
                if not hasattr(j, "_STOLEN"):
                    j._STOLEN = []
                    real = j._jsonable
                    def spy(value, _real=real, _log=j._STOLEN):
                        _log.append(repr(value))
                        return _real(value)
                    j._jsonable = spy
                time.sleep(0.3)  # both workers get some of the map
                return os.getpid()

            def peek(i):
                import os
                import idds_jupyter.worker.job as j
                return [os.getpid(), list(getattr(j, "_STOLEN", []))]

            def victim(x):
                import json, os
                return {"pid": os.getpid(), "dump": json.dumps({"v": x}),
                        "secret": "bob-secret-%d" % x}
        """)
        attack = work(ns["attack"], client=alice)
        alice_pids = set(attack.map(range(6)))
        assert alice_pids and alice_pids <= set(my_workers(s.home))

        out = work(ns["victim"], client=bob).map(range(6))
        assert [o["dump"] for o in out] == [f'{{"v": {x}}}' for x in range(6)], out
        bob_pids = {o["pid"] for o in out}
        assert not bob_pids & alice_pids, (bob_pids, alice_pids)
        # the pool stays within `workers` (a worker retired for Bob may take a moment to exit)
        wait_for(
            lambda: len(my_workers(s.home)) <= 2,
            timeout=20,
            what="the server's workers back to at most 2",
        )

        peeks = work(ns["peek"], client=alice).map(range(4))
        stolen = [v for _, seen in peeks for v in seen]
        assert not [v for v in stolen if "bob-secret" in v], stolen
        assert {pid for pid, _ in peeks}.isdisjoint(bob_pids)
    finally:
        alice.shutdown()
        bob.shutdown()
        s.handle.stop()


# ----------------------------------------------------------------------------- orphans


def test_sigkill_of_a_worker_leaves_no_orphan(tmp_path: Path) -> None:
    """SIGKILL a worker while its shell child runs ``sleep; touch X``: the shell and its
    children die with it (no process left), and X never appears."""
    marker = tmp_path / "orphan-marker"
    s = serve(tmp_path / "home")
    try:
        wid = submit(
            s.alice,
            f"""
            name: orphan
            works:
              - name: slow
                command: "sleep 3.71; touch {marker}"
        """,
        )
        sleeper = wait_for(
            lambda: [p for p, c in processes().items() if c == "sleep 3.71"], what="the job's sleep"
        )[0]
        workers = my_workers(s.home)
        worker = sleeper
        while worker not in workers:  # up from the sleep: its shell, then the worker
            up = proc_stat(worker)
            assert up is not None and up[0] > 1, f"no worker above the job's sleep {sleeper}"
            worker = up[0]
        os.kill(worker, signal.SIGKILL)
        st = s.alice.wait(wid)
        assert st["status"] == "failed"
        left = [p for p, c in processes().items() if str(marker) in c or c == "sleep 3.71"]
        assert not left, f"orphans left: {left}"
        time.sleep(4.2)
        assert not marker.exists(), "the killed worker's shell child ran to completion"
    finally:
        s.handle.stop()


@pytest.mark.parametrize("how", ["abort", "timeout"])
def test_abort_and_timeout_end_the_whole_process_group(tmp_path: Path, how: str) -> None:
    """A shell job with a background child (same group) and a foreground one: abort (and a
    timeout) end both; neither marker ever appears and no process of the job is left."""
    fg, bg = tmp_path / f"fg-{how}", tmp_path / f"bg-{how}"
    s = serve(tmp_path / "home")
    try:
        timeout = "timeout_s: 1" if how == "timeout" else ""
        wid = submit(
            s.alice,
            f"""
            name: group-{how}
            works:
              - name: w
                {timeout}
                command: "(sleep 2.61; touch {bg}) & sleep 2.63; touch {fg}"
        """,
        )
        wait_for(
            lambda: [p for p, c in processes().items() if c == "sleep 2.63"], what="the job's sleep"
        )
        if how == "abort":
            assert s.alice.post(f"/requests/{wid}/abort", {}).status in (200, 202)
        st = s.alice.wait(wid)
        assert st["status"] in ("aborted", "failed"), st
        wait_for(
            lambda: not [p for p, c in processes().items() if c.startswith("sleep 2.6")],
            timeout=5,
            what="the job's processes gone",
        )
        time.sleep(3.0)
        assert not fg.exists() and not bg.exists(), "a child of the ended job ran on"
    finally:
        s.handle.stop()


def test_a_timed_out_function_leaves_no_process(tmp_path: Path) -> None:
    """A function job that starts a process and overruns its timeout: the process ends with it."""
    s = serve(tmp_path / "home")
    client = Client(s.handle.url, s.alice.token)
    try:
        ns = _main("""
            def overrun():
                import subprocess, time
                subprocess.Popen(["sleep", "7.41"])
                time.sleep(30)
        """)
        with pytest.raises(TimeoutError):
            work(ns["overrun"], client=client, timeout_s=1.5)()
        wait_for(
            lambda: "sleep 7.41" not in processes().values(),
            timeout=5,
            what="the function's child gone",
        )
    finally:
        client.shutdown()
        s.handle.stop()


# ----------------------------------------------------------------------------- isolation levels


@needs_root
def test_isolation_account_jobs_cannot_read_the_service(tmp_path: Path) -> None:
    """``isolation: account``: jobs run as the job account; reading the admin token, the
    job-token key, the database, the cache or the logs fails; function jobs still get their
    payloads and return values larger than the inline limit (through the cache)."""
    from idds_jupyter.store.job_tokens import load_secret

    acct = ensure_account(JOB_ACCOUNT)
    home = tmp_path / "home"
    home.mkdir()
    with reachable(job_paths(home)):
        s = serve(home, isolation="account", job_account=JOB_ACCOUNT)
        try:
            key = load_secret(home).hex()
            wid = submit(
                s.alice,
                f"""
                name: steal
                works:
                  - name: steal
                    command: "{steal_script(home)}"
            """,
            )
            s.alice.wait(wid)
            (log,) = job_logs(s.alice, wid, "steal")
            assert log.splitlines()[0] == JOB_ACCOUNT, log
            assert_denied(log, s.handle.token, key)
            workers = my_workers(home)
            assert workers and all(uid_of(p) == acct.pw_uid for p in workers), workers

            ns = _main("""
                def big(n):
                    import os
                    return [os.getuid(), "x" * n]
            """)
            client = Client(s.handle.url, s.alice.token)
            try:
                uid, text = work(ns["big"], client=client)(100_000)
            finally:
                client.shutdown()
            assert uid == acct.pw_uid and text == "x" * 100_000
        finally:
            s.handle.stop()


@needs_root
def test_isolation_uid_jobs_run_as_their_owner(tmp_path: Path) -> None:
    """``isolation: uid``: each owner's jobs run as that owner's OS account (user map);
    Alice's job cannot read the service's state nor Bob's job files; each owner's job
    logs belong to (and are readable by) that owner's account."""
    from idds_jupyter.store.job_tokens import load_secret

    a, b = ensure_account(ALICE_OS), ensure_account(BOB_OS)
    home = tmp_path / "home"
    home.mkdir()
    with reachable(job_paths(home)):
        s = serve(home, isolation="uid", user_map={"alice": ALICE_OS, "bob": BOB_OS})
        try:
            key = load_secret(home).hex()
            wid_b = submit(
                s.bob,
                """
                name: bob-private
                works:
                  - name: w
                    command: "id -un; echo bob-private-value-3391 > private.txt; echo done"
            """,
            )
            assert s.bob.wait(wid_b)["status"] == "finished"
            bob_area = home / "jobs" / BOB_OS
            wid = submit(
                s.alice,
                f"""
                name: steal
                works:
                  - name: steal
                    command: "{steal_script(home)}; cat {bob_area}/logs/*/*; ls {bob_area}"
            """,
            )
            s.alice.wait(wid)
            (log,) = job_logs(s.alice, wid, "steal")
            assert log.splitlines()[0] == ALICE_OS, log
            assert_denied(log, s.handle.token, key)
            assert "bob-private" not in log and log.count("Permission denied") >= 7, log
            (blog,) = job_logs(s.bob, wid_b, "w")
            assert blog.splitlines()[0] == BOB_OS

            # job logs: in the owner's area, the owner's own files (the service keeps a copy)
            logs = list((home / "jobs" / ALICE_OS / "logs").rglob("*.log"))
            assert logs and all(p.stat().st_uid == a.pw_uid for p in logs), logs
            r = subprocess.run(
                ["runuser", "-u", ALICE_OS, "--", "cat", str(logs[0])],
                capture_output=True,
                text=True,
            )
            assert r.returncode == 0 and r.stdout.splitlines()[0] == ALICE_OS
            r = subprocess.run(
                ["runuser", "-u", BOB_OS, "--", "cat", str(logs[0])], capture_output=True, text=True
            )
            assert r.returncode != 0 and "Permission denied" in r.stderr
            workers = my_workers(home)
            assert workers and {uid_of(p) for p in workers} <= {a.pw_uid, b.pw_uid}, workers
        finally:
            s.handle.stop()


# ----------------------------------------------------------------------------- modes


@needs_root
def test_service_state_is_private(tmp_path: Path) -> None:
    """After jobs ran: the home, logs and cache are 0700 directories, the database (and its
    WAL), the admin token, the job-token key and the logs 0600 files; another OS account can
    read none of the files, even with every directory above the home open to it."""
    from idds_jupyter.store.job_tokens import load_secret

    other = ensure_account(JOB_ACCOUNT)
    home = tmp_path / "home"
    s = serve(home)
    try:
        load_secret(home)
        wid = submit(
            s.alice,
            """
            name: modes
            works:
              - name: w
                command: "echo some output"
        """,
        )
        assert s.alice.wait(wid)["status"] == "finished"
        ns = _main("""
            def big(n):
                print("a line for the log")
                return "y" * n
        """)
        client = Client(s.handle.url, s.alice.token)
        try:
            assert work(ns["big"], client=client)(50_000) == "y" * 50_000
        finally:
            client.shutdown()
    finally:
        s.handle.stop()

    def mode(p: Path) -> int:
        return stat.S_IMODE(p.lstat().st_mode)

    assert mode(home) == 0o700
    for name in ("logs", "cache"):
        assert mode(home / name) == 0o700, name
    for name in ("idds.db", "serve-token", "job-token.key"):
        assert mode(home / name) == 0o600, name
    for wal in home.glob("idds.db-*"):
        assert mode(wal) == 0o600, wal
    logs = [p for p in (home / "logs").rglob("*") if p.is_file()]
    assert logs
    for p in (home / "logs").rglob("*"):
        assert mode(p) == (0o700 if p.is_dir() else 0o600), (p, oct(mode(p)))
    files = [p for p in home.rglob("*") if p.is_file()]
    assert len(files) > 5
    with reachable([str(home.parent)]):
        r = subprocess.run(
            ["runuser", "-u", other.pw_name, "--", "cat", *map(str, files)],
            capture_output=True,
            text=True,
        )
    assert r.stdout == "", "another account read the service's files"
    assert r.stderr.count("Permission denied") == len(files), r.stderr
