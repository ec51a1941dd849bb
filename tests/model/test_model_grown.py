"""A FaaT run grows one work at a time: each addition is checked, old works are not re-checked."""

from __future__ import annotations

import pytest

from idds_jupyter.model import TemplateError, Workflow


def _work(i: int, **extra: object) -> dict[str, object]:
    return {
        "name": f"call_{i}",
        "payload": {"function": "a" * 64, "calls": f"{i:064d}"},
        "n_jobs": 1,
        **extra,
    }


@pytest.fixture
def run() -> Workflow:
    return Workflow.from_dict(
        {"name": "run", "parameters": {"seed": 1}, "works": [_work(i) for i in range(3)]}
    )


def test_grown_appends_and_keeps_the_rest(run: Workflow) -> None:
    grown = run.grown([_work(3, depends_on=["call_0"]), _work(4, depends_on=["call_3"])])
    assert [w.name for w in grown.works] == [f"call_{i}" for i in range(5)]
    assert [w.name for w in run.works] == [f"call_{i}" for i in range(3)]  # unchanged


@pytest.mark.parametrize(
    "bad, field, words",
    [
        (_work(1), "name", "call_1"),  # a name already taken
        (_work(7, depends_on=["nope"]), "depends_on", "nope"),
        ({"name": "cmd", "command": "echo {missing}"}, "command", "missing"),
        ({"name": "x", "n_jobs": -1, "command": "true"}, "n_jobs", ""),
    ],
)
def test_grown_refuses_a_bad_new_work(
    run: Workflow, bad: dict[str, object], field: str, words: str
) -> None:
    with pytest.raises(TemplateError) as err:
        run.grown([bad])
    assert field in str(err.value) and words in str(err.value)


def test_growing_checks_only_the_new_works(run: Workflow, monkeypatch: pytest.MonkeyPatch) -> None:
    """Each addition checks the new works, not all before them: a run of n calls costs O(n)."""
    from idds_jupyter.model.work import Work

    checked: list[str] = []
    original = Work.check

    def spy(self: Work, *args: object, **kwargs: object) -> None:
        checked.append(self.name)
        original(self, *args, **kwargs)

    monkeypatch.setattr(Work, "check", spy)
    run.grown([_work(3), _work(4)])
    assert checked == ["call_3", "call_4"]


@pytest.mark.parametrize(
    "extra, independent",
    [
        ({}, True),
        ({"depends_on": ["call_0"]}, False),
        ({"parameters": {"x": "{call_1.result}"}}, False),  # reads another work's result
        ({"on_failure": ["call_2"]}, False),
        ({"input_dataset": "raw"}, False),
    ],
)
def test_independent_means_no_work_waits_for_or_reads_another(
    run: Workflow, extra: dict[str, object], independent: bool
) -> None:
    assert run.independent()
    new = {
        k: v
        for k, v in _work(9, **extra).items()
        if not (k == "n_jobs" and "input_dataset" in extra)
    }
    grown = run.grown([new])
    assert grown.independent() is independent
    # a run known independent checks only what it grew by
    assert grown.independent(since=len(run.works)) is independent


def test_a_condition_or_a_loop_is_never_independent() -> None:
    cond = Workflow.from_dict(
        {
            "name": "c",
            "works": [_work(0), _work(1)],
            "conditions": [{"name": "ok", "expr": "params.seed > 0", "true": ["call_1"]}],
            "parameters": {"seed": 1},
        }
    )
    loop = Workflow.from_dict(
        {
            "name": "l",
            "works": [_work(0)],
            "loops": [
                {
                    "name": "again",
                    "works": ["call_0"],
                    "until": "iteration >= 2",
                    "max_iterations": 3,
                }
            ],
        }
    )
    assert not cond.independent() and not loop.independent()


def test_growing_independent_works_analyses_only_the_new_ones(run: Workflow) -> None:
    """Each step's analysis is the one a whole analysis gives, without re-reading the old works."""
    from idds_jupyter.model.analysis import _analyze, analyze

    wf = run.grown([_work(3)])  # the first growth analyses the whole run
    for i in range(4, 30):
        wf = wf.grown([_work(i, parameters={"seed": "{seed}"})])
        assert analyze(wf) == _analyze(wf, "")
    dependent = wf.grown([_work(99, depends_on=["call_3"])])  # an edge: analysed whole
    assert analyze(dependent) == _analyze(dependent, "")
    assert analyze(dependent).edges["call_99"] == {"call_3": "dep"}
    with pytest.raises(TemplateError, match="duplicate name 'call_7'"):
        wf.grown([_work(7)])
