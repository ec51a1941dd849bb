"""Conductor: delivers outbound notifications (run ended, work ended, files processed) to the
bus, and those of the configured ``notify_kinds`` to webhooks and to STOMP brokers
(``notify_urls`` entries ``stomp://HOST:PORT/DESTINATION``)."""

from __future__ import annotations

import json
import logging
import urllib.request

from sqlalchemy import bindparam, select, update

from idds_jupyter.agents.agent import Agent
from idds_jupyter.bus import event as ev
from idds_jupyter.bus.event import make_event
from idds_jupyter.store.sql import Locked, among, now
from idds_jupyter.store.tables import messages

log = logging.getLogger("idds_jupyter.agents")
NOTIFICATION = "notification"  # what subscribers outside the core listen to


_NEW_MESSAGES = Locked(
    select(messages).where(messages.c.status == "new").order_by(messages.c.id).limit(100),
    skip_locked=True,
)
_SENT = update(messages).where(among(messages.c.id)).values(status="sent", sent_at=bindparam("t"))


# Outbound notifications are not on anyone's critical path: batch them wider.
NOTIFY_SETTLE_FACTOR = 5


class Conductor(Agent):
    role = "conductor"
    wakes_on = (ev.MESSAGE_NEW,)

    def wait(self, timeout: float) -> None:
        super().wait(timeout)
        if self.ctx.config.settle > 0:  # notifications of a burst go out together
            self.ctx.stop.wait(NOTIFY_SETTLE_FACTOR * self.ctx.config.settle)

    def step(self) -> bool:
        with self.ctx.engine.begin() as conn:
            rows = conn.execute(_NEW_MESSAGES.on(conn)).mappings().all()
            if not rows:
                return False
            for row in rows:
                self._deliver(dict(row["payload"] or {}), row["kind"])
            conn.execute(_SENT, {"ids": [r["id"] for r in rows], "t": now()})
        return len(rows) == 100

    def _deliver(self, payload: dict[str, object], kind: str) -> None:
        self.ctx.publish([make_event(NOTIFICATION, None, kind=kind, **payload)])
        if kind not in self.ctx.config.notify_kinds:  # kept, and on the bus; not sent out
            return
        body = json.dumps({"kind": kind, **payload}).encode()
        for url in self.ctx.config.notify_urls:
            if url.startswith("stomp://"):  # a message broker (idds_jupyter.data.stomp)
                from idds_jupyter.data.stomp import notify_stomp

                notify_stomp(url, kind, payload)
                continue
            try:
                req = urllib.request.Request(
                    url, data=body, headers={"Content-Type": "application/json"}
                )
                urllib.request.urlopen(req, timeout=5).close()
            except OSError as exc:  # a dead webhook must not stop delivery to the others
                log.warning("notification to %s failed: %s", url, exc)
