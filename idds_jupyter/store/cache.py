"""The cache: content-addressed blobs (sandboxes, pickled functions, arguments and results).

Bytes live in a directory fanned out by the first two hex digits of their
sha256; the ``blobs`` table holds their metadata. A blob is named only by its
digest, which the cache checks, so no client-supplied path ever reaches the
filesystem. The server stores and relays blobs; it never unpickles them.

Owners (every user is a tenant): ``blob_grants`` holds one row per (digest,
owner) — who uploaded the blob, or whose job produced it. Only a grantee (or an
admin) reads a blob; a job reads what its run's owner may read. The same bytes
uploaded by two users are one file and two grants. Statistics are per owner.

Serving is paranoid about the directory (a job of an unisolated deployment can
write into it): a blob is opened with ``O_NOFOLLOW``, must be a regular file
whose real path is inside the cache directory, and its digest is **recomputed
when it is served** (remembered per inode, size and change time, so a blob read
again unchanged is not hashed again). A file that does not match its name is
removed and reported missing; writing a blob replaces a planted symlink or a
wrong-sized file instead of trusting it.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import logging
import os
import re
import stat
import tempfile
import threading
from collections import OrderedDict
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.engine import Connection, Engine
from sqlalchemy.exc import IntegrityError

from idds_jupyter.store.sql import among, now
from idds_jupyter.store.tables import blob_grants, blobs

log = logging.getLogger("idds_jupyter.cache")

SHA256 = re.compile(r"^[0-9a-f]{64}$")
DEFAULT_LIMIT = 512 * 2**20  # bytes per blob accepted over the API
GRANTS_REMEMBERED = 65_536  # (owner, blob) pairs known readable, per Cache


class CacheError(ValueError):
    pass


def digest(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def check_sha(sha: str) -> str:
    if not isinstance(sha, str) or not SHA256.match(sha):
        raise CacheError(f"not a sha256 hex digest: {sha!r}")
    return sha


def blob_path(root: str | os.PathLike[str], sha: str) -> Path:
    """Where a blob lives under ``root``; the name is a checked digest, never user text."""
    return Path(blob_file(root, sha))


def blob_file(root: str | os.PathLike[str], sha: str) -> str:
    """:func:`blob_path` as a string (a job spec's, written for every job sent)."""
    check_sha(sha)
    return os.path.join(root, sha[:2], sha)


def write_blob(
    root: str | os.PathLike[str], data: bytes, sha: str | None = None
) -> tuple[str, bool]:
    """Store bytes atomically (write then rename); returns (sha256, created)."""
    actual = digest(data)
    if sha is not None and check_sha(sha) != actual:
        raise CacheError(f"content does not match its name: expected {sha}, got {actual}")
    path = blob_path(root, actual)
    _real_dir(root, path.parent)
    try:
        st = os.lstat(path)
        if stat.S_ISREG(st.st_mode) and st.st_size == len(data):
            return actual, False
        # a planted symlink, a directory or a file of the wrong size: replaced below
    except FileNotFoundError:
        pass
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".tmp-")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        # Readable by jobs that run as another user (batch systems): content is
        # addressed by digest and never secret from the jobs that need it.
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return actual, True


def _real_dir(root: str | os.PathLike[str], d: Path) -> None:
    """``d`` (a fan-out directory of ``root``) as a real directory: a symlink or a file
    planted in its place is removed, never followed."""
    Path(root).mkdir(parents=True, exist_ok=True)
    for _ in range(3):
        try:
            st = os.lstat(d)
        except FileNotFoundError:
            with contextlib.suppress(FileExistsError):
                os.mkdir(d)
            continue
        if stat.S_ISDIR(st.st_mode):
            return
        os.unlink(d)  # a symlink (or file) where a fan-out directory belongs
    raise CacheError(f"cache directory {d} cannot be made a directory")


class BlobFile:
    """An open, checked blob: read it with :meth:`read` (``pread``), then :meth:`close`."""

    def __init__(self, fd: int, size: int) -> None:
        self.fd = fd
        self.size = size

    def read(self, offset: int, length: int) -> bytes:
        return os.pread(self.fd, length, offset)

    def close(self) -> None:
        with contextlib.suppress(OSError):
            os.close(self.fd)

    def __enter__(self) -> BlobFile:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


# (dev, inode, size, mtime_ns, ctime_ns) of files whose digest was checked: the
# kernel sets ctime on every change, so an entry never vouches for changed bytes
_verified: dict[tuple[str, tuple[int, int, int, int, int]], bool] = {}
_verified_lock = threading.Lock()


