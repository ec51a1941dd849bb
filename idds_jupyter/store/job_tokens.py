"""Per-job tokens: what a batch job shows to fetch its blobs and post its result over HTTP.

With ``transfer: http`` a job has no shared filesystem with the orchestrator:
its wrapper fetches the job spec and the blobs it needs (the work's pickled
function, its calls, its sandbox) from the API and POSTs its result back. It
authenticates with a token the backend minted when it submitted the job.

Design: **stateless HMAC**, not rows. A token is::

    idj1.<job_id>.<attempt>.<expires>.<spec_sha256>.<mac>

where ``mac`` is HMAC-SHA256 (base64url) over the other fields under a server
secret. Minting is a hash (a 10,000-job batch costs no database write and no
table of 10,000 rows to expire or clean up); checking is a hash plus the one
indexed read of the job row the route needs anyway. What a row would buy —
revocation — comes from the job row itself: a token is honoured only while
its job is in flight (``submitted``/``running``) *at the token's attempt*, so
a retried, cancelled or finished job's token dies at once, whatever its
expiry. The expiry bounds a leaked token of a job stuck in a queue.

Scope: a job token opens only the ``/jobs/{id}/…`` routes of its own job
(every other route refuses it like any unknown token): the spec it was minted
with (its sha256 is signed into the token, so the spec cannot be swapped), the
blobs of its work's payload (function, calls, sandbox) and the POST of its
result.

The secret: ``<home>/job-token.key`` (32 random bytes, hex, mode 0600),
created on first use by whichever process needs it first (API or Carrier; they
share the home, as they share the cache directory). Deleting it invalidates
every outstanding job token (those jobs fail to fetch or post and are retried).
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import hmac
import os
import secrets
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sqlalchemy import select
from sqlalchemy.engine import Engine

from idds_jupyter.store.cache import SHA256
from idds_jupyter.store.tables import jobs, workflows, works

__all__ = [
    "JobClaim",
    "JobScope",
    "JobTokenError",
    "JobTokens",
    "PREFIX",
    "SECRET_FILE",
    "is_job_token",
    "job_scope",
    "load_secret",
]

PREFIX = "idj1"
SECRET_FILE = "job-token.key"
IN_FLIGHT = ("submitted", "running")


class JobTokenError(ValueError):
    """A job token that is malformed, forged or expired (the message says which)."""


@dataclass(frozen=True)
class JobClaim:
    """What a valid job token says: the job, its attempt, until when, and its spec blob."""

    job_id: int
    attempt: int
    expires: int
    spec_sha: str


def is_job_token(token: str | None) -> bool:
    return bool(token) and str(token).startswith(PREFIX + ".")


def load_secret(home: str | os.PathLike[str]) -> bytes:
    """The server secret of job tokens in ``<home>/job-token.key``, created (0600) if absent."""
    path = Path(home) / SECRET_FILE
    for _ in range(50):
        try:
            text = path.read_text().strip()
        except FileNotFoundError:
            text = None
        if text:
            return bytes.fromhex(text)
        if text is None:
            path.parent.mkdir(parents=True, exist_ok=True)
            try:
                fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            except FileExistsError:
                pass  # another process creates it right now: read it again
            else:
                with os.fdopen(fd, "w") as fh:
                    fh.write(secrets.token_hex(32) + "\n")
                continue
        time.sleep(0.02)  # created but not yet written by the other process
    raise RuntimeError(f"job token secret {path} stays empty")


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


class JobTokens:
    """Mints and checks job tokens under one secret (thread-safe, no I/O after construction)."""

    def __init__(self, secret: bytes, ttl: float = 86400.0) -> None:
        if len(secret) < 16:
            raise ValueError("a job token secret needs at least 16 bytes")
        self._secret = secret
        self.ttl = float(ttl)

    @classmethod
    def for_home(cls, home: str | os.PathLike[str], ttl: float = 86400.0) -> JobTokens:
        return cls(load_secret(home), ttl)

    def _mac(self, body: str) -> str:
        return _b64(hmac.new(self._secret, body.encode("ascii"), hashlib.sha256).digest())

    def mint(
        self,
        job_id: int,
        attempt: int,
        spec_sha: str,
        ttl: float | None = None,
        now: float | None = None,
    ) -> str:
        """A token for attempt ``attempt`` of job ``job_id`` whose spec is blob ``spec_sha``."""
        if not SHA256.match(spec_sha or ""):
            raise ValueError(f"not a sha256 hex digest: {spec_sha!r}")
        expires = int(
            (now if now is not None else time.time()) + (ttl if ttl is not None else self.ttl)
        )
        body = f"{PREFIX}.{int(job_id)}.{int(attempt)}.{expires}.{spec_sha}"
        return f"{body}.{self._mac(body)}"

    def verify(self, token: str, now: float | None = None) -> JobClaim:
        """The claim of a genuine, unexpired token; :class:`JobTokenError` otherwise."""
        parts = (token or "").split(".")
        if parts[0] != PREFIX:
            raise JobTokenError("not a job token")
        if len(parts) != 6:
            raise JobTokenError("malformed job token")
        _, jid, att, exp, sha, mac = parts
        if not (jid.isdigit() and att.isdigit() and exp.isdigit() and SHA256.match(sha)):
            raise JobTokenError("malformed job token")
        body = ".".join(parts[:5])
        if not hmac.compare_digest(mac, self._mac(body)):
            raise JobTokenError(
                "job token signature does not match (forged, or the server secret changed)"
            )
        if int(exp) < (now if now is not None else time.time()):
            raise JobTokenError("job token expired")
        return JobClaim(int(jid), int(att), int(exp), sha)


@dataclass(frozen=True)
class JobScope:
    """The job row a token is checked against, and the blobs its work may fetch."""

    job_id: int
    attempt: int
    status: str
    workflow_id: int
    work_id: int
    owner: str
    backend: str | None
    blobs: frozenset[str]


# The payload of a work never changes once it is stored: remembered per (database, work).
_payloads: dict[tuple[str, int], frozenset[str]] = {}
_payloads_lock = threading.Lock()


def _payload_blobs(spec: Any) -> frozenset[str]:
    payload = (spec or {}).get("payload") if isinstance(spec, dict) else None
    if not isinstance(payload, dict):
        return frozenset()
    return frozenset(
        str(payload[k])
        for k in ("function", "calls", "sandbox")
        if isinstance(payload.get(k), str) and SHA256.match(payload[k])
    )


def job_scope(engine: Engine, job_id: int) -> JobScope | None:
    """The current state of job ``job_id`` and the blobs of its work (None if no such job)."""
    with engine.connect() as conn:
        row = conn.execute(
            select(
                jobs.c.id,
                jobs.c.attempt,
                jobs.c.status,
                jobs.c.workflow_id,
                jobs.c.work_id,
                jobs.c.backend,
                workflows.c.owner,
            )
            .select_from(jobs.join(workflows, workflows.c.id == jobs.c.workflow_id))
            .where(jobs.c.id == int(job_id))
        ).first()
        if row is None:
            return None
        key = (str(engine.url), int(row.work_id))
        with _payloads_lock:
            blobs = _payloads.get(key)
        if blobs is None:
            spec = conn.execute(select(works.c.spec).where(works.c.id == row.work_id)).scalar()
            blobs = _payload_blobs(spec)
            with _payloads_lock:
                if len(_payloads) > 10_000:
                    with contextlib.suppress(StopIteration, KeyError):
                        for _ in range(1000):
                            _payloads.pop(next(iter(_payloads)))
                _payloads[key] = blobs
    return JobScope(
        job_id=int(row.id),
        attempt=int(row.attempt),
        status=str(row.status),
        workflow_id=int(row.workflow_id),
        work_id=int(row.work_id),
        owner=str(row.owner),
        backend=row.backend,
        blobs=blobs,
    )
