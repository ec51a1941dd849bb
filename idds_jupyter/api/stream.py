"""The live stream: a websocket forwarding bus events of the caller's workflows.

One :class:`EventBridge` per server holds one bus subscription read in a
background thread; batches go to the IOLoop with ``add_callback`` and each
connection filters them by the workflow ids it subscribed to and by ownership
(owners are cached; unknown ones are looked up in the executor, in bulk).

Security (docs/security.md): a browser page of another origin may not open a
stream (``check_origin``: same origin, or the configured ``allow_origin`` /
``allow_origin_pat``, as Jupyter decides for its own websockets; the server
extension uses Jupyter's own check and settings). A stream's token is verified
again every ``auth.recheck_s`` seconds (the token cache's period): once it is
revoked or expired the stream is closed with 1008 (policy violation).
"""

from __future__ import annotations

import contextlib
import json
import logging
import re
import threading
from typing import TYPE_CHECKING, Any
from urllib.parse import urlparse

import tornado.web
import tornado.websocket
from tornado.ioloop import IOLoop, PeriodicCallback

from idds_jupyter.api.base import ApiError, dumps, host_prepare
from idds_jupyter.auth import User
from idds_jupyter.bus import JOB_RESULT, WORK_TERMINAL, WORKFLOW_DIRTY, WORKFLOW_TERMINAL, Event
from idds_jupyter.bus.local import LocalSubscription

if TYPE_CHECKING:
    from idds_jupyter.api.context import ApiContext

log = logging.getLogger("idds_jupyter.api")

STREAM_TYPES = (JOB_RESULT, WORK_TERMINAL, WORKFLOW_TERMINAL, WORKFLOW_DIRTY)


class EventBridge:
    """Bus → IOLoop: one subscription, one reader thread, many websocket connections."""

    def __init__(self, ctx: ApiContext, loop: IOLoop) -> None:
        self.ctx = ctx
        self.loop = loop
        self.conns: set[StreamHandler] = set()  # touched on the IOLoop thread only
        self._stop = threading.Event()
        self._sub = ctx.bus.subscribe(STREAM_TYPES)
        self._thread: threading.Thread | None = None
        self._waiting: list[list[Event]] | None = None  # batches behind an owner lookup
        if isinstance(self._sub, LocalSubscription):  # same process: no reader thread
            self._sub.on_put = self._wake
        else:
            self._thread = threading.Thread(target=self._read, name="idds-api-stream", daemon=True)
            self._thread.start()

    def _wake(self) -> None:
        """In the publisher's thread: read the events on the IOLoop, one hop, no thread."""
        if not self._stop.is_set():
            with contextlib.suppress(RuntimeError):  # the loop is closed
                self.loop.add_callback(self._drain)

    def _drain(self) -> None:
        events = self._sub.get(0)
        if events and not self._stop.is_set():
            self._dispatch(events)

    def _read(self) -> None:
        while not self._stop.is_set():
            try:
                events = self._sub.get(timeout=0.5)
            except Exception:  # a broken bus must not kill the bridge silently
                log.exception("live stream: bus read failed")
                self._stop.wait(1.0)
                continue
            if events and not self._stop.is_set():
                try:
                    self.loop.add_callback(self._dispatch, events)
                except RuntimeError:  # the loop is closed
                    return

    def _dispatch(self, events: list[Event]) -> None:
        """On the IOLoop: deliver at once when every run's owner is known (the usual case:
        no task, no executor trip); else after one lookup, in order with later batches."""
        if not self.conns:
            return
        events = without_redundant(events)
        if self._waiting is not None:  # a lookup is in flight: keep the order
            self._waiting.append(events)
            return
        ids = {int(e.key) for e in events if e.key is not None and e.key.isdigit()}
        unknown = {
            i for i in ids if i not in self.ctx.owner_cache
        }  # no iteration: other threads add
        if not unknown:
            self._deliver(events)
            return
        self._waiting = [events]
        self.loop.add_callback(self._look_up, unknown)

    async def _look_up(self, unknown: set[int]) -> None:
        from idds_jupyter.store import monitor

        try:
            found = await self.loop.run_in_executor(
                self.ctx.executor, monitor.owners, self.ctx.orch.engine, unknown
            )
        except Exception:
            log.exception("live stream: owner lookup failed")
            found = {}
        for wid, owner in found.items():
            self.ctx.remember_owner(wid, owner)
        waiting, self._waiting = self._waiting or [], None
        for events in waiting:
            self._dispatch(events)  # owners seen since are looked up again, in order

    def recheck_all(self) -> None:
        """On the IOLoop: every open stream checks its token now (after a revocation)."""
        for conn in list(self.conns):
            IOLoop.current().spawn_callback(conn.recheck)

    def _deliver(self, events: list[Event]) -> None:
        owners = self.ctx.owner_cache
        for conn in list(self.conns):
            conn.deliver(events, owners)

    def stop(self) -> None:
        self._stop.set()
        self._sub.close()
        for conn in list(self.conns):
            with contextlib.suppress(RuntimeError):
                self.loop.add_callback(conn.close)
        if self._thread is not None:
            self._thread.join(timeout=2)


def without_redundant(events: list[Event]) -> list[Event]:
    """The events less the ends of works of runs that end in the same batch: the run's
    end says it (a function call's one work and its run end in one record), and every
    message saved is one frame and one parse less for each watching client."""
    ended = {e.key for e in events if e.type == WORKFLOW_TERMINAL}
    if not ended:
        return events
    return [e for e in events if not (e.type == WORK_TERMINAL and e.key in ended)]