def open_blob(root: str | os.PathLike[str], sha: str, verify: bool = True) -> BlobFile | None:
    """The blob ``sha`` under ``root`` opened safely, or None when there is no intact one.

    Never through a symlink (``O_NOFOLLOW``; the opened file's real path must be inside
    ``root``), only a regular file, and (``verify``) only when its bytes hash to ``sha``:
    a file that does not is removed (it is corrupt or planted) and None is returned.
    """
    path = blob_file(root, sha)
    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_CLOEXEC", 0))
    except OSError as exc:
        if exc.errno not in (errno.ENOENT, errno.ELOOP, errno.ENOTDIR, errno.EISDIR, errno.EACCES):
            log.warning("cache: cannot open blob %s: %s", sha, exc)
        return None
    ok = False
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            return None
        real = _fd_path(fd) or os.path.realpath(path)
        base = os.path.realpath(root)
        if os.path.commonpath([real, base]) != base:
            log.warning("cache: blob %s resolves outside the cache (%s): refused", sha, real)
            return None
        if verify:
            key = (str(root), (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns))
            with _verified_lock:
                known = key in _verified
            if not known:
                h = hashlib.sha256()
                offset = 0
                while offset < st.st_size:
                    chunk = os.pread(fd, 2**20, offset)
                    if not chunk:
                        break
                    h.update(chunk)
                    offset += len(chunk)
                if h.hexdigest() != sha:
                    log.warning("cache: blob %s does not match its digest: removed", sha)
                    with contextlib.suppress(OSError):
                        os.unlink(path)
                    return None
                with _verified_lock:
                    if len(_verified) > 100_000:
                        _verified.clear()
                    _verified[key] = True
        ok = True
        return BlobFile(fd, st.st_size)
    finally:
        if not ok:
            os.close(fd)


def _fd_path(fd: int) -> str | None:
    """The real path of an open file (Linux: /proc/self/fd), None where unknown."""
    try:
        return os.readlink(f"/proc/self/fd/{fd}")
    except OSError:
        return None


def read_blob(root: str | os.PathLike[str], sha: str) -> bytes | None:
    """The bytes of an intact blob (see :func:`open_blob`), None when there is none."""
    f = open_blob(root, sha)
    if f is None:
        return None
    with f:
        return f.read(0, f.size) if f.size else b""


_GRANT = {
    "postgresql": pg_insert(blob_grants).on_conflict_do_nothing(),
    "sqlite": sqlite_insert(blob_grants).on_conflict_do_nothing(),
}


def grant_blobs(conn: Connection, pairs: Iterable[tuple[str, str]]) -> None:
    """Let each owner of ``(sha256, owner)`` read that blob (idempotent), in the caller's transaction."""
    rows = [{"sha256": s, "owner": o, "created_at": now()} for s, o in dict.fromkeys(pairs)]
    if rows:
        conn.execute(_GRANT.get(conn.dialect.name, blob_grants.insert()), rows)


def grant_job_blobs(conn: Connection, pairs: Iterable[tuple[str, int]]) -> None:
    """Blobs produced by jobs (``(sha256, job_id)``: results, pickled exceptions) become
    readable by each job's run owner: a job acts as its run's owner."""
    by_job: dict[int, set[str]] = {}
    for sha, jid in pairs:
        by_job.setdefault(int(jid), set()).add(sha)
    if not by_job:
        return
    from idds_jupyter.store.tables import jobs, workflows

    ids = list(by_job)
    grants: list[tuple[str, str]] = []
    for i in range(0, len(ids), 5000):
        for jid, owner in conn.execute(
            select(jobs.c.id, workflows.c.owner)
            .select_from(jobs.join(workflows, workflows.c.id == jobs.c.workflow_id))
            .where(jobs.c.id.in_(ids[i : i + 5000]))
        ):
            grants += [(sha, owner) for sha in by_job[int(jid)]]
    grant_blobs(conn, grants)


def readable_blobs(conn: Connection, shas: Iterable[str], owner: str | None) -> set[str]:
    """The digests of ``shas`` that ``owner`` may read (all of them for None: an admin)."""
    want = list(dict.fromkeys(shas))
    if owner is None:
        return set(want)
    found: set[str] = set()
    for i in range(0, len(want), 5000):
        found |= {
            r[0]
            for r in conn.execute(
                select(blob_grants.c.sha256).where(
                    blob_grants.c.owner == owner, blob_grants.c.sha256.in_(want[i : i + 5000])
                )
            )
        }
    return found


_KNOWN = select(blobs.c.sha256).where(among(blobs.c.sha256))


