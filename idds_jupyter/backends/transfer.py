"""How a batch job gets its inputs and returns its result: ``shared`` or ``http``.

* ``shared`` (the default, the shortcut where a shared filesystem exists): the
  job spec names the cache files of the work's payload, calls and sandbox by
  path, the worker writes the pickled value into the cache directory, and the
  result JSON comes back as ``result-<i>.json`` in the batch directory.
* ``http``: no filesystem is shared with the execute nodes. The job spec is
  stored as a cache blob; the job gets only the service's URL, its job id and a
  per-job token (:mod:`idds_jupyter.store.job_tokens`). The wrapper
  (``python -m idds_jupyter.worker --http``) fetches the spec and the blobs over
  HTTP (verifying their sha256), runs the job in a scratch directory and POSTs
  the result (JSON, the pickled value as bytes, the log) to
  ``/jobs/{id}/result``. The API stores the bytes in the cache (never
  unpickling them) and drops the result JSON into the *result inbox*
  (``<shared_dir>/inbox/<job>.<attempt>.json``, on the orchestrator's side),
  where the backend's poll loop picks it up exactly as it picks up a
  ``result-<i>.json``: from there on the Receiver, triggers, finisher and
  retries see no difference.

This module is plain Python (no store, no server): the Carrier hands a backend
an :class:`HttpTransfer` with the callables that touch the store and cache.
"""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

__all__ = [
    "TRANSFERS",
    "HttpTransfer",
    "check_transfer",
    "http_spec",
    "inbox_name",
    "read_inbox",
    "sweep_inbox",
    "write_inbox",
]

TRANSFERS = ("shared", "http")

#: inbox files older than this that no backend claimed are removed (seconds)
INBOX_MAX_AGE = 24 * 3600.0


def check_transfer(value: Any) -> str:
    """``"shared"`` or ``"http"``; a clear ValueError for anything else."""
    text = str(value or "shared").strip().lower()
    if text not in TRANSFERS:
        raise ValueError(f"transfer must be one of {', '.join(TRANSFERS)}, not {value!r}")
    return text


@dataclass
class HttpTransfer:
    """What a batch backend needs to run jobs with ``transfer: http``.

    :param server_url: returns the URL jobs reach the API at (read at each submission:
        a server may learn its own URL after the backends were created)
    :param mint: ``(job_id, attempt, spec_sha, ttl_s) -> token``
    :param put_spec: stores a job spec's JSON bytes as a cache blob, returns its sha256
    :param drop_spec: removes such a blob once its job is over
    :param inbox: the result inbox directory (the API writes, the backend reads)
    :param token_ttl: base lifetime of a job token (the job's walltime is added)
    """

    server_url: Callable[[], str | None]
    mint: Callable[[int, int, str, float], str]
    put_spec: Callable[[bytes], str]
    drop_spec: Callable[[str], None]
    inbox: str
    token_ttl: float = 86400.0


def http_spec(spec: dict[str, Any]) -> dict[str, Any]:
    """The spec a job fetches over HTTP: blobs named by digest only, no path of this host.

    Cache paths, ``result_dir``, ``log_dir`` and the submitter's ``cwd`` are
    dropped (the wrapper fills in its own scratch directory); a function job
    that must send its value back pickled says so with ``result_blobs``.
    """
    out = {k: v for k, v in spec.items() if k not in ("result_dir", "log_dir", "cwd")}
    payload = spec.get("payload")
    if isinstance(payload, dict):
        p: dict[str, Any] = {"sha256": payload["sha256"]}
        sandbox = payload.get("sandbox")
        if isinstance(sandbox, dict):
            p["sandbox"] = {"sha256": sandbox["sha256"]}
        out["payload"] = p
    call = spec.get("call")
    if isinstance(call, dict):
        out["call"] = {"sha256": call["sha256"], "index": call.get("index", 0)}
    if spec.get("result_dir"):
        out["result_blobs"] = True
    out["transfer"] = "http"
    return out


def inbox_name(job_id: int, attempt: int) -> str:
    return f"{int(job_id)}.{int(attempt)}.json"


def write_inbox(inbox: str | os.PathLike[str], result: dict[str, Any]) -> str:
    """Drop a result JSON for the backends (atomically; private to this host's user)."""
    d = os.fspath(inbox)
    os.makedirs(d, mode=0o700, exist_ok=True)
    path = os.path.join(d, inbox_name(result["job_id"], result["attempt"]))
    fd, tmp = tempfile.mkstemp(dir=d, prefix=".tmp-")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            json.dump(result, fh)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    return path


def read_inbox(inbox: str | os.PathLike[str], job_id: int, attempt: int) -> dict[str, Any] | None:
    """Take (read and remove) the result of one job attempt from the inbox, if it is there."""
    path = os.path.join(os.fspath(inbox), inbox_name(job_id, attempt))
    try:
        with open(path, encoding="utf-8") as fh:
            value = json.load(fh)
    except (OSError, ValueError):
        return None
    with contextlib.suppress(OSError):
        os.unlink(path)
    return value if isinstance(value, dict) else None


def sweep_inbox(inbox: str | os.PathLike[str], max_age: float = INBOX_MAX_AGE) -> int:
    """Remove inbox files nobody claimed for ``max_age`` seconds (late posts of dead attempts)."""
    n = 0
    cutoff = time.time() - max_age
    try:
        entries = list(os.scandir(os.fspath(inbox)))
    except OSError:
        return 0
    for e in entries:
        with contextlib.suppress(OSError):
            if e.stat().st_mtime < cutoff:
                os.unlink(e.path)
                n += 1
    return n
