"""run_job: functions, commands, payload blobs, errors, timeouts, logs, JSON-ability."""

from __future__ import annotations

import hashlib
import json
import os
import sys
import threading
from pathlib import Path
from typing import Any

import cloudpickle
import pytest
from waiting import holds_for

from idds_jupyter.worker import context, run_job
from idds_jupyter.worker.job import resolve

KEYS = {
    "job_id",
    "attempt",
    "ok",
    "result",
    "summary",
    "error",
    "exc_type",
    "traceback",
    "exit_code",
    "wall_s",
    "max_rss_kb",
    "log_path",
    "started_at",
    "finished_at",
}


def spec(job_id: int = 1, **kw: Any) -> dict[str, Any]:
    base: dict[str, Any] = {
        "job_id": job_id,
        "attempt": 0,
        "work_id": 7,
        "workflow_id": 3,
        "kind": "function",
        "function": "idds_jupyter.worker.job:noop",
        "command": None,
        "kwargs": {},
        "payload": None,
        "env": {},
        "timeout_s": None,
        "log_dir": None,
        "cwd": None,
    }
    base.update(kw)
    return base


def check_shape(res: dict[str, Any]) -> None:
    # provenance: every result names the worker's environment (env_id); the first one of a
    # process also carries its description
    assert set(res) - {"environment"} == KEYS | {"env_id"}
    assert isinstance(res["env_id"], str) and res["env_id"]
    json.dumps(res, allow_nan=False)
    assert res["finished_at"] >= res["started_at"] > 0
    assert res["wall_s"] >= 0
    assert res["max_rss_kb"] > 0


def test_noop_and_echo() -> None:
    res = run_job(spec())
    check_shape(res)
    assert res["ok"] and res["result"] is None and res["error"] is None
    res = run_job(spec(function="idds_jupyter.worker.job:echo", kwargs={"a": 1, "b": [1, "x"]}))
    assert res["ok"] and res["result"] == {"a": 1, "b": [1, "x"]}


def test_dotted_qualname() -> None:
    res = run_job(spec(function="jobfuncs:Nested.Inner.method", kwargs={"a": 41}))
    assert res["ok"] and res["result"] == 42


def test_bad_reference() -> None:
    res = run_job(spec(function="no_such_module_xyz:f"))
    check_shape(res)
    assert not res["ok"] and res["exc_type"] == "ModuleNotFoundError"
    res = run_job(spec(function="not-a-ref"))
    assert not res["ok"] and "pkg.module:qualname" in res["error"]
    with pytest.raises(AttributeError):
        resolve("idds_jupyter.worker.job:nope")


def test_context(tmp_path: Path) -> None:
    out = tmp_path / "ids.txt"
    for jid in (5, 6):
        res = run_job(
            spec(jid, attempt=2, function="jobfuncs:record_job", kwargs={"path": str(out)})
        )
        assert res["ok"] and res["result"] == jid
    assert out.read_text().splitlines() == ["5 2 7 3", "6 2 7 3"]
    assert context() is None


def test_exception_has_remote_traceback() -> None:
    res = run_job(spec(function="jobfuncs:raising", kwargs={"x": 21}))
    check_shape(res)
    assert not res["ok"]
    assert res["error"] == "ValueError: bad value 42"
    assert res["exc_type"] == "ValueError"
    assert 'raise ValueError(f"bad value {value}")  # the raising line' in res["traceback"]
    assert "jobfuncs.py" in res["traceback"]
    fail = run_job(spec(function="idds_jupyter.worker.job:fail", kwargs={"message": "a\nb"}))
    assert fail["error"] == "RuntimeError: a b" and fail["exc_type"] == "RuntimeError"


def test_custom_exception_is_qualified() -> None:
    res = run_job(spec(function="json:loads", kwargs={"s": "{"}))
    assert not res["ok"] and res["exc_type"] == "json.decoder.JSONDecodeError"


def test_summary_when_not_jsonable() -> None:
    res = run_job(spec(function="jobfuncs:returns_object"))
    assert res["ok"] and res["result"] is None
    assert res["summary"] == {"type": "builtins.set", "repr": "{1, 2, 3}"}
    res = run_job(spec(function="jobfuncs:returns_nan"))
    assert res["ok"] and res["result"] is None and res["summary"]["type"] == "builtins.float"
    check_shape(res)


def test_log_only_when_printed(tmp_path: Path) -> None:
    logs = tmp_path / "logs"
    for jid in range(50):
        assert run_job(spec(jid, log_dir=str(logs)))["log_path"] is None
    assert not logs.exists() or not list(logs.iterdir())
    res = run_job(spec(99, attempt=1, function="jobfuncs:chatty", log_dir=str(logs)))
    assert res["ok"] and res["result"] == "done"
    assert res["log_path"] == str(logs / "job-99.1.log")
    assert Path(res["log_path"]).read_text() == "line 0\nline 1\nto stderr\n"
    # stdout is restored
    assert sys.stdout is sys.__stdout__ or not isinstance(sys.stdout, type(None))


def test_function_timeout() -> None:
    res = run_job(
        spec(function="idds_jupyter.worker.job:sleep", kwargs={"seconds": 5}, timeout_s=0.2)
    )
    assert not res["ok"] and res["exc_type"] == "TimeoutError"
    assert res["wall_s"] < 2
    # the alarm is disarmed afterwards
    assert run_job(spec(function="idds_jupyter.worker.job:sleep", kwargs={"seconds": 0.3}))["ok"]


