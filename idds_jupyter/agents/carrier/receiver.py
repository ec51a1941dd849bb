"""Receiver: records a backend's results in bulk, with the Trigger and Finisher in the same transaction."""

from __future__ import annotations

import time
from collections import defaultdict
from typing import Any

from idds_jupyter.agents.agent import Agent, Context
from idds_jupyter.agents.carrier import CarrierState
from idds_jupyter.agents.carrier.finisher import terminal_events
from idds_jupyter.bus import event as ev
from idds_jupyter.bus.event import make_event
from idds_jupyter.store.cache import grant_job_blobs, record_blobs
from idds_jupyter.store.jobs import Outcome, finished_note, mark_running, record_results

# A job's "started" note is written at the latest this long after it arrived: with the
# next results when some come sooner (one transaction, not two), or on its own. A job
# that ends within it is recorded once, started and ended together.
STARTED_WITHIN_S = 0.25
# Successes told early are recorded at the latest this long after the first of them
# arrived. The caller or the Steerer they woke writes its next submission meanwhile,
# first (SQLite has one writer), and the results that come in that time share one
# transaction: a loop of calls pays one record for several. That is for runs of
# independent works (function calls, maps, studies), whose records release nothing; a
# success other jobs may wait for (a DAG's) is recorded within TOLD_CHAINED_S. A run
# closed while its last results wait is recorded at once (``CarrierState.hurried``).
TOLD_WITHIN_S = 0.03
TOLD_CHAINED_S = 0.003


