"""The job area of an isolated account: the account may change it at will, so the
service never writes or reads there through a symlink the account put in the way.

Each test acts as the account (``runuser``) on a real area, for a root service
(directories the account owns) and for a service that is not root (directories the
service owns, ACL entries for the account), and checks what the service does.
Root is needed to create the accounts (CI runs as root).
"""

from __future__ import annotations

import hashlib
import os
import pwd
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parents[1] / "api"))

from isolation_helpers import JOB_ACCOUNT, ensure_account  # noqa: E402
from pathtrap import reachable  # noqa: E402

from idds_jupyter.backends.isolation import JobArea, run_as  # noqa: E402

SVC = "idds-test-svc"
OTHER = "idds-test-bob"


def _as(account: str, script: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["runuser", "-u", account, "--", "sh", "-c", script], capture_output=True, text=True
    )


@pytest.fixture
def accounts() -> None:
    if os.geteuid() != 0:
        pytest.fail("these tests create OS accounts and act as them: run them as root")
    for name in (JOB_ACCOUNT, SVC, OTHER):
        ensure_account(name)


def _blob(tmp_path: Path, data: bytes) -> dict[str, object]:
    sha = hashlib.sha256(data).hexdigest()
    src = tmp_path / "cache" / sha
    src.parent.mkdir(exist_ok=True)
    src.write_bytes(data)
    return {"sha256": sha, "path": str(src)}


def test_root_service_writes_no_staged_input_through_a_planted_link(
    tmp_path: Path, accounts: None
) -> None:
    """A root service: the account owns its area and swaps ``blobs/`` for a link to a
    directory of its choice; staging fails, and nothing appears where the link points."""
    acct = run_as(JOB_ACCOUNT)
    victim = tmp_path / "victim"
    victim.mkdir()
    area = JobArea(str(tmp_path / "jobs"))
    top = Path(area.prepare(acct))
    assert top.stat().st_uid == acct.uid and top.stat().st_mode & 0o777 == 0o700
    ref = _blob(tmp_path, b"payload-1")
    staged = area.stage(acct, ref)
    assert Path(str(staged["path"])).stat().st_uid == acct.uid
    with reachable([str(top / "x")]):
        r = _as(JOB_ACCOUNT, f"cd {top} && mv blobs old && ln -s {victim} blobs")
    assert r.returncode == 0, r.stderr
    with pytest.raises(OSError):
        area.stage(acct, _blob(tmp_path, b"payload-2"))
    assert list(victim.iterdir()) == []


SERVICE_SIDE = textwrap.dedent(
    """
    import hashlib, json, os, sys
    from idds_jupyter.backends.isolation import JobArea, run_as
    root, cache, victim, step = sys.argv[1:5]
    acct = run_as(sys.argv[5])
    area = JobArea(root, acl=True)
    out = {}
    if step == "prepare":
        out["top"] = area.prepare(acct)
    data = step.encode()
    sha = hashlib.sha256(data).hexdigest()
    src = os.path.join(cache, sha)
    with open(src, "wb") as fh:
        fh.write(data)
    try:
        area._ready.add(acct.name)
        out["staged"] = area.stage(acct, {"sha256": sha, "path": src})["path"]
    except OSError as exc:
        out["error"] = type(exc).__name__
    print(json.dumps(out))
    """
)


def test_service_without_root_shares_its_area_by_acl_and_follows_no_link(
    tmp_path: Path, accounts: None
) -> None:
    """A service that is not root: the area is the service's, 0700; the account reads its
    staged input and writes its results (which the service can read back); another account
    reads neither; a ``blobs/`` swapped for a link gets no write through it."""
    import json

    svc = pwd.getpwnam(SVC)
    root, cache, victim = tmp_path / "jobs", tmp_path / "svc-cache", tmp_path / "victim"
    for d in (cache, victim):
        d.mkdir()
        os.chown(d, svc.pw_uid, svc.pw_gid)
    (tmp_path / "jobs").mkdir()
    os.chown(root, svc.pw_uid, svc.pw_gid)
    with reachable([sys.executable, str(root / "x"), str(Path(__file__).parents[2] / "x")]):

        def service(step: str) -> dict[str, str]:
            r = subprocess.run(
                ["runuser", "-u", SVC, "--", sys.executable, "-c", SERVICE_SIDE]
                + [str(root), str(cache), str(victim), step, JOB_ACCOUNT],
                capture_output=True,
                text=True,
                cwd=Path(__file__).parents[2],
            )
            assert r.returncode == 0, r.stderr
            return dict(json.loads(r.stdout))

        got = service("prepare")
        top = Path(got["top"])
        assert top.stat().st_uid == svc.pw_uid
        staged = Path(got["staged"])
        assert _as(JOB_ACCOUNT, f"cat {staged}").stdout == "prepare"
        assert "Permission denied" in _as(OTHER, f"cat {staged}").stderr
        # the account writes a result; the service (through the inherited entry) reads it
        r = _as(JOB_ACCOUNT, f"umask 077; echo result-9 > {top}/results/r; cat {top}/results/r")
        assert r.stdout == "result-9\n", r.stderr
        r = subprocess.run(
            ["runuser", "-u", SVC, "--", "cat", f"{top}/results/r"], capture_output=True, text=True
        )
        assert r.stdout == "result-9\n", r.stderr
        assert "Permission denied" in _as(OTHER, f"cat {top}/results/r").stderr

        r = _as(JOB_ACCOUNT, f"cd {top} && mv blobs old && ln -s {victim} blobs")
        assert r.returncode == 0, r.stderr
        got = service("again")
        assert got.get("error") in ("NotADirectoryError", "OSError") and "staged" not in got, got
        assert list(victim.iterdir()) == []
