"""Shell safety of command templates: hostile values reach the command verbatim, run by real shells."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from idds_jupyter.model import Work, Workflow, plan, render_job
from idds_jupyter.model.errors import TemplateError
from idds_jupyter.model.plan import RunState, WorkState
from idds_jupyter.model.shell import quote, render_command
from idds_jupyter.model.status import WorkStatus

SHELLS = [s for s in ("/bin/sh", shutil.which("bash"), shutil.which("dash")) if s]

# printf prints its argument between brackets: what the command received, verbatim
TEMPLATES = {
    "bare": "printf '[%s]' {x}",
    "single": "printf '[%s]' '{x}'",
    "double": 'printf "[%s]" "{x}"',
    "glued": "printf '[%s]' pre{x}post",
    "inside single": "printf '[%s]' 'a {x} b'",
    "inside double": 'printf "[%s]" "a {x} b"',
    "in $(...)": 'printf "[%s]" "$(printf %s {x})"',
    "double in $(...) in double": 'printf "[%s]" "$(printf %s "{x}")"',
    "after a case at top": "case a in a) printf '[%s]' {x};; esac",
}
EXPECT = {
    "glued": "pre{}post",
    "inside single": "a {} b",
    "inside double": "a {} b",
}


def expected(form: str, value: str) -> str:
    """What printf shows: the value verbatim (``$(...)`` drops trailing newlines, as always)."""
    if "$(" in TEMPLATES[form]:
        value = value.rstrip("\n")
    return "[" + EXPECT.get(form, "{}").replace("{}", value) + "]"


def hostile(marker: Path) -> list[str]:
    m = str(marker)
    return [
        f"x; touch {m}",
        f"'; touch {m}; '",
        f'"; touch {m}; "',
        f"$(touch {m})",
        f"`touch {m}`",
        f"a\ntouch {m}\n",
        f"a b  c\t{m}",
        f"\\'; touch {m}; #",
        f"'\"'\"'; touch {m}",
        "*",
        "~",
        "A=B",
        "$HOME",
        "${HOME}",
        "!!",
        "{}",
        "",
        "-n",
        "#",
        "a'b\"c\\d",
    ]


def run(shell: str, command: str, cwd: Path) -> str:
    proc = subprocess.run([shell, "-c", command], cwd=cwd, capture_output=True, timeout=10)
    assert proc.returncode == 0, (command, proc.stderr)
    return proc.stdout.decode("utf-8", "surrogateescape")


@pytest.mark.parametrize("shell", SHELLS)
@pytest.mark.parametrize("form", list(TEMPLATES))
def test_hostile_values_arrive_verbatim_and_run_nothing(
    shell: str, form: str, tmp_path: Path
) -> None:
    marker = tmp_path / "PWNED"
    template = TEMPLATES[form]
    Work("w", command=template).check()  # the validator accepts every form above
    for value in hostile(marker):
        out = run(shell, render_command(template, {"x": value}), tmp_path)  # type: ignore[arg-type]
        assert out == expected(form, value), (form, value, out)
        assert not marker.exists(), (form, value)


@settings(
    max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(value=st.text(alphabet=st.characters(exclude_characters="\x00", exclude_categories=["Cs"])))
def test_any_text_arrives_verbatim(value: str, tmp_path: Path) -> None:
    for form in ("bare", "single", "double", "inside double"):
        out = run("/bin/sh", render_command(TEMPLATES[form], {"x": value}), tmp_path)  # type: ignore[arg-type]
        assert out == expected(form, value)


def test_harmless_values_stay_bare() -> None:
    assert (
        render_command("sim --seed {s} --out '{f}'", {"s": 5, "f": "run-1/a.txt"})
        == "sim --seed 5 --out 'run-1/a.txt'"
    )
    assert quote("A=B") == "'A=B'" and quote([1, "a"]) == """'[1,"a"]'""" and quote(None) == "null"


@pytest.mark.parametrize(
    ("template", "reason"),
    [
        ("echo ${x}", "after '$'"),
        ("echo \\{x}", "backslash"),
        ('echo "\\{x}"', "backslash"),
        ("echo `echo {x}`", "backticks"),
        ('echo "`echo {x}`"', "backticks"),
        ("echo hi # {x}", "comment"),
        ("cat <<EOF\n{x}\nEOF", "here-document"),
        ("cat <<{x}", "here-document"),
        ("echo ${{A:-{x}}}", "${"),
        ("echo $(( {x} + 1 ))", "$(("),
        ("echo $'\\'' {x}", "$'"),
        ("echo $(case a in a) echo;; esac) {x}", "case"),
        ("echo '{x}", "unterminated"),
    ],
)
def test_contexts_where_a_quoted_word_cannot_hold_are_refused(template: str, reason: str) -> None:
    with pytest.raises(TemplateError) as exc:
        Work("w", command=template).check()
    assert exc.value.field == "command" and reason in str(exc.value)
    if reason != "unterminated":
        with pytest.raises(TemplateError):  # and at render time too, whatever the validator saw
            render_command(template, {"x": "v w"})


def wf(works: list[dict[str, Any]], **params: Any) -> Workflow:
    return Workflow.from_dict({"name": "t", "parameters": params, "works": works})


def test_raw_inserts_a_declared_parameter_as_shell_text(tmp_path: Path) -> None:
    w = wf([{"name": "w", "command": "printf '[%s]' {args!raw} {args}"}], args="a b")
    w.validate()
    inst = plan(w, RunState(params={"args": "a b"})).create[0]
    cmd = render_job(inst)["command"]
    assert cmd == "printf '[%s]' a b 'a b'"
    assert run("/bin/sh", cmd, tmp_path) == "[a][b][a b]"


@pytest.mark.parametrize(
    ("work", "name"),
    [
        ({"command": "echo {gen.result!raw}"}, "gen"),
        ({"command": "echo {x!raw}", "parameters": {"x": "{gen.result}"}}, "x"),
        ({"command": "echo {x!raw}", "kwargs_list": "{gen.result}"}, "x"),
        ({"command": "echo {file!raw}", "input_dataset": "d"}, "file"),
        ({"command": "echo {len(gen.result)!raw}"}, "gen"),
    ],
)
def test_raw_is_refused_for_results_files_and_runtime_sweeps(
    work: dict[str, Any], name: str
) -> None:
    with pytest.raises(TemplateError) as exc:  # refused as the template is read
        wf([{"name": "gen", "command": "true"}, {"name": "use", **work}], x="p")
    assert (exc.value.work, exc.value.field) == ("use", "command")
    assert f"reads {name!r}" in str(exc.value) and "raw" in str(exc.value)


def test_raw_is_refused_for_a_sub_workflow_parameter_fed_by_a_result() -> None:
    inner = {
        "name": "inner",
        "parameters": {"p": "safe"},
        "works": [{"name": "run", "command": "echo {p!raw}"}],
    }
    ok = wf(
        [
            {"name": "gen", "command": "true"},
            {"name": "sub", "workflow": inner, "parameters": {"p": "lit"}},
        ]
    )
    ok.validate()
    with pytest.raises(TemplateError) as exc:
        wf(
            [
                {"name": "gen", "command": "true"},
                {"name": "sub", "workflow": inner, "parameters": {"p": "{gen.result}"}},
            ]
        )
    assert exc.value.work == "sub.run" and "reads 'p'" in str(exc.value)


def test_a_result_is_quoted_through_the_planner(tmp_path: Path) -> None:
    marker = tmp_path / "Y"
    evil = f"'; touch {marker}; '"
    w = wf(
        [
            {"name": "gen", "command": "true"},
            {
                "name": "use",
                "command": "printf '[%s]' '{gen.result}' {gen.result} {job_index}",
                "n_jobs": 1,
            },
        ]
    )
    w.validate()
    state = RunState(params={}, works={"gen": WorkState("gen", WorkStatus.FINISHED, evil)})
    inst = next(i for i in plan(w, state).create if i.name == "use")
    cmd = render_job(inst, job_index=0)["command"]
    assert run("/bin/sh", cmd, tmp_path) == f"[{evil}][{evil}][0]"
    assert not marker.exists()


def test_list_command_is_an_argv(tmp_path: Path) -> None:
    w = wf(
        [
            {"name": "gen", "command": "true"},
            {
                "name": "use",
                "command": [
                    sys.executable,
                    "-c",
                    "import sys; print(sys.argv[1:])",
                    "{gen.result}",
                    "--n={n}",
                    "{job_index}",
                ],
                "n_jobs": 1,
            },
        ],
        n=3,
    )
    w.validate()
    assert Workflow.from_dict(w.to_dict()).works[1].command == w.works[1].command
    value = "a b; touch X '\" $(x)"
    state = RunState(params={"n": 3}, works={"gen": WorkState("gen", WorkStatus.FINISHED, value)})
    inst = next(i for i in plan(w, state).create if i.name == "use")
    argv = render_job(inst, job_index=0)["command"]
    assert argv[3:] == [value, "--n=3", "0"]
    out = subprocess.run(argv, capture_output=True, text=True, cwd=tmp_path, check=True).stdout
    assert out.strip() == repr([value, "--n=3", "0"])
    assert not (tmp_path / "X").exists()


def test_list_command_must_hold_strings() -> None:
    with pytest.raises(TemplateError) as exc:
        Workflow.from_dict({"name": "t", "works": [{"name": "w", "command": []}]})
    assert "command" in str(exc.value)


@pytest.mark.skipif(shutil.which("bash") is None, reason="needs bash")
@pytest.mark.parametrize(
    "template",
    [
        "[[ {x} -eq 1 ]] || true",
        "(( {x} )) || true",
        "let y={x} || true",
        "x={x}; echo $((x)) || true",
        "declare -i n={x} || true",
    ],
)
def test_bash_arithmetic_refuses_values_that_are_not_plain_words(
    template: str, tmp_path: Path
) -> None:
    marker = tmp_path / "PWNED"
    evil = f"a[$(touch {marker})]"
    Work("w", command=template).check()  # fine as a template: plain values are safe there
    with pytest.raises(TemplateError) as exc:
        render_command(template, {"x": evil})
    assert "arithmetic" in str(exc.value)
    # the refusal has teeth: bash runs the quoted value's $(...) in these places
    quoted = template.replace("{x}", quote(evil))
    subprocess.run(["bash", "-c", quoted], cwd=tmp_path, capture_output=True, timeout=10)
    assert marker.exists()
    assert render_command(template, {"x": 5}) == template.replace("{x}", "5")


def test_hpo_command_objective_quotes_its_values(tmp_path: Path) -> None:
    """The HPO objective command (str.format syntax, format specs kept) quotes each value."""
    from idds_jupyter.hpo.trial import run_trial

    marker = tmp_path / "PWNED"
    tag = f"a'; touch {marker}; echo 99 #"
    objective = f"cd {tmp_path} && printf '%s\\n' {{tag}} '{{tag}}' > seen && echo {{lr:.2f}}"
    res = run_trial(objective, {"lr": 0.123, "tag": tag}, {"trial": 0})
    assert res["objective"] == 0.12
    assert (tmp_path / "seen").read_text() == f"{tag}\n{tag}\n"
    assert not marker.exists()