def record_blobs(
    conn: Connection,
    items: Iterable[tuple[str, int]],
    kind: str | None = None,
    owner: str | None = None,
) -> int:
    """Rows for blobs not yet known, in the caller's transaction; returns how many were added.

    With ``owner``, that owner may read each of them (a grant, see :func:`grant_blobs`)."""
    rows = {sha: size for sha, size in items}
    if not rows:
        return 0
    if owner is not None:
        grant_blobs(conn, ((s, owner) for s in rows))
    have: set[str] = set()
    shas = list(rows)
    if len(shas) > 64:  # many: skip the known ones first, rather than conflict on each
        for i in range(0, len(shas), 5000):
            have |= {r[0] for r in conn.execute(_KNOWN, {"ids": shas[i : i + 5000]})}
    t = now()
    new = [
        {"sha256": s, "size": n, "kind": kind, "owner": owner, "created_at": t}
        for s, n in rows.items()
        if s not in have
    ]
    if not new:
        return 0
    # ON CONFLICT DO NOTHING: known already, or two agents record the same value at once
    res = conn.execute(_INSERT_NEW.get(conn.dialect.name, blobs.insert()), new)
    return res.rowcount if res.rowcount is not None and res.rowcount >= 0 else len(new)


_INSERT_NEW = {
    "postgresql": pg_insert(blobs).on_conflict_do_nothing(),
    "sqlite": sqlite_insert(blobs).on_conflict_do_nothing(),
}


class Cache:
    """Blobs on disk plus their rows in the store."""

    def __init__(
        self, root: str | os.PathLike[str], engine: Engine, limit: int = DEFAULT_LIMIT
    ) -> None:
        self.root = Path(root)
        self.root.mkdir(parents=True, exist_ok=True)
        self.engine = engine
        self.limit = limit
        # (owner, sha256) known readable: a grant is never taken back, so a yes holds
        self._granted: OrderedDict[tuple[str, str], None] = OrderedDict()
        self._granted_lock = threading.Lock()

    def path(self, sha: str) -> Path:
        return blob_path(self.root, sha)

    def has(self, sha: str) -> bool:
        """An intact blob ``sha`` is here (a regular file of the right digest, no symlink)."""
        f = open_blob(self.root, sha)
        if f is None:
            return False
        f.close()
        return True

    def open(self, sha: str) -> BlobFile | None:
        """The blob opened for serving, checked (:func:`open_blob`); None when there is none."""
        return open_blob(self.root, sha)

    def readable(self, sha: str, owner: str | None) -> bool:
        """``owner`` may read blob ``sha`` (None: an admin, who reads every blob)."""
        return sha in self.readable_many([sha], owner)

    def readable_many(self, shas: Iterable[str], owner: str | None) -> set[str]:
        """The blobs of ``shas`` that ``owner`` may read; the yeses are remembered (a
        function's blob, checked at every call, costs no query after the first)."""
        want = set(shas)
        if owner is None:
            return want
        with self._granted_lock:
            known = {s for s in want if (owner, s) in self._granted}
        if known == want:
            return known
        with self.engine.connect() as conn:
            found = readable_blobs(conn, want - known, owner)
        with self._granted_lock:
            for sha in found:
                self._granted[(owner, sha)] = None
            while len(self._granted) > GRANTS_REMEMBERED:
                self._granted.popitem(last=False)
        return known | found

    def put(
        self, data: bytes, sha: str | None = None, kind: str | None = None, owner: str | None = None
    ) -> tuple[str, bool]:
        """Store ``data`` (refusing more than ``limit`` bytes); returns (sha256, created)."""
        actual, created = self.write(data, sha)
        self.record([(actual, len(data))], kind=kind, owner=owner)
        return actual, created

    def write(self, data: bytes, sha: str | None = None) -> tuple[str, bool]:
        """Only the file (limit checked): the caller records the row in its own transaction."""
        if len(data) > self.limit:
            raise CacheError(
                f"blob of {len(data)} bytes exceeds the cache limit of {self.limit} bytes"
            )
        return write_blob(self.root, data, sha)

    def get(self, sha: str) -> bytes:
        data = read_blob(self.root, sha)
        if data is None:
            raise KeyError(sha)
        return data

    def record(
        self, items: Iterable[tuple[str, int]], kind: str | None = None, owner: str | None = None
    ) -> int:
        """Note blobs written directly into the directory (by workers); returns rows added."""
        try:
            with self.engine.begin() as conn:
                return record_blobs(conn, items, kind, owner)
        except IntegrityError:  # another writer recorded the same blobs first
            return 0

    def stats(self, owner: str | None = None) -> dict[str, Any]:
        """Blobs and bytes ``owner`` may read (every blob for None: an admin)."""
        stmt = select(func.count(), func.coalesce(func.sum(blobs.c.size), 0))
        if owner is not None:
            stmt = stmt.select_from(
                blobs.join(blob_grants, blob_grants.c.sha256 == blobs.c.sha256)
            ).where(blob_grants.c.owner == owner)
        with self.engine.begin() as conn:
            count, size = conn.execute(stmt).one()
        return {
            "count": int(count),
            "bytes": int(size),
            "limit": self.limit,
            "scope": "all" if owner is None else "owner",
        }