def test_timeout_not_enforced_off_main_thread() -> None:
    out: dict[str, Any] = {}

    def target() -> None:
        out["res"] = run_job(
            spec(function="idds_jupyter.worker.job:sleep", kwargs={"seconds": 0.2}, timeout_s=0.05)
        )

    t = threading.Thread(target=target)
    t.start()
    t.join()
    assert out["res"]["ok"]


def test_env_and_cwd(tmp_path: Path) -> None:
    res = run_job(
        spec(function="jobfuncs:env_and_cwd", env={"IDDS_TEST_VAR": "v1"}, cwd=str(tmp_path))
    )
    assert res["ok"] and res["result"] == {"var": "v1", "cwd": str(tmp_path)}
    assert "IDDS_TEST_VAR" not in os.environ and os.getcwd() != str(tmp_path)


def write_payload(tmp_path: Path, obj: Any) -> dict[str, str]:
    data = cloudpickle.dumps(obj)
    sha = hashlib.sha256(data).hexdigest()
    path = tmp_path / f"{sha}.pkl"
    path.write_bytes(data)
    return {"sha256": sha, "path": str(path)}


def test_payload_blob(tmp_path: Path) -> None:
    factor = 3

    def mul(a: int, b: int = 1, *, c: int = 0) -> int:
        return a * b * factor + c

    payload = write_payload(tmp_path, (mul, (2,), {"b": 5}))
    res = run_job(spec(function=None, payload=payload, kwargs={"c": 1}))
    assert res["ok"] and res["result"] == 31
    bad = dict(payload, sha256="0" * 64)
    res = run_job(spec(function=None, payload=bad))
    assert not res["ok"] and "sha256" in res["error"]


def test_payload_exception_traceback(tmp_path: Path) -> None:
    def explode() -> None:
        raise KeyError("missing-thing")  # payload raising line

    res = run_job(spec(function=None, payload=write_payload(tmp_path, (explode, (), {}))))
    assert not res["ok"] and res["exc_type"] == "KeyError"
    # by-value functions lose their source file; the frame is still named
    assert "in explode" in res["traceback"] and "missing-thing" in res["traceback"]


def test_command_result_from_stdout(tmp_path: Path) -> None:
    logs = tmp_path / "logs"
    res = run_job(
        spec(
            3,
            kind="command",
            function=None,
            log_dir=str(logs),
            command="echo hello; echo $IDDS_JOB_ID-$IDDS_WORK_ID-$FOO; echo '{\"x\": [1, 2]}'",
            env={"FOO": "bar"},
        )
    )
    check_shape(res)
    assert res["ok"] and res["exit_code"] == 0 and res["result"] == {"x": [1, 2]}
    assert Path(res["log_path"]).read_text() == 'hello\n3-7-bar\n{"x": [1, 2]}\n'


def test_command_result_file_and_cwd(tmp_path: Path) -> None:
    res = run_job(
        spec(
            kind="command",
            function=None,
            cwd=str(tmp_path),
            command='echo not-json; printf \'{"cwd": "%s"}\' "$(pwd)" > "$IDDS_RESULT"',
        )
    )
    assert res["ok"] and res["result"] == {"cwd": str(tmp_path)}
    assert res["log_path"] is None  # no log_dir: a temporary log, removed
    res = run_job(spec(kind="command", function=None, command="echo plain text"))
    assert res["ok"] and res["result"] is None and res["summary"] is None


def test_command_failure(tmp_path: Path) -> None:
    res = run_job(
        spec(
            kind="command",
            function=None,
            log_dir=str(tmp_path),
            command="echo first; echo 'something broke' >&2; exit 3",
        )
    )
    assert not res["ok"] and res["exit_code"] == 3
    assert res["error"].startswith("exit code 3") and "something broke" in res["error"]
    assert "first" in res["traceback"]


def test_command_timeout_kills_group(tmp_path: Path) -> None:
    marker = tmp_path / "late"
    res = run_job(
        spec(
            kind="command",
            function=None,
            timeout_s=0.3,
            command=f"(sleep 1.0; touch {marker}) & sleep 10",
        )
    )
    assert not res["ok"] and res["exc_type"] == "TimeoutError" and res["wall_s"] < 3
    holds_for(lambda: not marker.exists(), 1.2, message="the killed group's child touched its file")


def test_unknown_kind() -> None:
    res = run_job(spec(kind="wat"))
    assert not res["ok"] and "unknown job kind" in res["error"]


def test_single_job_cli(tmp_path: Path) -> None:
    import subprocess

    spec_file = tmp_path / "spec.json"
    spec_file.write_text(json.dumps(spec(12, function="jobfuncs:print_to_fd1")))
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(sys.path))
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "idds_jupyter.worker",
            "--job",
            str(spec_file),
            "--out",
            str(tmp_path / "r.json"),
        ],
        capture_output=True,
        env=env,
        timeout=60,
    )
    assert proc.returncode == 0, proc.stderr
    res = json.loads(proc.stdout)
    assert res["ok"] and res["result"] == "ok" and res["job_id"] == 12
    assert json.loads((tmp_path / "r.json").read_text()) == res
    assert b"garbage-on-fd-1" in proc.stderr
