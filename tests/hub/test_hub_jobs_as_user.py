"""Jobs as the user on a hub with system users (issue 20, item 5).

The iDDS service of this hub runs with ``IDDS_ISOLATION=uid``: a job runs under its
owner's OS account, the hub user of the same name (what LocalProcessSpawner spawns
single-user servers as). The accounts ``alice`` and ``bob`` are created when missing
(``useradd``: the tests run as root, as the service must for ``uid``).
"""

from __future__ import annotations

import os
import pwd
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from hub_helpers import Hub

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from pathtrap import reachable  # noqa: E402

from idds_jupyter.backends import local as local_backend  # noqa: E402
from idds_jupyter.client import Client  # noqa: E402
from idds_jupyter.faat.work import work  # noqa: E402


def system_user(name: str) -> pwd.struct_passwd:
    """The Unix account ``name`` (created without a home or a shell when missing)."""
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


@pytest.fixture(scope="module")
def uid_hub() -> Iterator[Hub]:
    if os.geteuid() != 0:
        raise RuntimeError("uid isolation needs the service to run as root; run the tests as root")
    for name in ("alice", "bob"):
        system_user(name)
    # The accounts must reach the interpreter, the package (pathtrap) and the job areas: the
    # hub's state goes in a directory of its own in /tmp (pytest's base dir is 0700, and
    # another session's `reachable` may restore that mode while this hub runs).
    state = Path(tempfile.mkdtemp(prefix="idds-uid-hub-"))
    state.chmod(0o711)
    paths = [sys.executable, os.path.join(local_backend._PKG_ROOT, "idds_jupyter")]
    try:
        with reachable(paths):
            h = Hub(state, service_env={"IDDS_ISOLATION": "uid"})
            try:
                yield h
            finally:
                h.stop()
    finally:
        shutil.rmtree(state, ignore_errors=True)


WHOAMI = """
def whoami():
    import os, pwd
    return os.getuid(), pwd.getpwuid(os.getuid()).pw_name
"""


def test_jobs_run_as_their_owners_account(uid_hub: Hub) -> None:
    """Each user's @work job, submitted with that user's hub token (as a kernel on the hub
    does), runs as the Unix account of the same name; the service itself runs as root."""
    ns: dict[str, Any] = {"__name__": "__main__"}  # as in a notebook: pickled by value
    exec(compile(WHOAMI, "<cell>", "exec"), ns)
    for name in ("alice", "bob"):
        account = pwd.getpwnam(name)
        client = Client(uid_hub.service_url, uid_hub.user_token(name))
        try:
            assert work(ns["whoami"], client=client)() == (account.pw_uid, name)
        finally:
            client.shutdown()
    assert uid_hub.service_pid() and os.stat(f"/proc/{uid_hub.service_pid()}").st_uid == 0
