"""Issue 19, item 1 — isolation without root: the service runs as an ordinary account
and starts workers as the job accounts through ``sudo`` and a narrow sudoers rule.

Each test starts ``idds-jupyter serve`` as the unprivileged account ``idds-test-svc``
(real sudo, real accounts, a sudoers file written for the test and removed after) and
attacks it as the root-service tests of :mod:`test_api_isolation` do:

* a shell job reads the service's admin token, job-token key, database, cache, logs;
* under ``uid``, Alice's job reads Bob's job area; an owner the sudoers rule leaves out
  gets a clear error, and a service whose job account the rule leaves out does not start;
* an aborted job, or a worker killed from outside, leaves its shell children running.

Root is needed to create the accounts and the sudoers file (CI runs as root).
"""

from __future__ import annotations

import json
import os
import pwd
import shutil
import signal
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))

from apiclient import Api  # noqa: E402
from isolation_helpers import (  # noqa: E402
    ALICE_OS,
    BOB_OS,
    JOB_ACCOUNT,
    assert_denied,
    ensure_account,
    job_logs,
    job_paths,
    processes,
    steal_script,
    submit,
    uid_of,
    wait_for,
)
from pathtrap import reachable  # noqa: E402

from idds_jupyter.client import Client  # noqa: E402
from idds_jupyter.faat.work import work  # noqa: E402

pytestmark = pytest.mark.timeout(300)

SVC = "idds-test-svc"
ROOT = Path(__file__).resolve().parents[2]
WORKER = os.path.join(os.path.dirname(sys.executable), "idds-jupyter-worker")


@pytest.fixture(scope="module")
def sudo_rule() -> Iterator[str]:
    """The sudoers rule of the deployment docs: the service account may start the worker
    command as the job account and Alice's account, nothing else (Bob is left out)."""
    if os.geteuid() != 0:
        pytest.fail("these tests create OS accounts and a sudoers file: run them as root")
    if not shutil.which("sudo"):
        pytest.fail("sudo is not installed: make isolation-deps (apt-get install sudo)")
    for name in (SVC, JOB_ACCOUNT, ALICE_OS, BOB_OS):
        ensure_account(name)
    path = Path(f"/etc/sudoers.d/idds-test-{os.getpid()}")
    path.write_text(f"{SVC} ALL=({JOB_ACCOUNT},{ALICE_OS}) NOPASSWD: {WORKER}\n")
    path.chmod(0o440)
    try:
        r = subprocess.run(["visudo", "-cf", str(path)], capture_output=True, text=True)
        assert r.returncode == 0, r.stdout + r.stderr
        yield path.read_text()
    finally:
        path.unlink()


@dataclass
class Service:
    proc: subprocess.Popen[str]
    home: Path
    url: str
    token: str
    admin: Api
    log: Path

    def user(self, name: str) -> Api:
        r = self.admin.post("/auth/tokens", {"name": "test", "user": name})
        assert r.status == 201, r
        return Api(self.url, r.json["token"])

    def stop(self) -> str:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(60)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(30)
        return self.log.read_text()


def start(tmp_path: Path, **settings: str) -> subprocess.Popen[str]:
    """``idds-jupyter serve`` as the service account, its state in ``tmp_path/home``."""
    home, runtime = tmp_path / "home", tmp_path / "runtime"
    svc = pwd.getpwnam(SVC)
    for d in (home, runtime):
        d.mkdir(exist_ok=True)
        os.chown(d, svc.pw_uid, svc.pw_gid)
    env = {
        "PATH": os.environ.get("PATH", os.defpath),
        "LANG": "C.UTF-8",
        "HOME": str(home),
        "IDDS_HOME": str(home),
        "IDDS_DB_URL": f"sqlite:///{home / 'idds.db'}",
        "JUPYTER_RUNTIME_DIR": str(runtime),
        "IDDS_WORKERS": "2",
        "IDDS_POLL_INTERVAL": "0.3",
        **{f"IDDS_{k.upper()}": v for k, v in settings.items()},
    }
    log = open(tmp_path / "serve.log", "w")  # noqa: SIM115 - the child writes it
    return subprocess.Popen(
        ["runuser", "-u", SVC, "--", sys.executable, "-m", "idds_jupyter.cli", "serve"]
        + ["--port", "0"],
        env=env,
        cwd=ROOT,
        stdout=log,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    )


def serve(tmp_path: Path, **settings: str) -> Service:
    proc = start(tmp_path, **settings)
    log = tmp_path / "serve.log"
    runtime = tmp_path / "runtime"

    def up() -> list[Path]:
        assert proc.poll() is None, f"the service exited: {log.read_text()}"
        return list(runtime.glob("idds-*.json"))

    (cf,) = wait_for(up, 60, "the service's connection file")
    info = json.loads(cf.read_text())
    assert uid_of(info["pid"]) == pwd.getpwnam(SVC).pw_uid
    return Service(
        proc, tmp_path / "home", info["url"], info["token"], Api(info["url"], info["token"]), log
    )