def origin_allowed(
    origin: str | None, host: str | None, allow_origin: str = "", allow_origin_pat: str = ""
) -> bool:
    """Jupyter's rule for websockets (``WebSocketMixin.check_origin``): no Origin or Host
    (not a browser) or the same host, else only the configured origin or pattern."""
    if allow_origin == "*":
        return True
    if origin is None or host is None:
        return True
    origin = origin.lower()
    if urlparse(origin).netloc == host:
        return True
    if allow_origin:
        return allow_origin == origin
    if allow_origin_pat:
        return bool(re.match(allow_origin_pat, origin))
    return False


# The close code of a stream whose credentials no longer hold (RFC 6455: policy violation).
POLICY_VIOLATION = 1008


class StreamHandler(tornado.websocket.WebSocketHandler):
    """``/idds/api/v1/stream``: send ``{"subscribe": [ids] | "*"}``; receive events as JSON."""

    ctx: ApiContext

    def initialize(self, ctx: ApiContext) -> None:
        self.ctx = ctx
        self._user: User | None = None
        self.ids: set[int] | None = set()  # None = every workflow the user may see
        self._recheck: PeriodicCallback | None = None
        self._rechecking = False

    async def prepare(self) -> None:
        await host_prepare(self, StreamHandler)  # the host's checks (Jupyter's: Host, identity)
        user = await self.ctx.auth.authenticate(self, True)
        if user is None:
            raise ApiError(
                401,
                "authentication required: send a valid token "
                "('Authorization: Bearer TOKEN' or ?token=TOKEN)",
            )
        self._user = user

    def write_error(self, status_code: int, **kwargs: Any) -> None:
        exc = kwargs.get("exc_info", (None, None, None))[1]
        msg = getattr(exc, "message", None) if isinstance(exc, tornado.web.HTTPError) else None
        msg = msg or self._reason
        self.set_header("Content-Type", "application/json; charset=UTF-8")
        self.finish(json.dumps({"error": msg}))

    def get_current_user(self) -> User | None:
        return self._user

    def check_origin(self, origin: str) -> bool:
        """Bearer tokens are not ambient credentials, but a page of another origin that got
        one (a token in its URL) must still not open a stream unless configured to."""
        cfg = self.ctx.config
        ok = origin_allowed(
            origin,
            self.request.headers.get("Host"),
            getattr(cfg, "allow_origin", ""),
            getattr(cfg, "allow_origin_pat", ""),
        )
        if not ok:
            log.warning(
                "live stream: blocked a cross-origin websocket from %s (Host %s)",
                origin,
                self.request.headers.get("Host"),
            )
        return ok

    def open(self, *args: Any, **kwargs: Any) -> None:
        bridge = self.ctx.bridge
        if bridge is None:
            bridge = self.ctx.bridge = EventBridge(self.ctx, IOLoop.current())
        bridge.conns.add(self)
        period = float(getattr(self.ctx.auth, "recheck_s", 5.0) or 5.0)
        self._recheck = PeriodicCallback(self.recheck, period * 1000)
        self._recheck.start()

    async def recheck(self) -> None:
        """Close the stream (1008) once its token is revoked or expired."""
        if self._rechecking or self.ws_connection is None:
            return
        self._rechecking = True
        try:
            reason = await self.ctx.auth.recheck(self)
        except Exception:  # a store hiccup is not a revocation: checked again next period
            log.exception("live stream: re-checking a token failed")
            reason = None
        finally:
            self._rechecking = False
        if reason and self.ws_connection is not None:
            log.info("live stream of %s closed: %s", self._user.name if self._user else "?", reason)
            self._user = None  # nothing more is delivered, even before the close completes
            self.close(POLICY_VIOLATION, reason[:120])
            self.on_close()

    def on_message(self, message: str | bytes) -> None:
        try:
            data = json.loads(message)
            sub = data["subscribe"] if isinstance(data, dict) else None
            if sub == "*":
                self.ids = None
            elif isinstance(sub, list) and all(
                isinstance(i, int) and not isinstance(i, bool) for i in sub
            ):
                self.ids = set(sub)
            else:
                raise ValueError
        except (ValueError, KeyError, TypeError):
            self._send(
                {
                    "type": "error",
                    "error": 'expected {"subscribe": [workflow ids]} or {"subscribe": "*"}',
                }
            )
            return
        self._send({"type": "subscribed", "ids": "*" if self.ids is None else sorted(self.ids)})

    def deliver(self, events: list[Event], owners: dict[int, str]) -> None:
        user = self._user
        if user is None or self.ids == set():
            return
        for e in events:
            if e.key is None or not e.key.isdigit():
                continue
            wid = int(e.key)
            owner = owners.get(wid)
            if owner is None or (owner != user.name and not user.admin):
                continue
            if self.ids is not None and wid not in self.ids:
                continue
            self._send({**e.payload, "type": e.type, "key": e.key, "workflow_id": wid})

    def _send(self, data: dict[str, Any]) -> None:
        try:
            self.write_message(dumps(data))
        except tornado.websocket.WebSocketClosedError:
            self.on_close()

    def on_close(self) -> None:
        if self._recheck is not None:
            self._recheck.stop()
            self._recheck = None
        bridge = self.ctx.bridge
        if bridge is not None:
            bridge.conns.discard(self)


__all__ = [
    "POLICY_VIOLATION",
    "STREAM_TYPES",
    "EventBridge",
    "StreamHandler",
    "origin_allowed",
    "without_redundant",
]
