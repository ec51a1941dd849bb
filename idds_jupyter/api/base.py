"""The base of every API handler: authentication, JSON in and out, errors, the executor."""

from __future__ import annotations

import asyncio
import contextlib
import functools
import json
import math
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import tornado.web
from tornado.concurrent import future_set_result_unless_cancelled
from tornado.ioloop import IOLoop

from idds_jupyter.api.faults import storage_fault
from idds_jupyter.auth import User
from idds_jupyter.store.engine import reading

if TYPE_CHECKING:
    from idds_jupyter.api.context import ApiContext

T = TypeVar("T")

MAX_JSON_BODY = 64 * 2**20
#: the largest id a path may name (ids are 64-bit integers in the store)
MAX_ID = 2**63 - 1


class ApiError(tornado.web.HTTPError):
    """An error answered as ``{"error": message, **extra}`` with ``status``."""

    def __init__(self, status: int, message: str, **extra: Any) -> None:
        super().__init__(status, log_message=None, reason=None)
        self.message = message
        self.extra = extra


def _json_default(o: Any) -> Any:
    if isinstance(o, bytes | bytearray):
        return None
    if isinstance(o, set | frozenset | tuple):
        return list(o)
    return str(o)


def dumps(data: Any) -> str:
    """JSON text of an answer; NaN/inf (not JSON) become null."""
    try:
        return json.dumps(data, default=_json_default, allow_nan=False)
    except ValueError:
        return json.dumps(_nan_to_none(data), default=_json_default)


def _nan_to_none(data: Any) -> Any:
    if isinstance(data, float) and not math.isfinite(data):
        return None
    if isinstance(data, dict):
        return {k: _nan_to_none(v) for k, v in data.items()}
    if isinstance(data, list | tuple):
        return [_nan_to_none(v) for v in data]
    return data


# A request refused in ``prepare`` whose declared body is at most this (no body, or a
# small one with a Content-Length) has its body read and dropped before the answer, so
# the answer reaches the client on a connection that stays usable; a bigger, chunked
# or ``Expect: 100-continue`` body is never read: its connection closes with the answer.
DRAIN_MAX = 64 * 2**10
DRAIN_TIMEOUT = 10.0  # seconds a small refused body may take to come in


def _draining(prepare: Callable[[Any], Any]) -> Callable[[Any], Any]:
    """``prepare`` that, when it refuses the request, first drains a small body."""

    @functools.wraps(prepare)
    async def wrapper(self: ApiHandler) -> None:
        try:
            out = prepare(self)
            if out is not None:
                await out
        except Exception:
            await self.drain_refused_body()
            raise

    wrapper._drains = True  # type: ignore[attr-defined]
    return wrapper


