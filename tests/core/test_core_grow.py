"""An open run of independent works (a FaaT body, an HPO study) grows and ends without
re-planning the works before: a new work is planned alone, a work's end asks no plan."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from helpers import config, wait_for
from sqlalchemy import select, update

from idds_jupyter.agents.runner import Runner
from idds_jupyter.bus import event as ev
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
        return dict(
            conn.execute(
                select(works.c.name, works.c.status).where(works.c.workflow_id == wid)  # type: ignore[arg-type]
            ).all()
        )


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


def test_a_run_of_few_independent_works_ends_where_its_last_work_ends(
    tmp_path: Path, db_url: str
) -> None:
    """A function call's workflow ends in the transaction of its last result: no Clerk round
    (never marked for one), its outbound message written, the status the planner would give."""
    from idds_jupyter.store.tables import messages

    cfg = config(tmp_path, db_url)
    with Runner(cfg) as runner:
        orch = Orchestrator(cfg, engine=runner.engine, bus=runner.bus, dispatch=runner.dispatch)
        ok = orch.submit({"name": "call", "works": [_call("f")]})
        mixed = orch.submit({"name": "two", "works": [_call("f"), {"name": "g", "function": FAIL}]})
        bad = orch.submit({"name": "bad", "works": [{"name": "g", "function": FAIL}]})
        assert [orch.wait(w, timeout=60) for w in (ok, mixed, bad)] == [
            "finished",
            "subfinished",
            "failed",
        ]
        for wid in (ok, mixed, bad):
            row = _row(orch, wid)
            assert (row["dirty_seq"], row["clean_seq"]) == (1, 1)
            assert row["meta"]["independent"] is True and row["finished_at"] is not None
        with orch.engine.begin() as conn:
            sent = conn.execute(
                select(messages.c.workflow_id, messages.c.payload).where(
                    messages.c.kind == "workflow.terminal"
                )
            ).all()
        assert sorted((w, p["status"]) for w, p in sent) == [
            (ok, "finished"),
            (mixed, "subfinished"),
            (bad, "failed"),
        ]


def test_a_dependent_template_still_ends_through_the_clerk(tmp_path: Path, db_url: str) -> None:
    cfg = config(tmp_path, db_url)
    with Runner(cfg) as runner:
        orch = Orchestrator(cfg, engine=runner.engine, bus=runner.bus, dispatch=runner.dispatch)
        wid = orch.submit({"name": "dag", "works": [_call("a"), _call("b", depends_on=["a"])]})
        assert orch.wait(wid, timeout=60) == "finished"
        row = _row(orch, wid)
        assert row["meta"]["independent"] is False and row["dirty_seq"] > 1  # planned again


def test_a_run_that_ends_at_submission_has_its_outbound_message(
    tmp_path: Path, db_url: str
) -> None:
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
        conn.execute(
            works.insert().values(
                workflow_id=wid,
                name="elsewhere",
                template_name="elsewhere",
                kind="function",
                status="new",
                spec={"work": elsewhere, "parent": None},
                created_at=0,
                updated_at=0,
            )
        )
        conn.execute(
            update(workflows)
            .where(workflows.c.id == wid)
            .values(
                dirty_seq=workflows.c.dirty_seq + 1,
                clean_seq=workflows.c.clean_seq + 1,
                updated_at=row["updated_at"] + 1,
            )
        )
    orch.add_works(wid, [_call("c")])
    row = _row(orch, wid)
    with orch.engine.begin() as conn:
        whole = full_template(conn, wid, row["template"], row["meta"])
    assert [w["name"] for w in whole["works"]] == ["a", "b", "elsewhere", "c"]
    assert whole == Workflow.from_dict(whole).to_dict()


def _jobs_of(orch: Orchestrator, wid: int, work: str) -> list[tuple[int, str, Any]]:
    with orch.engine.begin() as conn:
        return [
            tuple(r)
            for r in conn.execute(  # type: ignore[misc]
                select(jobs.c.idx, jobs.c.status, jobs.c.kwargs)
                .select_from(jobs.join(works, works.c.id == jobs.c.work_id))
                .where(jobs.c.workflow_id == wid, works.c.name == work)
                .order_by(jobs.c.idx)
            )
        ]


def _n_jobs(orch: Orchestrator, wid: int, work: str) -> int:
    with orch.engine.begin() as conn:
        return int(
            conn.execute(
                select(works.c.n_jobs).where(works.c.workflow_id == wid, works.c.name == work)
            ).scalar_one()
        )


def test_a_declared_work_waits_for_the_jobs_added_to_it(tmp_path: Path, db_url: str) -> None:
    """An HPO study's trials: one work declared with all its jobs, each added later by one
    insert. The work does not end while jobs are still to come, even with all it has ended."""
    cfg = config(tmp_path, db_url)
    with Runner(cfg) as runner:
        orch = Orchestrator(cfg, engine=runner.engine, bus=runner.bus, dispatch=runner.dispatch)
        wid = orch.submit({"name": "body", "works": []}, open=True)
        orch.add_works(
            wid,
            [{"name": "t_0_3", "function": SLEEP, "kwargs_list": [{"seconds": 0.0}]}],
            declared={"t_0_3": 4},
        )
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
        orch.add_works(
            wid,
            [
                {
                    "name": "t_0_9",
                    "function": SLEEP,
                    "kwargs_list": [{"seconds": 0.0}, {"seconds": 0.3}],
                }
            ],
            declared={"t_0_9": 10},
        )
        wait_for(lambda: "finished" in _job_statuses(orch, wid))
        assert orch.close(wid) == "running"  # one job still runs
        assert _n_jobs(orch, wid, "t_0_9") == 2
        assert orch.wait(wid, timeout=60) == "finished"
        assert _statuses(orch, wid)["t_0_9"] == "finished"
        with pytest.raises(WorkEnded, match="t_0_9"):
            orch.add_jobs(wid, "t_0_9", 2, [{"seconds": 0.0}])
        assert len(_jobs_of(orch, wid, "t_0_9")) == 2


def test_works_declared_together_keep_their_count_when_expanded_later(
    tmp_path: Path, db_url: str
) -> None:
    """Two new works in one call are expanded by the Transformer, after the declaration."""
    cfg = config(tmp_path, db_url)
    with Runner(cfg) as runner:
        orch = Orchestrator(cfg, engine=runner.engine, bus=runner.bus, dispatch=runner.dispatch)
        wid = orch.submit({"name": "body", "works": []}, open=True)
        orch.add_works(
            wid,
            [
                {"name": f"{s}_trial_0_4", "function": SLEEP, "kwargs_list": [{"seconds": 0.0}]}
                for s in "ab"
            ],
            declared={"a_trial_0_4": 5, "b_trial_0_4": 5},
        )
        wait_for(lambda: _job_statuses(orch, wid) == ["finished"] * 2)
        assert _statuses(orch, wid) == {"a_trial_0_4": "running", "b_trial_0_4": "running"}
        assert _n_jobs(orch, wid, "a_trial_0_4") == _n_jobs(orch, wid, "b_trial_0_4") == 5
        orch.close(wid)
        assert orch.wait(wid, timeout=60) == "finished"


ECHO = "idds_jupyter.worker.job:echo"
FAIL = "idds_jupyter.worker.job:fail"


def test_reserved_job_ids_are_taken_by_no_other_insert(tmp_path: Path, db_url: str) -> None:
    """Ids reserved ahead (a trial sent before its row) are above every job's, below every
    later job's, and never handed out twice; a job can be written with one."""
    from idds_jupyter.store.jobs import reserve_job_ids

    cfg = config(tmp_path, db_url)
    orch = Orchestrator(cfg)
    wid = orch.submit({"name": "m", "works": [_call("a", n_jobs=3)]})
    with orch.engine.begin() as conn:
        before = list(conn.execute(select(jobs.c.id).where(jobs.c.workflow_id == wid)).scalars())
        first = reserve_job_ids(conn, 5)
    with orch.engine.begin() as conn:
        second = reserve_job_ids(conn, 3)
    assert len(first) == 5 and len(second) == 3 and not set(first) & set(second)
    assert min(first) > max(before)
    later = orch.submit({"name": "m2", "works": [_call("b", n_jobs=2)]})
    with orch.engine.begin() as conn:
        after = list(conn.execute(select(jobs.c.id).where(jobs.c.workflow_id == later)).scalars())
        work_id = conn.execute(select(works.c.id).where(works.c.workflow_id == later)).scalar_one()
        conn.execute(
            jobs.insert().values(
                id=first[0],
                workflow_id=later,
                work_id=work_id,
                idx=9,
                status="ready",
                created_at=0.0,
            )
        )
    assert min(after) > max(first + second)
    with orch.engine.begin() as conn:
        assert conn.execute(select(jobs.c.idx).where(jobs.c.id == first[0])).scalar_one() == 9


