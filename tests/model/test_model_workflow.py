import time

import pytest

from idds_jupyter.model import (
    Condition,
    JobDep,
    Loop,
    Parameter,
    TemplateError,
    Work,
    Workflow,
    load_schema,
)


def test_schema_is_package_data():
    schema = load_schema()
    assert schema["$defs"]["work"]["properties"]["workflow"] == {"$ref": "#/$defs/workflow"}


def test_yaml_and_json_round_trip(rich: Workflow):
    wf = rich
    wf.validate()
    assert Workflow.from_yaml(wf.to_yaml()) == wf
    assert Workflow.from_json(wf.to_json()) == wf
    assert Workflow.from_dict(wf.to_dict()) == wf


def test_yaml_unquoted_true_false_keys():
    text = """
name: w
works:
  - {name: a, command: echo a}
  - {name: b, command: echo b}
  - {name: c, command: echo c}
conditions:
  - name: pick
    expr: a.result > 1
    true: [b]
    false: [c]
"""
    wf = Workflow.from_yaml(text)
    assert wf.conditions[0].true == ["b"] and wf.conditions[0].false == ["c"]


def err(fn) -> TemplateError:
    with pytest.raises(TemplateError) as exc:
        fn()
    return exc.value


def test_unknown_dependency_names_work_and_field():
    wf = Workflow(
        "w", works=[Work("train", command="t"), Work("eval", command="e", depends_on=["trian"])]
    )
    e = err(wf.validate)
    assert (e.work, e.field) == ("eval", "depends_on")
    assert str(e).startswith("work 'eval', field 'depends_on': unknown work 'trian'")
    assert "did you mean 'train'" in str(e)


@pytest.mark.parametrize(
    ("wf", "work", "field"),
    [
        (
            Workflow("w", works=[Work("a", command="x", job_deps=[JobDep("nope")])]),
            "a",
            "job_deps[0].work",
        ),
        (Workflow("w", works=[Work("a", command="x", on_failure=["nope"])]), "a", "on_failure"),
        (
            Workflow(
                "w",
                works=[Work("a", command="x")],
                conditions=[Condition("c", "a.status", true=["b"])],
            ),
            "c",
            "conditions[0].true",
        ),
        (
            Workflow(
                "w",
                works=[Work("a", command="x")],
                conditions=[Condition("c", "a.status", false=["b"])],
            ),
            "c",
            "conditions[0].false",
        ),
        (
            Workflow("w", works=[Work("a", command="x")], loops=[Loop("l", ["b"], "true")]),
            "l",
            "works",
        ),
    ],
)
def test_unknown_targets(wf, work, field):
    e = err(wf.validate)
    assert (e.work, e.field) == (work, field)
    assert "unknown" in e.message and work in str(e) and field in str(e)


def test_duplicate_names_share_one_namespace():
    wf = Workflow("w", works=[Work("a", command="x")], conditions=[Condition("a", "true")])
    e = err(wf.validate)
    assert e.work == "a" and e.field == "name" and "duplicate" in e.message
    e = err(Workflow("w", works=[Work("a", command="x"), Work("a", command="y")]).validate)
    assert "duplicate" in e.message


def test_reserved_and_bad_names():
    assert "reserved" in err(Workflow("w", works=[Work("params", command="x")]).validate).message
    assert (
        "identifier" in err(Workflow("w", works=[Work("gen-data", command="x")]).validate).message
    )


def test_cycle_outside_loop_shows_path():
    wf = Workflow(
        "w",
        works=[
            Work("a", command="x", depends_on=["c"]),
            Work("b", command="x", depends_on=["a"]),
            Work("c", command="x {b.result}"),
            Work("d", command="x"),
        ],
    )
    e = err(wf.validate)
    assert e.field == "depends_on"
    assert "cycle" in e.message
    assert (
        "a -> c -> b -> a" in e.message
        or "c -> b -> a -> c" in e.message
        or "b -> a -> c -> b" in e.message
    )
    e = err(Workflow("w", works=[Work("a", command="x", depends_on=["a"])]).topological_order)
    assert "a -> a" in e.message


