"""The Steerer drives an HPO study from the server, on SQLite and PostgreSQL: it asks
Optuna for points, adds the trials, tells their JSON results, ends the run with its
summary; a second runner takes the study over when the first one stops."""

from __future__ import annotations

import threading
import time
from pathlib import Path
from typing import Any

import cloudpickle
import pytest
from helpers import config, wait_for
from sqlalchemy import select

from idds_jupyter.agents.agent import Context
from idds_jupyter.agents.runner import Runner
from idds_jupyter.agents.steerer import Steerer
from idds_jupyter.bus import event as ev
from idds_jupyter.bus.event import make_event
from idds_jupyter.bus.local import LocalBus
from idds_jupyter.config import AGENT_ROLES, Config
from idds_jupyter.core import Orchestrator
from idds_jupyter.hpo.trial import run_trial
from idds_jupyter.model.space import parse_trial_work, space_to_json, uniform
from idds_jupyter.store.cache import write_blob
from idds_jupyter.store.engine import make_engine
from idds_jupyter.store.tables import jobs, workflows, works


def _study(
    cfg: Config, objective: Any, max_trials: int, parallel: int
) -> tuple[dict[str, Any], str]:
    """The ``study`` parameters a client submits for the server to steer, and the digest of
    the objective's blob (written into the cache as the client's upload would)."""
    sha, _ = write_blob(
        cfg.cache_dir, cloudpickle.dumps((run_trial, (), {"objective": objective, "extra": {}}))
    )
    study = {
        "name": "s",
        "direction": "minimize",
        "max_trials": max_trials,
        "parallel": parallel,
        "sampler": "random",
        "seed": 3,
        "segments": None,
        "prefetch": 0,
        "key": None,
        "spaces": {"": space_to_json({"x": uniform(0, 1)})},
        "steer": "server",
        "max_failures": None,
        "sampler_options": None,
        "objectives": {"": {"work": {"payload": {"function": sha}}}},
    }
    return study, sha


def _trials(orch: Orchestrator, wid: int) -> list[tuple[int, str, Any, Any]]:
    """(trial number, job status, parameters, JSON result) of every trial job."""
    with orch.engine.begin() as conn:
        rows = conn.execute(
            select(works.c.name, jobs.c.idx, jobs.c.status, jobs.c.kwargs, jobs.c.result)
            .select_from(jobs.join(works, works.c.id == jobs.c.work_id))
            .where(jobs.c.workflow_id == wid)
        ).all()
    out = []
    for r in rows:
        parsed = parse_trial_work(r.name)
        assert parsed is not None, r.name
        out.append((parsed[1] + r.idx, r.status, (r.kwargs or {}).get("params"), r.result))
    return sorted(out, key=lambda t: t[0])


def test_the_steerer_runs_a_study(tmp_path: Path, db_url: str) -> None:
    cfg = config(tmp_path, db_url)
    study, _ = _study(cfg, lambda x: (x - 0.3) ** 2, max_trials=8, parallel=3)
    with Runner(cfg) as runner:
        orch = Orchestrator(cfg, engine=runner.engine, bus=runner.bus, dispatch=runner.dispatch)
        wid = orch.submit({"name": "s", "works": []}, {"study": study}, open=True)
        assert orch.wait(wid, timeout=120) == "finished"
    trials = _trials(orch, wid)
    assert [t[0] for t in trials] == list(range(8))  # each trial once, numbered in order
    for _, status, params, result in trials:
        assert status == "finished"
        assert result["objective"] == (params["x"] - 0.3) ** 2 and result["params"] == params
    info = orch.status(wid)
    body = {**info, **(info.get("body") or {})}
    assert body["result"]["trials"] == {"complete": 8}
    best = min(trials, key=lambda t: t[3]["objective"])
    assert body["result"]["best"]["main"]["value"] == best[3]["objective"]


