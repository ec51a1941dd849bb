"""Shared by the isolation tests: OS accounts, a served API, /proc scans (the path trap:
:mod:`pathtrap`)."""

from __future__ import annotations

import os
import pwd
import subprocess
import sys
import textwrap
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from apiclient import Api

from idds_jupyter.api.server import ServerHandle, start_server
from idds_jupyter.backends import local as local_backend
from idds_jupyter.config import Config

# what the service's environment holds and a job must never see
SECRETS = {
    "IDDS_TOKEN": "svc-secret-idds-token-8c1f",
    "JUPYTER_TOKEN": "svc-secret-jupyter-token-77aa",
    "JUPYTERHUB_API_TOKEN": "svc-secret-hub-token-41be",
    "IDDS_DB_URL": "postgresql://idds:svc-secret-db-password-19@db/idds",
    "AWS_SECRET_ACCESS_KEY": "svc-secret-aws-5d2e",
}

JOB_ACCOUNT = "idds-test-job"
ALICE_OS = "idds-test-alice"
BOB_OS = "idds-test-bob"


def ensure_account(name: str) -> pwd.struct_passwd:
    """A system account without a home or a shell (created once; idempotent)."""
    try:
        return pwd.getpwnam(name)
    except KeyError:
        pass
    r = subprocess.run(
        ["useradd", "-M", "-r", "-s", "/usr/sbin/nologin", name], capture_output=True, text=True
    )
    if r.returncode not in (0, 9):  # 9: created meanwhile
        raise RuntimeError(f"useradd {name}: {r.stderr.strip()}")
    return pwd.getpwnam(name)


def job_paths(home: Path) -> list[str]:
    """What a job account must reach: the interpreter, the package, the job areas."""
    return [sys.executable, os.path.join(local_backend._PKG_ROOT, "idds_jupyter"), str(home)]


@dataclass
class Served:
    handle: ServerHandle
    home: Path
    admin: Api
    alice: Api
    bob: Api


def serve(home: Path, **options: Any) -> Served:
    home.mkdir(parents=True, exist_ok=True)
    cfg = Config.load(
        None,
        home=home,
        db_url=f"sqlite:///{home / 'idds.db'}",
        poll_interval=0.3,
        **{"workers": 2, **options},
    )
    handle = start_server(cfg, "127.0.0.1", 0, "/")
    admin = Api(handle.url, handle.token)
    users = {}
    for name in ("alice", "bob"):
        r = admin.post("/auth/tokens", {"name": "test", "user": name})
        assert r.status == 201, r
        users[name] = Api(handle.url, r.json["token"])
    return Served(handle, home, admin, users["alice"], users["bob"])


def submit(api: Api, yaml_text: str) -> int:
    r = api.post("/requests", {"yaml": textwrap.dedent(yaml_text)})
    assert r.status == 201, r
    return int(r.json["id"])


def job_logs(api: Api, wid: int, work: str) -> list[str]:
    jobs = api.get(f"/monitor/{wid}/works/{work}/jobs").json["jobs"]
    out = []
    for j in jobs:
        r = api.get(f"/logs/{j['id']}")
        out.append(r.body.decode(errors="replace") if r.status == 200 else f"<no log: {r.status}>")
    return out


def steal_script(home: Path) -> str:
    """A shell job that tries to read the service's secrets, database, cache and logs."""
    return (
        f"id -un; cat {home}/serve-token; cat {home}/job-token.key; "
        f"head -c 64 {home}/idds.db; ls {home}/cache; cat {home}/logs/*/*; "
        "echo END-OF-ATTEMPTS"
    )


def assert_denied(log: str, token: str, key: str) -> None:
    """The job of :func:`steal_script` read nothing of the service."""
    assert "END-OF-ATTEMPTS" in log, log
    assert token not in log and key not in log, "a job read the service's secrets"
    assert "SQLite format" not in log, "a job read the service's database"
    assert log.count("Permission denied") >= 5, log


# ----------------------------------------------------------------------------- /proc


def proc_stat(pid: int) -> tuple[int, int, int] | None:
    """``(ppid, pgid, session)`` of ``pid``, or None when it is gone."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as fh:
            data = fh.read()
    except OSError:
        return None
    f = data[data.rfind(b")") + 2 :].split()
    if f[0] == b"Z":
        return None  # a zombie has run its course
    return int(f[1]), int(f[2]), int(f[3])


def processes() -> dict[int, str]:
    """Live (non-zombie) processes: pid -> command line."""
    out = {}
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            with open(f"/proc/{name}/cmdline", "rb") as fh:
                cmd = fh.read().replace(b"\0", b" ").decode(errors="replace").strip()
        except OSError:
            continue
        if cmd and proc_stat(int(name)) is not None:
            out[int(name)] = cmd
    return out


def uid_of(pid: int) -> int:
    with open(f"/proc/{pid}/status") as fh:
        for line in fh:
            if line.startswith("Uid:"):
                return int(line.split()[1])
    raise LookupError(pid)


def my_workers(home: Path) -> dict[int, str]:
    """The local-backend worker processes of the server on ``home`` (this test's): children
    of this process whose working directory is under ``home`` (its log directory, or an
    account's job area under isolation). Workers of other servers this process started
    (another test's, still exiting, or its pool left running) are not counted."""
    me = os.getpid()
    top = os.path.realpath(home)
    out = {}
    for pid, cmd in processes().items():
        if "idds_jupyter.worker --pool" not in cmd or (proc_stat(pid) or (0,))[0] != me:
            continue
        try:
            cwd = os.readlink(f"/proc/{pid}/cwd")
        except OSError:
            continue  # gone meanwhile
        if cwd == top or cwd.startswith(top + os.sep):
            out[pid] = cmd
    return out


def wait_for(pred: Any, timeout: float = 30, what: str = "condition") -> Any:
    deadline = time.monotonic() + timeout
    while True:
        v = pred()
        if v:
            return v
        if time.monotonic() > deadline:
            raise TimeoutError(f"{what} not met within {timeout:g} s")
        time.sleep(0.1)