def test_cycle_through_loop():
    wf = Workflow(
        "w", works=[Work("s", command="x", depends_on=["l"])], loops=[Loop("l", ["s"], "true")]
    )
    assert "cycle" in err(wf.validate).message


def test_unbound_parameter():
    wf = Workflow(
        "w", parameters={"seed": 1}, works=[Work("a", command="run --seed {seed} --lr {lr}")]
    )
    e = err(wf.validate)
    assert (e.work, e.field) == ("a", "command")
    assert "unbound parameter 'lr'" in e.message
    # bound by params passed at validation time, a work param, a kwargs key or built-ins
    wf.validate({"lr": 0.1})
    Workflow(
        "w",
        works=[
            Work(
                "a",
                command="{lr} {k} {job_index} {file} {iteration} {params.x}",
                parameters={"lr": 1},
                kwargs_list=[{"k": 1}],
            )
        ],
    ).validate()
    e = err(Workflow("w", works=[Work("a", function="m:f", parameters={"x": "{nope}"})]).validate)
    assert (e.work, e.field) == ("a", "parameters")


def test_malformed_condition_and_until():
    wf = Workflow(
        "w", works=[Work("a", command="x")], conditions=[Condition("c", "a.result.__class__")]
    )
    e = err(wf.validate)
    assert (e.work, e.field) == ("c", "conditions[0].expr")
    assert "__class__" in e.message
    wf = Workflow("w", works=[Work("a", command="x")], conditions=[Condition("c", "a.result >")])
    assert err(wf.validate).field == "conditions[0].expr"
    wf = Workflow("w", works=[Work("a", command="x")], conditions=[Condition("c", "zz > 1")])
    assert "unknown name 'zz'" in err(wf.validate).message
    wf = Workflow("w", works=[Work("a", command="x")], loops=[Loop("l", ["a"], "lambda: 1")])
    e = err(wf.validate)
    assert (e.work, e.field) == ("l", "until")


@pytest.mark.parametrize(
    ("work", "field", "fragment"),
    [
        (Work("a", command="x", retries="three"), "retries", "three"),  # type: ignore[arg-type]
        (Work("a", command="x", kwargs_list=[1, 2]), "kwargs_list", "list of dicts"),  # type: ignore[list-item]
        (Work("a", command="x", kwargs_list="gen.result"), "kwargs_list", "placeholder"),
        (Work("a", command=["echo", 1]), "command", "list of strings"),  # type: ignore[list-item]
        (Work("a", command="x", function="m:f"), "function", "only one"),
        (Work("a"), "command", "one of command, function or workflow"),
        (Work("a", function="not a ref"), "function", "package.module:qualname"),
        (Work("a", function="mod.sub"), "function", "package.module:qualname"),
        (Work("a", command="x", policy="maybe"), "policy", "subfinished"),
        (Work("a", command="x", n_jobs=2, input_dataset="d"), "input_dataset", "only one"),
        (Work("a", command="x", timeout_s=-1), "timeout_s", "positive"),
        (Work("a", command="x", env={"A": 1}), "env", "strings"),  # type: ignore[dict-item]
        (
            Work("a", command="x", job_deps=[JobDep("a", pattern="star")]),
            "job_deps[0].pattern",
            "one_to_one",
        ),
    ],
)
def test_bad_types(work, field, fragment):
    e = err(Workflow("w", works=[work]).validate)
    assert (e.work, e.field) == ("a", field)
    assert fragment in e.message