def workers_of(home: Path) -> dict[int, int]:
    """``{pid: uid}`` of the pool workers started through sudo for the service on ``home``
    (their working directory is an account's job area under ``home``)."""
    out = {}
    top = os.path.realpath(home)
    for pid, cmd in processes().items():
        if "idds-jupyter-worker --pool --setup" not in cmd or cmd.startswith("sudo"):
            continue
        try:
            cwd = os.readlink(f"/proc/{pid}/cwd")
        except OSError:
            continue
        if cwd.startswith(top + os.sep):
            out[pid] = uid_of(pid)
    return out


def steal(api: Api, home: Path, more: str = "") -> str:
    """Run :func:`steal_script` (and ``more``) as a shell job of ``api``'s user: its log."""
    wid = submit(
        api,
        f"""
        name: steal
        works:
          - name: steal
            command: "{steal_script(home)}{more}"
        """,
    )
    api.wait(wid)
    (log,) = job_logs(api, wid, "steal")
    return log


def _paths(tmp_path: Path) -> list[str]:
    return [*job_paths(tmp_path / "home"), WORKER, str(ROOT / "idds_jupyter")]


def test_account_isolation_through_sudo(tmp_path: Path, sudo_rule: str) -> None:
    """``isolation: account`` with the service as ``idds-test-svc``: jobs run as the job
    account (children of sudo), read nothing of the service's state, and function jobs
    still get their payloads and return a value beyond the inline limit (the job area's
    ACLs: the account reads its staged blobs, the service reads its results)."""
    from idds_jupyter.store.job_tokens import load_secret

    acct = pwd.getpwnam(JOB_ACCOUNT)
    with reachable(_paths(tmp_path)):
        s = serve(tmp_path, isolation="account", job_account=JOB_ACCOUNT)
        try:
            alice = s.user("alice")
            key = load_secret(s.home).hex()
            log = steal(alice, s.home)
            assert log.splitlines()[0] == JOB_ACCOUNT, log
            assert_denied(log, s.token, key)
            ws = workers_of(s.home)
            assert ws and set(ws.values()) == {acct.pw_uid}, ws

            ns: dict[str, object] = {"__name__": "__main__"}
            exec(
                compile(
                    textwrap.dedent("""
                    def big(n):
                        import os
                        return [os.getuid(), "x" * n]
                    """),
                    "<cell>",
                    "exec",
                ),
                ns,
            )
            client = Client(s.url, alice.token)
            try:
                uid, text = work(ns["big"], client=client)(100_000)  # type: ignore[arg-type]
            finally:
                client.shutdown()
            assert uid == acct.pw_uid and text == "x" * 100_000
        finally:
            out = s.stop()
    assert not workers_of(s.home), "workers outlived the service"
    assert "Traceback" not in out, out


def test_uid_isolation_through_sudo(tmp_path: Path, sudo_rule: str) -> None:
    """``isolation: uid``: Alice's jobs run as her account and cannot read the service nor
    the job area of another account; Bob, whom the sudoers rule leaves out, gets an error
    that names the rule to add, and his job runs nowhere."""
    from idds_jupyter.store.job_tokens import load_secret

    a = pwd.getpwnam(ALICE_OS)
    with reachable(_paths(tmp_path)):
        s = serve(
            tmp_path,
            isolation="uid",
            user_map=f"alice={ALICE_OS},bob={BOB_OS},carol={JOB_ACCOUNT}",
        )
        try:
            alice, bob, carol = s.user("alice"), s.user("bob"), s.user("carol")
            key = load_secret(s.home).hex()
            wid_c = submit(
                carol,
                """
                name: carol-private
                works:
                  - name: w
                    command: "id -un; echo carol-private-value-2210 > private.txt; echo done"
                """,
            )
            assert carol.wait(wid_c)["status"] == "finished"
            carol_area = s.home / "jobs" / JOB_ACCOUNT
            assert (carol_area / "private.txt").stat().st_uid == pwd.getpwnam(JOB_ACCOUNT).pw_uid
            log = steal(alice, s.home, f"; cat {carol_area}/private.txt; ls {carol_area}/logs")
            assert log.splitlines()[0] == ALICE_OS, log
            assert_denied(log, s.token, key)
            assert "carol-private" not in log and log.count("Permission denied") >= 7, log

            # her log in her area: her own file, which the other account cannot read
            logs = list((s.home / "jobs" / ALICE_OS / "logs").rglob("*.log"))
            assert logs and all(p.stat().st_uid == a.pw_uid for p in logs), logs
            for who, ok in ((ALICE_OS, True), (JOB_ACCOUNT, False)):
                r = subprocess.run(
                    ["runuser", "-u", who, "--", "cat", str(logs[0])],
                    capture_output=True,
                    text=True,
                )
                assert (r.returncode == 0) == ok, (who, r.stderr)

            wid_b = submit(
                bob,
                """
                name: bob
                works:
                  - name: w
                    command: "touch /tmp/idds-test-bob-ran; id -un"
                """,
            )
            st = bob.wait(wid_b)
            assert st["status"] != "finished"
            jobs = bob.get(f"/monitor/{wid_b}/works/w/jobs").json["jobs"]
            err = " ".join(str(j.get("error")) for j in jobs)
            assert "sudo does not let 'idds-test-svc' start the worker as 'idds-test-bob'" in err
            assert f"idds-test-svc ALL=(idds-test-bob) NOPASSWD: {WORKER}" in err, err
            assert {uid for uid in workers_of(s.home).values()} <= {
                a.pw_uid,
                pwd.getpwnam(JOB_ACCOUNT).pw_uid,
            }
        finally:
            s.stop()


