"""A FaaT run grows one work at a time: each addition is checked, old works are not re-checked."""

from __future__ import annotations

import pytest

from idds_jupyter.model import TemplateError, Workflow


def _work(i: int, **extra: object) -> dict[str, object]:
    return {"name": f"call_{i}", "payload": {"function": "a" * 64, "calls": f"{i:064d}"},
            "n_jobs": 1, **extra}


@pytest.fixture
def run() -> Workflow:
    return Workflow.from_dict({"name": "run", "parameters": {"seed": 1},
                               "works": [_work(i) for i in range(3)]})


def test_grown_appends_and_keeps_the_rest(run: Workflow) -> None:
    grown = run.grown([_work(3, depends_on=["call_0"]), _work(4, depends_on=["call_3"])])
    assert [w.name for w in grown.works] == [f"call_{i}" for i in range(5)]
    assert [w.name for w in run.works] == [f"call_{i}" for i in range(3)]  # unchanged


@pytest.mark.parametrize("bad, field, words", [
    (_work(1), "name", "call_1"),  # a name already taken
    (_work(7, depends_on=["nope"]), "depends_on", "nope"),
    ({"name": "cmd", "command": "echo {missing}"}, "command", "missing"),
    ({"name": "x", "n_jobs": -1, "command": "true"}, "n_jobs", ""),
])
def test_grown_refuses_a_bad_new_work(run: Workflow, bad: dict[str, object], field: str,
                                      words: str) -> None:
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
