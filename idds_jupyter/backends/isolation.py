"""Isolation of jobs from the service and from each other (``isolation`` in the config).

Levels (see docs/security.md):

``none``
    Jobs run under the service's own OS account (a single-user laptop: the user
    trusts their own code). Still: a job sees only the allow-listed environment
    (:func:`idds_jupyter.worker.env.job_environment`), a worker process runs the
    jobs of one owner only, and killing a job ends its whole process group.
``account``
    Worker processes run under one dedicated unprivileged account
    (``job_account``, e.g. ``idds-job``) that cannot read the service's state
    (database, tokens, job-token key, cache, logs: 0600 files in 0700
    directories of the service's account). Jobs of different owners share that
    account: they cannot read the service, but an owner's job could read the
    files another owner's job writes in the job area while it runs.
``uid``
    Worker processes run as the owner's own OS account (``user_map``: iDDS user
    → OS account, default the same name). Owners are separated by the OS.

With ``account`` and ``uid`` the service must run as root (it starts the workers
with ``setuid``/``setgid`` and no supplementary groups, and prepares each
account's job area). Each account gets ``<jobs_dir>/<account>/`` (0700, owned by
the account) holding copies of the blobs its jobs read, the results they write
(moved into the cache by the service, digest checked) and their logs (copied
into the service's log directory, never followed through a symlink).
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import shutil
import signal
import stat
import threading
from dataclasses import dataclass

__all__ = [
    "ISOLATION_LEVELS",
    "IsolationError",
    "RunAs",
    "run_as",
    "unreachable",
    "kill_session",
    "JobArea",
]

ISOLATION_LEVELS = ("none", "account", "uid")


class IsolationError(ValueError):
    """Jobs cannot run as configured (no such account, a path it cannot reach, not root)."""


@dataclass(frozen=True)
class RunAs:
    """An OS account jobs run as."""

    name: str
    uid: int
    gid: int
    home: str


def run_as(name: str) -> RunAs:
    """The OS account ``name``; ``ValueError`` naming it when there is none."""
    import pwd

    try:
        pw = pwd.getpwnam(name)
    except KeyError:
        raise IsolationError(f"no OS account {name!r} to run jobs as") from None
    if pw.pw_uid == 0:
        raise IsolationError(f"refusing to run jobs as {name!r}: it is root")
    return RunAs(pw.pw_name, pw.pw_uid, pw.pw_gid, pw.pw_dir)


def _searchable(st: os.stat_result, uid: int, gids: set[int]) -> bool:
    if st.st_uid == uid:
        return bool(st.st_mode & stat.S_IXUSR)
    if st.st_gid in gids:
        return bool(st.st_mode & stat.S_IXGRP)
    return bool(st.st_mode & stat.S_IXOTH)


def unreachable(path: str, acct: RunAs) -> str | None:
    """Why ``acct`` (its primary group only: workers get no other) cannot reach ``path``,
    or None. Checked on the path as given and on its real path (a venv's python is
    a symlink), every directory on the way needing search permission."""
    gids = {acct.gid}
    for p in dict.fromkeys((os.path.abspath(path), os.path.realpath(path))):
        d = os.path.dirname(p)
        chain = []
        while True:
            chain.append(d)
            parent = os.path.dirname(d)
            if parent == d:
                break
            d = parent
        for d in reversed(chain):
            try:
                st = os.stat(d)
            except OSError as exc:
                return f"{d}: {exc.strerror}"
            if not _searchable(st, acct.uid, gids):
                return (
                    f"account {acct.name!r} cannot enter {d} (mode "
                    f"{stat.S_IMODE(st.st_mode):04o}, owner uid {st.st_uid}) on the way to {p}"
                )
    return None


def kill_session(sid: int) -> list[int]:
    """SIGKILL every process of session ``sid`` (a dead worker's shell children and what
    they started). Linux (``/proc``); elsewhere nothing. Returns the pids signalled."""
    killed: list[int] = []
    try:
        names = os.listdir("/proc")
    except OSError:
        return killed
    for name in names:
        if not name.isdigit():
            continue
        try:
            with open(f"/proc/{name}/stat", "rb") as fh:
                data = fh.read()
        except OSError:
            continue
        fields = data[data.rfind(b")") + 2 :].split()
        if len(fields) > 3 and int(fields[3]) == sid:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(int(name), signal.SIGKILL)
                killed.append(int(name))
    return killed


class JobArea:
    """The per-account directories of isolated jobs under ``root``.

    ``root`` itself is 0711 (enterable, not listable); ``root/<account>`` is 0700
    and owned by the account, with ``blobs/`` (inputs copied from the cache),
    ``results/`` (the ``result_dir`` of its jobs), ``logs/`` and ``tmp/``.
    """

    def __init__(self, root: str) -> None:
        self.root = os.path.abspath(root)
        os.makedirs(self.root, mode=0o711, exist_ok=True)
        os.chmod(self.root, 0o711)
        self._lock = threading.Lock()
        self._ready: set[str] = set()
        self._staged: set[tuple[str, str]] = set()

    def dir(self, acct: RunAs) -> str:
        return os.path.join(self.root, acct.name)

    def prepare(self, acct: RunAs) -> str:
        """Create (once) the account's directories, owned by it; returns the account's dir."""
        top = self.dir(acct)
        with self._lock:
            if acct.name in self._ready:
                return top
            for d in (top, *(os.path.join(top, s) for s in ("blobs", "results", "logs", "tmp"))):
                with contextlib.suppress(FileExistsError):
                    os.mkdir(d, 0o700)
                st = os.lstat(d)
                if not stat.S_ISDIR(st.st_mode):
                    raise RuntimeError(f"job area {d} is not a directory")
                os.chown(d, acct.uid, acct.gid)
                os.chmod(d, 0o700)
            self._ready.add(acct.name)
        return top

    def stage(self, acct: RunAs, ref: dict[str, object]) -> dict[str, object]:
        """A blob reference ``{"sha256", "path"}`` rewritten to a copy the account can read
        (copied once; the worker checks the digest of what it reads)."""
        sha = str(ref.get("sha256") or "")
        src = str(ref["path"])
        if not sha or len(sha) != 64 or not all(c in "0123456789abcdef" for c in sha):
            raise ValueError(f"blob reference {src} has no sha256")
        dst = os.path.join(self.dir(acct), "blobs", sha)
        if (acct.name, sha) not in self._staged or not os.path.exists(dst):
            tmp = f"{dst}.{os.getpid()}.{threading.get_ident()}.tmp"
            shutil.copyfile(src, tmp)
            os.chown(tmp, acct.uid, acct.gid)
            os.chmod(tmp, 0o400)
            os.replace(tmp, dst)
            self._staged.add((acct.name, sha))
        return {**ref, "path": dst}

    def take_blob(self, acct: RunAs, sha: str, cache_dir: str) -> str | None:
        """Move result blob ``sha`` a job wrote into the cache: read without following a
        symlink, digest checked, written as the service's own 0600 file. An error, or None."""
        if len(sha) != 64 or not all(c in "0123456789abcdef" for c in sha):
            return f"result blob name {sha!r} is not a sha256"
        dst = os.path.join(cache_dir, sha[:2], sha)
        try:
            data = _read_in(self.dir(acct), ("results", sha[:2], sha), remove=True)
        except OSError as exc:
            return f"result blob {sha} cannot be read: {exc}"
        if hashlib.sha256(data).hexdigest() != sha:
            return f"result blob {sha} does not match its digest"
        if not os.path.exists(dst):
            os.makedirs(os.path.dirname(dst), mode=0o700, exist_ok=True)
            tmp = f"{dst}.{os.getpid()}.{threading.get_ident()}.tmp"
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            with os.fdopen(fd, "wb") as fh:
                fh.write(data)
            os.replace(tmp, dst)
        return None

    def take_log(self, acct: RunAs, workflow: str, name: str, dest_dir: str) -> str | None:
        """Copy a job's log ``logs/<workflow>/<name>`` of the account's area into the
        service's ``dest_dir``; the copy's path, or None when there is no such regular file."""
        try:
            data = _read_in(self.dir(acct), ("logs", workflow, name))
        except OSError:
            return None
        os.makedirs(dest_dir, mode=0o700, exist_ok=True)
        dst = os.path.join(dest_dir, name)
        with contextlib.suppress(FileNotFoundError):
            os.unlink(dst)
        fd = os.open(dst, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
        return dst


def _read_in(
    base: str, parts: tuple[str, ...], remove: bool = False, limit: int = 1 << 34
) -> bytes:
    """The bytes of regular file ``base/parts...``: no component below ``base`` (the
    account's area, which the account may change at will) is followed if a symlink."""
    for p in parts:
        if not p or p in (".", "..") or "/" in p:
            raise OSError(f"bad path component {p!r}")
    fds = [os.open(base, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW)]
    try:
        for p in parts[:-1]:
            fds.append(os.open(p, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW, dir_fd=fds[-1]))
        fd = os.open(parts[-1], os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK, dir_fd=fds[-1])
        fds.append(fd)
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise OSError(f"{'/'.join(parts)} is not a regular file")
        with os.fdopen(fd, "rb", closefd=False) as fh:
            data = fh.read(limit)
        if remove:
            with contextlib.suppress(OSError):
                os.unlink(parts[-1], dir_fd=fds[-2])
        return data
    finally:
        for fd in fds:
            os.close(fd)
