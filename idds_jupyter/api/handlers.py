"""REST handlers of ``/idds/api/v1``: ping, auth, requests, cache, catalog, monitor, messages, logs.

Every handler authenticates in ``prepare`` (only ``ping`` is public), reads
JSON bodies with ``json`` only (the server never unpickles anything), and runs
every database or file access in the context's executor.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Callable
from importlib import resources
from pathlib import Path
from typing import Any

import tornado.web
import yaml
from sqlalchemy.exc import IntegrityError

from idds_jupyter.api import limits
from idds_jupyter.api.base import ApiError, ApiHandler
from idds_jupyter.core import UnknownRun
from idds_jupyter.model import TemplateError
from idds_jupyter.model.limits import count_jobs
from idds_jupyter.store import monitor, tokens
from idds_jupyter.store.cache import SHA256, Cache, CacheError, check_sha
from idds_jupyter.store.catalog import Catalog
from idds_jupyter.store.control import ControlError
from idds_jupyter.store.works import BeyondDeclared, WorkEnded

try:
    from importlib.metadata import version as _version

    __version__ = _version("idds-jupyter")
except Exception:  # pragma: no cover - not installed (source tree)
    __version__ = "0+unknown"

ACTIONS = ("abort", "suspend", "resume", "retry")
MAX_LOG_CHUNK = 16 * 2**20
MAX_TAIL_LINES = 100_000


def _template_error(exc: TemplateError) -> ApiError:
    return ApiError(400, str(exc), work=exc.work, field=exc.field)


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


# ------------------------------------------------------------------ ping
class PingHandler(ApiHandler):
    public = True

    async def get(self) -> None:
        self.send({"status": "ok", "version": __version__})


class OpenApiHandler(ApiHandler):
    async def get(self) -> None:
        text = await self.run(openapi_text)
        self.set_header("Content-Type", "application/yaml; charset=UTF-8")
        self.finish(text)


def openapi_text() -> str:
    return resources.files("idds_jupyter.api").joinpath("openapi.yaml").read_text(encoding="utf-8")


class NotFoundHandler(ApiHandler):
    """JSON 404 for any path the API does not know (standalone app only)."""

    public = True

    async def prepare(self) -> None:
        raise ApiError(404, f"no such API route: {self.request.path}")


# ------------------------------------------------------------------ auth
class WhoAmIHandler(ApiHandler):
    async def get(self) -> None:
        self.send({"user": self.user.name, "admin": self.user.admin})


class TokensHandler(ApiHandler):
    async def get(self) -> None:
        owner = None if self.user.admin else self.user.name
        rows = await self.run(tokens.list_tokens, self.ctx.orch.engine, owner)
        self.send({"tokens": rows})

    async def post(self) -> None:
        body = self.json_body()
        name = body.get("name", "")
        if not isinstance(name, str) or len(name) > 255:
            raise ApiError(400, "field 'name' must be a string of at most 255 characters")
        user = body.get("user", self.user.name)
        if not isinstance(user, str) or not user or len(user) > 255:
            raise ApiError(400, "field 'user' must be a non-empty string")
        admin = body.get("admin", False)
        if not isinstance(admin, bool):
            raise ApiError(400, "field 'admin' must be true or false")
        if (user != self.user.name or admin) and not self.user.admin:
            raise ApiError(403, "only an admin may create tokens for another user or admin tokens")
        expires_in = body.get("expires_in")
        lifetime: float | None = None
        if expires_in is not None:
            try:
                lifetime = tokens.parse_duration(expires_in)
            except ValueError as exc:
                raise ApiError(400, f"field 'expires_in': {exc}") from None
        row, token = await self.run(
            tokens.create_token, self.ctx.orch.engine, user, name, admin, expires_in=lifetime
        )
        self.send(
            {
                "id": row["id"],
                "token": token,
                "user": row["user"],
                "name": row["name"],
                "admin": row["admin"],
                "created_at": row["created_at"],
                "expires_at": row["expires_at"],
            },
            201,
        )


class TokenHandler(ApiHandler):
    async def delete(self, token_id: str) -> None:
        tid = int(token_id)
        row = await self.run(tokens.get_token, self.ctx.orch.engine, tid)
        if row is None or (row["user"] != self.user.name and not self.user.admin):
            raise ApiError(404, f"no token with id {tid}")
        revoked = await self.run(tokens.revoke_token, self.ctx.orch.engine, tid)
        forget = getattr(self.ctx.auth, "forget", None)
        if callable(forget):
            forget()
        if revoked and self.ctx.bridge is not None:
            self.ctx.bridge.recheck_all()  # this process's open streams of it close now
        self.send({"id": tid, "revoked": revoked})


# -------------------------------------------------------------- requests
def parse_template(body: dict[str, Any], config: Any = None) -> dict[str, Any]:
    """The workflow template of a submission: ``template`` (an object) or ``yaml`` (text,
    read within ``config``'s limits on aliases, nesting and values: blocking, for the executor)."""
    if "template" in body and body["template"] is not None:
        tmpl = body["template"]
        if not isinstance(tmpl, dict):
            raise ApiError(400, "field 'template' must be a JSON object (a workflow template)")
        return tmpl
    if "yaml" in body and body["yaml"] is not None:
        text = body["yaml"]
        if not isinstance(text, str):
            raise ApiError(400, "field 'yaml' must be a string of YAML text")
        from idds_jupyter.model.limits import LimitError, load_yaml

        kw = (
            {}
            if config is None
            else {
                "max_nodes": config.max_template_nodes,
                "max_depth": config.max_json_depth,
                "max_aliases": config.max_yaml_aliases,
            }
        )
        try:
            tmpl = load_yaml(
                text, what="field 'yaml'", **kw
            )  # safe: no Python objects from YAML tags
        except yaml.YAMLError as exc:
            raise ApiError(400, f"field 'yaml' is not valid YAML: {_first_line(exc)}") from None
        except LimitError as exc:
            raise ApiError(
                413 if exc.limit == "max_template_nodes" else 400,
                str(exc),
                limit=exc.value,
                setting=exc.limit,
            ) from None
        if not isinstance(tmpl, dict):
            raise ApiError(400, "field 'yaml' must hold a mapping (a workflow template)")
        return tmpl
    raise ApiError(400, "request needs a workflow: field 'template' (object) or 'yaml' (text)")


MAX_INLINE_BLOB = 1 * 2**20
MAX_INLINE_TOTAL = 16 * 2**20


def inline_blobs(handler: ApiHandler, body: dict[str, Any]) -> Callable[[], list[tuple[str, int]]]:
    """Small blobs sent with a submission (``"blobs": {sha256: base64}``): a function that
    checks and writes them to the cache and returns their ``(sha256, size)``.

    It runs in the executor, in the same call as the submission that records their
    rows in its own transaction. They are opaque bytes checked against their
    digest — never unpickled here.
    """
    blobs = body.get("blobs")
    if blobs is None:
        return list
    if not isinstance(blobs, dict):
        raise ApiError(400, "field 'blobs' must map sha256 digests to base64 strings")
    cache = handler.ctx.cache

    def write() -> list[tuple[str, int]]:
        import base64
        import binascii

        decoded: list[tuple[str, bytes]] = []
        total = 0
        for sha, text in blobs.items():
            try:
                check_sha(sha)
                if not isinstance(text, str):
                    raise ValueError
                data = base64.b64decode(text, validate=True)
            except (CacheError, ValueError, binascii.Error):
                raise ApiError(
                    400,
                    f"field 'blobs': {str(sha)[:80]!r} must be a sha256 digest "
                    "mapped to base64 bytes",
                ) from None
            if len(data) > MAX_INLINE_BLOB:
                raise ApiError(
                    413,
                    f"field 'blobs': blob {sha} of {len(data)} bytes is over "
                    f"{MAX_INLINE_BLOB} bytes; upload it with PUT cache/{{sha256}}",
                )
            total += len(data)
            decoded.append((sha, data))
        if total > MAX_INLINE_TOTAL:
            raise ApiError(413, f"field 'blobs': {total} bytes in all, over {MAX_INLINE_TOTAL}")
        try:
            for sha, data in decoded:
                cache.write(data, sha)
        except CacheError as exc:
            raise ApiError(400, f"field 'blobs': {exc}") from None
        return [(sha, len(data)) for sha, data in decoded]

    return write


def payload_digests(obj: Any, depth: int = 0) -> set[str]:
    """The blob digests a template's works name as their payload (function, calls,
    sandbox), in works and inline sub-workflows alike."""
    out: set[str] = set()
    if depth > 64:
        return out
    if isinstance(obj, dict):
        payload = obj.get("payload")
        if isinstance(payload, dict):
            out |= {v for v in payload.values() if isinstance(v, str) and SHA256.match(v)}
        for v in obj.values():
            if isinstance(v, dict | list):
                out |= payload_digests(v, depth + 1)
    elif isinstance(obj, list):
        for v in obj:
            if isinstance(v, dict | list):
                out |= payload_digests(v, depth + 1)
    return out


def check_readable(cache: Cache, digests: set[str], owner: str | None, what: str) -> None:
    """400 unless ``owner`` may read every blob of ``digests`` (blocking: in the executor).

    A blob of another user is reported like one that is not there: its existence is not
    for this caller to learn, and a job must never read it on this caller's behalf."""
    if not digests or owner is None:
        return
    missing = digests - cache.readable_many(digests, owner)
    if missing:
        sha = min(missing)
        raise ApiError(
            400,
            f"{what}: blob {sha} is not in the cache; upload it first "
            "(PUT cache/{sha256}) or send it inline",
        )


def payload_check(handler: ApiHandler, obj: Any, body: dict[str, Any]) -> Callable[[], None]:
    """A check, to run in the executor, that the caller may read every payload blob of
    ``obj`` (a template, or works) that the request does not itself carry inline."""
    digests = payload_digests(obj)
    inline = body.get("blobs")
    if isinstance(inline, dict):
        digests -= set(inline)
    owner = None if handler.user.admin else handler.user.name
    cache = handler.ctx.cache
    return lambda: check_readable(cache, digests, owner, "payload")


class RequestsHandler(ApiHandler):
    async def get(self) -> None:
        owner: str | None = self.user.name
        if self.user.admin:
            owner = self.get_query_argument("owner", None) or None
        runs = await self.run(
            monitor.list_runs,
            self.ctx.orch.engine,
            owner=owner,
            status=self.get_query_argument("status", None),
            name=self.get_query_argument("name", None),
            limit=self.int_arg("limit", 100, 1, monitor.MAX_PAGE),
            offset=self.int_arg("offset", 0),
        )
        self.send({"requests": runs})

    async def post(self) -> None:
        body = self.json_body()
        if body.get("faat") is not None:
            await self._post_server_body(body)
            return
        params = body.get("params") or {}
        if not isinstance(params, dict):
            raise ApiError(400, "field 'params' must be a JSON object")
        backend = body.get("backend")
        if backend is not None and not isinstance(backend, str):
            raise ApiError(400, "field 'backend' must be a string")
        is_open = body.get("open", False)
        if not isinstance(is_open, bool):
            raise ApiError(400, "field 'open' must be true or false")
        kw: dict[str, Any] = {"owner": self.user.name, "backend": backend}
        if is_open:
            kw["open"] = True

        def submit() -> int:  # one trip to the executor: checks, blobs, the submission
            tmpl = parse_template(body, self.ctx.config)
            quota = limits.quota(
                self, limits.check_jobs(self.ctx.config, tmpl.get("works"), user=self.user)
            )
            blobs = inline_blobs(self, body)
            readable = payload_check(self, tmpl, body)
            quota()
            readable()
            return self.ctx.orch.submit(tmpl, params, blobs=blobs(), **kw)

        try:
            wid = await self.run(submit)
        except TemplateError as exc:
            raise _template_error(exc) from None
        except (ValueError, TypeError, KeyError) as exc:
            raise ApiError(400, f"invalid workflow: {_first_line(exc)}") from None
        self.ctx.remember_owner(wid, self.user.name)
        self.send({"id": wid}, 201)

    async def _post_server_body(self, body: dict[str, Any]) -> None:
        """``{"faat": {"body", "args", "name", "sandbox"?}, "params"?}``: run a body on the server."""
        from idds_jupyter.api.bodies import launch_body
        from idds_jupyter.store.cache import CacheError, check_sha

        spec = body["faat"]
        if not isinstance(spec, dict):
            raise ApiError(400, "field 'faat' must be an object with body, args and name")
        digests: dict[str, str | None] = {}
        for key in ("body", "args", "sandbox"):
            value = spec.get(key)
            if value is None and key == "sandbox":
                digests[key] = None
                continue
            try:
                digests[key] = check_sha(value if isinstance(value, str) else "")
            except CacheError:
                raise ApiError(
                    400, f"field 'faat.{key}' must be the sha256 of a cache blob"
                ) from None
            owner = None if self.user.admin else self.user.name
            if not await self.run(
                lambda v=value, o=owner: self.ctx.cache.readable(v, o) and self.ctx.cache.has(v)
            ):
                raise ApiError(
                    400, f"field 'faat.{key}': blob {value} is not in the cache; upload it first"
                )
        name = spec.get("name") or "workflow"
        params = body.get("params") or {}
        if not isinstance(name, str) or not isinstance(params, dict):
            raise ApiError(400, "field 'faat.name' must be a string and 'params' an object")
        if not self.ctx.self_url:
            raise ApiError(
                501, "this server does not run workflow bodies (no public URL configured)"
            )
        await self.run(limits.quota(self, 0))
        try:
            wid = await self.run(
                self.ctx.orch.submit,
                {"name": name, "works": []},
                params,
                owner=self.user.name,
                open=True,
            )
        except TemplateError as exc:
            raise _template_error(exc) from None

        def failed(workflow_id: int, reason: str) -> None:
            status = self.ctx.orch.status(workflow_id)
            if (status.get("body") or {}).get("open"):
                self.ctx.orch.close(workflow_id, error=reason)

        await self.run(
            launch_body,
            self.ctx.orch.engine,
            self.ctx.self_url,
            self.user.name,
            wid,
            str(digests["body"]),
            str(digests["args"]),
            digests["sandbox"],
            self.ctx.config.log_dir / "bodies",
            None,
            failed,
        )
        self.send({"id": wid}, 201)


class RequestHandler(ApiHandler):
    async def get(self, wid: str) -> None:
        await self.check_owner(int(wid))
        try:
            st = await self.run(self.ctx.orch.status, int(wid), self.bool_arg("works", True))
        except UnknownRun as exc:
            raise ApiError(404, str(exc)) from None
        self.send(st)


def _work_field(body: dict[str, Any]) -> str | None:
    work = body.get("work")
    if work is not None and not isinstance(work, str):
        raise ApiError(400, "field 'work' must be a string (a work name)")
    return work


async def apply_control(
    handler: ApiHandler, wid: int, action: str, work: str | None
) -> dict[str, Any]:
    if action not in ACTIONS:
        raise ApiError(400, f"unknown action {action!r}: expected one of {', '.join(ACTIONS)}")
    await handler.check_owner(wid)
    try:
        res = await handler.run(getattr(handler.ctx.orch, action), wid, work)
    except (ControlError, UnknownRun) as exc:
        raise ApiError(404, str(exc)) from None
    return {"id": wid, "action": action, "work": work, "changed": bool(res.changed)}


class RequestControlHandler(ApiHandler):
    async def post(self, wid: str, action: str) -> None:
        body = self.json_body(required=False)
        self.send(await apply_control(self, int(wid), action, _work_field(body)))


class RequestWorksHandler(ApiHandler):
    async def post(self, wid: str) -> None:
        body = self.json_body()
        works = body.get("works")
        if not isinstance(works, list) or not works or not all(isinstance(w, dict) for w in works):
            raise ApiError(400, "field 'works' must be a non-empty list of work objects")
        declared = _declared(body.get("declared"), works, self.ctx.config, self.user)
        await self.check_owner(int(wid))
        blobs = inline_blobs(self, body)
        readable = payload_check(self, works, body)

        # declared jobs still to come count toward the limits and the quota now
        given = count_jobs(works)
        to_come = sum(max(0, n - given.get(w, 0)) for w, n in (declared or {}).items())
        new_jobs = limits.check_jobs(self.ctx.config, works, user=self.user) + to_come
        grow = limits.quota(self, new_jobs, submission=False)

        def add() -> list[str]:
            # the run's jobs so far count toward max_jobs_per_submission
            limits.check_jobs(
                self.ctx.config,
                works,
                limits.run_jobs(self.ctx.orch.engine, int(wid)) + to_come,
                user=self.user,
            )
            grow()
            readable()
            return self.ctx.orch.add_works(
                int(wid), works, blobs(), self.user.name, declared=declared
            )

        try:
            names = await self.run(add)
        except TemplateError as exc:
            raise _template_error(exc) from None
        except UnknownRun as exc:
            raise ApiError(404, str(exc)) from None
        except (ValueError, TypeError, KeyError) as exc:
            raise ApiError(400, f"cannot add works to workflow {wid}: {_first_line(exc)}") from None
        self.send({"names": list(names or [])}, 201)


def _declared(
    raw: Any, works: list[dict[str, Any]], config: Any, user: Any
) -> dict[str, int] | None:
    """``"declared": {work name: jobs}``: works of this request that will get more jobs
    later (``POST requests/{id}/works/{name}/jobs``); each count within ``max_jobs_per_work``."""
    if raw is None:
        return None
    names = {w.get("name") for w in works}
    if not isinstance(raw, dict) or not all(
        isinstance(k, str) and type(v) is int and v >= 1 for k, v in raw.items()
    ):
        raise ApiError(400, "field 'declared' must map work names to job counts (integers >= 1)")
    for name, n in raw.items():
        if name not in names:
            raise ApiError(400, f"field 'declared': {name!r} is not a work of this request")
        limits.check_jobs(config, [{"name": name, "n_jobs": n}], user=user)
    return dict(raw)


class RequestWorkJobsHandler(ApiHandler):
    """``POST requests/{id}/works/{name}/jobs {"start", "kwargs_list"}``: jobs ``start``, …
    of a work declared with more jobs (``declared`` of ``POST requests/{id}/works``), each
    calling the work's function with its JSON keyword arguments: a client-steered HPO
    study's next trials, sent to a worker ahead of their rows (``Orchestrator.add_jobs``).
    Jobs beyond the declared count are refused (409): the quota was charged for those."""

    async def post(self, wid: str, name: str) -> None:
        body = self.json_body()
        start, kwargs_list = body.get("start"), body.get("kwargs_list")
        if type(start) is not int or start < 0:
            raise ApiError(400, "field 'start' must be the index of the first job (integer >= 0)")
        if (
            not isinstance(kwargs_list, list)
            or not kwargs_list
            or not all(isinstance(kw, dict) for kw in kwargs_list)
        ):
            raise ApiError(400, "field 'kwargs_list' must be a non-empty list of JSON objects")
        per_work, src = limits.limit_for(self.ctx.config, self.user, "max_jobs_per_work")
        end = start + len(kwargs_list)
        if per_work and end > per_work:
            raise ApiError(
                413,
                f"work {name!r} would have {end} jobs, over the limit of {per_work} jobs "
                f"per work ({src})",
                work=name,
                limit=per_work,
                setting="max_jobs_per_work",
            )
        await self.check_owner(int(wid))
        try:  # within the declared count: the quota was charged when the work was declared
            await self.run(
                self.ctx.orch.add_jobs, int(wid), name, start, kwargs_list, within_declared=True
            )
        except WorkEnded as exc:
            raise ApiError(404 if exc.missing else 409, str(exc)) from None
        except BeyondDeclared as exc:
            raise ApiError(409, str(exc)) from None
        except IntegrityError:
            raise ApiError(
                409,
                f"work {name!r} of workflow {wid} has a job at index {start}..{end - 1} already",
            ) from None
        self.send({"start": start, "count": len(kwargs_list)}, 201)


class RequestCloseHandler(ApiHandler):
    async def post(self, wid: str) -> None:
        body = self.json_body(required=False)
        blob = body.get("result_blob")
        if blob is not None:
            try:
                check_sha(blob)
            except CacheError:
                raise ApiError(400, "field 'result_blob' must be a sha256 hex digest") from None
        for key in ("error", "traceback"):
            if body.get(key) is not None and not isinstance(body[key], str):
                raise ApiError(400, f"field {key!r} must be a string")
        await self.check_owner(int(wid))
        try:
            res = await self.run(
                self.ctx.orch.close,
                int(wid),
                result=body.get("result"),
                result_blob=blob,
                error=body.get("error"),
                traceback=body.get("traceback"),
            )
        except UnknownRun as exc:
            raise ApiError(404, str(exc)) from None
        except (ValueError, TypeError) as exc:
            raise ApiError(409, f"cannot close workflow {wid}: {_first_line(exc)}") from None
        status = res.get("status") if isinstance(res, dict) else res
        self.send({"id": int(wid), "status": status})


class WorkResultsHandler(ApiHandler):
    async def get(self, wid: str, name: str) -> None:
        await self.check_owner(int(wid))
        offset = self.int_arg("offset", 0)
        limit = self.int_arg("limit", 1000, 1, monitor.MAX_PAGE)
        try:
            results = await self.run(self.ctx.orch.work_results, int(wid), name, offset, limit)
        except (UnknownRun, LookupError) as exc:
            raise ApiError(404, _first_line(exc)) from None
        self.send({"results": results})


# ----------------------------------------------------------------- cache
@tornado.web.stream_request_body
class CacheBlobHandler(ApiHandler):
    """Content-addressed blobs: the name must be the sha256 of the bytes."""

    _chunks: list[bytes]
    _size: int
    _too_big: bool

    def body_limit(self) -> int:
        return int(self.ctx.cache.limit)

    def body_limit_name(self) -> str:
        return "the cache limit"

    async def prepare(self) -> None:
        await super().prepare()
        self._chunks, self._size, self._too_big = [], 0, False
        sha = self.path_args[0] if self.path_args else ""
        try:
            check_sha(sha)
        except CacheError:
            raise ApiError(400, f"not a sha256 hex digest: {sha[:80]!r}") from None
        if self.request.method == "PUT":
            length = self.request.headers.get("Content-Length")
            if length is not None and length.isdigit() and int(length) > self.ctx.cache.limit:
                raise ApiError(
                    413,
                    f"blob of {int(length)} bytes exceeds the cache limit of "
                    f"{self.ctx.cache.limit} bytes",
                    limit=self.ctx.cache.limit,
                )

    def data_received(self, chunk: bytes) -> None:
        if self._too_big:
            return
        self._size += len(chunk)
        if self._size > self.ctx.cache.limit:
            self._too_big, self._chunks = True, []  # keep counting nothing: refuse in put()
            return
        self._chunks.append(chunk)

    async def put(self, sha: str) -> None:
        if self._too_big:
            raise ApiError(
                413,
                f"blob exceeds the cache limit of {self.ctx.cache.limit} bytes",
                limit=self.ctx.cache.limit,
            )
        data = b"".join(self._chunks)
        self._chunks = []
        actual = hashlib.sha256(data).hexdigest()
        if actual != sha:
            raise ApiError(
                400, f"content does not match its name: expected {sha}, got {actual}", sha256=actual
            )
        try:
            _, created = await self.run(self.ctx.cache.put, data, sha, owner=self.user.name)
        except CacheError as exc:
            raise ApiError(400, str(exc)) from None
        self.send({"sha256": sha, "size": len(data), "created": created}, 201)

    async def head(self, sha: str) -> None:
        await self._readable(sha)
        await send_blob(self, self.ctx.cache, sha, f"no blob {sha}", head=True)

    async def get(self, sha: str) -> None:
        await self._readable(sha)
        await send_blob(self, self.ctx.cache, sha, f"no blob {sha}")

    async def _readable(self, sha: str) -> None:
        """404 — as for a blob that is not there — unless the caller uploaded or produced
        it (admins read every blob)."""
        owner = None if self.user.admin else self.user.name
        if not await self.run(self.ctx.cache.readable, sha, owner):
            raise ApiError(404, f"no blob {sha}")


async def send_blob(
    handler: ApiHandler, cache: Cache, sha: str, missing: str, head: bool = False
) -> None:
    """Stream blob ``sha`` in 1 MiB reads off the IOLoop; 404 ``missing`` unless the cache
    holds an intact one (a regular file inside it, never through a symlink, whose bytes
    match their digest: see :func:`idds_jupyter.store.cache.open_blob`)."""
    f = await handler.run(cache.open, sha)
    if f is None:
        raise ApiError(404, missing)
    try:
        handler.set_header("Content-Type", "application/octet-stream")
        if head:
            handler.set_header("X-Blob-Size", str(f.size))
            handler.finish()
            return
        handler.set_header("Content-Length", str(f.size))
        offset = 0
        while offset < f.size:
            chunk = await handler.run(f.read, offset, 2**20)
            if not chunk:
                break
            offset += len(chunk)
            handler.write(chunk)
            await handler.flush()
        handler.finish()
    finally:
        f.close()


class CacheStatsHandler(ApiHandler):
    """Blobs and bytes of the caller's blobs; an admin's are global (``?owner=`` for one)."""

    async def get(self) -> None:
        owner: str | None = self.user.name
        if self.user.admin:
            owner = self.get_query_argument("owner", None) or None
        self.send(await self.run(self.ctx.cache.stats, owner))


# --------------------------------------------------------------- catalog
def _files_field(value: Any, allow_null: bool = False) -> list[Any] | None:
    if value is None and allow_null:
        return None
    if not isinstance(value, list):
        raise ApiError(400, "field 'files' must be a list")
    for f in value:
        if isinstance(f, str) and f:
            continue
        if (
            isinstance(f, dict)
            and isinstance(f.get("name"), str)
            and f["name"]
            and (f.get("size") is None or isinstance(f.get("size"), int))
            and not allow_null
        ):
            continue
        raise ApiError(
            400,
            f"field 'files': bad entry {str(f)[:80]!r}: expected a file name"
            + ("" if allow_null else ' or {"name": str, "size": int}'),
        )
    return value


def _catalog(handler: ApiHandler) -> Catalog:
    """The caller's catalog; an admin acts on another owner's with ``?owner=NAME``.

    Another owner's dataset is answered exactly like a missing one (404)."""
    owner = handler.user.name
    if handler.user.admin:
        owner = handler.get_query_argument("owner", None) or owner
    return Catalog(handler.ctx.orch.engine, owner=owner)


class DatasetsHandler(ApiHandler):
    async def get(self) -> None:
        """The caller's datasets (an admin's: every owner's, or ``?owner=``'s)."""
        every = self.user.admin and not self.get_query_argument("owner", None)
        cat = _catalog(self)
        rows = await self.run(
            cat.datasets,
            every,
            self.int_arg("limit", 1000, 1, monitor.MAX_PAGE),
            self.int_arg("offset", 0),
        )
        self.send({"datasets": rows})

    async def post(self) -> None:
        body = self.json_body()
        name = body.get("name")
        if not isinstance(name, str) or not name or len(name) > 512:
            raise ApiError(400, "field 'name' must be a non-empty string (at most 512 characters)")
        files = _files_field(body.get("files", [])) or []
        meta = body.get("meta")
        if meta is not None and not isinstance(meta, dict):
            raise ApiError(400, "field 'meta' must be a JSON object")
        cat = _catalog(self)
        ds = await self.run(cat.add_dataset, name, files, meta)
        self.send({"id": ds, "name": name, "files": len(files)}, 201)


class DatasetHandler(ApiHandler):
    async def get(self, name: str) -> None:
        try:
            files = await self.run(_catalog(self).files, name)
        except LookupError as exc:
            raise ApiError(404, str(exc).strip("'\"")) from None
        self.send({"name": name, "files": files})


class DatasetAvailableHandler(ApiHandler):
    async def post(self, name: str) -> None:
        body = self.json_body(required=False)
        names = _files_field(body.get("files"), allow_null=True)
        try:
            released = await self.run(_catalog(self).mark_available, name, names)
        except LookupError as exc:
            raise ApiError(404, str(exc).strip("'\"")) from None
        if released:
            from idds_jupyter.bus import JOBS_READY, make_event

            self.ctx.bus.publish([make_event(JOBS_READY)])
        self.send({"name": name, "released": released})


class DatasetStagingHandler(ApiHandler):
    async def post(self, name: str) -> None:
        """Staging state of files not yet available (a data source such as Rucio reports it):
        ``{"files": [...], "state": "queued|staging|stuck|failed", "error": str}``; ``failed``
        fails the jobs waiting on those files with ``error``."""
        from idds_jupyter.store.catalog import STAGING_STATES

        body = self.json_body()
        names = _files_field(body.get("files"), allow_null=True) or []
        state, error = body.get("state"), body.get("error")
        if state not in STAGING_STATES:
            raise ApiError(400, f"field 'state' must be one of {', '.join(STAGING_STATES)}")
        if error is not None and (not isinstance(error, str) or len(error) > 4096):
            raise ApiError(400, "field 'error' must be a string (at most 4096 characters)")
        try:
            out = await self.run(_catalog(self).set_staging, name, names, state, error)
        except LookupError as exc:
            raise ApiError(404, str(exc).strip("'\"")) from None
        if out.failed:
            from idds_jupyter.bus.event import outcome_events

            self.ctx.bus.publish(
                outcome_events(out.terminal_works, out.dirty_workflows, out.ended_workflows)
            )
        self.send({"name": name, "state": state, "failed_jobs": out.failed})


# --------------------------------------------------------------- monitor
class MonitorHandler(ApiHandler):
    async def get(self, wid: str) -> None:
        await self.check_owner(int(wid))
        out = await self.run(monitor.summary, self.ctx.orch.engine, int(wid))
        if out is None:
            raise ApiError(404, f"no workflow with id {wid}")
        self.send(out)


class MonitorDagHandler(ApiHandler):
    async def get(self, wid: str) -> None:
        await self.check_owner(int(wid))
        out = await self.run(monitor.dag, self.ctx.orch.engine, int(wid))
        if out is None:
            raise ApiError(404, f"no workflow with id {wid}")
        self.send(out)


class MonitorJobsHandler(ApiHandler):
    async def get(self, wid: str, name: str) -> None:
        await self.check_owner(int(wid))
        out = await self.run(
            monitor.jobs_page,
            self.ctx.orch.engine,
            int(wid),
            name,
            offset=self.int_arg("offset", 0),
            limit=self.int_arg("limit", 100, 1, monitor.MAX_PAGE),
            status=self.get_query_argument("status", None),
        )
        if out is None:
            raise ApiError(404, f"workflow {wid} has no work named {name!r}")
        self.send(out)


# -------------------------------------------------------------- messages
class MessagesHandler(ApiHandler):
    async def get(self) -> None:
        owner = None if self.user.admin else self.user.name
        rows = await self.run(
            monitor.list_messages,
            self.ctx.orch.engine,
            owner,
            since=self.int_arg("since", 0),
            limit=self.int_arg("limit", 100, 1, monitor.MAX_PAGE),
        )
        self.send(
            {"messages": rows, "last_id": rows[-1]["id"] if rows else self.int_arg("since", 0)}
        )

    async def post(self) -> None:
        body = self.json_body()
        wid = body.get("workflow_id")
        if not isinstance(wid, int) or isinstance(wid, bool):
            raise ApiError(400, "field 'workflow_id' must be an integer")
        action = body.get("action")
        if action not in ACTIONS:
            raise ApiError(
                400, f"field 'action' must be one of {', '.join(ACTIONS)}, got {str(action)[:40]!r}"
            )
        self.send(await apply_control(self, wid, str(action), _work_field(body)))


# ------------------------------------------------------------------ logs
class LogHandler(ApiHandler):
    async def get(self, job_id: str) -> None:
        jid = int(job_id)
        row = await self.run(monitor.job_log, self.ctx.orch.engine, jid)
        if row is None or (row["owner"] != self.user.name and not self.user.admin):
            raise ApiError(404, f"no job with id {jid}")
        if not row["log_path"]:
            raise ApiError(404, f"job {jid} has no log")
        path = Path(row["log_path"])  # from the store, never from the client
        tail = self.get_query_argument("tail", None)
        if tail is not None:
            n = self.int_arg("tail", 100, 0, MAX_TAIL_LINES)
            data, size = await self.run(_tail, path, n)
        else:
            offset = self.int_arg("offset", 0)
            length = self.int_arg("length", MAX_LOG_CHUNK, 0, MAX_LOG_CHUNK)
            data, size = await self.run(_range, path, offset, length)
        if data is None:
            raise ApiError(404, f"job {jid} has no log")
        self.set_header("Content-Type", "text/plain; charset=UTF-8")
        self.set_header("X-Log-Size", str(size))
        self.finish(data)


def _range(path: Path, offset: int, length: int) -> tuple[bytes | None, int]:
    try:
        with open(path, "rb") as f:
            size = os.fstat(f.fileno()).st_size
            f.seek(offset)
            return f.read(length), size
    except OSError:
        return None, 0


def _tail(path: Path, n: int) -> tuple[bytes | None, int]:
    """The last ``n`` lines, reading backwards in blocks (never the whole file)."""
    try:
        with open(path, "rb") as f:
            size = os.fstat(f.fileno()).st_size
            if n == 0:
                return b"", size
            pos, buf = size, b""
            while pos > 0 and buf.count(b"\n") <= n and len(buf) < MAX_LOG_CHUNK:
                step = min(65536, pos)
                pos -= step
                f.seek(pos)
                buf = f.read(step) + buf
            lines = buf.splitlines(keepends=True)
            return b"".join(lines[-n:]), size
    except OSError:
        return None, 0


__all__ = [
    "ACTIONS",
    "CacheBlobHandler",
    "CacheStatsHandler",
    "DatasetAvailableHandler",
    "DatasetHandler",
    "DatasetsHandler",
    "LogHandler",
    "MessagesHandler",
    "MonitorDagHandler",
    "MonitorHandler",
    "MonitorJobsHandler",
    "NotFoundHandler",
    "OpenApiHandler",
    "PingHandler",
    "RequestCloseHandler",
    "RequestControlHandler",
    "RequestHandler",
    "RequestWorksHandler",
    "RequestWorkJobsHandler",
    "RequestsHandler",
    "TokenHandler",
    "TokensHandler",
    "WhoAmIHandler",
    "WorkResultsHandler",
    "openapi_text",
    "payload_digests",
    "send_blob",
]