def test_bad_types_from_dict_go_through_schema():
    e = err(
        lambda: Workflow.from_dict(
            {"name": "w", "works": [{"name": "a", "command": "x", "retries": "three"}]}
        )
    )
    assert (e.work, e.field) == ("a", "retries")
    assert "three" in str(e)
    e = err(lambda: Workflow.from_dict({"name": "w", "works": [{"name": "a", "comand": "x"}]}))
    assert (e.work, e.field) == ("a", "comand")
    e = err(
        lambda: Workflow.from_dict(
            {"works": [{"name": "s", "workflow": {"works": [{"name": "i", "n_jobs": "x"}]}}]}
        )
    )
    assert (e.work, e.field) == ("s.i", "n_jobs")
    e = err(lambda: Workflow.from_dict({"works": [], "conditions": [{"name": "c", "expr": 3}]}))
    assert (e.work, e.field) == ("c", "conditions[0].expr")
    e = err(
        lambda: Workflow.from_dict(
            {"works": [{"name": "a", "command": "x", "job_deps": [{"work": "a", "size": 0}]}]}
        )
    )
    assert (e.work, e.field) == ("a", "job_deps[0].size")
    e = err(lambda: Workflow.from_yaml("works: [ {name: a"))
    assert e.field == "yaml"
    e = err(
        lambda: Workflow.from_dict({"works": [{"name": "a", "command": "x", "kwargs_list": [1]}]})
    )
    assert e.work == "a" and e.field.startswith("kwargs_list")


def test_errors_inside_sub_workflow_are_qualified():
    sub = Workflow("s", works=[Work("i", command="x", depends_on=["zz"])])
    e = err(Workflow("w", works=[Work("sub", workflow=sub)]).validate)
    assert (e.work, e.field) == ("sub.i", "depends_on")
    # inner placeholders are bound by the sub-workflow work's parameters
    sub = Workflow("s", works=[Work("i", command="x {lr}")])
    err(Workflow("w", works=[Work("sub", workflow=sub)]).validate)
    Workflow("w", works=[Work("sub", workflow=sub, parameters={"lr": 1})]).validate()


def test_job_deps_checks():
    wf = Workflow(
        "w",
        works=[
            Work("p", command="x", n_jobs=3),
            Work("c", command="y", n_jobs=4, job_deps=[JobDep("p")]),
        ],
    )
    e = err(wf.validate)
    assert (e.work, e.field) == ("c", "job_deps[0]") and "one_to_one" in e.message
    # unknown counts (dataset, dynamic sweep) are accepted
    Workflow(
        "w",
        works=[
            Work("p", command="x", input_dataset="d"),
            Work("c", command="y", n_jobs=4, job_deps=[JobDep("p")]),
        ],
    ).validate()
    wf = Workflow(
        "w",
        works=[
            Work("p", command="x", n_jobs=1),
            Work("c", command="y", job_deps=[JobDep("p", "explicit", map=[[0], [0]])]),
        ],
    )
    assert err(wf.validate).field == "job_deps[0].map"
    wf = Workflow(
        "w",
        works=[
            Work("p", command="x", n_jobs=1),
            Work("c", command="y", job_deps=[JobDep("p", "explicit")]),
        ],
    )
    assert err(wf.validate).field == "job_deps[0].map"


def test_declared_parameters():
    wf = Workflow(
        "w",
        parameters={"n": "5"},
        parameter_specs=[Parameter("n", type="int"), Parameter("k", required=True)],
        works=[Work("a", command="x {n} {k}")],
    )
    assert err(wf.validate).field == "parameters.n"  # default "5" is not an int
    wf.parameters["n"] = 5
    wf.validate()
    e = err(lambda: wf.validate({}))
    assert e.field == "parameters.k"
    assert wf.resolve_params({"k": 1, "n": "7"}) == {"n": 7, "k": 1}


