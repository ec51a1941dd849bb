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
import textwrap
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from hub_helpers import Hub
from test_hub_service import ok

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


UID_CELL = """
import os
from idds_jupyter import work

@work
def whoami():
    import os, pwd
    return os.getuid(), pwd.getpwuid(os.getuid()).pw_name

print("job", *whoami(), "kernel", os.getuid())
"""


def test_jobs_run_as_their_owners_account(uid_hub: Hub) -> None:
    alice, bob = pwd.getpwnam("alice"), pwd.getpwnam("bob")
    # alice's @work cell, from her kernel on the hub: the job runs as the Unix user alice
    uid_hub.start_server("alice")
    _, kc = uid_hub.start_kernel("alice", uid_hub.user_token("alice"))
    try:
        out = ok(kc, UID_CELL).split()
    finally:
        kc.stop_channels()
    assert out == ["job", str(alice.pw_uid), "alice", "kernel", "0"], out
    # bob's job, submitted with his hub token from outside the hub: runs as bob
    ns: dict[str, Any] = {"__name__": "__main__"}
    exec(
        compile(
            textwrap.dedent("""
                def whoami():
                    import os
                    return os.getuid()
            """),
            "<cell>",
            "exec",
        ),
        ns,
    )
    client = Client(uid_hub.service_url, uid_hub.user_token("bob"))
    try:
        assert work(ns["whoami"], client=client)() == bob.pw_uid
    finally:
        client.shutdown()
