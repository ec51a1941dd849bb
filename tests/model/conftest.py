"""Shared fixtures of the model tests."""

import pytest

from idds_jupyter.model import Condition, JobDep, Loop, Parameter, Work, Workflow


def rich_workflow() -> Workflow:
    inner = Workflow(
        name="inner_wf",
        parameters={"lr": 0.1},
        works=[
            Work("fit", function="mypkg.train:fit", parameters={"lr": "{lr}"}),
            Work("score", command="score --model {fit.result.path}"),
        ],
        conditions=[Condition("ok", "score.result > 0.5", true=[], false=[])],
    )
    return Workflow(
        name="rich",
        description="everything at once",
        parameters={"seed": 1, "n": 4},
        parameter_specs=[
            Parameter("seed", type="int", description="random seed"),
            Parameter("tag", default="x"),
        ],
        works=[
            Work(
                "gen",
                function="mypkg.gen:points",
                parameters={"n": "{n}"},
                retries=2,
                resources={"cores": 2},
            ),
            Work(
                "sim",
                command="python sim.py --seed {seed} --x {x}",
                kwargs_list="{gen.result}",
                env={"OMP_NUM_THREADS": "1"},
                timeout_s=60.5,
                backend="local",
            ),
            Work(
                "reco",
                command="reco {job_index}",
                n_jobs=4,
                job_deps=[JobDep("merge", pattern="window", size=2)],
                policy="failed",
            ),
            Work(
                "merge", command="merge {x}", kwargs_list=[{"x": 1}, {"x": 2}, {"x": 3}, {"x": 4}]
            ),
            Work("scan", command="scan {file}", input_dataset="data:raw", depends_on=["gen"]),
            Work("sub", workflow=inner, parameters={"lr": "{seed / 10}"}, depends_on=["sim"]),
            Work("cleanup", command="cleanup"),
            Work("step", function="mypkg.al:step", parameters={"i": "{iteration}"}),
            Work(
                "fancy",
                command="fancy",
                job_deps=[JobDep("merge", pattern="explicit", map=[[0, 1], [2]])],
                n_jobs=2,
            ),
        ],
        conditions=[Condition("good", "sim.status == 'finished'", true=["sub"], false=["cleanup"])],
        loops=[
            Loop(
                "refine",
                works=["step"],
                until="step.result.done",
                max_iterations=5,
                depends_on=["gen"],
            )
        ],
    )


@pytest.fixture
def rich() -> Workflow:
    """A template using every feature: sub-workflow, loop, conditions, job_deps, sweeps."""
    return rich_workflow()
