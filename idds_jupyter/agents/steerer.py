"""Steerer: the server side of an HPO study, as iDDS's HPO steering.

A study submitted with ``"steer": "server"`` in its ``study`` parameters (what
:class:`idds_jupyter.hpo.Study` does when its sampler is one of Optuna's by name)
is driven here instead of from the notebook. As each trial's job ends, its JSON
result is told to the study's Optuna sampler, and the next point is asked and
added to the run, all in the server. The next trial therefore starts without a
round trip through the client: no push to the kernel, no request back.

A segment's trials are the jobs of one work, declared with every trial still to
come (``trial_<first>_<last>``): a new trial is one job added to it, one insert
claimed and sent as it commits, not a new work to grow the run by, plan and expand.

Only JSON crosses. The sampler works on the parameters it proposes and on the
value in each trial's JSON result. The objective stays an opaque blob (the
``payload`` the client uploaded once per segment), unpickled by the workers only;
each trial job gets its parameters as JSON keyword arguments.

With the in-process bus a pushed result is told, and the next trial added and sent
to a worker, in the thread that published the result (the backend's, as the worker's
result arrives): no wake-up of this agent's thread on the way. Anything else (a new
study, a poll, a step the publisher's thread cannot take at once) is this thread's.

The run is the study's record. After a restart the Steerer rebuilds every open
study from its trial works: finished trials are told to a new sampler (they never
run again), trials still in flight are waited for, and the study goes on. The
sampler runs outside any transaction, one step at a time (a lock).

Several runners may have the role: one steers a study at a time. It holds a
lease in the run's ``meta`` (owner, expiry), renewed at every poll; another takes
the study over once that owner is unregistered (stopped) or its lease expired.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import optuna
from optuna.trial import TrialState
from sqlalchemy import select, update

from idds_jupyter.agents.agent import Agent, Context
from idds_jupyter.bus import Subscription
from idds_jupyter.bus import event as ev
from idds_jupyter.bus.local import LocalSubscription
from idds_jupyter.model import WorkflowStatus
from idds_jupyter.model.parameter import literal
from idds_jupyter.model.space import (
    Space,
    frozen_trial,
    make_sampler,
    parse_trial_work,
    resumed_seed,
    space_from_json,
    summary_of,
    tell,
    trial_work_name,
)
from idds_jupyter.store.sql import db_now, for_update
from idds_jupyter.store.tables import agents, jobs, workflows, works
from idds_jupyter.store.workflows import WorkflowClosed
from idds_jupyter.store.works import WorkEnded

if TYPE_CHECKING:
    from idds_jupyter.core import Dispatch, Orchestrator

log = logging.getLogger("idds_jupyter.agents")

STEER = "server"
_FINAL = ("finished", "failed", "cancelled")
_RUNNING = (WorkflowStatus.NEW.value, WorkflowStatus.RUNNING.value)
LEASE_S = 30.0
_DB_NOW = select(db_now())
DISCOVER_S = 10.0  # every running run's parameters are read this often, not at every poll


@dataclass
class _Segment:
    name: str | None
    space: Space
    study: optuna.Study
    work: dict[str, Any]  # the template of its trial works: payload digests and options
    allocated: int = 0
    next_number: int = 0
    block: _Block | None = None  # the work its next trials are added to
    spare: list[_Trial] = field(default_factory=list)  # asked, their jobs never written


@dataclass
class _Block:
    """One work declared with every trial still to come: trial ``first + i`` is its job ``i``.
    A trial added there is one insert (:meth:`Orchestrator.add_jobs`), not a new work."""

    name: str
    first: int
    size: int
    filled: int  # its jobs written so far

    @property
    def room(self) -> int:
        return self.size - self.filled


@dataclass
class _Trial:
    seg: _Segment
    number: int
    trial: optuna.trial.Trial
    work: str


@dataclass
class _Study:
    id: int
    cfg: dict[str, Any]
    segments: dict[str | None, _Segment]
    pending: dict[tuple[str, int], _Trial] = field(default_factory=dict)  # (work, job idx)
    failures: list[str] = field(default_factory=list)
    failed: list[dict[str, Any]] = field(default_factory=list)  # their parameters, for the client
    error: str | None = None
    closed: bool = False  # by the client (stop()): no new point, the trials in flight finish

    @property
    def limit(self) -> int:
        return _in_flight(self.cfg)

    def summary(self) -> dict[str, Any]:
        """The run's result: the client's summary, and the parameters of failed trials."""
        return {**summary_of({n: s.study for n, s in self.segments.items()}), "failed": self.failed}


def steered(params: Any) -> dict[str, Any] | None:
    """The study configuration of a run steered by the server, else None."""
    cfg = params.get("study") if isinstance(params, dict) else None
    return cfg if isinstance(cfg, dict) and cfg.get("steer") == STEER else None


class Steerer(Agent):
    role = "steerer"
    wakes_on = (ev.JOB_RESULT, ev.WORKFLOW_NEW, ev.WORKFLOW_DIRTY, ev.WORKFLOW_TERMINAL)

    def __init__(self, ctx: Context, dispatch: Dispatch | None = None) -> None:
        super().__init__(ctx)
        self.dispatch = dispatch
        self.studies: dict[int, _Study] = {}
        self._orch: Orchestrator | None = None
        self._notes: dict[int, list[dict[str, Any]]] = {}  # pushed job results per study
        self._check: set[int] = set()  # studies whose run changed otherwise: read them
        self._candidates: set[int] = set()  # new open runs that may be studies
        self._next_scan = 0.0
        self._next_discovery = 0.0
        self._sub: Subscription | None = None
        self._lock = threading.Lock()  # one step at a time, in this thread or a publisher's
        self._woken = threading.Event()  # for this thread: events the publisher left to it
        self._inline = False  # pushed results are told in the publisher's thread
        self._put_pending = False  # events put since the last turn in a publisher's thread
        self._in_put = False  # the lock is held by such a turn (it takes them after its own)

    @property
    def orch(self) -> Orchestrator:
        """Adds the trial works and plans them as a client's ``add_works`` does."""
        if self._orch is None:
            from idds_jupyter.core import Orchestrator

            self._orch = Orchestrator(
                self.ctx.config,
                engine=self.ctx.engine,
                bus=self.ctx.bus,
                migrate=False,
                dispatch=self.dispatch,
            )
        return self._orch

    # Events unmerged (no Coordinator): each job.result event carries its jobs' JSON
    # results, and a study is told them as they come, with no query. A lost event costs
    # a poll's delay: every poll reads each study's ended trials from the store.
    def setup(self) -> None:
        # The server's studies are its own bookkeeping: Optuna's line for each one created
        # ("A new study created in memory") tells its log's reader nothing, and costs a write.
        optuna.logging.set_verbosity(optuna.logging.WARNING)
        self._sub = self.ctx.bus.subscribe(self.wakes_on)
        if isinstance(self._sub, LocalSubscription):
            self._inline = True
            self._sub.on_put = self._on_put

    def teardown(self) -> None:
        if isinstance(self._sub, LocalSubscription):
            self._sub.on_put = None
        if self._sub is not None:
            self._sub.close()

    def wait(self, timeout: float) -> None:
        assert self._sub is not None
        if not self._inline:
            self._take(self._sub.get(timeout))
            return
        self._woken.wait(timeout)
        self._woken.clear()
        with self._lock:
            self._take(self._sub.get(0))

    def _on_put(self) -> None:
        """In the publisher's thread: tell the pushed results and add the next trials now.

        Never on an event loop (a transaction would block it). While a turn runs in
        another publisher's thread, that thread takes these events too, after its own:
        results that come together are told in turn, with no other thread to wake.
        While this agent's own step runs, its thread is woken for them.
        """
        try:
            asyncio.get_running_loop()
            on_loop = True
        except RuntimeError:
            on_loop = False
        if on_loop or self.ctx.stop.is_set():
            self._woken.set()
            return
        self._put_pending = True  # before trying the lock: its holder looks after release
        while self._put_pending:
            if not self._lock.acquire(blocking=False):
                if not self._in_put:  # this agent's step (or nothing now): its thread will
                    self._woken.set()
                return
            try:
                self._in_put = True
                self._put_pending = False
                assert self._sub is not None
                self._take(self._sub.get(0))
                if self._notes:
                    notes, self._notes = self._notes, {}
                    self._steer(notes, set())
                if self._check or self._candidates or self._notes:
                    self._woken.set()
            finally:
                self._in_put = False
                self._lock.release()

    def _take(self, events: list[ev.Event]) -> None:
        """Note what the events ask: results to tell, runs to read, runs that may be studies."""
        for e in events:
            if e.key is None or not e.key.isdigit():
                continue
            wid = int(e.key)
            if wid in self.studies:
                if e.type == ev.JOB_RESULT:
                    if e.payload.get("jobs"):  # none: successes told before, now recorded
                        self._notes.setdefault(wid, []).extend(e.payload["jobs"])
                else:
                    self._check.add(wid)
            elif e.type == ev.WORKFLOW_NEW and e.payload.get("open"):
                self._candidates.add(wid)

    def step(self) -> bool:
        with self._lock:
            return self._step()

    def _step(self) -> bool:
        t = time.monotonic()
        if t >= self._next_scan:
            self._next_scan = t + self.ctx.config.poll_interval
            if t >= self._next_discovery:  # a restart, a lost event: studies not known yet
                self._next_discovery = t + DISCOVER_S
                self._scan()
            else:  # ours: leases renewed, ended ones forgotten by their check below
                self._discover(set(self.studies) | self._candidates)
            self._check |= set(self.studies)
        elif self._candidates:
            self._discover(self._candidates)
        self._candidates = set()
        notes, self._notes = self._notes, {}
        check, self._check = self._check, set()
        self._steer(notes, check)
        return False

    def _steer(self, notes: dict[int, list[dict[str, Any]]], check: set[int]) -> None:
        """Advance the studies with pushed results (``notes``) or to read (``check``)."""
        for wid in sorted((set(notes) | check) & set(self.studies)):
            try:
                self._advance(self.studies[wid], notes.get(wid, []), read=wid in check)
            except Exception:
                log.exception("steering study run %d failed; retrying", wid)
                self._check.add(wid)
                # told again at the retry (a trial told already is not pending any more):
                # a success pushed before its record may not be in the store yet
                self._notes.setdefault(wid, []).extend(notes.get(wid, []))

    # ------------------------------------------------------------- discovery
    def _scan(self) -> None:
        """The open studies of every running run, leases renewed; forget the ended ones
        and those another runner took over."""
        with self.ctx.engine.begin() as conn:
            rows = conn.execute(
                select(workflows.c.id, workflows.c.params).where(workflows.c.status.in_(_RUNNING))
            ).all()
        ids = {r.id for r in rows if steered(r.params)}
        for wid in set(self.studies) - ids:
            self.studies.pop(wid, None)
        self._discover(ids)

    def _discover(self, ids: set[int]) -> None:
        """Lease the open steered runs among ``ids`` (renew ours); load the new ones."""
        if not ids:
            return
        with self.ctx.engine.begin() as conn:
            rows = conn.execute(
                for_update(
                    conn,
                    select(
                        workflows.c.id, workflows.c.params, workflows.c.meta, workflows.c.status
                    ).where(workflows.c.id.in_(sorted(ids))),
                )
            ).all()
            live = {a for (a,) in conn.execute(select(agents.c.id))}
            mine = []
            t = conn.execute(_DB_NOW).scalar_one()  # leases expire on the database's clock
            for r in rows:
                meta = dict(r.meta or {})
                if r.status not in _RUNNING or not meta.get("open") or not steered(r.params):
                    continue
                lease = meta.get("steerer") or {}
                holder = lease.get("owner")
                if (
                    holder not in (None, self.ctx.owner)
                    and holder in live
                    and float(lease.get("expiry") or 0) > t
                ):
                    self.studies.pop(r.id, None)  # steered elsewhere
                    continue
                meta["steerer"] = {"owner": self.ctx.owner, "expiry": t + LEASE_S}
                conn.execute(update(workflows).where(workflows.c.id == r.id).values(meta=meta))
                mine.append(r)
        for r in mine:
            if r.id not in self.studies:
                self._load(r.id, steered(r.params) or {})

    def _load(self, wid: int, cfg: dict[str, Any]) -> None:
        """A study from its configuration and the trial works it already has."""
        try:
            study = self._build(wid, cfg)
        except Exception as exc:  # a configuration this server cannot run: say so, once
            log.exception("study run %d cannot be steered", wid)
            self.orch.close(
                wid, error=f"the server cannot steer this study: {type(exc).__name__}: {exc}"
            )
            return
        self.studies[wid] = study
        self._notes.setdefault(wid, [])  # advanced now, unread: it was read just above

    def _build(self, wid: int, cfg: dict[str, Any]) -> _Study:
        segments: dict[str | None, _Segment] = {}
        seed = cfg.get("seed")
        for i, (key, obj) in enumerate(cfg["objectives"].items()):
            name = key or None
            space = space_from_json(cfg["spaces"][key])
            smp = make_sampler(
                cfg["sampler"],
                None if seed is None else seed + i,
                space,
                cfg.get("sampler_options"),
                _in_flight(cfg),
            )
            st = optuna.create_study(
                direction=cfg["direction"], sampler=smp, study_name=f"{cfg['name']}.{key or 'main'}"
            )
            segments[name] = _Segment(name, space, st, dict(obj["work"]))
        study = _Study(wid, cfg, segments)
        with self.ctx.engine.begin() as conn:
            rows = conn.execute(
                select(
                    works.c.name,
                    jobs.c.idx,
                    jobs.c.status,
                    jobs.c.result,
                    jobs.c.kwargs,
                    jobs.c.error,
                )
                .select_from(jobs.join(works, works.c.id == jobs.c.work_id))
                .where(jobs.c.workflow_id == wid)
                .order_by(works.c.id, jobs.c.idx)
            ).all()
        done: dict[str | None, list[optuna.trial.FrozenTrial]] = {}
        waiting: list[tuple[_Segment, int, dict[str, Any], str, int]] = []
        for r in rows:
            parsed = parse_trial_work(r.name)
            if parsed is None or parsed[0] not in segments:
                continue
            seg = segments[parsed[0]]
            number = parsed[1] + int(r.idx)
            block = seg.block
            if block is None or parsed[1] > block.first:  # its latest trial work
                block = _new_block(seg, parsed[1], parsed[2] - parsed[1] + 1)
            if block.name == r.name:  # trials still to come go on there
                block.filled = max(block.filled, int(r.idx) + 1)
            params = dict((r.kwargs or {}).get("params") or {})
            seg.allocated += 1
            seg.next_number = max(seg.next_number, number + 1)
            if r.status not in _FINAL:
                waiting.append((seg, number, params, r.name, int(r.idx)))
                continue
            value = _objective(r.result) if r.status == "finished" else None
            if value is None:
                study.failures.append(f"{r.name}: {r.error or 'no objective in its result'}")
                study.failed.append({"work": r.name, "idx": int(r.idx), "params": params})
            done.setdefault(seg.name, []).append(
                frozen_trial(seg.space, params, value, number, r.name, resumed=True)
            )
        for i, seg in enumerate(segments.values()):
            if seg.name in done:
                seg.study.add_trials(done[seg.name])
                seg.study.sampler = make_sampler(
                    cfg["sampler"],
                    None if seed is None else resumed_seed(seed, i, seg.allocated),
                    seg.space,
                    cfg.get("sampler_options"),
                    _in_flight(cfg),
                )
        for seg, number, params, work, idx in waiting:
            seg.study.enqueue_trial(params, skip_if_exists=False)
            trial = seg.study.ask(seg.space)
            trial.set_user_attr("trial", number)
            study.pending[(work, idx)] = _Trial(seg, number, trial, work)
        return study

    # -------------------------------------------------------------- steering
    def _advance(self, study: _Study, notes: list[dict[str, Any]], read: bool = False) -> None:
        """Tell what ended, ask for every free slot, add those trials; end the study when done.

        ``notes``: the pushed results to tell (the run as last read: ours, closed or not). ``read``:
        the run and its ended trials are read from the store too. A success is pushed
        before it is recorded, so the store alone may not show it yet.
        """
        wid = study.id
        ended = [n for n in notes if n.get("status") in _FINAL]
        if read:
            names = sorted({w for w, _ in study.pending})
            with self.ctx.engine.begin() as conn:
                wf = conn.execute(
                    select(workflows.c.status, workflows.c.meta).where(workflows.c.id == wid)
                ).first()
                ended += (
                    [
                        dict(r)
                        for r in conn.execute(
                            select(
                                works.c.name.label("work"),
                                jobs.c.idx,
                                jobs.c.status,
                                jobs.c.result,
                                jobs.c.error,
                            )
                            .select_from(jobs.join(works, works.c.id == jobs.c.work_id))
                            .where(
                                jobs.c.workflow_id == wid,
                                jobs.c.status.in_(_FINAL),
                                works.c.name.in_(names),
                            )
                        ).mappings()
                    ]
                    if names
                    else []
                )
            lease = ((wf.meta or {}).get("steerer") or {}) if wf is not None else {}
            if wf is None or wf.status not in _RUNNING or lease.get("owner") != self.ctx.owner:
                self.studies.pop(wid, None)  # aborted, ended, or steered elsewhere
                return
            study.closed = study.closed or not (wf.meta or {}).get("open")
        for r in ended:
            t = study.pending.pop((str(r.get("work")), int(r.get("idx") or 0)), None)
            if t is None:
                continue
            result, error = r.get("result"), r.get("error")
            value = _objective(result) if r.get("status") == "finished" else None
            if value is not None:
                for k, v in ((result or {}).get("metrics") or {}).items():
                    t.trial.set_user_attr(f"metric_{k}", v)
                tell(t.seg.study, t.trial, value)
                continue
            msg = f"{t.work}: {error or 'no objective in its result'}"
            study.failures.append(msg)
            study.failed.append(
                {"work": t.work, "idx": int(r.get("idx") or 0), "params": dict(t.trial.params)}
            )
            t.trial.set_user_attr("error", str(error or "")[:500])
            tell(t.seg.study, t.trial, None, TrialState.FAIL)
            limit = study.cfg.get("max_failures")
            if limit is not None and len(study.failures) > int(limit) and study.error is None:
                study.error = (
                    f"study {study.cfg['name']}: {len(study.failures)} trials failed; "
                    f"the last: {msg}"
                )
        new, more = self._ask(study) if not study.closed and study.error is None else ([], [])
        if new or more:
            # what is not written yet: trials asked here but with no job in the store
            unwritten = [(b.name, 0, kw) for _, b, kw in new] + list(more)
            try:
                for seg, block, kwargs_list in new:  # one at a time: each is expanded in its own
                    # transaction, so its jobs exist (and it runs) when the next trials join it
                    self._add_block(study, seg, block, kwargs_list)
                    unwritten.pop(0)
                for name, start, kwargs_list in more:
                    try:
                        self.orch.add_jobs(wid, name, start, kwargs_list)
                    except WorkEnded as exc:
                        if not exc.run_active:
                            raise
                        self._rehome(study, name, start, kwargs_list)  # the work was aborted
                    unwritten.pop(0)
            except WorkflowClosed:  # the run was aborted or ended meanwhile
                self.studies.pop(wid, None)
            except Exception:  # the store is down (a restart): these trials go out next turn
                for name, start, kwargs_list in unwritten:
                    self._unask(study, name, start, len(kwargs_list))
                raise
        elif not study.pending:
            self.studies.pop(wid, None)
            if not study.closed:  # the client stopping the study closed it already
                self.orch.close(wid, result=study.summary(), error=study.error)

    def _unask(self, study: _Study, work: str, start: int, n: int) -> None:
        """Trials ``start`` … of ``work`` whose jobs were not written: asked again next turn.

        They leave the trials in flight (none of them would ever end: the study would wait
        for them for good) and go back to their segment, to be sent with the same numbers
        and points when the store is back.
        """
        back = [study.pending.pop((work, start + i), None) for i in range(n)]
        trials = [t for t in back if t is not None]
        if not trials:
            return
        seg = trials[0].seg
        seg.spare[:0] = trials
        seg.allocated -= len(trials)
        seg.next_number = min(seg.next_number, trials[0].number)
        if seg.block is not None and seg.block.name == work:
            seg.block.filled = min(seg.block.filled, start)

    def _rehome(
        self, study: _Study, work: str, start: int, kwargs_list: list[dict[str, Any]]
    ) -> None:
        """Trials that could not join their work (it was aborted alone): a new work for them
        and the trials still to come of their segment."""
        moved = [study.pending.pop((work, start + i)) for i in range(len(kwargs_list))]
        seg = moved[0].seg
        block = _new_block(seg, moved[0].number, int(study.cfg["max_trials"]) - moved[0].number)
        block.filled = len(moved)
        for i, t in enumerate(moved):
            t.work = block.name
            study.pending[(block.name, i)] = t
        self._add_block(study, seg, block, kwargs_list)

    def _add_block(
        self, study: _Study, seg: _Segment, block: _Block, kwargs_list: list[dict[str, Any]]
    ) -> None:
        """A segment's new trial work, with its first trials, declared with all to come.

        The trials' parameters are data: a work's ``kwargs_list`` is a template (its
        ``{placeholders}`` are substituted), so their strings go escaped (a choice ``"b}"``).
        """
        self.orch.add_works(
            study.id,
            [{**seg.work, "name": block.name, "kwargs_list": literal(kwargs_list)}],
            declared={block.name: block.size},
        )

    def _ask(
        self, study: _Study
    ) -> tuple[
        list[tuple[_Segment, _Block, list[dict[str, Any]]]],
        list[tuple[str, int, list[dict[str, Any]]]],
    ]:
        """Points for the free slots: ``(new works: (segment, block, kwargs), jobs added to a
        work: (name, first job index, kwargs))``. A segment's trials are the jobs of one
        work declared with all trials to come; each turn adds the new ones to it."""
        batches: dict[str | None, list[_Trial]] = {}
        n = len(study.pending)
        max_trials = int(study.cfg["max_trials"])
        while n < study.limit:
            open_ = [s for s in study.segments.values() if s.allocated < max_trials]
            if not open_:
                break
            in_flight = {s.name: 0 for s in study.segments.values()}
            for t in study.pending.values():
                in_flight[t.seg.name] += 1
            for b in batches.values():
                in_flight[b[0].seg.name] += len(b)
            seg = min(open_, key=lambda s: (in_flight[s.name], s.allocated))
            trial = seg.spare.pop(0).trial if seg.spare else seg.study.ask(seg.space)
            number = seg.next_number
            seg.next_number += 1
            seg.allocated += 1
            trial.set_user_attr("trial", number)
            batches.setdefault(seg.name, []).append(_Trial(seg, number, trial, ""))
            n += 1
        new: list[tuple[_Segment, _Block, list[dict[str, Any]]]] = []
        more: list[tuple[str, int, list[dict[str, Any]]]] = []
        for batch in batches.values():
            seg = batch[0].seg
            block = seg.block
            if block is None or block.room < len(batch):  # a new work for all trials to come
                block = _new_block(
                    seg, batch[0].number, max(len(batch), max_trials - batch[0].number)
                )
            start = block.filled
            grows = start == 0  # the work itself is new: it goes out with these trials
            kwargs_list = []
            for t in batch:
                t.work = block.name
                study.pending[(block.name, t.number - block.first)] = t
                meta = {
                    "trial": t.number,
                    "segment": seg.name,
                    "final": True,
                    "key": study.cfg.get("key"),
                    "step": None,
                    "budget": None,
                }
                kwargs_list.append({"params": t.trial.params, "meta": meta})  # a copy
            block.filled += len(batch)
            if grows:
                new.append((seg, block, kwargs_list))
            else:
                more.append((block.name, start, kwargs_list))
        return new, more


def _in_flight(cfg: dict[str, Any]) -> int:
    """How many trials the study keeps in flight (its sampler is built for that many)."""
    return int(cfg.get("parallel") or 1) + int(cfg.get("prefetch") or 0)


def _new_block(seg: _Segment, first: int, size: int) -> _Block:
    """The work a segment's trials ``first`` … ``first + size - 1`` go to, from now on."""
    seg.block = _Block(trial_work_name(seg.name, first, first + size - 1), first, size, 0)
    return seg.block


def _objective(result: Any) -> float | None:
    """The value of a trial's JSON result (None when it has none)."""
    if isinstance(result, dict) and isinstance(result.get("objective"), int | float):
        return float(result["objective"])
    return None
