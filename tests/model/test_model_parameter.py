import pytest

from idds_jupyter.model import (
    ExpressionError,
    Parameter,
    TemplateError,
    parse_template,
    placeholders,
    substitute,
    substitute_partial,
)

NS = {"seed": 3, "gen": {"result": [{"a": 1}, {"a": 2}]}, "name": "run", "flag": True}


def test_single_placeholder_keeps_json_type():
    assert substitute("{gen.result}", NS) == [{"a": 1}, {"a": 2}]
    assert substitute("{seed * 2}", NS) == 6
    assert substitute("{flag}", NS) is True
    assert substitute("{ {'k': seed} }", NS) == {"k": 3}


def test_mixed_text_is_formatted():
    assert (
        substitute("python sim.py --seed {seed} --n {seed * 2}", NS)
        == "python sim.py --seed 3 --n 6"
    )
    assert substitute("x={gen.result[1].a}", NS) == "x=2"
    assert substitute("{name}-{seed}", NS) == "run-3"


def test_literal_braces():
    assert substitute("awk '{{print $1}}' {name}", NS) == "awk '{print $1}' run"
    assert substitute("{{seed}}", NS) == "{seed}"
    assert substitute("no placeholders", NS) == "no placeholders"


def test_nested_braces_and_quotes_in_placeholder():
    assert substitute("v={ {'a': '}'}['a'] }", NS) == "v=}"


def test_recurses_into_containers():
    value = {"a": ["{seed}", {"b": "s{seed}"}], "c": 5}
    assert substitute(value, NS) == {"a": [3, {"b": "s3"}], "c": 5}


def test_placeholders_lists_expressions():
    found = placeholders({"x": "{gen.result.a} and {seed}", "y": ["{params.z}"]})
    assert [e.text for e in found] == ["gen.result.a", "seed", "params.z"]
    assert set().union(*(e.names for e in found)) == {"gen", "seed", "params"}


@pytest.mark.parametrize("text", ["{seed", "a } b", "{}", "{lambda: 1}", "{x.__class__}"])
def test_malformed_templates(text):
    with pytest.raises(ExpressionError):
        parse_template(text)


def test_partial_substitution_keeps_per_job_placeholders():
    out = substitute_partial(
        "run {name} --i {job_index} --f {file} {{x}}", NS, {"job_index", "file"}
    )
    assert out == "run run --i {job_index} --f {file} {{x}}"
    assert substitute(out, {"job_index": 4, "file": "a.root"}) == "run run --i 4 --f a.root {x}"
    # values containing braces are escaped so the second pass keeps them literal
    assert (
        substitute(
            substitute_partial("{v} {job_index}", {"v": "{x}"}, {"job_index"}), {"job_index": 1}
        )
        == "{x} 1"
    )


def test_parameter_coerce_and_check():
    p = Parameter("n", default="3", type="int")
    assert p.coerce() == 3
    assert p.coerce("10") == 10
    assert Parameter("x", type="float").coerce(2) == 2.0
    assert Parameter("b", type="bool").coerce("yes") is True
    assert Parameter("l", type="list").coerce((1, 2)) == [1, 2]
    assert Parameter("free").coerce("anything") == "anything"
    with pytest.raises(TemplateError) as exc:
        Parameter("n", type="int").coerce("three")
    assert exc.value.field == "parameters.n" and "int" in str(exc.value)
    with pytest.raises(TemplateError):
        Parameter("n", type="int").check(True)
    with pytest.raises(TemplateError):
        Parameter("d", type="dict").coerce([1])
    with pytest.raises(TemplateError, match="required"):
        Parameter("r", required=True).coerce()
    with pytest.raises(TemplateError, match="unknown type"):
        Parameter("t", type="complex").coerce(1)
