"""Receiver: records a backend's results in bulk, with the Trigger and Finisher in the same transaction."""

from __future__ import annotations

import logging
import time
from collections import defaultdict
from typing import Any

from idds_jupyter.agents.agent import Agent, Context
from idds_jupyter.agents.carrier import CarrierState
from idds_jupyter.agents.carrier.finisher import terminal_events
from idds_jupyter.agents.clerk import note_planned
from idds_jupyter.bus import event as ev
from idds_jupyter.bus.event import make_event
from idds_jupyter.store.cache import record_blobs
from idds_jupyter.store.jobs import Outcome, mark_running, record_results
from idds_jupyter.store.workflows import is_small, plan_dirty

log = logging.getLogger("idds_jupyter.agents")

START_GRACE_S = 0.005
PUSH_FIRST_S = 0.001


class Receiver(Agent):
    role = "receiver"

    def __init__(self, ctx: Context, state: CarrierState, backend: str) -> None:
        super().__init__(ctx)
        self.name = f"idds-receiver-{backend}"
        self.state = state
        self.backend = state.backends[backend]

    def wait(self, timeout: float) -> None:
        pass  # results() below blocks; nothing else to wait for

    def step(self) -> bool:
        got = self.backend.results(timeout=0.2)
        if self.ctx.stop.is_set() and not got:
            return False
        # Gather what else arrived meanwhile: bigger transactions, fewer commits.
        while got and len(got) < self.ctx.config.batch * 4:
            more = self.backend.results(timeout=0)
            if not more:
                break
            got += more
        if not got:
            return False
        if all("ok" not in r for r in got):
            # Only "started" notes: a short job's result is usually right behind them.
            # Waiting a moment records both in one transaction instead of two.
            got += self.backend.results(timeout=START_GRACE_S)
        results = [r for r in got if "ok" in r]
        ended = {int(r["job_id"]) for r in results}
        started = [(int(r["job_id"]), int(r["attempt"]), float(r.get("started_at") or 0))
                   for r in got if r.get("started") is True and "ok" not in r
                   and int(r["job_id"]) not in ended]
        out = Outcome()
        with self.ctx.engine.begin() as conn:
            if started:
                mark_running(conn, self.ctx.owner, started)
            if results:
                out = record_results(conn, self.ctx.owner, results)
            if out.blobs:  # pickled values the workers wrote into the cache directory
                record_blobs(conn, out.blobs, kind="result")
        if results:
            with self.state.lock:
                for r in results:
                    self.state.in_flight.pop(int(r["job_id"]), None)
            self.state.room.set()
        # Small workflows whose work just ended (a function call, a map) are planned
        # here, right after their results went out, instead of waking the Clerk later
        # into the next call's way; the others are the Clerk's, as ever.
        small = {wf for wf in out.dirty_workflows if is_small(self.ctx.engine, wf)}
        self.ctx.publish(result_events(out, hold=small))
        if small:
            # Let the stream's threads (they need the GIL) push the results out first.
            time.sleep(PUSH_FIRST_S)
            self._plan(small, out)
        return True

    def _plan(self, small: set[int], out: Outcome) -> None:
        events = [e for e in terminal_events(out) if e.key is not None and int(e.key) in small
                  and e.type == ev.WORK_TERMINAL]
        try:
            with self.ctx.engine.begin() as conn:
                for applied in plan_dirty(conn, small):
                    events += note_planned(conn, applied)
        except Exception:  # the store still says dirty: the Clerk plans them
            log.exception("planning %d workflows after their results failed", len(small))
            events += [make_event(ev.WORKFLOW_DIRTY, str(wf)) for wf in small]
        self.ctx.publish(events)


def result_events(out: Outcome, hold: set[int] | frozenset[int] = frozenset()) -> list[Any]:
    """Per-job results first: a waiting caller is told before the Clerk's next round.

    ``hold``: workflows planned right after this, whose work-ended events go out then.
    """
    events: list[Any] = []
    if out.released or out.retried:
        events.append(make_event(ev.JOBS_READY))
    by_wf: dict[int, list[dict[str, Any]]] = defaultdict(list)
    for note in out.job_results:
        by_wf[note["workflow_id"]].append(note)
    events += [make_event(ev.JOB_RESULT, str(wf), jobs=notes) for wf, notes in by_wf.items()]
    return events + [e for e in terminal_events(out)
                     if e.key is None or int(e.key) not in hold]
