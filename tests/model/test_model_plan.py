from typing import Any

from idds_jupyter.model import (
    WORK_MACHINE,
    Condition,
    JobDep,
    Loop,
    Plan,
    RunState,
    Work,
    Workflow,
    WorkflowStatus,
    WorkState,
    WorkStatus,
    plan,
    render_job,
)

F, S, X = WorkStatus.FINISHED, WorkStatus.SKIPPED, WorkStatus.FAILED


def new_state(wf: Workflow, **params: Any) -> RunState:
    return RunState(params=wf.resolve_params(params))


def apply(state: RunState, p: Plan) -> None:
    """What the agents do with a plan (minus the jobs)."""
    for wi in p.create:
        assert wi.name not in state.works, f"duplicate creation of {wi.name}"
        state.works[wi.name] = WorkState(wi.name, wi.status)
    state.conditions.update(p.conditions)
    state.loops.update(p.loops)
    for name, st in p.status_updates.items():
        if name in state.works:
            WORK_MACHINE.check(state.works[name].status, st)
            state.works[name].status = st


def step(wf: Workflow, state: RunState) -> Plan:
    p = plan(wf, state)
    apply(state, p)
    again = plan(wf, state)  # idempotent: nothing new with the same state
    assert again.create == [] and again.conditions == {} and again.loops == {}
    assert again.status == p.status or p.status is None
    return p


def done(state: RunState, name: str, result: Any = None, status: WorkStatus = F) -> None:
    ws = state.works[name]
    assert ws.status in (WorkStatus.NEW, WorkStatus.RUNNING), (name, ws.status)
    ws.status = status
    ws.result = result


def names(p: Plan, status: WorkStatus | None = None) -> list[str]:
    return [wi.name for wi in p.create if status is None or wi.status == status]


def test_three_level_dag_step_by_step():
    wf = Workflow(
        "dag",
        parameters={"seed": 1},
        works=[
            Work("gen", function="pkg.gen:make", parameters={"seed": "{seed}", "n": 3}),
            Work(
                "sim",
                command="sim --seed {seed} --x {x} --j {job_index}",
                kwargs_list="{gen.result}",
            ),
            Work("ana", command="ana", depends_on=["sim"]),
        ],
    )
    wf.validate()
    st = new_state(wf, seed=5)
    p = step(wf, st)
    assert names(p) == ["gen"] and p.status is None
    gen = p.create[0]
    assert gen.parameters == {"seed": 5, "n": 3}
    assert render_job(gen) == {
        "command": None,
        "function": "pkg.gen:make",
        "kwargs": {"seed": 5, "n": 3},
    }
    assert step(wf, st).create == []  # gen still running
    done(st, "gen", [{"x": 10}, {"x": 20}])
    p = step(wf, st)
    assert names(p) == ["sim"]
    sim = p.create[0]
    assert sim.depends_on == ["gen"]
    assert sim.kwargs_list == [{"x": 10}, {"x": 20}]
    assert sim.command == "sim --seed 5 --x {x} --j {job_index}"
    assert (
        render_job(sim, sim.kwargs_list[1], job_index=1)["command"] == "sim --seed 5 --x 20 --j 1"
    )
    assert sim.work.job_count(sim.kwargs_list) == 2
    done(st, "sim")
    p = step(wf, st)
    assert names(p) == ["ana"] and p.status is None
    done(st, "ana")
    p = step(wf, st)
    assert p.create == [] and p.status == WorkflowStatus.FINISHED


def test_condition_picks_one_branch_from_job_result():
    wf = Workflow(
        "cond",
        works=[
            Work("train", command="train"),
            Work("deploy", command="deploy --loss {train.result.loss}"),
            Work("retrain", command="retrain"),
            Work("report", command="report", depends_on=["retrain"]),
            Work("notify", command="notify", depends_on=["deploy"]),
        ],
        conditions=[
            Condition("good", "train.result.loss < 0.1", true=["deploy"], false=["retrain"])
        ],
    )
    wf.validate()
    st = new_state(wf)
    assert names(step(wf, st)) == ["train"]
    done(st, "train", {"loss": 0.05})
    p = step(wf, st)
    assert p.conditions == {"good": True}
    assert names(p, WorkStatus.NEW) == ["deploy"]
    assert names(p, S) == ["retrain", "report"]
    skipped = {wi.name: wi.reason for wi in p.create if wi.status == S}
    assert "good" in (skipped["retrain"] or "") and "retrain" in (skipped["report"] or "")
    assert p.create[0].command == "deploy --loss 0.05"
    done(st, "deploy")
    p = step(wf, st)
    assert names(p) == ["notify"]
    done(st, "notify")
    assert step(wf, st).status == WorkflowStatus.FINISHED