def test_topological_order():
    wf = Workflow(
        "w",
        works=[
            Work("d", command="x", depends_on=["b", "c"]),
            Work("c", command="x {a.result}"),
            Work("b", command="x", depends_on=["a"]),
            Work("a", command="x"),
            Work("h", command="x"),
            Work("s", command="x"),
            Work("after", command="x {s.result}"),
        ],
        conditions=[Condition("k", "d.result > 1", true=["h"])],
        loops=[Loop("l", ["s"], "true")],
    )
    order = wf.topological_order()
    assert sorted(order) == sorted(["a", "b", "c", "d", "h", "k", "s", "l", "after"])
    for before, after in [
        ("a", "b"),
        ("a", "c"),
        ("b", "d"),
        ("c", "d"),
        ("d", "k"),
        ("k", "h"),
        ("s", "l"),
        ("l", "after"),
    ]:
        assert order.index(before) < order.index(after), (before, after, order)


def test_graph_description(rich: Workflow):
    g = rich.graph()
    kinds = {n["name"]: n["kind"] for n in g["nodes"]}
    assert kinds["gen"] == "work" and kinds["good"] == "condition" and kinds["refine"] == "loop"
    edges = {(e["source"], e["target"], e["kind"]) for e in g["edges"]}
    assert ("gen", "sim", "dep") in edges  # implicit, from {gen.result}
    assert ("merge", "reco", "job_dep") in edges
    assert ("good", "sub", "true") in edges
    assert ("good", "cleanup", "false") in edges
    assert ("refine", "step", "loop") in edges
    assert ("sim", "good", "dep") in edges
    sub_node = next(n for n in g["nodes"] if n["name"] == "sub")
    assert {n["name"] for n in sub_node["graph"]["nodes"]} == {"fit", "score", "ok"}
    wf = Workflow("w", works=[Work("a", command="x", on_failure=["h"]), Work("h", command="y")])
    assert {"source": "a", "target": "h", "kind": "on_failure"} in wf.graph()["edges"]


def test_job_count():
    assert Work("a", command="x").job_count() == 1
    assert Work("a", command="x", n_jobs=7).job_count() == 7
    assert Work("a", command="x", kwargs_list=[{}, {}]).job_count() == 2
    assert Work("a", command="x", kwargs_list="{g.result}").job_count([{}, {}, {}]) == 3
    assert Work("a", command="x", input_dataset="d").job_count(None, 12) == 12
    assert Work("a", workflow=Workflow("s")).job_count() == 0


def test_job_dep_edges_patterns():
    assert list(JobDep("p").edges(3, 3)) == [(0, 0), (1, 1), (2, 2)]
    with pytest.raises(ValueError):
        list(JobDep("p").edges(3, 2))
    assert sorted(JobDep("p", "all").edges(2, 2)) == [(0, 0), (0, 1), (1, 0), (1, 1)]
    assert list(JobDep("p", "window", size=2).edges(3, 3)) == [
        (0, 0),
        (1, 0),
        (1, 1),
        (2, 1),
        (2, 2),
        (0, 2),
    ]
    assert list(JobDep("p", "window", size=5).edges(2, 2)) == [(0, 0), (1, 0), (1, 1), (0, 1)]
    assert list(JobDep("p", "explicit", map=[[0, 2], [1]]).edges(2, 3)) == [(0, 0), (2, 0), (1, 1)]
    with pytest.raises(ValueError):
        list(JobDep("p", "explicit", map=[[5]]).edges(1, 3))


def test_job_dep_window_100k_is_fast():
    start = time.perf_counter()
    n = sum(1 for _ in JobDep("p", "window", size=3).edges(100_000, 100_000))
    one = sum(1 for _ in JobDep("p").edges(100_000, 100_000))
    assert (n, one) == (300_000, 100_000)
    assert time.perf_counter() - start < 2.0


@pytest.mark.parametrize(
    ("text", "where"),
    [("?", "[None]"), ("1: x\n", "[1]"), ("name: x\nworks: [{name: a, 2: b}]\n", "works[0][2]")],
)
def test_keys_that_are_not_strings_are_a_template_error(text: str, where: str) -> None:
    """YAML allows keys JSON has not (found by the fuzzer at soak size: a ValueError of the
    schema validator, not a TemplateError)."""
    with pytest.raises(TemplateError, match="keys must be strings") as err:
        Workflow.from_yaml(text)
    assert err.value.field == where
