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

With ``account`` and ``uid``, a service running as root starts the workers with
``setuid``/``setgid`` and no supplementary groups; a service running as an ordinary
account starts them through ``sudo -n -u <account> idds-jupyter-worker --pool
--setup``, which a narrow sudoers rule allows (as JupyterHub's sudospawner does):

    idds ALL=(idds-job) NOPASSWD: /opt/idds/venv/bin/idds-jupyter-worker

Each account gets ``<jobs_dir>/<account>/`` holding copies of the blobs its jobs
read, the results they write (moved into the cache by the service, digest
checked) and their logs (copied into the service's log directory, never followed
through a symlink). Under root the directories belong to the account (0700);
under sudo they belong to the service, 0700, with POSIX ACL entries that let that
one account in (and, on what it writes, the service back in).
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import shutil
import stat
import struct
import subprocess
import sys
import threading
from dataclasses import dataclass

from idds_jupyter.worker.job import kill_session

__all__ = [
    "ISOLATION_LEVELS",
    "IsolationError",
    "RunAs",
    "run_as",
    "unreachable",
    "kill_session",
    "JobArea",
    "Sudo",
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


class Sudo:
    """Workers started through ``sudo`` by a service that is not root.

    :param worker: the worker command the sudoers rule names (default: ``idds-jupyter-worker``
        beside the interpreter)
    """

    def __init__(self, worker: str | None = None, sudo: str = "sudo") -> None:
        self.worker = worker or os.path.join(
            os.path.dirname(os.path.abspath(sys.executable)), "idds-jupyter-worker"
        )
        self.sudo = shutil.which(sudo) or ""
        if not self.sudo:
            raise IsolationError(
                f"jobs run as other accounts while the service is not root: {sudo!r} is "
                "not installed (or run the service as root)"
            )
        if not os.access(self.worker, os.X_OK):
            raise IsolationError(f"the worker command {self.worker} is not an executable")

    def argv(self, acct: RunAs, *args: str) -> list[str]:
        return [self.sudo, "-n", "-u", acct.name, "--", self.worker, *args]

    def check(self, acct: RunAs) -> None:
        """Fail clearly, naming the sudoers rule to add, when sudo does not allow it."""
        try:
            r = subprocess.run(
                [self.sudo, "-n", "-l", "-u", acct.name, "--", self.worker, "--pool", "--setup"],
                capture_output=True,
                text=True,
                timeout=30,
                stdin=subprocess.DEVNULL,
            )
        except (OSError, subprocess.SubprocessError) as exc:
            raise IsolationError(f"sudo could not be asked about {acct.name!r}: {exc}") from None
        if r.returncode != 0:
            import pwd

            me = pwd.getpwuid(os.geteuid()).pw_name
            why = (r.stderr or r.stdout).strip().splitlines()
            raise IsolationError(
                f"sudo does not let {me!r} start the worker as {acct.name!r}"
                f"{': ' + why[-1] if why else ''}; a sudoers rule such as "
                f"'{me} ALL=({acct.name}) NOPASSWD: {self.worker}' allows it"
            )

    def reap(self, acct: RunAs, sid: int) -> None:
        """End what is left of a dead worker's session (it ran as ``acct``)."""
        with contextlib.suppress(OSError, subprocess.SubprocessError):
            subprocess.run(
                self.argv(acct, "--reap", str(sid)),
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
                timeout=30,
            )


# POSIX ACLs as Linux stores them (``system.posix_acl_access``/``_default`` extended
# attributes, acl_ea.h): a version, then (tag, permissions, id) entries sorted by tag.
_ACL_USER_OBJ, _ACL_USER, _ACL_GROUP_OBJ, _ACL_MASK, _ACL_OTHER = 0x01, 0x02, 0x04, 0x10, 0x20
_ACL_NOID = 0xFFFFFFFF


def acl_bytes(users: dict[int, int], owner: int = 7) -> bytes:
    """An ACL: the owner ``owner``, named users ``{uid: rwx bits}``, nothing for the
    group or others (the mask: the union of the named users' bits)."""
    mask = 0
    for bits in users.values():
        mask |= bits
    entries = [(_ACL_USER_OBJ, owner, _ACL_NOID)]
    entries += [(_ACL_USER, bits, uid) for uid, bits in sorted(users.items())]
    entries += [(_ACL_GROUP_OBJ, 0, _ACL_NOID), (_ACL_MASK, mask, _ACL_NOID)]
    entries.append((_ACL_OTHER, 0, _ACL_NOID))
    return struct.pack("<I", 2) + b"".join(struct.pack("<HHI", *e) for e in entries)


def set_acl(fd: int, users: dict[int, int], default: dict[int, int] | None = None) -> None:
    """Give ``users`` access to the open file or directory ``fd`` (and, with ``default``,
    to what is created in it); IsolationError when the filesystem has no ACLs."""
    try:
        os.setxattr(fd, "system.posix_acl_access", acl_bytes(users))
        if default is not None:
            os.setxattr(fd, "system.posix_acl_default", acl_bytes(default))
    except OSError as exc:
        raise IsolationError(
            f"cannot set an ACL in the job area ({exc.strerror}): under sudo the job "
            "areas need a filesystem with POSIX ACLs (jobs_dir)"
        ) from None


class JobArea:
    """The per-account directories of isolated jobs under ``root``.

    ``root`` itself is 0711 (enterable, not listable); ``root/<account>`` holds
    ``blobs/`` (inputs copied from the cache), ``results/`` (the ``result_dir`` of its
    jobs), ``logs/`` and ``tmp/``. ``acl=False`` (a root service): everything is the
    account's, 0700. ``acl=True`` (a service using sudo): everything is the service's,
    0700, and ACL entries let the account read ``blobs/`` and write the rest; what the
    account creates in ``results/`` and ``logs/`` carries an entry for the service.
    The service writes and reads there through directory descriptors, never following
    a symlink the account may have put in the way.
    """

    def __init__(self, root: str, acl: bool = False) -> None:
        self.root = os.path.abspath(root)
        self.acl = acl
        os.makedirs(self.root, mode=0o711, exist_ok=True)
        os.chmod(self.root, 0o711)
        self._lock = threading.Lock()
        self._ready: set[str] = set()
        self._staged: set[tuple[str, str]] = set()

    def dir(self, acct: RunAs) -> str:
        return os.path.join(self.root, acct.name)

    def prepare(self, acct: RunAs) -> str:
        """Create (once) the account's directories; returns the account's dir."""
        top = self.dir(acct)
        with self._lock:
            if acct.name in self._ready:
                return top
            me = os.geteuid()
            rw = {acct.uid: 7}
            for sub in ("", "blobs", "results", "logs", "tmp"):
                d = os.path.join(top, sub) if sub else top
                with contextlib.suppress(FileExistsError):
                    os.mkdir(d, 0o700)
                fd = os.open(d, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW)
                try:
                    owner = os.fstat(fd).st_uid
                    if not self.acl:
                        os.fchown(fd, acct.uid, acct.gid)
                        os.fchmod(fd, 0o700)
                        continue
                    if owner != me:
                        raise IsolationError(
                            f"job area {d} belongs to uid {owner}, not to the service; "
                            "remove it (it was made by a service running as root?)"
                        )
                    os.fchmod(fd, 0o700)
                    if sub == "blobs":
                        set_acl(fd, {acct.uid: 5})
                    elif sub in ("results", "logs"):
                        set_acl(fd, rw, default={me: 7})
                    else:
                        set_acl(fd, rw)
                finally:
                    os.close(fd)
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
            self._copy_in(acct, src, sha)
            self._staged.add((acct.name, sha))
        return {**ref, "path": dst}

    def _copy_in(self, acct: RunAs, src: str, sha: str) -> None:
        """Copy ``src`` to ``blobs/<sha>`` of the account's area, readable by the account
        only, through directory descriptors (no symlink the account planted is followed)."""
        tmp = f"{sha}.{os.getpid()}.{threading.get_ident()}.tmp"
        fds = [os.open(self.dir(acct), os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW)]
        try:
            fds.append(
                os.open("blobs", os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW, dir_fd=fds[0])
            )
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp, dir_fd=fds[1])
            fd = os.open(
                tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600, dir_fd=fds[1]
            )
            try:
                with open(src, "rb") as fin, os.fdopen(fd, "wb", closefd=False) as fout:
                    shutil.copyfileobj(fin, fout, 1 << 20)
                if self.acl:
                    set_acl(fd, {acct.uid: 4}, None)
                    os.fchmod(fd, 0o640)  # the ACL's mask: the account's read
                else:
                    os.fchown(fd, acct.uid, acct.gid)
                    os.fchmod(fd, 0o400)
            finally:
                os.close(fd)
            os.replace(tmp, sha, src_dir_fd=fds[1], dst_dir_fd=fds[1])
        finally:
            for fd in fds:
                os.close(fd)

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
