import time

import pytest

from idds_jupyter.model import Condition, Expression, ExpressionError

NS = {
    "train": {"status": "finished", "result": {"loss": 0.05, "hist": [3, 1, 2]}},
    "gen": {"result": [{"x": 1.5}, {"x": 2}]},
    "params": {"seed": 7},
    "seed": 7,
    "name": "abc",
}


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("1 + 2 * 3", 7),
        ("2 ** 10", 1024),
        ("7 // 2", 3),
        ("7 % 4", 3),
        ("7 / 2", 3.5),
        ("-seed", -7),
        ("+seed", 7),
        ("1.5", 1.5),
        ("'a' + 'b'", "ab"),
        ("'ab' * 2", "abab"),
        ("true", True),
        ("false or null", None),
        ("True and not False", True),
        ("None", None),
        ("[1, 2, (3, 4)]", [1, 2, (3, 4)]),
        ("{'a': 1, 'b': [seed]}", {"a": 1, "b": [7]}),
        ("1 < 2 <= 2 < 3", True),
        ("1 < 2 > 3", False),
        ("seed == 7 and seed != 8", True),
        ("'b' in name", True),
        ("'z' not in name", True),
        ("3 in train.result.hist", True),
        ("train.result.loss < 0.1", True),
        ("train.status == 'finished'", True),
        ("gen.result[0]['x']", 1.5),
        ("gen.result[-1].x", 2),
        ("train.result.hist[1:]", [1, 2]),
        ("params.seed", 7),
        ("params['seed']", 7),
        ("'big' if seed > 5 else 'small'", "big"),
        ("len(train.result.hist)", 3),
        ("min(train.result.hist)", 1),
        ("max(1, 2, 3)", 3),
        ("abs(-2)", 2),
        ("any([0, 1])", True),
        ("all([1, 0])", False),
        ("sum(train.result.hist)", 6),
        ("round(2.567, 2)", 2.57),
        ("int('3') + float('1.5')", 4.5),
        ("str(seed) + '!'", "7!"),
        ("bool(0)", False),
        ("sorted(train.result.hist)", [1, 2, 3]),
        ("sorted(train.result.hist, reverse=True)", [3, 2, 1]),
        ("max([], default=0)", 0),
    ],
)
def test_evaluates(text, expected):
    assert Expression(text).evaluate(NS) == expected


def test_names():
    assert Expression("train.result.loss < 0.1").names == {"train"}
    assert Expression("len(gen.result) > seed and true").names == {"gen", "seed"}
    assert Expression("[x, y[z]]").names == {"x", "y", "z"}


@pytest.mark.parametrize(
    "text",
    [
        "__import__('os')",
        "().__class__",
        "x.__dict__",
        "_private",
        "lambda: 1",
        "[x for x in y]",
        "{x: 1 for x in y}",
        "(x for x in y)",
        "open('x')",
        "eval('1')",
        "name.upper()",
        "len",
        "f'{x}'",
        "x := 1",
        "a << 2",
        "a is None",
        "[*a]",
        "len(*a)",
        "sorted(a, key=len)",
        "b'bytes'",
        "1 +",
    ],
)
def test_refused_at_parse_time(text):
    with pytest.raises(ExpressionError) as exc:
        Expression(text)
    assert exc.value.expression == text
    assert exc.value.reason


def test_error_carries_position():
    with pytest.raises(ExpressionError) as exc:
        Expression("a + open('x')")
    assert exc.value.position == 4
    assert "open" in str(exc.value)


@pytest.mark.parametrize(
    ("text", "fragment"),
    [
        ("train.result.acc", "'acc'"),
        ("gen.result[5]", "out of range"),
        ("gen.result['x']", "integer"),
        ("name.x", "not a mapping"),
        ("missing + 1", "unknown name 'missing'"),
        ("1 / 0", "division by zero"),
        ("'a' < 1", "compare"),
        ("int('x')", "int()"),
        ("seed.x.y", "not a mapping"),
        ("10 ** 10 ** 10", "exponent"),
        ("2 ** 999 ** 2", "exponent"),
        ("(10 ** 300) ** 999", "too large"),
        ("'x' * 10 ** 9", "repetition"),
        ("[0] * 10 ** 8", "repetition"),
    ],
)
def test_evaluation_errors(text, fragment):
    with pytest.raises(ExpressionError) as exc:
        Expression(text).evaluate(NS)
    assert fragment in str(exc.value)


def test_missing_key_names_path():
    with pytest.raises(ExpressionError, match=r"train\.result\.acc"):
        Expression("train.result.acc > 1").evaluate(NS)


def test_huge_power_is_fast():
    start = time.perf_counter()
    for text in ("10**10**10", "9**9**9**9", "(10**300)**(10**3)"):
        with pytest.raises(ExpressionError):
            Expression(text).evaluate({})
    assert time.perf_counter() - start < 1.0


def test_no_eval_reachable():
    # names of builtins are just unknown data names, never Python objects
    with pytest.raises(ExpressionError, match="unknown name 'globals'"):
        Expression("globals").evaluate({})


def test_condition():
    c = Condition("good", "train.result.loss < 0.1", true=["deploy"], false=["retrain"])
    assert c.evaluate(NS) is True
    assert Condition("c", "len(gen.result)").evaluate(NS) is True
    assert c.targets() == ["deploy", "retrain"]