@tornado.web.stream_request_body
class ApiHandler(tornado.web.RequestHandler):
    """JSON handlers of ``/idds/api/v1``: every request is authenticated first (see ``public``).

    Bodies are streamed (``stream_request_body``): ``prepare`` runs once the headers
    are in, so a request is authenticated, and its ``Content-Length`` checked against
    :meth:`body_limit`, before a byte of its body is read. A refused request with no
    body or a small one (``DRAIN_MAX``) has it read and dropped, then is answered on a
    connection that stays open (a client reusing it, or still sending, gets the
    answer, not a reset); a bigger one's connection is closed with the answer, its
    body unread. The body is then kept up to the limit (chunked bodies are cut there
    by the connection).
    """

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        own = cls.__dict__.get("prepare")
        if own is not None and not getattr(own, "_drains", False):
            cls.prepare = _draining(own)  # type: ignore[method-assign]

    ctx: ApiContext
    public = False  # True only for ping
    allow_query_token = False

    def initialize(self, ctx: ApiContext, ids: tuple[int, ...] = ()) -> None:
        """``ids``: positions of the path arguments that are ids (integers of the store)."""
        self.ctx = ctx
        self._user: User | None = None
        self._ids = ids
        self._body_chunks: list[bytes] = []
        self._body_size = 0
        self._body_too_big = False
        self._draining = False

    @_draining
    async def prepare(self) -> None:
        await self.host_checks()
        self.check_ids()
        if not self.public:
            user = await self.ctx.auth.authenticate(self, self.allow_query_token)
            if user is None:
                raise ApiError(
                    401,
                    "authentication required: send a valid token as 'Authorization: Bearer TOKEN'",
                )
            self._user = user
        self.check_body_size()

    async def host_checks(self) -> None:
        """The hosting server's own checks, before anything of the API's.

        Standalone there are none (tornado's ``prepare`` does nothing; bearer tokens are
        no ambient credentials, so the app has no XSRF cookies). In the Jupyter server
        the handler is combined with Jupyter's ``APIHandler``
        (``idds_jupyter_server.handlers``), whose ``prepare`` comes next: the ``Host``
        check, the identity provider, CORS headers, the XSRF check of cookie-authenticated
        writes and the origin check.
        """
        await host_prepare(self, ApiHandler)

    def check_ids(self) -> None:
        """404 for an id no store can hold (``/logs/99999999999999999999999``), never a 500."""
        for i in self._ids:
            raw = self.path_args[i] if i < len(self.path_args) else ""
            if len(raw) > 19 or int(raw or 0) > MAX_ID:
                raise ApiError(
                    404,
                    f"no object with id {raw[:40]}{'...' if len(raw) > 40 else ''}: "
                    f"ids are at most {MAX_ID}",
                )

    # ---------------------------------------------------------------- body
    def body_limit(self) -> int:
        """The most bytes of body this route takes (``max_body_size``; cache uploads: the
        cache's; none for the public routes, which need no credentials)."""
        return 0 if self.public else int(self.ctx.config.max_body_size)

    def body_limit_name(self) -> str:
        return "max_body_size"

    def check_body_size(self) -> None:
        """413 naming the limit when the declared body is over it. A body without a length
        (chunked) is kept up to the limit and answered 413 once in; past the limit and a
        MiB the connection stops reading it (400, closed)."""
        limit = self.body_limit()
        length = self.request.headers.get("Content-Length")
        if length is not None and length.strip().isdigit() and int(length) > limit:
            raise ApiError(
                413,
                f"request body of {int(length)} bytes exceeds the limit of {limit} bytes "
                f"({self.body_limit_name()})",
                limit=limit,
                setting=self.body_limit_name(),
            )
        conn = self.request.connection
        if conn is not None and hasattr(conn, "set_max_body_size"):
            conn.set_max_body_size(limit + 2**20)

    async def drain_refused_body(self) -> None:
        """Read and drop the body of a request ``prepare`` refuses, when it is small.

        tornado closes a connection answered before its body was read; the client gets
        no ``Connection: close`` and may reuse it, or the unread bytes make the close a
        reset that can overtake the answer. So a request with no body, or a declared
        one of at most ``DRAIN_MAX`` bytes, is read to its end (within
        ``DRAIN_TIMEOUT``) before the refusal is answered, on a connection kept alive.
        """
        body_future = getattr(self.request, "_body_future", None)
        prepared = self._prepared_future
        if (
            self._finished
            or prepared is None
            or prepared.done()
            or body_future is None
            or body_future.done()
        ):
            return
        headers = self.request.headers
        if "Transfer-Encoding" in headers or headers.get("Expect", "").lower() == "100-continue":
            return
        length = headers.get("Content-Length", "0").strip()
        if not length.isdigit() or int(length) > DRAIN_MAX:
            return
        self._draining = True
        self.data_received = lambda chunk: None  # dropped, whatever the route
        future_set_result_unless_cancelled(prepared, None)  # tornado: read the body now
        with contextlib.suppress(Exception):  # gone or too slow: the answer closes the connection
            await asyncio.wait_for(asyncio.shield(body_future), DRAIN_TIMEOUT)

    def data_received(self, chunk: bytes) -> None:
        self._body_size += len(chunk)
        if self._body_size > self.body_limit():
            self._body_too_big, self._body_chunks = True, []
            return
        self._body_chunks.append(chunk)

    @property
    def body(self) -> bytes:
        """The request body (streamed in, up to the limit)."""
        if self._body_too_big:
            limit = self.body_limit()
            raise ApiError(
                413,
                f"request body exceeds the limit of {limit} bytes ({self.body_limit_name()})",
                limit=limit,
                setting=self.body_limit_name(),
            )
        if self._body_chunks:
            self.request.body = b"".join(self._body_chunks)
            self._body_chunks = []
        return self.request.body

    def get_current_user(self) -> User | None:
        return self._user

    @property
    def user(self) -> User:
        """The caller as the API knows it (name, admin); ``current_user`` is the host's."""
        u = self._user
        if u is None:  # pragma: no cover - prepare() refuses first
            raise ApiError(401, "authentication required")
        return u

    # -------------------------------------------------------------- output
    def set_default_headers(self) -> None:
        super().set_default_headers()  # the host's (Jupyter: its security headers, CORS)
        self.set_header("Content-Type", "application/json; charset=UTF-8")
        self.set_header("Cache-Control", "no-store")

    def send(self, data: Any, status: int = 200) -> None:
        self.set_status(status)
        self.set_header("Content-Type", "application/json; charset=UTF-8")
        self.finish(dumps(data))

    def write_error(self, status_code: int, **kwargs: Any) -> None:
        exc = kwargs.get("exc_info", (None, None, None))[1]
        self.set_header("Content-Type", "application/json; charset=UTF-8")
        if isinstance(exc, ApiError):
            body: dict[str, Any] = {"error": exc.message, **exc.extra}
        elif isinstance(exc, tornado.web.HTTPError):
            body = {
                "error": exc.log_message % exc.args
                if exc.log_message and exc.args
                else exc.log_message or self._reason
            }
        elif (fault := storage_fault(exc)) is not None:  # 503 busy, 507 disk full
            self.set_status(fault.status)
            if fault.retry_after is not None:
                self.set_header("Retry-After", str(fault.retry_after))
            body = {"error": fault.message}
        else:
            body = {"error": f"internal error: {type(exc).__name__}" if exc else self._reason}
        if self.request.method == "HEAD":
            self.finish()
            return
        self.finish(dumps(body))

    def log_exception(self, typ: Any, value: Any, tb: Any) -> None:
        """A storage fault (busy database, full disk) is one warning line, not a traceback."""
        if not isinstance(value, tornado.web.HTTPError) and storage_fault(value) is not None:
            tornado.web.app_log.warning(
                "%s %s: %s",
                self.request.method,
                self.request.path,
                str(value).splitlines()[0] if str(value) else type(value).__name__,
            )
            return
        super().log_exception(typ, value, tb)

    # --------------------------------------------------------------- input
    def json_body(self, required: bool = True) -> dict[str, Any]:
        """The request body parsed as a JSON object (json only, never anything else), nested
        at most ``max_json_depth`` levels."""
        from idds_jupyter.model.limits import LimitError, check_depth

        raw = self.body
        if not raw:
            if required:
                raise ApiError(400, "request body is empty: expected a JSON object")
            return {}
        depth = int(self.ctx.config.max_json_depth)
        too_deep = ApiError(
            400,
            f"request body is nested deeper than {depth} levels (max_json_depth)",
            limit=depth,
            setting="max_json_depth",
        )
        try:
            data = json.loads(raw.decode("utf-8"))
        except RecursionError:  # far deeper than any limit: the parser gave up first
            raise too_deep from None
        except (UnicodeDecodeError, ValueError) as exc:
            raise ApiError(
                400, f"request body is not valid JSON: {str(exc).splitlines()[0]}"
            ) from None
        if not isinstance(data, dict):
            raise ApiError(400, f"request body must be a JSON object, not {type(data).__name__}")
        try:
            check_depth(data, depth)
        except LimitError:
            raise too_deep from None
        return data

    def int_arg(self, name: str, default: int, minimum: int = 0, maximum: int | None = None) -> int:
        raw = self.get_query_argument(name, None)
        if raw is None or raw == "":
            return default
        try:
            v = int(raw)
        except ValueError:
            raise ApiError(
                400, f"query argument {name!r} must be an integer, got {raw!r}"
            ) from None
        if v < minimum:
            raise ApiError(400, f"query argument {name!r} must be >= {minimum}, got {v}")
        if maximum is not None and v > maximum:
            raise ApiError(400, f"query argument {name!r} must be <= {maximum}, got {v}")
        return v

    def bool_arg(self, name: str, default: bool) -> bool:
        from idds_jupyter.model.parameter import parse_bool

        raw = self.get_query_argument(name, None)
        if raw is None or raw == "":
            return default
        try:
            return parse_bool(raw)
        except ValueError:
            raise ApiError(
                400, f"query argument {name!r} must be true or false, got {raw!r}"
            ) from None

    # ---------------------------------------------------------- execution
    async def run(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        """Run blocking code (database, files) in the executor: the IOLoop never blocks.
        A GET's transactions only read (``store.engine.reading``)."""
        call = functools.partial(fn, *args, **kwargs)
        if self.request.method in ("GET", "HEAD"):
            call = functools.partial(_reading_call, call)
        return await IOLoop.current().run_in_executor(self.ctx.executor, call)

    async def send_file(self, path: Path, missing: str) -> None:
        """Stream a cache file in 1 MiB reads off the IOLoop; 404 ``missing`` if it is not there."""
        size = await self.run(file_size, path)
        if size is None:
            raise ApiError(404, missing)
        self.set_header("Content-Type", "application/octet-stream")
        self.set_header("Content-Length", str(size))
        offset = 0
        while offset < size:
            chunk = await self.run(_read_range, path, offset, 2**20)
            if not chunk:
                break
            offset += len(chunk)
            self.write(chunk)
            await self.flush()
        self.finish()

    async def check_owner(self, workflow_id: int) -> None:
        """404 unless the workflow exists and the caller owns it (admins own all)."""
        from idds_jupyter.store import monitor

        owner = self.ctx.owner_cache.get(int(workflow_id))  # an owner never changes
        if owner is None:
            owner = await self.run(monitor.owner, self.ctx.orch.engine, workflow_id)
        if owner is None or (owner != self.user.name and not self.user.admin):
            raise ApiError(404, f"no workflow with id {workflow_id}")
        self.ctx.remember_owner(workflow_id, owner)


async def host_prepare(handler: tornado.web.RequestHandler, cls: type[Any]) -> None:
    """Run the ``prepare`` that follows ``cls`` in ``handler``'s MRO (the host's checks)."""
    out = super(cls, handler).prepare()
    if out is not None:
        await out


def file_size(path: Path) -> int | None:
    try:
        return path.stat().st_size
    except OSError:
        return None


def _read_range(path: Path, offset: int, length: int) -> bytes:
    with open(path, "rb") as f:
        f.seek(offset)
        return f.read(length)


def _reading_call(call: Callable[[], T]) -> T:
    with reading():
        return call()


__all__ = ["ApiError", "ApiHandler", "dumps", "file_size", "host_prepare"]