def test_condition_false_branch_and_nested_condition():
    wf = Workflow(
        "c2",
        works=[Work("a", command="a"), Work("b", command="b"), Work("c", command="c")],
        conditions=[
            Condition("big", "a.result > 10", true=["b"], false=["inner"]),
            Condition("inner", "a.result > 5", true=["c"]),
        ],
    )
    st = new_state(wf)
    step(wf, st)
    done(st, "a", 7)
    p = step(wf, st)
    assert p.conditions == {"big": False, "inner": True}
    assert names(p, S) == ["b"] and names(p, WorkStatus.NEW) == ["c"]


def test_loop_ends_by_until_after_three_iterations():
    wf = Workflow(
        "al",
        parameters={"target": 3},
        works=[
            Work("prep", command="prep"),
            Work(
                "propose",
                function="al.p:propose",
                parameters={"i": "{iteration}"},
                depends_on=["prep"],
            ),
            Work("label", command="label {propose.result}"),
            Work("final", command="final {label.result}"),
        ],
        loops=[
            Loop(
                "refine",
                works=["propose", "label"],
                until="label.result >= target",
                max_iterations=10,
            )
        ],
    )
    wf.validate()
    st = new_state(wf)
    p = step(wf, st)
    assert names(p) == ["prep"] and p.loops == {}
    done(st, "prep")
    for i in range(3):
        p = step(wf, st)
        assert names(p) == [f"refine[{i}].propose"], p
        assert p.loops == {"refine": i + 1}
        wi = p.create[0]
        assert (wi.loop, wi.iteration, wi.parameters) == ("refine", i, {"i": i})
        done(st, f"refine[{i}].propose", i * 10)
        p = step(wf, st)
        assert names(p) == [f"refine[{i}].label"]
        assert p.create[0].command == f"label {i * 10}"
        assert p.create[0].depends_on == [f"refine[{i}].propose"]
        done(st, f"refine[{i}].label", i + 1)
    p = step(wf, st)
    assert p.loop_info == {"refine": {"iterations": 3, "converged": True, "status": "finished"}}
    assert p.status_updates == {"refine": F}
    assert names(p) == ["final"]
    assert p.create[0].command == "final 3"  # body name outside the loop = its last iteration
    assert p.create[0].depends_on == ["refine"]
    done(st, "final")
    assert step(wf, st).status == WorkflowStatus.FINISHED


def test_loop_hits_max_iterations_and_previous():
    wf = Workflow(
        "l",
        works=[
            Work("s", command="s {0 if previous == null else previous.s.result + 1}"),
            Work("after", command="after", depends_on=["loop"]),
        ],
        loops=[Loop("loop", ["s"], until="false", max_iterations=2)],
    )
    wf.validate()
    st = new_state(wf)
    p = step(wf, st)
    assert names(p) == ["loop[0].s"] and p.create[0].command == "s 0"
    done(st, "loop[0].s", 41)
    p = step(wf, st)
    assert names(p) == ["loop[1].s"] and p.create[0].command == "s 42"
    done(st, "loop[1].s", 1)
    p = step(wf, st)
    assert p.loop_info["loop"] == {"iterations": 2, "converged": False, "status": "finished"}
    assert names(p) == ["after"]


def test_loop_body_failure_ends_loop_failed():
    wf = Workflow(
        "l",
        works=[
            Work("s", command="s"),
            Work("after", command="a", depends_on=["loop"]),
            Work("other", command="o"),
        ],
        loops=[Loop("loop", ["s"], until="false", max_iterations=5)],
    )
    st = new_state(wf)
    step(wf, st)
    done(st, "loop[0].s", status=X)
    done(st, "other")
    p = step(wf, st)
    assert p.loop_info["loop"]["status"] == "failed"
    assert names(p, S) == ["after"]
    assert p.status == WorkflowStatus.SUBFINISHED


def test_on_failure_handler():
    wf = Workflow(
        "f",
        works=[
            Work("risky", command="r", on_failure=["rescue"]),
            Work("rescue", command="rescue --why {risky.status}"),
        ],
    )
    wf.validate()
    st = new_state(wf)
    assert names(step(wf, st)) == ["risky"]
    done(st, "risky", status=X)
    p = step(wf, st)
    assert names(p, WorkStatus.NEW) == ["rescue"] and p.create[0].command == "rescue --why failed"
    done(st, "rescue")
    assert step(wf, st).status == WorkflowStatus.FINISHED  # handled failure
    # when the watched work succeeds, the handler is skipped
    st = new_state(wf)
    step(wf, st)
    done(st, "risky")
    p = step(wf, st)
    assert names(p, S) == ["rescue"] and p.status == WorkflowStatus.FINISHED