def _grown(
    orch: Orchestrator,
    wid: int,
    name: str,
    function: str,
    kwargs: list[dict[str, Any]],
    declared: int,
) -> None:
    """A work declared bigger with its first job, and its second added as a trial is (the
    first added to a work is written, then sent)."""
    orch.add_works(
        wid,
        [{"name": name, "function": function, "kwargs_list": kwargs[:1]}],
        declared={name: declared},
    )
    orch.add_jobs(wid, name, 1, kwargs[1:])


def _hold_run(orch: Orchestrator, wid: int, held: Any, release: Any) -> None:
    """Keep the run's row locked (and, on SQLite, the database's one writer) until ``release``."""
    with orch.engine.begin() as conn:
        conn.execute(select(workflows.c.id).where(workflows.c.id == wid).with_for_update())
        held.set()
        assert release.wait(60)


def test_added_jobs_leave_before_their_rows_and_their_results_wait_for_them(
    tmp_path: Path, db_url: str
) -> None:
    """Jobs added to a work that had jobs added before go to the worker first, their rows
    written after (an HPO trial's transaction is off its path). A job that ends before its
    row is there is recorded once it is: a success told at once, a failure too."""
    import threading

    cfg = config(tmp_path, db_url)
    with Runner(cfg) as runner:
        orch = Orchestrator(cfg, engine=runner.engine, bus=runner.bus, dispatch=runner.dispatch)
        wid = orch.submit({"name": "body", "works": []}, open=True)
        _grown(orch, wid, "ok", ECHO, [{"n": 0}, {"n": 1}], declared=3)
        _grown(orch, wid, "bad", FAIL, [{"message": "m0"}, {"message": "m1"}], declared=3)
        wait_for(
            lambda: len([s for s in _job_statuses(orch, wid) if s in ("finished", "failed")]) == 4
        )
        told: list[dict[str, Any]] = []
        sub = runner.bus.subscribe([ev.JOB_RESULT])
        held, release = threading.Event(), threading.Event()
        holder = threading.Thread(target=_hold_run, args=(orch, wid, held, release))
        holder.start()
        assert held.wait(30)
        adders = [
            threading.Thread(target=orch.add_jobs, args=(wid, w, 2, [kw]))
            for w, kw in (("ok", {"n": 2}), ("bad", {"message": "m2"}))
        ]
        for a in adders:
            a.start()
        state = runner.dispatch.state
        # both jobs ran while their rows could not be written; the success was told
        wait_for(
            lambda: (
                told.extend(j for e in sub.get(0.1) for j in e.payload.get("jobs", ()))
                or any(j.get("work") == "ok" and j.get("idx") == 2 for j in told)
            ),
            timeout=30,
        )
        assert len(state.unwritten) == 2  # their rows are still to come
        release.set()
        holder.join(30)
        for a in adders:
            a.join(30)
        sub.close()
        wait_for(
            lambda: (
                len(_job_statuses(orch, wid)) == 6
                and "submitted" not in _job_statuses(orch, wid)
                and "running" not in _job_statuses(orch, wid)
            )
        )
        assert not state.unwritten
        ok, bad = _jobs_of(orch, wid, "ok"), _jobs_of(orch, wid, "bad")
        assert [(i, s) for i, s, _ in ok] == [(0, "finished"), (1, "finished"), (2, "finished")]
        assert [(i, s) for i, s, _ in bad] == [(0, "failed"), (1, "failed"), (2, "failed")]
        with orch.engine.begin() as conn:
            rows = conn.execute(
                select(
                    works.c.name,
                    jobs.c.idx,
                    jobs.c.result,
                    jobs.c.error,
                    jobs.c.attempt,
                    jobs.c.release_count,
                )
                .join(works, works.c.id == jobs.c.work_id)
                .where(jobs.c.workflow_id == wid, jobs.c.idx == 2)
                .order_by(works.c.name)
            ).all()
        assert [
            (r.name, r.result, (r.error or "").split("\n")[0], r.attempt, r.release_count)
            for r in rows
        ] == [("bad", None, "RuntimeError: m2", 1, 1), ("ok", {"n": 2}, "", 1, 1)]
        orch.close(wid)


