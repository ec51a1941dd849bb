"""Poller: heart-beats this Carrier's locks, reclaims jobs of silent owners, cancels aborted jobs."""

from __future__ import annotations

import time
from collections import defaultdict

from sqlalchemy import select, update
from sqlalchemy.engine import Connection

from idds_jupyter.agents.agent import Agent, Context
from idds_jupyter.agents.carrier import CarrierState
from idds_jupyter.bus import DbBus
from idds_jupyter.bus import event as ev
from idds_jupyter.bus.event import make_event
from idds_jupyter.store.jobs import CANCELLED, reclaim_expired, renew_locks
from idds_jupyter.store.sql import chunks, db_now
from idds_jupyter.store.tables import agents, jobs

_AGENTS = select(agents.c.id, agents.c.heartbeat)


class Poller(Agent):
    role = "poller"
    wakes_on = (ev.JOBS_CANCEL, ev.CONTROL)

    def __init__(self, ctx: Context, state: CarrierState) -> None:
        super().__init__(ctx)
        self.state = state
        self._last_beat = 0.0
        self._last_prune = 0.0
        # agent id -> (its heartbeat as last read, this process's monotonic time when it
        # was seen to change): who is alive, measured without any wall clock
        self._seen: dict[str, tuple[float, float]] = {}

    def step(self) -> bool:
        ttl = self.ctx.config.lock_ttl
        if time.monotonic() - self._last_beat >= ttl / 3:
            self._last_beat = time.monotonic()
            with self.ctx.engine.begin() as conn:
                conn.execute(
                    update(agents).where(agents.c.id == self.ctx.owner).values(heartbeat=db_now())
                )
                renew_locks(conn, self.ctx.owner, ttl)
            with self.ctx.engine.begin() as conn:
                if reclaim_expired(conn, self._alive(conn, ttl)):
                    self.ctx.publish([make_event(ev.JOBS_READY)])
        self._cancel_aborted()
        self._prune_events()
        return False

    def _alive(self, conn: Connection, ttl: float) -> list[str]:
        """The agents whose heartbeat changed within the last ``ttl`` s of this process's
        monotonic clock (this one included). Their locks are not reclaimed even if they
        look expired: a clock that jumps (the database's, a host's) moves every expiry
        at once, but not the heart-beats an owner goes on writing. One never seen to
        change (SIGKILLed) is alive only for ``ttl`` from when it was first seen."""
        t = time.monotonic()
        seen: dict[str, tuple[float, float]] = {}
        for aid, beat in conn.execute(_AGENTS):
            prev = self._seen.get(aid)
            seen[aid] = (beat, t if prev is None or prev[0] != beat else prev[1])
        self._seen = seen
        return [aid for aid, (_, since) in seen.items() if t - since < ttl]

    def _prune_events(self) -> None:
        """The database bus keeps its rows an hour: enough for any late subscriber."""
        if isinstance(self.ctx.bus, DbBus) and time.monotonic() - self._last_prune > 300:
            self._last_prune = time.monotonic()
            self.ctx.bus.prune(3600)

    def wait(self, timeout: float) -> None:
        super().wait(min(timeout, self.ctx.config.lock_ttl / 3))

    def _cancel_aborted(self) -> None:
        with self.state.lock:
            held = list(self.state.in_flight.items())
        if not held:
            return
        gone: list[int] = []
        with self.ctx.engine.begin() as conn:
            for part in chunks([j for j, _ in held]):
                gone += [
                    r[0]
                    for r in conn.execute(
                        select(jobs.c.id).where(
                            jobs.c.id.in_(list(part)), jobs.c.status == CANCELLED
                        )
                    )
                ]
        if not gone:
            return
        per_backend: dict[str, list[int]] = defaultdict(list)
        with self.state.lock:
            for j in gone:
                entry = self.state.in_flight.pop(j, None)
                if entry is not None:
                    per_backend[entry.backend].append(j)
        for name, ids in per_backend.items():
            self.state.backends[name].cancel(ids)
        self.state.room.set()
