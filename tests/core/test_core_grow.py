"""An open run of independent works (a FaaT body, an HPO study) grows and ends without
re-planning the works before: a new work is planned alone, a work's end asks no plan."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from helpers import config, wait_for
from sqlalchemy import select, update

from idds_jupyter.agents.runner import Runner
from idds_jupyter.core import Orchestrator
from idds_jupyter.model import Workflow
from idds_jupyter.store.tables import jobs, workflows, works
from idds_jupyter.store.workflows import full_template

SLEEP = "idds_jupyter.worker.job:sleep"


def _call(name: str, seconds: float = 0.05, **extra: Any) -> dict[str, Any]:
    return {"name": name, "function": SLEEP, "parameters": {"seconds": seconds}, **extra}


def _row(orch: Orchestrator, wid: int) -> dict[str, Any]:
    with orch.engine.begin() as conn:
        return dict(conn.execute(select(workflows).where(workflows.c.id == wid)).mappings().one())


def _statuses(orch: Orchestrator, wid: int) -> dict[str, str]:
    with orch.engine.begin() as conn:
        return dict(conn.execute(select(works.c.name, works.c.status)  # type: ignore[arg-type]
                                 .where(works.c.workflow_id == wid)).all())


def _job_statuses(orch: Orchestrator, wid: int) -> list[str]:
    with orch.engine.begin() as conn:
        return [r[0] for r in conn.execute(select(jobs.c.status).where(jobs.c.workflow_id == wid))]


def test_independent_works_end_without_a_replan(tmp_path: Path, db_url: str) -> None:
    cfg = config(tmp_path, db_url)
    with Runner(cfg) as runner:
        orch = Orchestrator(cfg, engine=runner.engine, bus=runner.bus, dispatch=runner.dispatch)
        wid = orch.submit({"name": "body", "works": []}, open=True)
        for i in range(4):
            orch.add_works(wid, [_call(f"call_{i}")])
        wait_for(lambda: _job_statuses(orch, wid) == ["finished"] * 4)
        wait_for(lambda: set(_statuses(orch, wid).values()) == {"finished"})
        row = _row(orch, wid)
        # submitted (1) and grown four times: no work's end marked it for the Clerk
        assert (row["dirty_seq"], row["clean_seq"]) == (5, 5)
        assert row["meta"]["independent"] is True and row["status"] == "running"
        # the run's template is the grown one, as a whole parse and dump gives it
        with orch.engine.begin() as conn:
            whole = full_template(conn, wid, row["template"], row["meta"])
        assert whole == Workflow.from_dict(whole).to_dict()
        assert [w["name"] for w in whole["works"]] == [f"call_{i}" for i in range(4)]
        # its works all ended: the close ends it, in its transaction, with no Clerk round
        assert orch.close(wid, result=4) == "finished"
        row = _row(orch, wid)
        assert (row["status"], row["dirty_seq"], row["clean_seq"]) == ("finished", 5, 5)
        assert row["meta"]["result"] == 4
        assert orch.wait(wid, timeout=1) == "finished"


def test_closing_while_a_work_runs_still_ends_the_run(tmp_path: Path, db_url: str) -> None:
    """The work ends after the close: its end ends the run, whatever the run's size (here
    more works than a plan would like to read at each end), with no Clerk round."""
    cfg = config(tmp_path, db_url)
    with Runner(cfg) as runner:
        orch = Orchestrator(cfg, engine=runner.engine, bus=runner.bus, dispatch=runner.dispatch)
        wid = orch.submit({"name": "body", "works": []}, open=True)
        orch.add_works(wid, [_call(f"quick_{i}", 0.0) for i in range(70)])
        wait_for(lambda: list(_statuses(orch, wid).values()) == ["finished"] * 70)
        orch.add_works(wid, [_call("slow", 0.8)])
        assert orch.close(wid, result=1) == "running"
        assert _statuses(orch, wid)["slow"] == "running"
        assert orch.wait(wid, timeout=60) == "finished"
        assert _statuses(orch, wid)["slow"] == "finished"
        row = _row(orch, wid)
        assert row["dirty_seq"] == row["clean_seq"] == 3  # submitted, grown twice


def test_a_dependent_work_makes_the_run_planned_again(tmp_path: Path, db_url: str) -> None:
    """A work that waits for another turns the run into a planned one: the end of the
    first releases the second through the Clerk, as for any template."""
    cfg = config(tmp_path, db_url)
    with Runner(cfg) as runner:
        orch = Orchestrator(cfg, engine=runner.engine, bus=runner.bus, dispatch=runner.dispatch)
        wid = orch.submit({"name": "body", "works": []}, open=True)
        orch.add_works(wid, [_call("first", 0.5)])
        orch.add_works(wid, [_call("second", 0.05, depends_on=["first"])])
        assert _row(orch, wid)["meta"]["independent"] is False
        assert _statuses(orch, wid) == {"first": "running"}  # second waits for first
        wait_for(lambda: _statuses(orch, wid) == {"first": "finished", "second": "finished"})
        orch.add_works(wid, [_call("third")])  # planned whole, as the run is no longer independent
        wait_for(lambda: _statuses(orch, wid).get("third") == "finished")
        orch.close(wid, result=None)
        assert orch.wait(wid, timeout=60) == "finished"


FAIL = "idds_jupyter.worker.job:fail"


def test_a_run_of_few_independent_works_ends_where_its_last_work_ends(tmp_path: Path,
                                                                       db_url: str) -> None:
    """A function call's workflow ends in the transaction of its last result: no Clerk round
    (never marked for one), its outbound message written, the status the planner would give."""
    from idds_jupyter.store.tables import messages

    cfg = config(tmp_path, db_url)
    with Runner(cfg) as runner:
        orch = Orchestrator(cfg, engine=runner.engine, bus=runner.bus, dispatch=runner.dispatch)
        ok = orch.submit({"name": "call", "works": [_call("f")]})
        mixed = orch.submit({"name": "two", "works": [_call("f"), {"name": "g", "function": FAIL}]})
        bad = orch.submit({"name": "bad", "works": [{"name": "g", "function": FAIL}]})
        assert [orch.wait(w, timeout=60) for w in (ok, mixed, bad)] == ["finished", "subfinished",
                                                                         "failed"]
        for wid in (ok, mixed, bad):
            row = _row(orch, wid)
            assert (row["dirty_seq"], row["clean_seq"]) == (1, 1)
            assert row["meta"]["independent"] is True and row["finished_at"] is not None
        with orch.engine.begin() as conn:
            sent = conn.execute(select(messages.c.workflow_id, messages.c.payload)
                                .where(messages.c.kind == "workflow.terminal")).all()
        assert sorted((w, p["status"]) for w, p in sent) == [
            (ok, "finished"), (mixed, "subfinished"), (bad, "failed")]


def test_a_dependent_template_still_ends_through_the_clerk(tmp_path: Path, db_url: str) -> None:
    cfg = config(tmp_path, db_url)
    with Runner(cfg) as runner:
        orch = Orchestrator(cfg, engine=runner.engine, bus=runner.bus, dispatch=runner.dispatch)
        wid = orch.submit({"name": "dag", "works": [_call("a"), _call("b", depends_on=["a"])]})
        assert orch.wait(wid, timeout=60) == "finished"
        row = _row(orch, wid)
        assert row["meta"]["independent"] is False and row["dirty_seq"] > 1  # planned again


def test_a_run_that_ends_at_submission_has_its_outbound_message(tmp_path: Path,
                                                                  db_url: str) -> None:
    """Whoever applies the plan that ends a run (here the submission) writes its message."""
    from idds_jupyter.store.tables import messages

    orch = Orchestrator(config(tmp_path, db_url))
    wid = orch.submit({"name": "nothing", "works": []})
    assert orch.status(wid)["status"] == "finished"
    with orch.engine.begin() as conn:
        sent = conn.execute(select(messages.c.payload).where(messages.c.workflow_id == wid)).all()
    assert [p["status"] for (p,) in sent] == ["finished"]


def test_a_template_another_writer_grew_is_read_again(tmp_path: Path, db_url: str) -> None:
    """Added works live in their rows (the run's template is not rewritten for each); the
    parsed template stays in memory, and a growth made elsewhere (another API process) is
    read from the rows, never lost."""
    orch = Orchestrator(config(tmp_path, db_url))
    wid = orch.submit({"name": "body", "works": []}, open=True)
    orch.add_works(wid, [_call("a")])
    orch.add_works(wid, [_call("b")])
    row = _row(orch, wid)
    assert row["template"]["works"] == [] and row["meta"]["grown"]
    elsewhere = Workflow.from_dict({"name": "x", "works": [_call("elsewhere")]}).works[0].to_dict()
    with orch.engine.begin() as conn:  # what another process's add_works writes
        conn.execute(works.insert().values(
            workflow_id=wid, name="elsewhere", template_name="elsewhere", kind="function",
            status="new", spec={"work": elsewhere, "parent": None}, created_at=0, updated_at=0))
        conn.execute(update(workflows).where(workflows.c.id == wid).values(
            dirty_seq=workflows.c.dirty_seq + 1, clean_seq=workflows.c.clean_seq + 1,
            updated_at=row["updated_at"] + 1))
    orch.add_works(wid, [_call("c")])
    row = _row(orch, wid)
    with orch.engine.begin() as conn:
        whole = full_template(conn, wid, row["template"], row["meta"])
    assert [w["name"] for w in whole["works"]] == ["a", "b", "elsewhere", "c"]
    assert whole == Workflow.from_dict(whole).to_dict()


def _jobs_of(orch: Orchestrator, wid: int, work: str) -> list[tuple[int, str, Any]]:
    with orch.engine.begin() as conn:
        return [tuple(r) for r in conn.execute(  # type: ignore[misc]
            select(jobs.c.idx, jobs.c.status, jobs.c.kwargs)
            .select_from(jobs.join(works, works.c.id == jobs.c.work_id))
            .where(jobs.c.workflow_id == wid, works.c.name == work).order_by(jobs.c.idx))]


def _n_jobs(orch: Orchestrator, wid: int, work: str) -> int:
    with orch.engine.begin() as conn:
        return int(conn.execute(select(works.c.n_jobs).where(
            works.c.workflow_id == wid, works.c.name == work)).scalar_one())


def test_a_declared_work_waits_for_the_jobs_added_to_it(tmp_path: Path, db_url: str) -> None:
    """An HPO study's trials: one work declared with all its jobs, each added later by one
    insert. The work does not end while jobs are still to come, even with all it has ended."""
    cfg = config(tmp_path, db_url)
    with Runner(cfg) as runner:
        orch = Orchestrator(cfg, engine=runner.engine, bus=runner.bus, dispatch=runner.dispatch)
        wid = orch.submit({"name": "body", "works": []}, open=True)
        orch.add_works(wid, [{"name": "t_0_3", "function": SLEEP,
                              "kwargs_list": [{"seconds": 0.0}]}], declared={"t_0_3": 4})
        wait_for(lambda: _job_statuses(orch, wid) == ["finished"])
        assert _statuses(orch, wid)["t_0_3"] == "running" and _n_jobs(orch, wid, "t_0_3") == 4
        orch.add_jobs(wid, "t_0_3", 1, [{"seconds": 0.0}, {"seconds": 0.01}])
        wait_for(lambda: _job_statuses(orch, wid) == ["finished"] * 3)
        assert _statuses(orch, wid)["t_0_3"] == "running"
        orch.add_jobs(wid, "t_0_3", 3, [{"seconds": 0.02}])
        wait_for(lambda: _statuses(orch, wid)["t_0_3"] == "finished")
        got = _jobs_of(orch, wid, "t_0_3")
        assert [(i, s) for i, s, _ in got] == [(i, "finished") for i in range(4)]
        assert [kw["seconds"] for _, _, kw in got] == [0.0, 0.0, 0.01, 0.02]
        assert orch.close(wid) == "finished"


def test_closing_settles_a_declared_work_to_the_jobs_it_got(tmp_path: Path, db_url: str) -> None:
    """A study stopped before its last trial: its work ends with the jobs it has, and so
    does the run; no job can be added after."""
    from idds_jupyter.store.works import WorkEnded

    cfg = config(tmp_path, db_url)
    with Runner(cfg) as runner:
        orch = Orchestrator(cfg, engine=runner.engine, bus=runner.bus, dispatch=runner.dispatch)
        wid = orch.submit({"name": "body", "works": []}, open=True)
        orch.add_works(wid, [{"name": "t_0_9", "function": SLEEP,
                              "kwargs_list": [{"seconds": 0.0}, {"seconds": 0.3}]}],
                       declared={"t_0_9": 10})
        wait_for(lambda: "finished" in _job_statuses(orch, wid))
        assert orch.close(wid) == "running"  # one job still runs
        assert _n_jobs(orch, wid, "t_0_9") == 2
        assert orch.wait(wid, timeout=60) == "finished"
        assert _statuses(orch, wid)["t_0_9"] == "finished"
        with pytest.raises(WorkEnded, match="t_0_9"):
            orch.add_jobs(wid, "t_0_9", 2, [{"seconds": 0.0}])
        assert len(_jobs_of(orch, wid, "t_0_9")) == 2


def test_works_declared_together_keep_their_count_when_expanded_later(tmp_path: Path,
                                                                     db_url: str) -> None:
    """Two new works in one call are expanded by the Transformer, after the declaration."""
    cfg = config(tmp_path, db_url)
    with Runner(cfg) as runner:
        orch = Orchestrator(cfg, engine=runner.engine, bus=runner.bus, dispatch=runner.dispatch)
        wid = orch.submit({"name": "body", "works": []}, open=True)
        orch.add_works(wid, [{"name": f"{s}_trial_0_4", "function": SLEEP,
                              "kwargs_list": [{"seconds": 0.0}]} for s in "ab"],
                       declared={"a_trial_0_4": 5, "b_trial_0_4": 5})
        wait_for(lambda: _job_statuses(orch, wid) == ["finished"] * 2)
        assert _statuses(orch, wid) == {"a_trial_0_4": "running", "b_trial_0_4": "running"}
        assert _n_jobs(orch, wid, "a_trial_0_4") == _n_jobs(orch, wid, "b_trial_0_4") == 5
        orch.close(wid)
        assert orch.wait(wid, timeout=60) == "finished"
