"""Distributed hyper-parameter optimisation: a :class:`Study` is a run, each trial a job of it.

::

    from idds_jupyter.hpo import Study, uniform, loguniform

    def objective(x1, x2):
        return (x1 - 1) ** 2 + (x2 + 2) ** 2

    study = Study(objective, {"x1": uniform(-5, 5), "x2": uniform(-5, 5)},
                  direction="minimize", max_trials=100, parallel=8, sampler="tpe", seed=1)
    df = study.optimize()          # a pandas DataFrame, one row per trial
    study.best_value, study.best_params

How it runs (``steer="client"``). The study submits an *open* workflow (its run) and drives it from
a thread of this process, as a ``@workflow`` body does: it asks Optuna for a
point (``study.ask``), adds a job that evaluates the objective there
(:func:`idds_jupyter.hpo.trial.run_trial`) to the segment's current work
``trial_<first>_<last>``, declared with the next few rounds of trials (trial
``first + i`` is its job ``i``, its JSON arguments one small request), and
keeps ``parallel`` trials in flight — each pushed result is told to Optuna
(``study.tell``) and a new point is asked for at once (asynchronous, no
generations). The samplers are Optuna's (TPE, GP, CMA-ES, random, grid).

Segments (as PanDA's segmented HPO): ``segments={"svm": space_a, "rf": space_b}``
optimises several models side by side in one run, each with its own Optuna
study and sampler, sharing the ``parallel`` slots; ``max_trials`` is per
segment; the objective is called with ``segment=<name>`` (or pass one
objective per segment as a dict). Works are named ``<segment>_trial_<n>``.

Throughput: ``prefetch=k`` keeps ``k`` more trials queued at the backend than
``parallel``, so that a worker that frees up starts the next trial at once
instead of waiting a round trip for it to be asked and submitted (the
backend's worker count then bounds how many run at once).

Pruning: with ``budgets=[1, 3, 9]`` a trial runs as successive jobs
``trial_<n>_r<k>``, the objective being called with ``budget=<b>``; after each
rung the value is reported to Optuna and the ``pruner`` (default
``MedianPruner``) decides whether the trial goes on.

Steering on the server (the default, ``steer="auto"``, whenever the study allows
it): the sampler runs in the server (its Steerer agent,
:mod:`idds_jupyter.agents.steerer`) rather than in this process. The objective
is uploaded once per segment, the server asks for points and adds the trials
itself (a segment's trials are the jobs of one work ``trial_<first>_<last>``,
each new one added to it), and this process only receives the results (a live copy of the
Optuna studies, for :meth:`dataframe` and :meth:`best`). The study goes on when
the notebook's kernel goes away. ``stop()`` closes the run (no new points), and
:meth:`load` attaches to it again. This takes a sampler given by name, with
JSON ``sampler_options`` and no pruning; other studies are driven from this
process as "How it runs" says.

Persistence: the run is the study's record. Each trial job's JSON result holds
its parameters and value, and the study's configuration is the run's
parameters, so :meth:`Study.load` (any process, e.g. after a server restart)
rebuilds the Optuna studies from the finished trials (``add_trial``), waits for
the trials still in flight, and continues — finished trials are never run
again.
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import re
import threading
import time
import traceback as tb
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from idds_jupyter.client.errors import IddsError
from idds_jupyter.faat import serialize
from idds_jupyter.faat.future import JobFuture
from idds_jupyter.faat.results import WorkSink, router
from idds_jupyter.faat.work import WorkFunction
from idds_jupyter.faat.workflow import Run, close_with_result
from idds_jupyter.hpo.trial import run_trial
from idds_jupyter.model.space import (
    SAMPLERS,
    Space,
    as_space,
    best_of,
    frozen_trial,
    grid_size,
    make_sampler,
    parse_trial_work,
    require_optuna,
    resumed_seed,
    space_from_json,
    space_to_json,
    summary_of,
    tell,
    trial_work_name,
)
from idds_jupyter.views import View

require_optuna()  # the ``hpo`` extra: without it, the one error naming how to install it
import optuna  # noqa: E402
from optuna.trial import TrialState  # noqa: E402

if TYPE_CHECKING:
    import pandas as pd

    from idds_jupyter.client import Client

__all__ = ["Study", "StudyRun"]

_WORK_OPTIONS = ("backend", "cores", "memory_mb", "retries", "timeout_s", "env")
_FINAL_JOBS = ("finished", "failed", "cancelled")
STEERER_WAIT_S = 30.0  # a study steered by the server with no trial by then has no Steerer
BLOCK_SLOTS = 16  # a client-steered segment's work is declared with 16 rounds of its slots


class StudyRun(Run):
    """The run of a study: its works are named by the study (``trial_<n>``), not numbered."""

    def next_work_name(self, base: str) -> str:
        """The work's name as given (a study's works keep their names)."""
        return base


@dataclass
class _Segment:
    name: str | None
    space: Space
    objective: Callable[..., Any] | str
    options: dict[str, Any]
    study: optuna.Study
    next_number: int = 0
    allocated: int = 0
    in_flight: int = 0
    block: _Block | None = None  # the work the next trials join (trials without rungs)

    def work_name(self, number: int, rung: int | None) -> str:
        return trial_work_name(self.name, number, rung=rung)


@dataclass
class _Block:
    """A work declared with a segment's trials ``first`` … ``first + size - 1``.

    Trial ``first + i`` is its job ``i``, added as it is asked (``Client.add_jobs``).
    """

    name: str
    first: int
    size: int
    futures: list[JobFuture]
    filled: int = 0

    @property
    def room(self) -> int:
        return self.size - self.filled


@dataclass
class _Pending:
    seg: _Segment
    number: int
    rung: int | None
    trial: optuna.trial.Trial | None  # None: a trial found in flight on resume
    params: dict[str, Any] | None
    work: str
    started: float = field(default_factory=time.time)
    intermediates: list[tuple[int, float]] = field(default_factory=list)
    reported: set[int] = field(default_factory=set)

    def report(self) -> None:
        """Report the intermediate values Optuna has not seen yet."""
        assert self.trial is not None
        for step, value in self.intermediates:
            if step not in self.reported:
                self.trial.report(value, step)
                self.reported.add(step)


def _objective_parts(objective: Any) -> tuple[Callable[..., Any] | str, dict[str, Any]]:
    """The callable (or command) of an objective and the work options of a ``@work`` one."""
    if isinstance(objective, WorkFunction):
        opts = {k: getattr(objective, k) for k in _WORK_OPTIONS}
        return objective.fn, {k: v for k, v in opts.items() if v not in (None, 0, {})}
    if isinstance(objective, str) or callable(objective):
        return objective, {}
    raise TypeError(
        f"the objective must be a function, a @work function or a command string, "
        f"got {type(objective).__name__}"
    )


class Study:
    """A distributed HPO study (see the module documentation)."""

    def __init__(
        self,
        objective: Any,
        space: Mapping[str, Any] | None = None,
        direction: str = "minimize",
        max_trials: int = 100,
        parallel: int = 4,
        sampler: str | optuna.samplers.BaseSampler = "tpe",
        segments: Mapping[str, Mapping[str, Any] | None] | Sequence[str] | None = None,
        seed: int | None = None,
        *,
        name: str = "study",
        pruner: optuna.pruners.BasePruner | None = None,
        budgets: Sequence[float] | None = None,
        budget_arg: str = "budget",
        key: str | None = None,
        sampler_options: Mapping[str, Any] | None = None,
        max_failures: int | None = None,
        prefetch: int = 0,
        steer: str = "auto",
        client: Client | None = None,
    ) -> None:
        if direction not in ("minimize", "maximize"):
            raise ValueError(f"direction must be 'minimize' or 'maximize', got {direction!r}")
        if int(max_trials) < 1 or int(parallel) < 1:
            raise ValueError(f"max_trials ({max_trials}) and parallel ({parallel}) must be >= 1")
        self.name = re.sub(r"\W+", "_", name) or "study"
        self.direction = direction
        self.max_trials = int(max_trials)
        self.parallel = int(parallel)
        self.prefetch = max(0, int(prefetch))
        # trials a client-steered segment's work is declared with (see _add_trials)
        self._block_size = BLOCK_SLOTS * (self.parallel + self.prefetch)
        self.seed = seed
        self.sampler_spec = sampler
        self.sampler_options = dict(sampler_options or {})
        self.budgets = [float(b) if not float(b).is_integer() else int(b) for b in budgets or ()]
        self.budget_arg = budget_arg
        self.key = key
        self.max_failures = max_failures
        self.pruner = pruner
        self._client = client
        self.run: StudyRun | None = None
        self.errors: list[str] = []
        self._thread: threading.Thread | None = None
        self._error: BaseException | None = None
        self._stop = threading.Event()
        self._abandon = threading.Event()
        self._done = threading.Event()
        self._lock = threading.Lock()
        self._resume: list[tuple[JobFuture, _Pending]] = []
        self._continue: list[_Pending] = []
        self.resumed_trials = 0

        base = as_space(space)
        if segments is None:
            seg_spaces: dict[str | None, Space] = {None: base}
        elif isinstance(segments, Mapping):
            seg_spaces = {}
            for sname, extra in segments.items():
                if not isinstance(sname, str) or not re.fullmatch(r"[A-Za-z]\w*", sname):
                    raise ValueError(f"segment name {sname!r} must be an identifier")
                seg_spaces[sname] = {**base, **as_space(extra, f"segments[{sname!r}]")}
        else:
            seg_spaces = {str(sname): dict(base) for sname in segments}
        for seg, sp in seg_spaces.items():
            if not sp:
                raise ValueError(
                    f"the search space{'' if seg is None else f' of segment {seg!r}'} is empty"
                )
        self.segments: dict[str | None, _Segment] = {}
        for i, (seg, sp) in enumerate(seg_spaces.items()):
            obj = objective.get(seg) if isinstance(objective, Mapping) else objective
            if obj is None:
                raise ValueError(f"no objective for segment {seg!r}")
            fn, opts = _objective_parts(obj)
            seg_seed = None if seed is None else seed + i
            smp = make_sampler(
                sampler, seg_seed, sp, self.sampler_options, self.parallel + self.prefetch
            )
            prn = (
                pruner
                if pruner is not None
                else (
                    optuna.pruners.MedianPruner(n_startup_trials=4)
                    if self.budgets
                    else optuna.pruners.NopPruner()
                )
            )
            st = optuna.create_study(
                direction=direction,  # type: ignore[arg-type]
                sampler=smp,
                pruner=prn,
                study_name=f"{self.name}.{seg or 'main'}",
            )
            self.segments[seg] = _Segment(seg, sp, fn, opts, st)
            if isinstance(smp, optuna.samplers.GridSampler):
                self.max_trials = min(self.max_trials, grid_size(sp))
        self._pass_segment = segments is not None and not isinstance(objective, Mapping)
        self.steer = self._steering(steer)
        self._seen: set[tuple[str, int]] = set()  # trial jobs of a server-steered run told here
        self._unlisten: Callable[[], None] | None = None

    def _steering(self, steer: str) -> str:
        """Where the sampler runs.

        ``"client"`` (this process), ``"server"`` (the server's Steerer), or ``"auto"``
        (the server when it can).
        """
        if steer not in ("auto", "server", "client"):
            raise ValueError(f"steer must be 'auto', 'server' or 'client', got {steer!r}")
        why = None
        if not isinstance(self.sampler_spec, str):
            why = f"the server builds samplers by name ({', '.join(SAMPLERS)}), not from an object"
        elif self.budgets or self.pruner is not None:
            why = "the study prunes trials (budgets, pruner): pruning is steered from here"
        elif not serialize.jsonable(self.sampler_options):
            why = "its sampler_options are not JSON"
        if steer == "server" and why:
            raise ValueError(f"steer='server': {why}")
        return "client" if steer == "client" or why else "server"

    # ----------------------------------------------------------------- config
    @property
    def client(self) -> Client:
        """The client the study submits with (by default :func:`~idds_jupyter.client.get_client`)."""
        if self._client is None:
            from idds_jupyter.client import get_client

            self._client = get_client()
        return self._client

    @property
    def run_id(self) -> int | None:
        """The id of the study's run, once submitted."""
        return None if self.run is None else self.run.id

    def config(self) -> dict[str, Any]:
        """The JSON description of the study, kept as the run's parameters."""
        smp = (
            self.sampler_spec
            if isinstance(self.sampler_spec, str)
            else type(self.sampler_spec).__name__
        )
        return {
            "name": self.name,
            "direction": self.direction,
            "max_trials": self.max_trials,
            "parallel": self.parallel,
            "sampler": smp,
            "seed": self.seed,
            "segments": [s for s in self.segments if s is not None] or None,
            "spaces": {s or "": space_to_json(g.space) for s, g in self.segments.items()},
            "budgets": self.budgets or None,
            "budget_arg": self.budget_arg,
            "key": self.key,
            "prefetch": self.prefetch,
            "steer": self.steer,
            "max_failures": self.max_failures,
            "sampler_options": self.sampler_options if self.steer == "server" else None,
        }

    @classmethod
    def load(
        cls, run_id: int, objective: Any, client: Client | None = None, **overrides: Any
    ) -> Study:
        """The study of run ``run_id``, rebuilt from its finished trials, ready to :meth:`resume`."""
        if client is None:
            from idds_jupyter.client import get_client

            client = get_client()
        info = client.status(int(run_id))
        cfg = (info.get("params") or {}).get("study")
        if not isinstance(cfg, dict):
            raise ValueError(f"run {run_id} is not an HPO study (its parameters hold no 'study')")
        spaces = {k: space_from_json(v) for k, v in cfg["spaces"].items()}
        segs = cfg.get("segments")
        kw: dict[str, Any] = {
            "direction": cfg["direction"],
            "max_trials": cfg["max_trials"],
            "parallel": cfg["parallel"],
            "sampler": cfg["sampler"]
            if cfg["sampler"] in ("tpe", "gp", "cmaes", "random", "grid")
            else "tpe",
            "seed": cfg.get("seed"),
            "name": cfg["name"],
            "budgets": cfg.get("budgets"),
            "budget_arg": cfg.get("budget_arg", "budget"),
            "key": cfg.get("key"),
            "prefetch": cfg.get("prefetch", 0),
            "steer": cfg.get("steer") or "client",
            "max_failures": cfg.get("max_failures"),
            "sampler_options": cfg.get("sampler_options"),
            "client": client,
        }
        kw.update(overrides)
        if segs:
            study = cls(objective, None, segments={s: spaces[s] for s in segs}, **kw)
        else:
            study = cls(objective, spaces[""], **kw)
        study._attach(int(run_id), info)
        return study

    # ---------------------------------------------------------------- running
    def optimize(self, timeout: float | None = None) -> pd.DataFrame:
        """Run the study to its end (``max_trials`` per segment); returns :meth:`dataframe`."""
        self.start()
        self.wait(timeout)
        return self.dataframe()

    resume = optimize

    def start(self) -> StudyRun:
        """Submit the run (unless resuming one) and start dispatching; returns the run at once."""
        if self._thread is not None:
            raise RuntimeError("this study is already running")
        client = self.client
        if self.steer == "server":
            return self._start_steered()
        router(client)  # the push channel is up before any trial can end
        if self.run is None:
            wid = client.submit(
                {"name": self.name, "works": []}, {"study": self.config()}, open=True
            )
            self.run = StudyRun(client, wid, self.name)
        self._done.clear()
        self._thread = threading.Thread(
            target=self._drive, name=f"idds-hpo-{self.run.id}", daemon=True
        )
        self._thread.start()
        return self.run

    def wait(self, timeout: float | None = None) -> None:
        """Block until the study ended; re-raises the error that stopped it."""
        if self._thread is None:
            raise RuntimeError("the study was not started")
        if not self._done.wait(timeout):
            raise TimeoutError(f"study {self.name} still running after {timeout} s")
        if self._error is not None:
            raise self._error

    def stop(self, abandon: bool = False) -> None:
        """Ask no new points; the trials in flight finish.

        ``abandon``: return without them, leaving the run open for :meth:`load`.
        """
        self._stop.set()
        if abandon:
            self._abandon.set()
        if self.steer == "server" and self.run is not None:
            if abandon:  # the server goes on with the study; load() it again later
                self._done.set()
            else:  # a closed run is asked for no new point; its trials in flight finish
                with contextlib.suppress(Exception):
                    self.client.close(self.run.id)

    # ------------------------------------------------- steered by the server
    def _start_steered(self) -> StudyRun:
        """Submit the study for the server's Steerer (unless resuming); watch it from a thread."""
        client = self.client
        self._unlisten = client.on_message(self._on_message)
        if self.run is None:
            inline: dict[str, bytes] = {}
            cfg = self.config()
            cfg["objectives"] = {}
            for seg in self.segments.values():
                extra = {"segment": seg.name} if self._pass_segment else {}
                payload = serialize.bound_payload(
                    client, run_trial, {"objective": seg.objective, "extra": extra}, defer=inline
                )
                work = WorkFunction(run_trial, name="trial", **seg.options).work_dict(
                    "trial", payload, 1
                )
                del work["name"], work["n_jobs"]
                cfg["objectives"][seg.name or ""] = {"work": work}
            wid = client.submit(
                {"name": self.name, "works": []}, {"study": cfg}, open=True, blobs=inline
            )
            self.run = StudyRun(client, wid, self.name)
        self._done.clear()
        self._thread = threading.Thread(
            target=self._watch, name=f"idds-hpo-{self.run.id}", daemon=True
        )
        self._thread.start()
        return self.run

    def _watch(self) -> None:
        """Wait for the run to end, then tell what the pushes missed."""
        assert self.run is not None
        try:
            try:
                status, info = self.client.wait_run(self.run.id, STEERER_WAIT_S)
            except TimeoutError:
                if not self.client.status(self.run.id).get("works"):
                    msg = (
                        f"study {self.name}: no trial was started in {STEERER_WAIT_S:.0f} s; is a "
                        f"Steerer running (agent role 'steerer')? steer='client' needs none"
                    )
                    with contextlib.suppress(Exception):
                        self.client.close(self.run.id, error=msg)
                    raise RuntimeError(msg) from None
                status, info = self.client.wait_run(self.run.id)
            if self._abandon.is_set():
                return
            if status == "finished" and len(self._seen) == self.max_trials * len(self.segments):
                return  # every trial was pushed here, and the run ended well: nothing to read
            if info is None:
                info = self.client.status(self.run.id, works=False)
            if self._told(info) != len(self._seen):  # some trials were not pushed: read the works
                info = self.client.status(self.run.id)
                self._reconcile(info)
            if info.get("error"):
                raise RuntimeError(str(info["error"]))
            if status == "aborted":
                raise RuntimeError(f"study {self.name}: run {self.run.id} was aborted")
        except BaseException as exc:
            if not self._abandon.is_set():
                self._error = exc
        finally:
            if self._unlisten is not None:
                self._unlisten()
                self._unlisten = None
            self._done.set()

    def _on_message(self, msg: dict[str, Any]) -> None:
        """A pushed result of one of our trial jobs: a trial for the local Optuna study."""
        if msg.get("type") != "job.result" or self.run is None:
            return
        for job in msg.get("jobs") or ():
            wf = job.get("workflow_id", msg.get("key"))
            if str(wf) == str(self.run.id) and job.get("status") == "finished":
                self._record(str(job.get("work")), int(job.get("idx") or 0), job.get("result"))

    def _told(self, info: dict[str, Any]) -> int | None:
        """How many trials the Steerer's summary of the ended run counts (None: none written)."""
        result = (info.get("body") or {}).get("result")
        trials = result.get("trials") if isinstance(result, dict) else None
        return sum(int(n) for n in trials.values()) if isinstance(trials, dict) else None

    def _reconcile(self, info: dict[str, Any]) -> None:
        """The trial jobs no push told us about (lost, or failed): read from their works."""
        assert self.run is not None
        body = {**info, **(info.get("body") or {})}
        failed = (
            {
                (f.get("work"), f.get("idx")): f.get("params")
                for f in (body.get("result") or {}).get("failed") or ()
            }
            if isinstance(body.get("result"), dict)
            else {}
        )
        for w in info.get("works") or ():
            parsed = parse_trial_work(str(w["name"]))
            if parsed is None or parsed[0] not in self.segments:
                continue
            if all((w["name"], i) in self._seen for i in range(parsed[2] - parsed[1] + 1)):
                continue
            for row in self.client.work_results(self.run.id, w["name"]):
                if row.get("status") not in _FINAL_JOBS:
                    continue
                idx = int(row["idx"])
                if row.get("status") == "finished":
                    self._record(w["name"], idx, row.get("result"))
                else:
                    self._record(
                        w["name"],
                        idx,
                        None,
                        str(row.get("error") or row.get("status")),
                        failed.get((w["name"], idx)),
                    )

    def _record(
        self,
        work: str,
        idx: int,
        result: Any,
        error: str | None = None,
        params: dict[str, Any] | None = None,
    ) -> None:
        """Trial ``idx`` of ``work`` ended on the server: add it to its segment's study."""
        parsed = parse_trial_work(work)
        if parsed is None or parsed[0] not in self.segments:
            return
        with self._lock:
            if (work, idx) in self._seen:
                return
            self._seen.add((work, idx))
        seg = self.segments[parsed[0]]
        res = result if isinstance(result, dict) else {}
        value = res.get("objective")
        attrs = {f"metric_{k}": v for k, v in (res.get("metrics") or {}).items()}
        if not isinstance(value, int | float):
            value = None
            error = error or f"no objective in its result: {result!r}"[:500]
            attrs["error"] = error[:500]
            self.errors.append(f"{work}: {error}")
        seg.study.add_trial(
            frozen_trial(
                seg.space, res.get("params") or params, value, parsed[1] + idx, work, **attrs
            )
        )
        seg.allocated = max(seg.allocated, parsed[1] + idx + 1)

    # ----------------------------------------------------------- the driver
    def _drive(self) -> None:
        assert self.run is not None
        pending: dict[concurrent.futures.Future[Any], _Pending] = {}
        try:
            with self.run.active():
                for fut, p in self._resume:
                    pending[fut] = p
                    p.seg.in_flight += 1
                self._resume = []
                for p in self._continue:
                    self._advance(p, pending)
                self._continue = []
                while True:
                    if self._abandon.is_set():
                        return
                    if not self._stop.is_set():
                        self._fill(pending)
                    if not pending:
                        break
                    done, _ = concurrent.futures.wait(
                        list(pending), timeout=0.5, return_when=concurrent.futures.FIRST_COMPLETED
                    )
                    for f in done:
                        self._finished(pending.pop(f), f, pending)
            close_with_result(self.client, self.run.id, self.summary())
        except BaseException as exc:
            self._error = exc
            if not self._abandon.is_set():
                with contextlib.suppress(Exception):
                    self.client.close(
                        self.run.id,
                        error=f"{type(exc).__name__}: {exc}",
                        traceback="".join(tb.format_exception(exc)),
                    )
        finally:
            self._done.set()

    def _fill(self, pending: dict[concurrent.futures.Future[Any], _Pending]) -> None:
        """Ask a point for every free slot.

        The new trials of a segment go out as ONE work (one job per trial), so results
        arriving together cost one submission.
        """
        batches: dict[str | None, list[_Pending]] = {}
        n = len(pending)
        while n < self.parallel + self.prefetch:
            open_ = [s for s in self.segments.values() if s.allocated < self.max_trials]
            if not open_:
                break
            seg = min(open_, key=lambda s: (s.in_flight, s.allocated))
            trial = seg.study.ask(seg.space)
            number = seg.next_number
            seg.next_number += 1
            seg.allocated += 1
            seg.in_flight += 1
            rung = 0 if self.budgets else None
            trial.set_user_attr("trial", number)
            batches.setdefault(seg.name, []).append(
                _Pending(seg, number, rung, trial, dict(trial.params), "")
            )
            n += 1
        for batch in batches.values():
            pending.update(zip(self._launch(batch), batch, strict=True))

    def _call(self, p: _Pending) -> dict[str, Any]:
        """The keyword arguments of :func:`run_trial` for trial ``p`` (at its rung)."""
        extra: dict[str, Any] = {}
        if self._pass_segment:
            extra["segment"] = p.seg.name
        final = True
        budget = None
        if p.rung is not None:
            budget = self.budgets[p.rung]
            extra[self.budget_arg] = budget
            final = p.rung == len(self.budgets) - 1
        meta = {
            "trial": p.number,
            "segment": p.seg.name,
            "final": final,
            "key": self.key,
            "step": p.rung,
            "budget": budget,
        }
        return {"objective": p.seg.objective, "params": p.params, "meta": meta, "extra": extra}

    def _launch(self, batch: list[_Pending]) -> list[JobFuture]:
        """One work for trials of one segment.

        Named ``trial_<a>`` or ``trial_<a>_<b>`` (trials a..b, consecutive) at their first
        rung, ``trial_<n>_r<k>`` for rung k of trial n.
        """
        seg = batch[0].seg
        first, last = batch[0], batch[-1]
        if first.rung:
            assert len(batch) == 1
            name = seg.work_name(first.number, first.rung)
        else:
            name = seg.work_name(first.number, None)
            if len(batch) > 1:
                name += f"_{last.number}"
        calls = [self._call(p) for p in batch]
        if first.rung is None:
            kwargs_list = [{"params": c["params"], "meta": c["meta"]} for c in calls]
            if all(serialize.plain_json(kw) for kw in kwargs_list):
                return self._add_trials(batch, kwargs_list)
        for p in batch:
            p.work = name
        fn = WorkFunction(run_trial, name=name, **seg.options)
        return fn.map_async(kwargs_list=calls)

    def _add_trials(
        self, batch: list[_Pending], kwargs_list: list[dict[str, Any]]
    ) -> list[JobFuture]:
        """Trials as jobs of their segment's declared work, JSON arguments each.

        After the first, a trial is one small request, and it reaches a worker before its
        row is written. A work that cannot take them (full, or aborted alone) gives way to
        a new one.
        """
        assert self.run is not None
        seg = batch[0].seg
        block = seg.block
        if (
            block is not None
            and block.room >= len(batch)
            and batch[0].number == block.first + block.filled
        ):
            try:
                self.client.add_jobs(self.run.id, block.name, block.filled, kwargs_list)
            except IddsError as exc:
                if exc.status != 409:
                    raise
                block = None
        else:
            block = None
        if block is None:
            remaining = self.max_trials - (seg.allocated - len(batch))  # this batch's included
            size = max(len(batch), min(remaining, self._block_size))
            try:
                block = self._declare(batch, kwargs_list, size)
            except IddsError as exc:  # the declared jobs are over a limit or the quota:
                if exc.status not in (413, 429) or size == len(batch):
                    raise
                self._block_size = 1  # from now on each work declares its own trials only
                block = self._declare(batch, kwargs_list, len(batch))
        start = block.filled
        block.filled += len(batch)
        for p in batch:
            p.work = block.name
        return block.futures[start : start + len(batch)]

    def _declare(
        self, batch: list[_Pending], kwargs_list: list[dict[str, Any]], size: int
    ) -> _Block:
        """A new work of ``batch``'s segment with these trials, declared with ``size``.

        The jobs to come are charged to the user's quota now: a work holds a few rounds of
        the trials in flight, not the whole study.
        """
        assert self.run is not None
        seg, client, first = batch[0].seg, self.client, batch[0].number
        name = trial_work_name(seg.name, first, first + size - 1)
        inline: dict[str, bytes] = {}
        extra = {"segment": seg.name} if self._pass_segment else {}
        payload = serialize.bound_payload(
            client, run_trial, {"objective": seg.objective, "extra": extra}, defer=inline
        )
        work = WorkFunction(run_trial, name=name, **seg.options).work_dict(name, payload, 1)
        del work["n_jobs"]
        work["kwargs_list"] = kwargs_list
        futures = [JobFuture(client, self.run.id, name, i) for i in range(size)]
        sink = WorkSink(self.run.id, name, size, int(seg.options.get("retries") or 0), futures)
        router(client).register(sink)
        try:
            client.add_works(self.run.id, [work], blobs=inline, declared={name: size})
        except BaseException:
            router(client).unregister(sink)
            raise
        seg.block = _Block(name, first, size, futures)
        return seg.block

    def _reattach(
        self, run_id: int, work: str, n: int, rows: list[dict[str, Any]], retries: int
    ) -> list[JobFuture]:
        """Futures for the jobs of a trial work already submitted when the study was loaded.

        They are resolved by the push channel, or at once for the jobs already ended.
        """
        futs = [JobFuture(self.client, run_id, work, i) for i in range(n)]
        sink = WorkSink(run_id, work, n, retries, futs)
        router(self.client).register(sink)
        for row in rows:
            sink.offer(row)
        return futs

    def _finished(
        self,
        p: _Pending,
        fut: concurrent.futures.Future[Any],
        pending: dict[concurrent.futures.Future[Any], _Pending],
    ) -> None:
        p.seg.in_flight = max(0, p.seg.in_flight - 1)
        exc = fut.exception()
        if exc is not None:
            self._fail(p, exc)
            return
        res = fut.result()
        if p.params is None:
            p.params = dict(res.get("params") or {})
        if "intermediate" in res:
            p.intermediates.append((int(res.get("step") or 0), float(res["intermediate"])))
            self._advance(p, pending)
            return
        trial = self._trial_of(p)
        if p.rung is not None:
            trial.report(float(res["objective"]), p.rung)
        trial.set_user_attr("work", p.work)
        for k, v in (res.get("metrics") or {}).items():
            trial.set_user_attr(f"metric_{k}", v)
        tell(p.seg.study, trial, float(res["objective"]))

    def _trial_of(self, p: _Pending) -> optuna.trial.Trial:
        """The Optuna trial of ``p``; for a trial found in flight, one with its parameters."""
        if p.trial is None:
            seg = p.seg
            seg.study.enqueue_trial(p.params or {}, skip_if_exists=False)
            p.trial = seg.study.ask(seg.space)
            p.trial.set_user_attr("trial", p.number)
        p.report()
        return p.trial

    def _advance(
        self, p: _Pending, pending: dict[concurrent.futures.Future[Any], _Pending]
    ) -> None:
        """A rung finished: report it, then prune the trial or launch its next rung."""
        trial = self._trial_of(p)
        if trial.should_prune():
            trial.set_user_attr("work", p.work)
            tell(p.seg.study, trial, None, TrialState.PRUNED)
            return
        assert p.rung is not None
        p.rung += 1
        p.seg.in_flight += 1
        pending[self._launch([p])[0]] = p

    def _fail(self, p: _Pending, exc: BaseException) -> None:
        msg = f"{p.work}: {type(exc).__name__}: {exc}"
        self.errors.append(msg)
        trial = self._trial_of(p) if p.params is not None else p.seg.study.ask(p.seg.space)
        trial.set_user_attr("work", p.work)
        trial.set_user_attr("error", str(exc)[:500])
        tell(p.seg.study, trial, None, TrialState.FAIL)
        if self.max_failures is not None and len(self.errors) > self.max_failures:
            self._stop.set()
            raise RuntimeError(
                f"study {self.name}: {len(self.errors)} trials failed; the last: {msg}"
            )

    # ----------------------------------------------------------------- resume
    def _attach(self, run_id: int, info: dict[str, Any]) -> None:
        """Rebuild the Optuna studies from the run's trial works; note the jobs still in flight.

        Finished trials are told to Optuna (``add_trials``) and never run again; jobs
        not ended yet are waited for (the server runs them, after a restart too).
        """
        client = self.client
        self.run = StudyRun(client, run_id, info.get("name"), info)
        if self.steer == "server":  # the server goes on steering it: only tell what ended
            self._reconcile(info)
            self.resumed_trials = len(self._seen)
            return
        # (segment, trial) -> rung -> ("done", result) | ("failed", None) | ("wait", future)
        state: dict[tuple[str | None, int], dict[int | None, tuple[str, Any]]] = {}
        for w in info.get("works") or ():
            parsed = parse_trial_work(str(w["name"]))
            if parsed is None or parsed[0] not in self.segments:
                continue
            seg = self.segments[parsed[0]]
            a, b = parsed[1], parsed[2]
            rung = parsed[3] if parsed[3] is not None else (0 if self.budgets else None)
            n = b - a + 1
            rows = (
                client.work_results(run_id, w["name"])
                if w.get("n_jobs") or w["status"] != "new"
                else []
            )
            by_idx = {int(r["idx"]): r for r in rows}
            # a declared work holds the trials added so far: its other jobs never were
            indices = sorted(by_idx) if rows else list(range(n))
            waiting = [i for i in indices if (by_idx.get(i) or {}).get("status") not in _FINAL_JOBS]
            futs = (
                self._reattach(run_id, w["name"], n, rows, int(seg.options.get("retries") or 0))
                if waiting
                else []
            )
            for i in indices:
                number = a + i
                row = by_idx.get(i) or {}
                if i in waiting:
                    entry: tuple[str, Any] = ("wait", futs[i])
                elif row.get("status") == "finished" and isinstance(row.get("result"), dict):
                    entry = ("done", row["result"])
                else:
                    entry = ("failed", None)
                state.setdefault((seg.name, number), {})[rung] = entry
                seg.next_number = max(seg.next_number, number + 1)
        completed: dict[str | None, list[optuna.trial.FrozenTrial]] = {}
        for (seg_name, number), rungs in sorted(
            state.items(), key=lambda kv: (str(kv[0][0]), kv[0][1])
        ):
            seg = self.segments[seg_name]
            seg.allocated += 1
            order = sorted(rungs, key=lambda r: -1 if r is None else r)
            p = _Pending(seg, number, order[-1], None, None, seg.work_name(number, order[-1]))
            frozen: optuna.trial.FrozenTrial | None = None
            for r in order:
                kind, val = rungs[r]
                p.rung = r
                if kind == "done":
                    p.params = dict(val.get("params") or {})
                    if "objective" in val:
                        frozen = frozen_trial(
                            seg.space,
                            p.params,
                            float(val["objective"]),
                            p.number,
                            p.work,
                            dict(p.intermediates),
                            resumed=True,
                        )
                        break
                    p.intermediates.append((int(val.get("step") or 0), float(val["intermediate"])))
                    if r == order[-1]:
                        self._continue.append(p)  # its next rung was never launched
                elif kind == "failed":
                    frozen = frozen_trial(
                        seg.space,
                        p.params,
                        None,
                        p.number,
                        p.work,
                        dict(p.intermediates),
                        resumed=True,
                    )
                    break
                else:
                    self._resume.append((val, p))
                    break
            if frozen is not None:
                completed.setdefault(seg_name, []).append(frozen)
        for seg_name, trials in completed.items():
            self.segments[seg_name].study.add_trials(trials)
            self.resumed_trials += len(trials)
        # a sampler seeded as at the start would ask the same points again: derive a new seed
        for i, seg in enumerate(self.segments.values()):
            if self.seed is None:
                seg.study.sampler.reseed_rng()
            else:
                seed = resumed_seed(self.seed, i, seg.allocated)
                seg.study.sampler = make_sampler(
                    self.sampler_spec,
                    seed,
                    seg.space,
                    self.sampler_options,
                    self.parallel + self.prefetch,
                )

    # ---------------------------------------------------------------- results
    def dataframe(self) -> pd.DataFrame:
        """One row per trial: segment, trial, state, value, params_*, duration, work.

        Optuna's ``trials_dataframe`` columns (its ``user_attrs_trial`` and ``_work`` renamed),
        built straight from the trials: :meth:`optimize` returns this, on the study's wall
        time, and Optuna's own builder takes a few milliseconds more for a few hundred trials.
        """
        import pandas as pd

        trials = [
            (seg.name, t)
            for seg in self.segments.values()
            for t in seg.study.get_trials(deepcopy=False)
        ]
        if not trials:
            return pd.DataFrame(columns=["segment", "trial", "state", "value"])
        params = sorted({k for _, t in trials for k in t.params})
        attrs = sorted({k for _, t in trials for k in t.user_attrs})
        cols: dict[str, list[Any]] = {
            "segment": [s for s, _ in trials],
            "number": [t.number for _, t in trials],
            "value": [t.value for _, t in trials],
            "datetime_start": [t.datetime_start for _, t in trials],
            "datetime_complete": [t.datetime_complete for _, t in trials],
            "duration": [
                t.datetime_complete - t.datetime_start
                if t.datetime_start and t.datetime_complete
                else None
                for _, t in trials
            ],
        }
        for k in params:
            cols[f"params_{k}"] = [t.params.get(k) for _, t in trials]
        for k in attrs:
            cols[k if k in ("trial", "work") else f"user_attrs_{k}"] = [
                t.user_attrs.get(k) for _, t in trials
            ]
        cols["state"] = [t.state.name for _, t in trials]
        out = pd.DataFrame(cols)
        if "trial" in out and not (
            len(self.segments) == 1 and out["trial"].is_monotonic_increasing
        ):
            out = out.sort_values(["segment", "trial"], na_position="first", kind="stable")
        return out.reset_index(drop=True)

    def best(self) -> dict[str | None, dict[str, Any]]:
        """Per segment: the best value, parameters and trial number."""
        return best_of({name: seg.study for name, seg in self.segments.items()})

    @property
    def best_value(self) -> float:
        """The best value over all segments."""
        b = self._best_overall()
        return float(b["value"])

    @property
    def best_params(self) -> dict[str, Any]:
        """The parameters of the best trial over all segments."""
        return dict(self._best_overall()["params"])

    @property
    def best_segment(self) -> str | None:
        """The segment of the best trial (None for a study without segments)."""
        return self._best_overall()["segment"]

    def _best_overall(self) -> dict[str, Any]:
        best = [{**b, "segment": s} for s, b in self.best().items()]
        if not best:
            raise ValueError(f"study {self.name} has no completed trial")
        pick = min if self.direction == "minimize" else max
        return pick(best, key=lambda b: b["value"])

    def summary(self) -> dict[str, Any]:
        """JSON: trials per state and the best per segment (the run's result)."""
        return summary_of({name: seg.study for name, seg in self.segments.items()})

    def widget(self) -> View:
        """The live HPO view of the run (objective per trial, parallel coordinates).

        A notebook displays it as a widget (:mod:`idds_jupyter.views`).
        """
        if self.run is None:
            raise RuntimeError("the study has no run yet: call start() or optimize()")
        return View("hpo", self.client, self.run.id, {"direction": self.direction})


def _first_result(client: Client, run_id: int, work: str) -> Any:
    rows = client.work_results(run_id, work)
    return rows[0].get("result") if rows and rows[0].get("status") == "finished" else None