def test_sub_workflow():
    inner = Workflow(
        "inner",
        parameters={"lr": 0.5},
        works=[
            Work("fit", function="m.t:fit", parameters={"lr": "{lr}"}),
            Work("score", command="score {fit.result}"),
        ],
    )
    wf = Workflow(
        "outer",
        parameters={"base": 2},
        works=[
            Work("prep", command="prep"),
            Work("sub", workflow=inner, parameters={"lr": "{base / 10}"}, depends_on=["prep"]),
            Work("end", command="end", depends_on=["sub"]),
        ],
    )
    wf.validate()
    st = new_state(wf)
    step(wf, st)
    done(st, "prep")
    p = step(wf, st)
    assert names(p) == ["sub", "sub.fit"]
    sub, fit = p.create
    assert sub.is_container and sub.status == WorkStatus.RUNNING and sub.parameters == {"lr": 0.2}
    assert fit.parameters == {"lr": 0.2} and fit.parent == "sub"
    done(st, "sub.fit", 0.9)
    p = step(wf, st)
    assert names(p) == ["sub.score"] and p.create[0].command == "score 0.9"
    done(st, "sub.score")
    p = step(wf, st)
    assert p.status_updates == {"sub": F}
    assert names(p) == ["end"]
    done(st, "end")
    assert step(wf, st).status == WorkflowStatus.FINISHED


def test_job_deps_create_child_with_parent_in_one_plan():
    wf = Workflow(
        "jd",
        works=[
            Work("a", command="a {job_index}", n_jobs=1000),
            Work("b", command="b {job_index}", n_jobs=1000, job_deps=[JobDep("a")]),
            Work("c", command="c", n_jobs=500, job_deps=[JobDep("b", "window", size=2)]),
            Work("d", command="d", depends_on=["a"]),
        ],
    )
    wf.validate()
    st = new_state(wf)
    p = step(wf, st)
    assert names(p) == ["a", "b", "c"]
    b = p.create[1]
    assert b.job_deps == [("a", wf.work("b").job_deps[0])] and b.depends_on == []
    assert render_job(b, None, job_index=7)["command"] == "b 7"
    done(st, "a")
    assert names(step(wf, st)) == ["d"]


def test_input_dataset_file_placeholder():
    wf = Workflow(
        "ds",
        parameters={"out": "/o"},
        works=[
            Work(
                "scan",
                command="scan {file} -o {out}/{job_index} --tag {tag}",
                input_dataset="data:raw",
                parameters={"tag": "t{job_index}"},
            ),
        ],
    )
    wf.validate()
    st = new_state(wf)
    wi = step(wf, st).create[0]
    assert wi.job_parameters == {"tag": "t{job_index}"}
    job = render_job(wi, None, job_index=3, file="f3.root")
    assert job["command"] == "scan f3.root -o /o/3 --tag t3"
    assert job["kwargs"] == {"tag": "t3"}


def test_job_level_placeholder_reading_a_result_gets_context():
    wf = Workflow(
        "ctx",
        works=[
            Work("gen", command="g"),
            Work("use", command="use {gen.result[job_index]}", n_jobs=2, depends_on=["gen"]),
        ],
    )
    st = new_state(wf)
    step(wf, st)
    done(st, "gen", ["x", "y"])
    wi = step(wf, st).create[0]
    assert wi.context == {"gen": {"name": "gen", "status": "finished", "result": ["x", "y"]}}
    assert render_job(wi, job_index=1)["command"] == "use y"


def test_dependency_on_failed_work_is_skipped_and_statuses():
    wf = Workflow(
        "s",
        works=[
            Work("a", command="a"),
            Work("b", command="b"),
            Work("c", command="c", depends_on=["a"]),
        ],
    )
    st = new_state(wf)
    step(wf, st)
    done(st, "a", status=X)
    done(st, "b")
    p = step(wf, st)
    assert names(p, S) == ["c"]
    assert p.status == WorkflowStatus.SUBFINISHED
    st = new_state(wf)
    step(wf, st)
    done(st, "a", status=X)
    done(st, "b", status=WorkStatus.SUBFINISHED)
    assert step(wf, st).status == WorkflowStatus.FAILED
    st = new_state(wf)
    step(wf, st)
    done(st, "a")
    done(st, "b")
    step(wf, st)
    done(st, "c")
    assert step(wf, st).status == WorkflowStatus.FINISHED


