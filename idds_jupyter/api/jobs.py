"""The routes a batch job calls with its job token (``transfer: http``): spec, blobs, result.

``GET /jobs/{job_id}/spec``, ``GET /jobs/{job_id}/blobs/{sha256}`` and
``POST /jobs/{job_id}/result`` accept only a job token
(:mod:`idds_jupyter.store.job_tokens`) of that very job, at its current
attempt, while it is in flight; every other route refuses a job token like
any unknown token. A user token is refused here.

The result is a ``multipart/form-data`` body: a ``result`` part (the worker's
result JSON), optional ``blob`` / ``error_blob`` parts (the pickled value or
exception, as bytes: hashed and stored in the cache by sha256, never
unpickled), an optional ``log`` part (the job's output) and an optional
``notebook`` part (the executed notebook of a whole-notebook job). The checked
result is dropped into the result inbox, where the backend that runs the job
picks it up like a result file of the shared filesystem: the Receiver,
triggers, finisher and retries treat it exactly alike.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import math
import os
from pathlib import Path
from typing import Any

import tornado.httputil
import tornado.web

from idds_jupyter.api.base import MAX_JSON_BODY, ApiError, ApiHandler, file_size
from idds_jupyter.auth import request_token
from idds_jupyter.backends.transfer import write_inbox
from idds_jupyter.store.cache import CacheError, check_sha, read_blob, write_blob
from idds_jupyter.store.job_tokens import (
    IN_FLIGHT,
    JobClaim,
    JobScope,
    JobTokenError,
    is_job_token,
    job_scope,
)
from idds_jupyter.worker.remote import NOTEBOOK_LIMIT

__all__ = ["JobBlobHandler", "JobResultHandler", "JobSpecHandler", "check_result"]

#: the job's output kept with a posted result (its tail beyond this)
MAX_LOG = 16 * 2**20
#: base64 text of a small pickled value travelling inside the result JSON
MAX_INLINE_TEXT = 1 * 2**20
MAX_TEXT = 1 * 2**20  # error, exc_type, traceback

_STR_FIELDS = ("error", "exc_type", "traceback")
_NUM_FIELDS = ("wall_s", "started_at", "finished_at")
_INT_FIELDS = ("exit_code", "max_rss_kb")


class JobApiHandler(ApiHandler):
    """Authenticates a job token for the job of the path (first path argument)."""

    claim: JobClaim
    scope: JobScope

    async def prepare(self) -> None:
        await self.host_checks()
        self.check_ids()
        token = request_token(self)
        if not token:
            raise ApiError(
                401,
                "authentication required: send the job's token as 'Authorization: Bearer TOKEN'",
            )
        if not is_job_token(token):
            raise ApiError(
                401, "this route takes a job token (minted for one job attempt), not a user token"
            )
        tokens = await self.run(self.ctx.job_tokens)
        try:
            claim = tokens.verify(token)
        except JobTokenError as exc:
            raise ApiError(401, f"invalid job token: {exc}") from None
        jid = int(self.path_args[0])
        if claim.job_id != jid:
            raise ApiError(403, f"this job token is for job {claim.job_id}, not job {jid}")
        scope = await self.run(job_scope, self.ctx.orch.engine, jid)
        if scope is None:
            raise ApiError(404, f"no job with id {jid}")
        if scope.attempt != claim.attempt:
            raise ApiError(
                403,
                f"this job token is for attempt {claim.attempt} of job {jid}, "
                f"which is now at attempt {scope.attempt}",
            )
        if scope.status not in IN_FLIGHT:
            raise ApiError(
                403,
                f"job {jid} is {scope.status}: the token of its attempt "
                f"{claim.attempt} no longer holds",
            )
        self.claim, self.scope = claim, scope
        self.check_body_size()


# ----------------------------------------------------------------- spec
class JobSpecHandler(JobApiHandler):
    async def get(self, job_id: str) -> None:
        spec = await self.run(_read_json, self.ctx.cache.root, self.claim.spec_sha)
        if spec is None:
            raise ApiError(
                404,
                f"the spec of job {job_id} attempt {self.claim.attempt} is gone "
                "(its backend dropped it: the attempt is over)",
            )
        if (
            not isinstance(spec, dict)
            or spec.get("job_id") != self.claim.job_id
            or spec.get("attempt") != self.claim.attempt
        ):
            raise ApiError(500, f"the spec blob of job {job_id} is for another job or attempt")
        self.send(spec)


def _read_json(root: Path, sha: str) -> Any:
    """A JSON blob (JSON only: the server never unpickles); None when there is no intact one
    (read as every blob is served: no symlink, a regular file, its digest checked)."""
    data = read_blob(root, sha)
    if data is None:
        return None
    try:
        return json.loads(data)
    except ValueError:
        raise ApiError(500, f"blob {sha} is not JSON") from None


# ----------------------------------------------------------------- blobs
class JobBlobHandler(JobApiHandler):
    async def get(self, job_id: str, sha: str) -> None:
        try:
            check_sha(sha)
        except CacheError:
            raise ApiError(400, f"not a sha256 hex digest: {sha[:80]!r}") from None
        if sha not in self.scope.blobs and sha != self.claim.spec_sha:
            raise ApiError(
                403,
                f"blob {sha} is not an input of job {job_id}: a job token opens "
                "only its work's function, calls and sandbox",
            )
        # a job acts as its run's owner: it reads only what that owner may read
        if sha != self.claim.spec_sha and not await self.run(
            self.ctx.cache.readable, sha, self.scope.owner
        ):
            raise ApiError(404, f"no blob {sha}")
        from idds_jupyter.api.handlers import send_blob

        await send_blob(self, self.ctx.cache, sha, f"no blob {sha}")


# ----------------------------------------------------------------- result
def _opt(d: dict[str, Any], key: str, kinds: tuple[type, ...], what: str) -> Any:
    v = d.get(key)
    if v is None:
        return None
    if isinstance(v, bool) or not isinstance(v, kinds):
        raise ApiError(400, f"result field {key!r} must be {what} or null, not {type(v).__name__}")
    return v


def check_result(data: Any, claim: JobClaim) -> dict[str, Any]:
    """The posted result JSON, checked field by field: only what the Receiver reads is kept."""
    if not isinstance(data, dict):
        raise ApiError(400, f"part 'result' must be a JSON object, not {type(data).__name__}")
    for key, want in (("job_id", claim.job_id), ("attempt", claim.attempt)):
        if key in data and data[key] != want:
            raise ApiError(
                400, f"result field {key!r} is {data[key]!r}, but this token is for {key} {want}"
            )
    if not isinstance(data.get("ok"), bool):
        raise ApiError(400, "result field 'ok' must be true or false")
    out: dict[str, Any] = {
        "job_id": claim.job_id,
        "attempt": claim.attempt,
        "ok": data["ok"],
        "result": data.get("result"),
    }
    summary = data.get("summary")
    if summary is not None and not (
        isinstance(summary, dict) and all(isinstance(v, str) for v in summary.values())
    ):
        raise ApiError(400, "result field 'summary' must be an object of strings or null")
    out["summary"] = summary
    for key in _STR_FIELDS:
        v = _opt(data, key, (str,), "a string")
        out[key] = v[:MAX_TEXT] if v is not None else None
    for key in _NUM_FIELDS:
        v = _opt(data, key, (int, float), "a number")
        if v is not None and not math.isfinite(v):
            raise ApiError(400, f"result field {key!r} must be a finite number")
        out[key] = v
    for key in _INT_FIELDS:
        out[key] = _opt(data, key, (int,), "an integer")
    for key in ("blob", "error_blob"):
        v = _opt(data, key, (str,), "a sha256 hex digest")
        if v is not None:
            try:
                check_sha(v)
            except CacheError:
                raise ApiError(400, f"result field {key!r} must be a sha256 hex digest") from None
        out[key] = v
    for key in ("inline", "error_inline"):
        v = _opt(data, key, (str,), "base64 text")
        if v is not None:
            if len(v) > MAX_INLINE_TEXT:
                raise ApiError(
                    413,
                    f"result field {key!r} of {len(v)} characters is over "
                    f"{MAX_INLINE_TEXT}: send the value as a 'blob' part",
                )
            try:
                base64.b64decode(v, validate=True)
            except (binascii.Error, ValueError):
                raise ApiError(400, f"result field {key!r} must be base64 text") from None
        out[key] = v
    return out


def _parse_multipart(content_type: str, body: bytes) -> tuple[dict[str, bytes], list[str]]:
    """Parts of a ``multipart/form-data`` body by name (files and fields alike)."""
    if not content_type.startswith("multipart/form-data"):
        raise ApiError(
            415,
            "the result must be sent as multipart/form-data (parts 'result', "
            f"and optionally 'blob', 'error_blob', 'log'), not {content_type!r}",
        )
    boundary = b""
    for field in content_type.split(";"):
        k, _, v = field.strip().partition("=")
        if k == "boundary" and v:
            boundary = v.strip('"').encode("latin1")
    if not boundary:
        raise ApiError(400, "multipart/form-data without a boundary")
    args: dict[str, list[bytes]] = {}
    files: dict[str, list[tornado.httputil.HTTPFile]] = {}
    tornado.httputil.parse_multipart_form_data(boundary, body, args, files)
    parts: dict[str, bytes] = {}
    dup: list[str] = []
    for name, values in args.items():
        parts[name] = values[-1]
        if len(values) > 1:
            dup.append(name)
    for name, fs in files.items():
        if name in parts or len(fs) > 1:
            dup.append(name)
        parts[name] = fs[-1].body
    return parts, dup


@tornado.web.stream_request_body
class JobResultHandler(JobApiHandler):
    """``POST /jobs/{job_id}/result``: the result of the token's job attempt."""

    _chunks: list[bytes]
    _size: int
    _too_big: bool

    def _limit(self) -> int:
        return int(self.ctx.cache.limit) + MAX_JSON_BODY + MAX_LOG + NOTEBOOK_LIMIT

    def body_limit(self) -> int:
        return self._limit()

    def body_limit_name(self) -> str:
        return "the cache's limit + 144 MiB"

    async def prepare(self) -> None:
        self._chunks, self._size, self._too_big = [], 0, False
        await super().prepare()
        limit = self._limit()
        length = self.request.headers.get("Content-Length")
        if length is not None and length.isdigit() and int(length) > limit:
            raise ApiError(
                413, f"result body of {int(length)} bytes exceeds {limit} bytes", limit=limit
            )
        conn = self.request.connection
        if conn is not None and hasattr(conn, "set_max_body_size"):
            conn.set_max_body_size(limit)

    def data_received(self, chunk: bytes) -> None:
        if self._too_big:
            return
        self._size += len(chunk)
        if self._size > self._limit():
            self._too_big, self._chunks = True, []
            return
        self._chunks.append(chunk)

    async def post(self, job_id: str) -> None:
        if self._too_big:
            raise ApiError(413, f"result body exceeds {self._limit()} bytes", limit=self._limit())
        body = b"".join(self._chunks)
        self._chunks = []
        ctype = self.request.headers.get("Content-Type", "")
        # parsing, hashing and writing: all in the executor, never on the IOLoop
        await self.run(self._accept, ctype, body)
        self.send(
            {"job_id": self.claim.job_id, "attempt": self.claim.attempt, "accepted": True}, 201
        )

    def _accept(self, ctype: str, body: bytes) -> None:
        parts, dup = _parse_multipart(ctype, body)
        del body
        if dup:
            raise ApiError(400, f"multipart part(s) sent more than once: {', '.join(sorted(dup))}")
        unknown = set(parts) - {"result", "blob", "error_blob", "log", "notebook"}
        if unknown:
            raise ApiError(
                400,
                f"unknown multipart part(s) {', '.join(sorted(unknown))}: "
                "expected 'result', 'blob', 'error_blob', 'log', 'notebook'",
            )
        nb = parts.get("notebook")
        if nb is not None and len(nb) > NOTEBOOK_LIMIT:
            raise ApiError(
                413,
                f"part 'notebook' of {len(nb)} bytes exceeds {NOTEBOOK_LIMIT} bytes",
                limit=NOTEBOOK_LIMIT,
            )
        if "result" not in parts:
            raise ApiError(400, "part 'result' (the result JSON) is missing")
        raw = parts.pop("result")
        if len(raw) > MAX_JSON_BODY:
            raise ApiError(413, f"part 'result' of {len(raw)} bytes exceeds {MAX_JSON_BODY} bytes")
        try:
            data = json.loads(raw.decode("utf-8"))
        except (UnicodeDecodeError, ValueError) as exc:
            raise ApiError(
                400, f"part 'result' is not valid JSON: {str(exc).splitlines()[0]}"
            ) from None
        self._store(check_result(data, self.claim), parts)

    def _store(self, result: dict[str, Any], parts: dict[str, bytes]) -> None:
        """Blocking (executor): blobs into the cache, the log into the log dir, then the inbox."""
        cache = self.ctx.cache
        for key in ("blob", "error_blob"):
            data = parts.get(key)
            named = result.get(key)
            if data is None:
                if named is None:
                    continue
                # a blob named, not sent: the run's owner must hold it already (a job may not
                # claim another user's blob as its result and so be granted it)
                size = (
                    file_size(cache.path(named))
                    if cache.has(named) and cache.readable(named, self.scope.owner)
                    else None
                )
                if size is None:
                    raise ApiError(
                        400,
                        f"result field {key!r} names blob {named}, which was "
                        f"neither sent (part {key!r}) nor is in the cache",
                    )
                result[f"{key}_size"] = size
                continue
            if len(data) > cache.limit:
                raise ApiError(
                    413,
                    f"part {key!r} of {len(data)} bytes exceeds the cache limit "
                    f"of {cache.limit} bytes",
                    limit=cache.limit,
                )
            actual = hashlib.sha256(data).hexdigest()
            if named is not None and named != actual:
                raise ApiError(
                    400, f"part {key!r} has sha256 {actual}, but the result names {named}"
                )
            write_blob(cache.root, data, actual)  # opaque bytes: stored, never unpickled
            result[key] = actual
            result[f"{key}_size"] = len(data)
        log = parts.get("log")
        nb = parts.get("notebook")
        if log or nb:
            # the executed notebook (opaque bytes, never parsed here) goes beside the log,
            # where GET /logs/{job_id}/notebook finds it (api/notebooks.notebook_path)
            d = Path(self.ctx.config.log_dir) / str(self.scope.workflow_id)
            d.mkdir(parents=True, exist_ok=True)
            stem = f"job-{self.claim.job_id}.{self.claim.attempt}"
            for suffix, data in ((".ipynb", nb), (".log", (log or b"")[-MAX_LOG:])):
                if data is None:
                    continue
                path = d / (stem + suffix)
                tmp = path.with_name(path.name + ".tmp")
                tmp.write_bytes(data)
                os.replace(tmp, path)
            result["log_path"] = str(path)
        write_inbox(self.ctx.config.result_inbox, result)