def test_another_runner_takes_the_study_over(tmp_path: Path, db_url: str) -> None:
    cfg = config(tmp_path, db_url)
    study, _ = _study(cfg, lambda x: (time.sleep(0.4), x)[1], max_trials=6, parallel=1)
    first = Runner(cfg).start()
    orch = Orchestrator(cfg, engine=first.engine, bus=first.bus, dispatch=first.dispatch)
    wid = orch.submit({"name": "s", "works": []}, {"study": study}, open=True)
    wait_for(lambda: any(t[1] == "finished" for t in _trials(orch, wid)), timeout=60)
    with orch.engine.begin() as conn:
        meta = conn.execute(select(workflows.c.meta).where(workflows.c.id == wid)).scalar_one()
    assert meta["steerer"]["owner"] == first.owner
    first.stop()  # unregistered: its lease no longer holds
    with Runner(cfg) as second:
        orch = Orchestrator(cfg, engine=second.engine, bus=second.bus, dispatch=second.dispatch)
        assert orch.wait(wid, timeout=120) == "finished"
        with orch.engine.begin() as conn:
            meta = conn.execute(select(workflows.c.meta).where(workflows.c.id == wid)).scalar_one()
        assert meta["steerer"]["owner"] == second.owner
    trials = _trials(orch, wid)
    # the trial in flight at the stop ran again (at-least-once), none was asked twice
    assert [t[0] for t in trials] == list(range(6))
    assert all(t[1] == "finished" for t in trials)


def test_a_study_whose_event_comes_on_a_poll_is_found_at_once(tmp_path: Path, db_url: str) -> None:
    """The ``workflow.new`` of a study, read by a step that also polls the studies it has,
    starts the study then, not at the next discovery scan of every running run."""
    cfg = config(tmp_path, db_url)
    study, _ = _study(cfg, lambda x: x, max_trials=2, parallel=1)
    with Runner(cfg, roles=[r for r in AGENT_ROLES if r != "steerer"]) as runner:
        orch = Orchestrator(cfg, engine=runner.engine, bus=runner.bus, dispatch=runner.dispatch)
        steerer = Steerer(runner.ctx, dispatch=runner.dispatch)
        steerer.setup()
        try:
            steerer.step()  # its first discovery scan: no study yet
            wid = orch.submit({"name": "s", "works": []}, {"study": study}, open=True)
            steerer.wait(5)  # reads the workflow.new
            steerer._next_scan = 0.0  # this step polls (the next discovery is 10 s away)
            steerer.step()
            assert wid in steerer.studies
            steerer.step()  # its first trial
            assert [t[0] for t in _trials(orch, wid)] == [0]
        finally:
            steerer.teardown()


def _threads_adding_trials(runner: Runner) -> list[str]:
    """The names of the threads that add the Steerer's trials, as they add them."""
    import threading

    steerer = next(a for a in runner.agents if isinstance(a, Steerer))
    names: list[str] = []
    orch = steerer.orch

    def traced(add: Any) -> Any:
        def call(*args: Any, **kwargs: Any) -> Any:
            names.append(threading.current_thread().name)
            return add(*args, **kwargs)

        return call

    # a study's first trials make its work, the next ones are added to it
    orch.add_works = traced(orch.add_works)  # type: ignore[method-assign]
    orch.add_jobs = traced(orch.add_jobs)  # type: ignore[method-assign]
    return names


def test_with_the_in_process_bus_a_result_is_told_where_it_arrives(
    tmp_path: Path, db_url: str
) -> None:
    """The next trial is added by the thread that received the worker's result (no wake-up
    of the Steerer's thread in between); over another bus, by the Steerer's thread."""
    for bus in ("local", "db"):
        cfg = config(tmp_path / bus, db_url, bus=bus)
        study, _ = _study(cfg, lambda x: (time.sleep(0.05), x)[1], max_trials=5, parallel=1)
        with Runner(cfg) as runner:
            names = _threads_adding_trials(runner)
            orch = Orchestrator(cfg, engine=runner.engine, bus=runner.bus, dispatch=runner.dispatch)
            wid = orch.submit({"name": "s", "works": []}, {"study": study}, open=True)
            assert orch.wait(wid, timeout=120) == "finished"
        assert [t[1] for t in _trials(orch, wid)] == ["finished"] * 5
        assert len(names) == 5 and names[0] == "idds-steerer"  # the first, as the study is found
        in_reader = [n for n in names[1:] if n.startswith("idds-local-r")]
        if bus == "local":
            assert len(in_reader) >= 3, names  # the Steerer's thread may be busy once
        else:
            assert in_reader == [], names