def test_parameter_resolution_error_fails_the_instance():
    wf = Workflow(
        "e", works=[Work("gen", command="g"), Work("use", command="u {gen.result.missing}")]
    )
    st = new_state(wf)
    step(wf, st)
    done(st, "gen", {"x": 1})
    p = step(wf, st)
    assert names(p, X) == ["use"]
    assert "missing" in p.errors["use"]
    assert p.status == WorkflowStatus.SUBFINISHED


def test_condition_error_is_a_failure():
    wf = Workflow(
        "e",
        works=[Work("a", command="a"), Work("b", command="b")],
        conditions=[Condition("c", "a.result.nope", true=["b"])],
    )
    st = new_state(wf)
    step(wf, st)
    done(st, "a", {})
    p = step(wf, st)
    assert "c" in p.errors and names(p, S) == ["b"]
    assert p.status == WorkflowStatus.SUBFINISHED


def test_empty_workflow_finishes():
    assert plan(Workflow("e"), RunState(params={})).status == WorkflowStatus.FINISHED


def drive(
    wf: Workflow, result_for, fail: set[str] = frozenset(), max_steps: int = 50
) -> tuple[RunState, list[Plan]]:
    """Run the planner to the end, finishing every runnable instance between plans."""
    st = new_state(wf)
    plans = []
    for _ in range(max_steps):
        p = step(wf, st)
        plans.append(p)
        if p.status is not None:
            return st, plans
        for name, ws in st.works.items():
            if ws.status == WorkStatus.NEW:
                done(st, name, result_for(name), X if name in fail else F)
    raise AssertionError("workflow did not end")


def test_loop_skipped_when_its_dependency_fails():
    wf = Workflow(
        "l",
        works=[
            Work("a", command="a"),
            Work("s", command="s"),
            Work("t", command="t", depends_on=["s"]),
            Work("after", command="x", depends_on=["loop"]),
        ],
        loops=[Loop("loop", ["s", "t"], until="true", depends_on=["a"])],
    )
    st, plans = drive(wf, lambda n: None, fail={"a"})
    assert st.works["loop[0].s"].status == S and st.works["loop[0].t"].status == S
    assert st.works["after"].status == S
    assert plans[-1].status == WorkflowStatus.FAILED


def test_sub_workflow_in_loop_and_loop_in_sub_workflow():
    inner = Workflow(
        "inner",
        works=[Work("x", command="x"), Work("y", command="y {x.result}")],
        loops=[Loop("again", ["y"], until="y.result > 1", max_iterations=3)],
    )
    wf = Workflow(
        "outer",
        works=[Work("sub", workflow=inner), Work("z", command="z", depends_on=["sub"])],
        loops=[Loop("outer_loop", ["sub"], until="iteration >= 1")],
    )
    wf.validate()
    counter = {"n": 0}

    def result(name: str) -> Any:
        counter["n"] += 1
        return counter["n"]

    st, plans = drive(wf, result)
    created = [wi.name for p in plans for wi in p.create]
    for expected in [
        "outer_loop[0].sub",
        "outer_loop[0].sub.x",
        "outer_loop[0].sub.again[0].y",
        "outer_loop[1].sub",
        "outer_loop[1].sub.again[0].y",
        "z",
    ]:
        assert expected in created
    assert len(created) == len(set(created))
    assert plans[-1].status == WorkflowStatus.FINISHED
    assert st.works["outer_loop[1].sub"].status == F


def test_rich_template_runs_to_the_end(rich: Workflow):
    wf = rich

    def result(name: str) -> Any:
        return {
            "gen": [{"x": 1}, {"x": 2}],
            "sim": 0,
            "sub.fit": {"path": "/m"},
            "sub.score": 0.9,
        }.get(name, {"done": True} if name.endswith(".step") else None)

    st, plans = drive(wf, result)
    created = {wi.name: wi for p in plans for wi in p.create}
    assert created["sim"].kwargs_list == [{"x": 1}, {"x": 2}]
    assert created["cleanup"].status == S  # the condition took the true branch
    assert created["sub.score"].command == "score --model /m"
    assert created["fancy"].job_deps[0][0] == "merge"
    assert st.conditions == {"good": True, "sub.ok": True}
    assert plans[-1].status == WorkflowStatus.FINISHED
