"""The push channel: the service's live event stream, in one background thread.

A tornado websocket client on its own event loop subscribes to the stream,
reconnects with backoff (and re-subscribes), and dispatches each message to the
registered listeners and waiters. After every (re)connection it calls the
``on_connect`` hooks, which fetch what may have been missed over REST — the
only time results are fetched rather than pushed.
"""

from __future__ import annotations

import contextlib
import json
import threading
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from idds_jupyter.backoff import Backoff
from idds_jupyter.client.errors import IddsError

if TYPE_CHECKING:
    from idds_jupyter.client.api import Client

__all__ = ["Listener", "PushChannel"]

Listener = Callable[[dict[str, Any]], None]


class _Waiter:
    __slots__ = ("predicate", "event", "message")

    def __init__(self, predicate: Callable[[dict[str, Any]], bool]) -> None:
        self.predicate = predicate
        self.event = threading.Event()
        self.message: dict[str, Any] | None = None

    def offer(self, msg: dict[str, Any]) -> bool:
        if self.message is None and self.predicate(msg):
            self.message = msg
            self.event.set()
            return True
        return False


class PushChannel:
    """The websocket client of the stream, in one background thread with its own loop."""

    CONNECT_TIMEOUT = 15.0

    def __init__(self, client: Client, subscribe: Any = "*") -> None:
        self.client = client
        self.subscription = subscribe
        self.connected = threading.Event()
        self.last_error: str | None = None
        self.reconnects = 0
        self._listeners: list[Listener] = []
        self._on_connect: list[Callable[[], None]] = []
        self._waiters: list[_Waiter] = []
        self._lock = threading.Lock()
        self._stopping = False
        self._loop: Any = None
        self._conn: Any = None
        self._thread = threading.Thread(target=self._run, name="idds-push", daemon=True)

    # -------------------------------------------------------------- control
    def start(self, timeout: float | None = None) -> None:
        """Open the stream; raises :class:`IddsError` if it is not open within ``timeout`` s."""
        self._thread.start()
        if not self.connected.wait(self.CONNECT_TIMEOUT if timeout is None else timeout):
            self.stop()
            raise IddsError(
                0,
                f"cannot open the result stream {self.client.ws_url.split('?')[0]}: "
                f"{self.last_error or 'timed out'}",
            )

    def stop(self) -> None:
        """Close the stream and stop its thread."""
        self._stopping = True
        loop, conn = self._loop, self._conn
        if loop is not None:
            with contextlib.suppress(RuntimeError):
                loop.call_soon_threadsafe(lambda: conn.close() if conn is not None else None)
        if threading.current_thread() is not self._thread and self._thread.is_alive():
            self._thread.join(timeout=5)

    def add_listener(self, listener: Listener) -> Callable[[], None]:
        """Call ``listener`` with every event; returns a function that removes it."""
        with self._lock:
            self._listeners = [*self._listeners, listener]

        def remove() -> None:
            with self._lock:
                self._listeners = [x for x in self._listeners if x is not listener]

        return remove

    def add_on_connect(self, hook: Callable[[], None]) -> Callable[[], None]:
        """Run ``hook()`` (in a helper thread) after every reconnection."""
        with self._lock:
            self._on_connect = [*self._on_connect, hook]

        def remove() -> None:
            with self._lock:
                self._on_connect = [x for x in self._on_connect if x is not hook]

        return remove

    def wait_event(
        self,
        predicate: Callable[[dict[str, Any]], bool],
        timeout: float | None = None,
        check: Callable[[], dict[str, Any] | None] | None = None,
    ) -> dict[str, Any]:
        """Wait for the first event that ``predicate`` accepts, and return it.

        ``check`` (optional) reads the state from the server, for an event that came before
        the wait began: a non-None answer ends the wait with it.
        """
        w = _Waiter(predicate)
        with self._lock:
            self._waiters.append(w)
        remove_hook: Callable[[], None] | None = None
        try:
            if check is not None:

                def recheck() -> None:
                    got = check()
                    if got is not None and w.message is None:
                        w.message = got
                        w.event.set()

                remove_hook = self.add_on_connect(recheck)
                recheck()
            if not w.event.wait(timeout):
                raise TimeoutError(f"no matching event within {timeout} s")
            assert w.message is not None
            return w.message
        finally:
            if remove_hook is not None:
                remove_hook()
            with self._lock, contextlib.suppress(ValueError):
                self._waiters.remove(w)

    # -------------------------------------------------------------- thread
    def _run(self) -> None:
        import asyncio

        loop = asyncio.new_event_loop()
        self._loop = loop
        try:
            loop.run_until_complete(self._main())
        finally:
            self._loop = None
            loop.close()

    async def _main(self) -> None:
        import asyncio

        from tornado.httpclient import HTTPRequest
        from tornado.websocket import websocket_connect

        loop = asyncio.get_running_loop()
        backoff = Backoff(0.05, maximum=5.0)
        first = True
        while not self._stopping:
            try:
                req = HTTPRequest(
                    self.client.ws_url,
                    connect_timeout=10,
                    request_timeout=None,
                    headers={"Authorization": f"Bearer {self.client.token}"},
                )
                conn = await websocket_connect(
                    req, ping_interval=20, ping_timeout=20, max_message_size=1 << 30
                )
                self._conn = conn
                if self._stopping:
                    conn.close()
                    break
                await conn.write_message(json.dumps({"subscribe": self.subscription}))
                backoff.reset()
                # ready once the service acknowledged the subscription ("subscribed")
                ack_by = loop.time() + 5.0
                ready = False
                while True:
                    timeout = None if ready else max(0.0, ack_by - loop.time())
                    try:
                        raw = await asyncio.wait_for(conn.read_message(), timeout)
                    except TimeoutError:
                        raw, msg = "", {"type": "subscribed"}  # a service that sends no ack
                    if raw is None:
                        self.last_error = (
                            f"stream closed ({conn.close_code} {conn.close_reason or ''})".strip()
                        )
                        break
                    if raw:
                        try:
                            msg = json.loads(raw)
                        except ValueError:
                            continue
                    if not isinstance(msg, dict):
                        continue
                    if not ready and msg.get("type") in ("subscribed", "error"):
                        if msg.get("type") == "error":
                            self.last_error = str(msg.get("error"))
                            break
                        ready = True
                        if not first:
                            self.reconnects += 1
                        first = False
                        self.connected.set()
                        self._resync()
                        continue
                    self._dispatch(msg)
            except Exception as exc:
                self.last_error = f"{type(exc).__name__}: {exc}"
            self.connected.clear()
            self._conn = None
            if self._stopping:
                break
            await asyncio.sleep(backoff.next())

    def _resync(self) -> None:
        with self._lock:
            hooks = list(self._on_connect)
        if not hooks:
            return

        def run() -> None:
            for hook in hooks:
                with contextlib.suppress(Exception):
                    hook()

        threading.Thread(target=run, name="idds-push-resync", daemon=True).start()

    def _dispatch(self, msg: dict[str, Any]) -> None:
        for listener in self._listeners:
            try:
                listener(msg)
            except Exception as exc:  # a listener's bug must not kill the channel
                self.last_error = f"listener {listener!r}: {type(exc).__name__}: {exc}"
        if self._waiters:
            with self._lock:
                waiters = list(self._waiters)
            for w in waiters:
                with contextlib.suppress(Exception):
                    w.offer(msg)