def test_service_without_a_sudo_rule_for_its_job_account_says_so(
    tmp_path: Path, sudo_rule: str
) -> None:
    """The job account is one the rule leaves out: the service does not start, and says
    which rule would let it."""
    with reachable(_paths(tmp_path)):
        proc = start(tmp_path, isolation="account", job_account=BOB_OS)
        rc = proc.wait(120)
    out = (tmp_path / "serve.log").read_text()
    assert rc == 2, out
    assert f"error: sudo does not let 'idds-test-svc' start the worker as '{BOB_OS}'" in out, out
    assert f"'{SVC} ALL=({BOB_OS}) NOPASSWD: {WORKER}'" in out
    assert "Traceback" not in out


def _sleepers(mark: str) -> list[int]:
    """The job's two sleeps, and the shell running them."""
    return [pid for pid, cmd in processes().items() if mark in cmd and "sleep" in cmd]


def test_abort_and_a_killed_worker_leave_no_process_through_sudo(
    tmp_path: Path, sudo_rule: str
) -> None:
    """The service cannot signal the job account's processes itself: abort reaches the
    worker through sudo (which relays the signal) and ends the job's process group; a
    worker killed from outside leaves shell children that the service ends through
    ``sudo ... idds-jupyter-worker --reap``."""
    with reachable(_paths(tmp_path)):
        s = serve(tmp_path, isolation="account", job_account=JOB_ACCOUNT)
        try:
            alice = s.user("alice")
            for how in ("abort", "kill"):
                mark = f"41{len(how)}7"
                wid = submit(
                    alice,
                    f"""
                    name: {how}
                    works:
                      - name: w
                        command: "sleep 3{mark} & sleep 4{mark}; echo never"
                    """,
                )
                wait_for(lambda mark=mark: len(_sleepers(mark)) == 3, 60, "the job's processes")
                assert {uid_of(p) for p in _sleepers(mark)} == {pwd.getpwnam(JOB_ACCOUNT).pw_uid}
                if how == "abort":
                    r = alice.post(f"/requests/{wid}/abort", {})
                    assert r.status in (200, 202), r
                else:
                    (worker,) = [
                        p
                        for p in workers_of(s.home)
                        if os.getsid(p) == os.getsid(_sleepers(mark)[0])
                    ]
                    os.kill(worker, signal.SIGKILL)
                wait_for(lambda mark=mark: not _sleepers(mark), 30, f"no sleep left after {how}")
                st = alice.wait(wid)
                assert st["status"] in ("cancelled", "failed", "aborted"), st
                time.sleep(0.5)
                assert not _sleepers(mark)
        finally:
            s.stop()


def test_a_killed_service_leaves_no_job_running_through_sudo(
    tmp_path: Path, sudo_rule: str
) -> None:
    """SIGKILL of the service: its workers' parent is sudo, which lives on; the workers see
    their input end and the service gone, and end their running job's processes."""
    with reachable(_paths(tmp_path)):
        s = serve(tmp_path, isolation="account", job_account=JOB_ACCOUNT)
        try:
            alice = s.user("alice")
            mark = "52917"
            submit(
                alice,
                f"""
                name: orphan
                works:
                  - name: w
                    command: "sleep 3{mark} & sleep 4{mark}; echo never"
                """,
            )
            wait_for(lambda: len(_sleepers(mark)) == 3, 60, "the job's processes")
            cf = next((tmp_path / "runtime").glob("idds-*.json"))
            os.kill(json.loads(cf.read_text())["pid"], signal.SIGKILL)
            wait_for(lambda: not _sleepers(mark), 30, "no process of the job left")
            wait_for(lambda: not workers_of(s.home), 30, "no worker left")
        finally:
            s.stop()
