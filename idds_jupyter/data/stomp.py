"""STOMP messaging of the data carousel: Rucio's messages in, notifications out.

:class:`StompListener` receives Rucio's messages (Hermes sends them to ActiveMQ: JSON
with ``event_type``, ``payload``, ``created_at``) — the fast path of
:class:`~idds_jupyter.data.rucio.RucioSource`. :class:`StompNotifier` sends this
service's outbound notifications (run and work ended, files processed) to a broker, as
iDDS's Conductor does: a ``notify_urls`` entry ``stomp://HOST:PORT/DESTINATION`` (query
``vhost``, ``user``, ``password``) makes the Conductor send each notification there,
beside the bus and the webhooks. Needs ``stomp.py`` (the ``rucio`` extra).
"""

from __future__ import annotations

import contextlib
import json
import logging
import threading
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

log = logging.getLogger("idds_jupyter.data.stomp")

__all__ = ["StompListener", "StompNotifier", "hermes_message", "notify_stomp"]

INSTALL_HINT = "pip install 'idds-jupyter[rucio]'"


def hermes_message(
    event_type: str, payload: Mapping[str, Any], created_at: str | None = None
) -> str:
    """A message body as Rucio's Hermes sends it to ActiveMQ (event type, payload, time)."""
    return json.dumps(
        {
            "event_type": event_type.lower(),
            "payload": dict(payload),
            "created_at": created_at or time.strftime("%Y-%m-%d %H:%M:%S.000000"),
        }
    )


def _brokers(spec: Iterable[str]) -> list[tuple[str, int]]:
    out = []
    for b in spec:
        host, _, port = b.rpartition(":")
        out.append((host or "127.0.0.1", int(port or 61613)))
    return out


def _stomp_connection(
    brokers: Sequence[str], user: str | None, password: str | None, vhost: str | None
) -> Any:
    try:
        import stomp
    except ImportError as exc:  # pragma: no cover - the extra is missing
        raise ModuleNotFoundError(f"STOMP messaging needs stomp.py: {INSTALL_HINT}") from exc
    return stomp.Connection12(
        _brokers(brokers), vhost=vhost, heartbeats=(0, 0), reconnect_attempts_max=1
    )


class StompListener:
    """Rucio's messages from a STOMP broker (the fast path): each one is handed to
    ``on_message(event_type, payload)`` in the broker connection's thread. A dropped
    connection is reconnected by :meth:`ensure` (called from the poll loop): messages
    sent meanwhile are lost, and the poll finds their files later."""

    def __init__(
        self,
        brokers: Sequence[str],
        destination: str,
        on_message: Callable[[str, dict[str, Any]], None],
        user: str | None = None,
        password: str | None = None,
        vhost: str | None = None,
    ) -> None:
        self.brokers, self.destination, self.on_message = list(brokers), destination, on_message
        self.user, self.password, self.vhost = user, password, vhost
        self.received = 0
        self._conn: Any = None

    def ensure(self) -> bool:
        """Connected and subscribed (connects when not); False when the broker is down."""
        if self._conn is not None and self._conn.is_connected():
            return True
        try:
            conn = _stomp_connection(self.brokers, self.user, self.password, self.vhost)
            conn.set_listener("idds", _Listener(self))
            conn.connect(self.user, self.password, wait=True)
            conn.subscribe(self.destination, id="idds-carousel", ack="auto")
        except Exception as exc:
            log.warning("STOMP broker %s not reachable: %s (polling goes on)", self.brokers, exc)
            return False
        self._conn = conn
        return True

    def close(self) -> None:
        if self._conn is not None:
            with contextlib.suppress(Exception):  # already gone
                self._conn.disconnect()
            self._conn = None


class _Listener:
    def __init__(self, owner: StompListener) -> None:
        self.owner = owner

    def on_message(self, frame: Any) -> None:
        try:
            msg = json.loads(frame.body)
            event_type = str(msg.get("event_type") or frame.headers.get("event_type") or "").lower()
            payload = msg.get("payload") or {}
        except (ValueError, AttributeError):
            log.warning("ignored a STOMP message that is not Rucio's JSON: %.200r", frame.body)
            return
        self.owner.received += 1
        try:
            self.owner.on_message(event_type, payload)
        except Exception:
            log.exception("handling Rucio message %s", event_type)

    def on_error(self, frame: Any) -> None:
        log.warning("STOMP error: %s", getattr(frame, "body", frame))


class StompNotifier:
    """Outbound notifications over STOMP (as iDDS's Conductor): run and work ended, files
    processed — one JSON message each, sent to ``destination`` with the event's type in
    the ``event_type`` header. Sending never raises: an unreachable broker is logged."""

    def __init__(
        self,
        brokers: Sequence[str],
        destination: str,
        user: str | None = None,
        password: str | None = None,
        vhost: str | None = None,
    ) -> None:
        self.brokers, self.destination = list(brokers), destination
        self.user, self.password, self.vhost = user, password, vhost
        self._conn: Any = None
        self._lock = threading.Lock()
        self.sent = 0

    def send(self, event_type: str, payload: Mapping[str, Any]) -> bool:
        body = json.dumps(
            {"event_type": event_type, "payload": dict(payload), "created_at": time.time()},
            default=str,
        )
        with self._lock:
            for _ in range(2):
                try:
                    if self._conn is None or not self._conn.is_connected():
                        conn = _stomp_connection(self.brokers, self.user, self.password, self.vhost)
                        conn.connect(self.user, self.password, wait=True)
                        self._conn = conn
                    self._conn.send(
                        destination=self.destination,
                        body=body,
                        headers={"event_type": event_type, "persistent": "true"},
                    )
                    self.sent += 1
                    return True
                except Exception as exc:
                    log.warning("STOMP notification %s not sent: %s", event_type, exc)
                    self._conn = None
        return False

    def close(self) -> None:
        with self._lock:
            if self._conn is not None:
                with contextlib.suppress(Exception):  # already gone
                    self._conn.disconnect()
                self._conn = None


_NOTIFIERS: dict[str, StompNotifier] = {}
_NOTIFIERS_LOCK = threading.Lock()


def notify_stomp(url: str, kind: str, payload: Mapping[str, Any]) -> bool:
    """Send one notification to ``stomp://HOST:PORT/DESTINATION?vhost=&user=&password=``
    (one connection per URL, kept); False when the broker could not be reached."""
    with _NOTIFIERS_LOCK:
        notifier = _NOTIFIERS.get(url)
        if notifier is None:
            u = urlsplit(url)
            q = {k: v[0] for k, v in parse_qs(u.query).items()}
            dest = unquote(u.path) or "/topic/idds.notifications"
            notifier = StompNotifier(
                [f"{u.hostname or '127.0.0.1'}:{u.port or 61613}"],
                dest,
                q.get("user") or u.username,
                q.get("password") or u.password,
                q.get("vhost"),
            )
            _NOTIFIERS[url] = notifier
    return notifier.send(kind, payload)
