"""The pool worker protocol, through a real ``python -m idds_jupyter.worker --pool``."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
from waiting import holds_for

from idds_jupyter.worker.pool import encode_message, read_message


def spec(job_id: int, function: str = "idds_jupyter.worker.job:noop", **kw: Any) -> dict[str, Any]:
    return {
        "job_id": job_id,
        "attempt": 0,
        "work_id": 1,
        "workflow_id": 1,
        "kind": "function",
        "function": function,
        "kwargs": kw.pop("kwargs", {}),
        "env": {},
        **kw,
    }


@pytest.fixture
def pool() -> Any:
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(sys.path))
    proc = subprocess.Popen(
        [sys.executable, "-m", "idds_jupyter.worker", "--pool"],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=env,
    )
    hello = read_message(proc.stdout)
    assert hello["hello"]["pid"] == proc.pid
    yield proc
    if proc.poll() is None:
        proc.kill()
    proc.wait()
    for f in (proc.stdin, proc.stdout, proc.stderr):
        if f is not None:
            f.close()


def send(proc: subprocess.Popen, obj: Any) -> None:
    assert proc.stdin is not None
    proc.stdin.write(encode_message(obj))
    proc.stdin.flush()


def collect(proc: subprocess.Popen, n: int) -> tuple[list[dict], list[dict]]:
    """Read until n results arrived; return (results, messages)."""
    results: list[dict] = []
    messages: list[dict] = []
    while len(results) < n:
        msg = read_message(proc.stdout)
        messages.append(msg)
        results.extend(msg.get("results", []))
    return results, messages


def test_batch_roundtrip_few_messages(pool: subprocess.Popen) -> None:
    send(pool, [spec(i) for i in range(500)])
    results, messages = collect(pool, 500)
    assert [r["job_id"] for r in results] == list(range(500))
    assert all(r["ok"] for r in results)
    assert len(messages) <= 20  # flushed every 5 ms, not per job


def test_fd1_prints_do_not_corrupt_protocol(pool: subprocess.Popen) -> None:
    send(pool, [spec(1, "jobfuncs:print_to_fd1"), spec(2, "jobfuncs:chatty")])
    results, _ = collect(pool, 2)
    assert [r["result"] for r in results] == ["ok", "done"]


def test_slow_job_reported_promptly_and_started(pool: subprocess.Popen) -> None:
    t0 = time.monotonic()
    send(
        pool,
        [
            spec(1, "idds_jupyter.worker.job:echo", kwargs={"v": 1}),
            spec(2, "idds_jupyter.worker.job:sleep", kwargs={"seconds": 1.0}),
        ],
    )
    first = read_message(pool.stdout)
    # the quick job is not held back by the slow one
    assert first["results"][0]["job_id"] == 1 and time.monotonic() - t0 < 0.9
    second = read_message(pool.stdout)
    assert second == {"started": [[2, 0]]}
    third = read_message(pool.stdout)
    assert third["results"][0]["job_id"] == 2 and third["results"][0]["ok"]


def test_errors_and_several_batches(pool: subprocess.Popen) -> None:
    send(pool, [spec(1, "idds_jupyter.worker.job:fail", kwargs={"message": "nope"})])
    send(pool, [spec(2), spec(3)])
    results, _ = collect(pool, 3)
    assert [r["job_id"] for r in results] == [1, 2, 3]
    assert (
        results[0]["error"] == "RuntimeError: nope"
        and "raise RuntimeError" in results[0]["traceback"]
    )


def test_eof_finishes_received_batches_then_exits(pool: subprocess.Popen) -> None:
    send(pool, [spec(1, "idds_jupyter.worker.job:sleep", kwargs={"seconds": 0.2}), spec(2)])
    assert pool.stdin is not None
    pool.stdin.close()
    results = []
    while True:
        try:
            msg = read_message(pool.stdout)
        except EOFError:
            break
        results.extend(msg.get("results", []))
    assert [r["job_id"] for r in results] == [1, 2]
    assert pool.wait(timeout=10) == 0


def test_sigterm_kills_running_command(pool: subprocess.Popen, tmp_path: Path) -> None:
    marker = tmp_path / "late"
    send(pool, [spec(1, kind="command", function=None, command=f"sleep 1; touch {marker}")])
    assert read_message(pool.stdout) == {"started": [[1, 0]]}
    pool.send_signal(signal.SIGTERM)
    assert pool.wait(timeout=10) == 128 + signal.SIGTERM
    holds_for(lambda: not marker.exists(), 1.3, message="the killed command touched its file")


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    try:  # a zombie (exited, not reaped by a lazy init) counts as dead
        with open(f"/proc/{pid}/stat") as fh:
            return fh.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return True


def test_worker_exits_when_parent_is_killed(tmp_path: Path) -> None:
    """A parent (stand-in for the agent) dies by SIGKILL: its pool worker exits too."""
    pidfile = tmp_path / "pid"
    code = f"""
import subprocess, sys, time
p = subprocess.Popen([sys.executable, "-m", "idds_jupyter.worker", "--pool"],
                     stdin=subprocess.PIPE, stdout=subprocess.PIPE)
open({str(pidfile)!r}, "w").write(str(p.pid))
time.sleep(60)
"""
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(sys.path))
    parent = subprocess.Popen([sys.executable, "-c", code], env=env)
    deadline = time.monotonic() + 20
    while not (pidfile.exists() and pidfile.read_text()) and time.monotonic() < deadline:
        time.sleep(0.05)
    child = int(pidfile.read_text())
    parent.kill()
    parent.wait()
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        if not _alive(child):
            break
        time.sleep(0.05)
    else:
        os.kill(child, signal.SIGKILL)
        pytest.fail("pool worker survived its parent")
