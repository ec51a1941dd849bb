"""The expression budget: every attack is a clear ExpressionError naming its limit, quickly."""

from __future__ import annotations

import time
from collections.abc import Iterator

import pytest

from idds_jupyter.model import (
    Expression,
    ExpressionError,
    RunState,
    TemplateError,
    Work,
    Workflow,
    WorkState,
    WorkStatus,
    plan,
)
from idds_jupyter.model.expression import LIMITS, set_limits
from idds_jupyter.model.limits import RUNTIME, LimitError, check_depth, count_jobs, load_yaml

NS = {"big": "y" * 900_000, "nums": list(range(200_000)), "small": list(range(1000))}


def refused(text: str, ns: dict | None = None) -> ExpressionError:
    t0 = time.monotonic()
    with pytest.raises(ExpressionError) as exc:
        Expression(text).evaluate(NS if ns is None else ns)
    assert time.monotonic() - t0 < 2, "refusing took too long"
    return exc.value


@pytest.mark.parametrize(
    "text",
    [
        "'%0900000000d' % 0",
        "'%.900000000f' % 1.5",
        "'%s%s' % (big, big)",
        "'%(a)0900000000d' % {'a': 1}",
    ],
)
def test_percent_format_result_size_is_refused(text: str) -> None:
    assert "expression_max_size" in refused(text).reason


def test_percent_star_width_is_refused() -> None:
    assert "'*' width" in refused("'%*d' % (900000000, 1)").reason


@pytest.mark.parametrize(
    "text",
    [
        "sorted(['x' * 1000000] * 1000000)",
        "['x' * 100000] * 100",
        "[big, big]",
        "str([big] * 2)",
        "sum([nums, nums], [])",
        "big + big",
    ],
)
def test_deep_sizes_of_built_values_are_refused(text: str) -> None:
    assert "expression_max_size" in refused(text).reason


def test_recursion_in_the_parser_is_a_clear_error() -> None:
    for text in ("-" * 5000 + "1", "1+" * 4999 + "1", "not " * 2400 + "1", "a" + ".b" * 3000):
        err = refused(text, {})
        assert "expression_max_depth" in err.reason


def test_steps_budget() -> None:
    # reading a big list over and over costs its size each time
    err = refused(" and ".join(["5 in nums"] * 20))
    assert "expression_max_steps" in err.reason
    err = refused("sorted(nums)")
    assert "expression_max_steps" in err.reason or "expression_max_size" in err.reason


def test_round_ndigits_is_bounded() -> None:
    assert "ndigits" in refused("round(5, -10**9)", {}).reason


def test_ordinary_expressions_still_work_quickly() -> None:
    t0 = time.monotonic()
    assert Expression("sum(nums) > 0 and 5 in nums").evaluate(NS) is True
    assert Expression("sorted(small)[-1] == 999").evaluate(NS) is True
    assert Expression("len('%05d' % 42) == 5 and 'ab' * 3 == 'ababab'").evaluate(NS) is True
    assert Expression("max(small) + min(small)").evaluate(NS) == 999
    assert time.monotonic() - t0 < 2


@pytest.fixture
def tight() -> Iterator[None]:
    saved = (LIMITS.max_steps, LIMITS.max_size, LIMITS.max_depth)
    set_limits(max_steps=1000, max_size=100, max_depth=10)
    try:
        yield
    finally:
        set_limits(*saved)


def test_limits_are_configurable(tight: None) -> None:
    assert "expression_max_size" in refused("'x' * 200", {}).reason
    assert "expression_max_depth" in refused("-" * 20 + "1", {}).reason
    assert "expression_max_steps" in refused("5 in small", {"small": list(range(2000))}).reason
    assert Expression("'x' * 50").evaluate({}) == "x" * 50


# ------------------------------------------------------------- YAML and JSON limits
BOMB = """name: bomb
parameters:
  a: &a ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]
  b: &b [*a,*a,*a,*a,*a,*a,*a,*a,*a]
  c: &c [*b,*b,*b,*b,*b,*b,*b,*b,*b]
  d: &d [*c,*c,*c,*c,*c,*c,*c,*c,*c]
  e: &e [*d,*d,*d,*d,*d,*d,*d,*d,*d]
  f: &f [*e,*e,*e,*e,*e,*e,*e,*e,*e]
  g: &g [*f,*f,*f,*f,*f,*f,*f,*f,*f]
works: [{name: x, command: "true"}]
"""


def test_yaml_bomb_is_a_template_error() -> None:
    t0 = time.monotonic()
    with pytest.raises(TemplateError) as exc:
        Workflow.from_yaml(BOMB)
    assert "max_template_nodes" in str(exc.value)
    assert time.monotonic() - t0 < 1


def test_yaml_limits() -> None:
    with pytest.raises(LimitError) as exc:
        load_yaml("a: &x [*x]")
    assert exc.value.limit == "max_template_nodes"
    with pytest.raises(LimitError) as exc:
        load_yaml("[" * 65 + "]" * 65)
    assert exc.value.limit == "max_json_depth"
    with pytest.raises(LimitError) as exc:
        load_yaml("a: &x 1\nb: [" + ",".join(["*x"] * 5) + "]", max_aliases=4)
    assert exc.value.limit == "max_yaml_aliases"
    assert load_yaml("a: &x {k: 1}\nb: *x") == {"a": {"k": 1}, "b": {"k": 1}}


def test_json_depth_without_recursion() -> None:
    deep: list = []
    for _ in range(100_000):
        deep = [deep]
    with pytest.raises(LimitError) as exc:
        check_depth({"a": deep}, 64)
    assert exc.value.limit == "max_json_depth"
    check_depth({"a": [[1]]}, 3)


def test_count_jobs() -> None:
    works = [
        {"name": "a", "n_jobs": 7},
        {"name": "b", "kwargs_list": [{}] * 3},
        {"name": "c"},
        {"name": "d", "kwargs_list": "{a.result}"},
        {"name": "e", "input_dataset": "ds"},
    ]
    assert count_jobs(works) == {"a": 7, "b": 3, "c": 1, "d": 0, "e": 0}


def test_sweep_resolved_at_run_time_over_max_jobs_per_work_fails_its_work() -> None:
    wf = Workflow(
        "sweep",
        works=[
            Work("gen", command="g"),
            Work("sim", command="sim {x}", kwargs_list="{gen.result}"),
        ],
    )
    state = RunState(params=wf.resolve_params({}))
    state.works["gen"] = WorkState("gen", WorkStatus.FINISHED, result=[{"x": i} for i in range(11)])
    saved = RUNTIME.max_jobs_per_work
    RUNTIME.max_jobs_per_work = 10
    try:
        p = plan(wf, state)
    finally:
        RUNTIME.max_jobs_per_work = saved
    sim = next(wi for wi in p.create if wi.name == "sim")
    assert sim.status == WorkStatus.FAILED
    assert "max_jobs_per_work" in p.errors["sim"] and "11 jobs" in p.errors["sim"]
    state.works.pop("sim", None)
    ok = next(wi for wi in plan(wf, state).create if wi.name == "sim")  # the default allows it
    assert ok.status != WorkStatus.FAILED and len(ok.kwargs_list or []) == 11