def test_jobs_sent_ahead_to_a_work_that_ended_are_withdrawn(tmp_path: Path, db_url: str) -> None:
    """A work aborted between a turn's send and its write: the write fails as before
    (WorkEnded), the jobs sent are taken back from the worker, and no row is left."""
    from idds_jupyter.store.works import WorkEnded

    cfg = config(tmp_path, db_url)
    with Runner(cfg) as runner:
        orch = Orchestrator(cfg, engine=runner.engine, bus=runner.bus, dispatch=runner.dispatch)
        wid = orch.submit({"name": "body", "works": []}, open=True)
        _grown(orch, wid, "t", SLEEP, [{"seconds": 0.0}] * 2, declared=4)
        wait_for(lambda: _job_statuses(orch, wid) == ["finished"] * 2)
        assert orch.abort(wid, work="t").changed
        state = runner.dispatch.state
        sent: list[list[dict[str, Any]]] = []
        cancelled: list[list[int]] = []
        backend = state.backends["local"]
        submit, cancel = backend.submit, backend.cancel
        backend.submit = lambda specs: (sent.append(specs), submit(specs))[1]  # type: ignore[method-assign]
        backend.cancel = lambda ids: (cancelled.append(ids), cancel(ids))[1]  # type: ignore[method-assign]
        with pytest.raises(WorkEnded, match="'t'"):
            orch.add_jobs(wid, "t", 2, [{"seconds": 30.0}])
        assert [[s["idx"] for s in specs] for specs in sent] == [[2]]  # it did leave first
        assert cancelled == [[sent[0][0]["job_id"]]]
        assert not state.unwritten and sent[0][0]["job_id"] not in state.in_flight
        assert len(_job_statuses(orch, wid)) == 2