class Receiver(Agent):
    role = "receiver"

    def __init__(self, ctx: Context, state: CarrierState, backend: str) -> None:
        super().__init__(ctx)
        self.name = f"idds-receiver-{backend}"
        self.state = state
        self.backend = state.backends[backend]
        self._starts: dict[int, tuple[int, float]] = {}  # job id -> (attempt, started_at)
        self._starts_since = 0.0  # when the oldest of those arrived
        self._told: dict[int, int] = {}  # successes told before their record: job -> workflow
        self._chained: set[int] = set()  # those whose record may release other jobs
        self._held: list[dict[str, Any]] = []  # those received, to record by the deadline
        self._held_since = 0.0
        self._held_for = TOLD_WITHIN_S  # TOLD_CHAINED_S once a chained success is held
        self._hurried = 0  # the last CarrierState.hurried acted on

    def setup(self) -> None:
        # told in the backend's own thread as results arrive: no wake-up of this one first
        self.backend.set_listener(self._announce)

    def teardown(self) -> None:
        self.backend.set_listener(None)

    def wait(self, timeout: float) -> None:
        pass  # results() below blocks; nothing else to wait for

    def step(self) -> bool:
        wait = 0.2
        if self._starts:
            wait = max(0.0, min(wait, self._starts_since + STARTED_WITHIN_S - time.monotonic()))
        if self._held:
            wait = (
                0.0
                if self._hurried_now()
                else max(0.0, min(wait, self._held_since + self._held_for - time.monotonic()))
            )
        got = self.backend.results(timeout=wait)
        if self.ctx.stop.is_set() and not got and not self._starts and not self._held:
            return False
        # Gather what else arrived meanwhile: bigger transactions, fewer commits.
        while got and len(got) < self.ctx.config.batch * 4:
            more = self.backend.results(timeout=0)
            if not more:
                break
            got += more
        results = [r for r in got if "ok" in r]
        for r in got:
            if r.get("started") is True and "ok" not in r:
                if not self._starts:
                    self._starts_since = time.monotonic()
                self._starts[int(r["job_id"])] = (
                    int(r["attempt"]),
                    float(r.get("started_at") or time.time()),  # a backend that gives none
                )
        for r in results:
            self._starts.pop(int(r["job_id"]), None)
        with self.state.lock:
            early = {int(r["job_id"]) for r in results if int(r["job_id"]) in self._told}
            chained = bool(early & self._chained)
        if early:
            if not self._held:
                self._held_since = time.monotonic()
                self._held_for = TOLD_WITHIN_S
            if chained:
                self._held_for = TOLD_CHAINED_S
            self._held += [r for r in results if int(r["job_id"]) in early]
            results = [r for r in results if int(r["job_id"]) not in early]
        t = time.monotonic()
        stop = self.ctx.stop.is_set()
        due = bool(self._starts) and (stop or t >= self._starts_since + STARTED_WITHIN_S)
        held_due = bool(self._held) and (
            stop
            or t >= self._held_since + self._held_for
            or len(self._held) >= self.ctx.config.batch
            or self._hurried_now()
        )
        if not results and not due and not held_due:
            return bool(got)
        if held_due:
            self._hurried = self.state.hurried
        results += self._held  # with anything else that is written now
        self._held = []
        started = [(jid, att, t) for jid, (att, t) in self._starts.items()]
        self._starts = {}
        # a job sent ahead of its row (an HPO trial) may end first: its row is a moment away
        self.state.wait_written({int(r["job_id"]) for r in results} | {j for j, _, _ in started})
        with self.state.lock:
            told = {
                j: self._told.pop(j) for j in (int(r["job_id"]) for r in results) if j in self._told
            }
            self._chained.difference_update(told)
        out = Outcome()
        try:
            with self.ctx.engine.begin() as conn:
                if started:
                    mark_running(conn, self.ctx.owner, started)
                if results:
                    out = record_results(conn, self.ctx.owner, results)
                if out.blobs:  # pickled values the workers wrote into the cache directory
                    record_blobs(conn, out.blobs, kind="result")
                    # readable by the run's owner (and that owner's jobs), by no one else
                    grant_job_blobs(
                        conn,
                        [
                            (r[k], int(r["job_id"]))
                            for r in results
                            for k in ("blob", "error_blob")
                            if r.get(k)
                        ],
                    )
        except BaseException:
            # Nothing was recorded (the database went away, say): keep the results for the
            # next step. Dropped, their jobs would stay in flight for good, their locks
            # renewed by this live agent, never reclaimed.
            self._held = results + self._held
            self._held_since, self._held_for = time.monotonic(), 0.0
            for jid, att, at in started:
                self._starts.setdefault(jid, (att, at))
            if started:
                self._starts_since = time.monotonic() - STARTED_WITHIN_S
            with self.state.lock:
                self._told.update(told)
            raise
        if results:
            with self.state.lock:
                for r in results:
                    self.state.in_flight.pop(int(r["job_id"]), None)
            self.state.room.set()
        if told:
            out.job_results = [n for n in out.job_results if n["job_id"] not in told]
        # Workflows whose work ended are planned by the Clerk, after it lets a burst
        # of endings settle: off the path of the next call, many in one transaction.
        events = result_events(out)
        # Views that re-read a run on its events see the successes told early once
        # they are recorded: an empty job.result, unless the run has another event now.
        moved = {e.key for e in events}
        events += [
            make_event(ev.JOB_RESULT, key, jobs=[], recorded=True)
            for key in sorted({str(wf) for wf in told.values()} - moved)
        ]
        self.ctx.publish(events)
        return True

    def _hurried_now(self) -> bool:
        """A run was closed since the last record (:meth:`Submitter.hurry`) and every
        success told is here to be recorded: its end need not wait for ``TOLD_WITHIN_S``.
        (A success is told before it is queued for this thread: the close it prompted
        can come first.)"""
        if self.state.hurried == self._hurried:
            return False
        with self.state.lock:
            return len(self._told) <= len(self._held)

    def _announce(self, results: list[dict[str, Any]]) -> None:
        """Tell waiting callers of successes before recording them, as the worker's
        value is final: a call returns without waiting for the Receiver's transaction.
        Runs in the backend's thread that received the results (see :meth:`setup`).

        Only the jobs this Carrier holds at that attempt; a value stored as a blob waits
        for its row. Execution stays at-least-once: should the record not take the
        result (the run was aborted meanwhile, the server stopped before the commit),
        the caller has the value of an attempt that ran, and the store the truth.
        The jobs told are kept (with their workflows) for :meth:`step` to know.
        """
        notes = []
        with self.state.lock:
            for r in results:
                if not r.get("ok") or r.get("blob"):
                    continue
                held = self.state.in_flight.get(int(r["job_id"]))
                if held is not None and held.attempt == r.get("attempt"):
                    notes.append(finished_note(held.note, r))
                    self._told[held.note["job_id"]] = held.note["workflow_id"]
                    if not held.alone:
                        self._chained.add(held.note["job_id"])
                    del self.state.in_flight[held.note["job_id"]]  # its slot is free now
        if notes:
            self.state.room.set()
            self.ctx.publish(job_result_events(notes))


def result_events(out: Outcome) -> list[Any]:
    """Per-job results first: a waiting caller is told before the Clerk's next round."""
    events: list[Any] = []
    if out.released or out.retried:
        events.append(make_event(ev.JOBS_READY))
    return events + job_result_events(out.job_results) + terminal_events(out)


def job_result_events(notes: list[dict[str, Any]]) -> list[Any]:
    """One ``job.result`` event per workflow."""
    by_wf: dict[int, list[dict[str, Any]]] = defaultdict(list)
    for note in notes:
        by_wf[note["workflow_id"]].append(note)
    return [make_event(ev.JOB_RESULT, str(wf), jobs=jobs) for wf, jobs in by_wf.items()]
