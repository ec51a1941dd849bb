"""The cache: content-addressed blobs (sandboxes, pickled functions, arguments and results).

Bytes live in a directory fanned out by the first two hex digits of their
sha256; the ``blobs`` table holds their metadata. A blob is named only by its
digest, which the cache checks, so no client-supplied path ever reaches the
filesystem. The server stores and relays blobs; it never unpickles them.
"""

from __future__ import annotations

import hashlib
import os
import re
import tempfile
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.engine import Connection, Engine
from sqlalchemy.exc import IntegrityError

from idds_jupyter.store.sql import in_list, now
from idds_jupyter.store.tables import blobs

SHA256 = re.compile(r"^[0-9a-f]{64}$")
DEFAULT_LIMIT = 512 * 2**20  # bytes per blob accepted over the API


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


def write_blob(root: str | os.PathLike[str], data: bytes, sha: str | None = None) -> tuple[str, bool]:
    """Store bytes atomically (write then rename); returns (sha256, created)."""
    actual = digest(data)
    if sha is not None and check_sha(sha) != actual:
        raise CacheError(f"content does not match its name: expected {sha}, got {actual}")
    path = blob_path(root, actual)
    if path.exists():
        return actual, False
    path.parent.mkdir(parents=True, exist_ok=True)
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


_KNOWN = select(blobs.c.sha256).where(blobs.c.sha256.in_(in_list()))


def record_blobs(conn: Connection, items: Iterable[tuple[str, int]], kind: str | None = None,
                 owner: str | None = None) -> int:
    """Rows for blobs not yet known, in the caller's transaction; returns how many were added."""
    rows = {sha: size for sha, size in items}
    if not rows:
        return 0
    have: set[str] = set()
    shas = list(rows)
    if len(shas) > 64:  # many: skip the known ones first, rather than conflict on each
        for i in range(0, len(shas), 5000):
            have |= {r[0] for r in conn.execute(_KNOWN, {"ids": shas[i:i + 5000]})}
    t = now()
    new = [{"sha256": s, "size": n, "kind": kind, "owner": owner, "created_at": t}
           for s, n in rows.items() if s not in have]
    if not new:
        return 0
    # ON CONFLICT DO NOTHING: known already, or two agents record the same value at once
    res = conn.execute(_INSERT_NEW.get(conn.dialect.name, blobs.insert()), new)
    return res.rowcount if res.rowcount is not None and res.rowcount >= 0 else len(new)


_INSERT_NEW = {"postgresql": pg_insert(blobs).on_conflict_do_nothing(),
               "sqlite": sqlite_insert(blobs).on_conflict_do_nothing()}


class Cache:
    """Blobs on disk plus their rows in the store."""

    def __init__(self, root: str | os.PathLike[str], engine: Engine, limit: int = DEFAULT_LIMIT) -> None:
        self.root = Path(root)
        self.root.mkdir(parents=True, exist_ok=True)
        self.engine = engine
        self.limit = limit

    def path(self, sha: str) -> Path:
        return blob_path(self.root, sha)

    def has(self, sha: str) -> bool:
        return self.path(sha).exists()

    def put(self, data: bytes, sha: str | None = None, kind: str | None = None,
            owner: str | None = None) -> tuple[str, bool]:
        """Store ``data`` (refusing more than ``limit`` bytes); returns (sha256, created)."""
        actual, created = self.write(data, sha)
        self.record([(actual, len(data))], kind=kind, owner=owner)
        return actual, created

    def write(self, data: bytes, sha: str | None = None) -> tuple[str, bool]:
        """Only the file (limit checked): the caller records the row in its own transaction."""
        if len(data) > self.limit:
            raise CacheError(f"blob of {len(data)} bytes exceeds the cache limit of {self.limit} bytes")
        return write_blob(self.root, data, sha)

    def get(self, sha: str) -> bytes:
        path = self.path(sha)
        if not path.exists():
            raise KeyError(sha)
        return path.read_bytes()

    def record(self, items: Iterable[tuple[str, int]], kind: str | None = None,
               owner: str | None = None) -> int:
        """Note blobs written directly into the directory (by workers); returns rows added."""
        try:
            with self.engine.begin() as conn:
                return record_blobs(conn, items, kind, owner)
        except IntegrityError:  # another writer recorded the same blobs first
            return 0

    def stats(self) -> dict[str, Any]:
        with self.engine.begin() as conn:
            count, size = conn.execute(select(func.count(), func.coalesce(func.sum(blobs.c.size), 0))).one()
        return {"count": int(count), "bytes": int(size), "limit": self.limit}