def test_results_that_come_during_a_turn_are_told_by_that_turns_thread(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """With the in-process bus, a result published while another publisher's thread runs
    a turn is told by that thread right after its own: the second publisher does not wait,
    and no other thread is woken for it."""
    cfg = config(tmp_path, f"sqlite:///{tmp_path / 'idds.db'}")
    bus = LocalBus()
    steerer = Steerer(Context(make_engine(cfg.db_url), bus, cfg, "test"))
    steerer.setup()
    steerer.studies.update({1: None, 2: None})  # type: ignore[dict-item]  # only ids matter here
    told: list[tuple[str, list[int]]] = []
    inside, go_on = threading.Event(), threading.Event()

    def steer(notes: dict[int, list[dict[str, Any]]], check: set[int]) -> None:
        told.append((threading.current_thread().name, sorted(notes)))
        if len(told) == 1:
            inside.set()
            assert go_on.wait(30)

    monkeypatch.setattr(steerer, "_steer", steer)

    def result(wid: int) -> None:
        bus.publish([make_event(ev.JOB_RESULT, str(wid), jobs=[{"work": "t", "idx": 0}])])

    first = threading.Thread(target=result, args=(1,), name="publisher-1")
    first.start()
    assert inside.wait(30)
    second = threading.Thread(target=result, args=(2,), name="publisher-2")
    second.start()
    second.join(30)
    assert not second.is_alive()  # it left its result to the turn running
    go_on.set()
    first.join(30)
    assert told == [("publisher-1", [1]), ("publisher-1", [2])]
    assert not steerer._woken.is_set()  # the Steerer's own thread had nothing to do
    steerer.teardown()


def test_a_study_goes_on_when_its_trials_work_is_aborted_alone(tmp_path: Path, db_url: str) -> None:
    """Aborting the work that holds a segment's trials cancels the trials in it (told as
    failed); the next trials go to a new work and the study ends all the same."""
    cfg = config(tmp_path, db_url)
    study, _ = _study(cfg, lambda x: (time.sleep(0.3), x)[1], max_trials=4, parallel=1)
    with Runner(cfg) as runner:
        orch = Orchestrator(cfg, engine=runner.engine, bus=runner.bus, dispatch=runner.dispatch)
        wid = orch.submit({"name": "s", "works": []}, {"study": study}, open=True)
        wait_for(lambda: any(t[1] == "running" for t in _trials(orch, wid)), timeout=60)
        assert orch.abort(wid, work="trial_0_3").changed
        assert orch.wait(wid, timeout=120) == "subfinished"  # one of its works was aborted
        names = [w["name"] for w in orch.status(wid)["works"]]
    trials = _trials(orch, wid)
    assert [t[0] for t in trials] == [0, 1, 2, 3]
    assert trials[0][1] == "cancelled" and all(t[1] == "finished" for t in trials[1:])
    assert names == ["trial_0_3", "trial_1_3"]


def test_trials_whose_jobs_could_not_be_written_go_out_later(tmp_path: Path, db_url: str) -> None:
    """The store refusing the Steerer's writes for a while (a database restart) does not
    stall the study: the trials asked then are not waited for as if in flight, they are
    sent once the store is back, with the same numbers and points (each trial once)."""
    from sqlalchemy.exc import OperationalError

    cfg = config(tmp_path, db_url)
    study, _ = _study(cfg, lambda x: (x - 0.3) ** 2, max_trials=10, parallel=2)
    with Runner(cfg) as runner:
        steerer = next(a for a in runner.agents if isinstance(a, Steerer))
        orch = steerer.orch
        refused: list[list[dict[str, Any]]] = []

        def down_twice(add: Any) -> Any:
            def call(wid: int, name: str, start: int, kwargs_list: Any) -> Any:
                if len(refused) < 2:  # the database is gone for two writes of new trials
                    refused.append(kwargs_list)
                    raise OperationalError("INSERT", {}, Exception("server closed the connection"))
                return add(wid, name, start, kwargs_list)

            return call

        orch.add_jobs = down_twice(orch.add_jobs)  # type: ignore[method-assign]
        client = Orchestrator(cfg, engine=runner.engine, bus=runner.bus, dispatch=runner.dispatch)
        wid = client.submit({"name": "s", "works": []}, {"study": study}, open=True)
        assert client.wait(wid, timeout=120) == "finished"
    assert len(refused) == 2
    trials = _trials(client, wid)
    assert [t[0] for t in trials] == list(range(10))  # each trial once, numbered in order
    assert all(t[1] == "finished" for t in trials)
    sent = [p for _, _, p, _ in trials]
    for kwargs_list in refused:  # the points asked while the store was down went out later
        assert all(kw["params"] in sent for kw in kwargs_list)
