"""Shell injection through placeholders, attempted against a real running server (SQLite and PostgreSQL).

A parameter ``x; touch X`` and a job result ``'; touch Y; '`` must reach the
command as text: the files are never created and the job logs show the values.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import yaml
from api_helpers import Served
from apiclient import Api

# gen's result is the payload parameter, as JSON on its last output line (an argv command)
ECHO_ARG = "import json, sys; print(json.dumps(sys.argv[1]))"
SHOW_ARGV = "import sys; print(repr(sys.argv[1:]))"


def _run(api: Api, template: dict[str, Any], params: dict[str, Any]) -> tuple[int, dict[str, Any]]:
    r = api.post("/requests", {"yaml": yaml.safe_dump(template), "params": params})
    assert r.status == 201, r
    wid = int(r.json["id"])
    return wid, api.wait(wid)


def _log(api: Api, wid: int, work: str) -> str:
    jobs = api.get(f"/monitor/{wid}/works/{work}/jobs").json["jobs"]
    assert len(jobs) == 1 and jobs[0]["status"] == "finished", jobs
    r = api.get(f"/logs/{jobs[0]['id']}")
    assert r.status == 200, r
    return r.body.decode()


def test_parameter_and_result_injection_run_nothing(served_db: Served, tmp_path: Path) -> None:
    x_file, y_file = tmp_path / "X", tmp_path / "Y"
    x = f"x; touch {x_file}"
    payload = f"'; touch {y_file}; '"
    template = {
        "name": "shell-attack",
        "parameters": {"x": "", "payload": ""},
        "works": [
            # a job whose result is the payload: str(object=payload)
            {"name": "gen", "function": "builtins:str", "parameters": {"object": "{payload}"}},
            {"name": "param", "command": "printf 'param=[%s]\\n' {x}"},
            {"name": "result", "command": "printf 'result=[%s]\\n' '{gen.result}'"},
            {
                "name": "result2",
                "command": 'printf "result2=[%s]\\n" "got {gen.result}" {gen.result}',
            },
        ],
    }
    wid, st = _run(served_db.alice, template, {"x": x, "payload": payload})
    api = served_db.alice
    assert not x_file.exists() and not y_file.exists()
    assert st["status"] == "finished", st
    assert _log(api, wid, "param") == f"param=[{x}]\n"
    assert _log(api, wid, "result") == f"result=[{payload}]\n"
    assert _log(api, wid, "result2") == f"result2=[got {payload}]\nresult2=[{payload}]\n"


def test_list_command_gets_each_value_as_one_argv_element(
    served_db: Served, tmp_path: Path
) -> None:
    marker = tmp_path / "Z"
    x = f"a b; touch {marker} $(touch {marker})"
    payload = f"'; touch {marker}; '\n\"q\" `touch {marker}`"
    template = {
        "name": "argv",
        "parameters": {"x": "", "payload": ""},
        "works": [
            {"name": "gen", "command": [sys.executable, "-c", ECHO_ARG, "{payload}"]},
            {
                "name": "argv",
                "command": [sys.executable, "-c", SHOW_ARGV, "{x}", "--p={gen.result}"],
            },
        ],
    }
    wid, st = _run(served_db.alice, template, {"x": x, "payload": payload})
    assert st["status"] == "finished", st
    assert _log(served_db.alice, wid, "argv").strip() == repr([x, f"--p={payload}"])
    assert not marker.exists()


def test_raw_runs_for_a_declared_parameter_and_is_refused_for_a_result(served_db: Served) -> None:
    api = served_db.alice
    ok = {
        "name": "raw-ok",
        "parameters": {"flags": ""},
        "works": [{"name": "w", "command": "printf '[%s]' {flags!raw}"}],
    }
    wid, st = _run(api, ok, {"flags": "a b  c"})
    assert st["status"] == "finished", st
    assert _log(api, wid, "w") == "[a][b][c]"  # split into words by the shell, as asked

    bad = {
        "name": "raw-bad",
        "works": [
            {"name": "gen", "command": "echo '\"v\"'"},
            {"name": "use", "command": "echo {gen.result!raw}"},
        ],
    }
    r = api.post("/requests", {"yaml": yaml.safe_dump(bad)})
    assert r.status == 400, r
    msg = r.json["error"]
    assert "use" in msg and "raw" in msg and "'gen'" in msg, msg
