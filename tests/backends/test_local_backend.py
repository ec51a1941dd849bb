"""LocalBackend: a pool of real worker processes."""

from __future__ import annotations

import os
import signal
import threading
import time
from pathlib import Path
from typing import Any

import pytest
from waiting import holds_for, wait_for

from idds_jupyter.backends import Backend, LocalBackend, make_backend

NOOP = "idds_jupyter.worker.job:noop"
SLEEP = "idds_jupyter.worker.job:sleep"


def spec(job_id: int, function: str = NOOP, attempt: int = 0, **kwargs: Any) -> dict[str, Any]:
    return {
        "job_id": job_id,
        "attempt": attempt,
        "work_id": 1,
        "workflow_id": 1,
        "kind": "function",
        "function": function,
        "command": None,
        "kwargs": kwargs,
        "payload": None,
        "env": {},
        "timeout_s": None,
        "log_dir": None,
        "cwd": None,
    }


def drain(b: Backend, n: int, timeout: float = 60.0) -> dict[int, dict[str, Any]]:
    """Collect n final results (dropping "started" notices), keyed by job id; no duplicates."""
    out: dict[int, dict[str, Any]] = {}
    deadline = time.monotonic() + timeout
    while len(out) < n:
        left = deadline - time.monotonic()
        assert left > 0, f"only {len(out)} of {n} results"
        for r in b.results(min(left, 1.0)):
            if "ok" not in r:
                assert r.get("started") is True
                continue
            assert r["job_id"] not in out, f"duplicate result for {r['job_id']}"
            out[r["job_id"]] = r
    return out


@pytest.fixture
def backend() -> Any:
    b = make_backend("local", workers=2, batch=100)
    yield b
    b.close()


def test_registry() -> None:
    with pytest.raises(ValueError, match="unknown backend 'nope'"):
        make_backend("nope")


def test_ten_thousand_noops(backend: LocalBackend) -> None:
    assert backend.capacity == 2 * 100 * 2
    backend.submit([spec(i) for i in range(10_000)])
    results = drain(backend, 10_000)
    assert set(results) == set(range(10_000))
    assert all(r["ok"] for r in results.values())
    assert backend.in_flight() == 0
    assert backend.status([0, 9_999, 123_456]) == {0: "done", 9_999: "done", 123_456: "unknown"}
    assert backend.results(0.05) == []


def test_mixed_results_and_status(backend: LocalBackend, tmp_path: Path) -> None:
    backend.submit(
        [
            spec(1, "idds_jupyter.worker.job:echo", x=1),
            spec(2, "idds_jupyter.worker.job:fail"),
            {
                **spec(3),
                "kind": "command",
                "function": None,
                "command": "echo '[1, 2]'",
                "log_dir": str(tmp_path),
            },
        ]
    )
    res = drain(backend, 3)
    assert res[1]["result"] == {"x": 1}
    assert not res[2]["ok"] and res[2]["exc_type"] == "RuntimeError"
    assert res[3]["result"] == [1, 2] and Path(res[3]["log_path"]).exists()


def test_status_queued_running(tmp_path: Path) -> None:
    b = LocalBackend(workers=1, batch=1)
    try:
        b.submit([spec(i, SLEEP, seconds=0.5) for i in range(4)])
        st = wait_for(
            lambda: (s := b.status([0, 1, 2, 3]))[0] == "running" and s, 10, message="job 0 running"
        )
        assert st[3] == "queued"
        notes = b.results(0.5)
        [start] = [n for n in notes if n.get("started") and n["job_id"] == 0]
        assert start["attempt"] == 0 and abs(start["started_at"] - time.time()) < 30, start
        b.cancel([1, 2, 3])
        res = drain(b, 4, timeout=20)
        assert all(res[i]["error"] == "cancelled" for i in (1, 2, 3) if not res[i]["ok"])
    finally:
        b.close()


def test_worker_killed_mid_job(backend: LocalBackend) -> None:
    backend.submit([spec(i, SLEEP, seconds=2.0) for i in range(2)])
    # both workers are busy with one job each
    deadline = time.monotonic() + 10
    started: set[int] = set()
    while len(started) < 2 and time.monotonic() < deadline:
        started |= {r["job_id"] for r in backend.results(0.2) if r.get("started")}
    assert started == {0, 1}
    victim = backend.worker_pids()[0]
    os.kill(victim, signal.SIGKILL)
    res = drain(backend, 1, timeout=10)
    ((jid, r),) = res.items()
    assert not r["ok"] and r["error"] == "worker process died (signal 9)"
    # the pool continues, with a replacement worker
    assert victim not in backend.worker_pids() and len(backend.worker_pids()) == 2
    backend.submit([spec(i) for i in range(100, 1100)])
    more = drain(backend, 1001, timeout=30)
    assert set(more) == set(range(100, 1100)) | ({0, 1} - {jid})
    assert all(more[i]["ok"] for i in range(100, 1100))


def test_cancel_running_and_queued(tmp_path: Path) -> None:
    b = LocalBackend(workers=2, batch=1)
    try:
        marker = tmp_path / "late"
        b.submit(
            [
                {
                    **spec(0),
                    "kind": "command",
                    "function": None,
                    "command": f"sleep 3 && touch {marker}",
                }
            ]
            + [spec(i, SLEEP, seconds=0.3) for i in range(1, 9)]
        )
        deadline = time.monotonic() + 10
        while b.status([0])[0] != "running" and time.monotonic() < deadline:
            b.results(0.1)
        pids = set(b.worker_pids())
        t0 = time.monotonic()
        b.cancel([0, 8])
        res = drain(b, 9, timeout=30)
        assert res[0]["error"] == "cancelled" and not res[0]["ok"]
        assert res[8]["error"] == "cancelled"
        # bystanders were requeued and ran
        assert all(res[i]["ok"] for i in range(1, 8))
        assert time.monotonic() - t0 < 5
        assert pids != set(b.worker_pids()) and len(b.worker_pids()) == 2
        holds_for(lambda: not marker.exists(), 3.2, message="cancelled command kept running")
    finally:
        b.close()


def test_log_dir_default_and_waker(tmp_path: Path) -> None:
    woke: list[int] = []
    b = LocalBackend(workers=1, log_dir=str(tmp_path / "logs"))
    try:
        b.set_waker(lambda: woke.append(1))
        b.submit([{**spec(1), "kind": "command", "function": None, "command": "echo hi"}])
        res = drain(b, 1)
        assert res[1]["log_path"] == str(tmp_path / "logs" / "job-1.0.log")
        assert woke
        t0 = time.monotonic()
        threading.Timer(0.2, b.wake).start()
        assert b.results(10) == [] and time.monotonic() - t0 < 5
    finally:
        b.close()
    with pytest.raises(RuntimeError):
        b.submit([spec(5)])


def test_close_kills_workers() -> None:
    b = LocalBackend(workers=2)
    pids = b.worker_pids()
    b.submit([spec(i, SLEEP, seconds=30) for i in range(2)])
    wait_for(lambda: set(b.status([0, 1]).values()) == {"running"}, 10, message="both jobs running")
    t0 = time.monotonic()
    b.close()
    assert time.monotonic() - t0 < 6
    for pid in pids:
        with pytest.raises(ProcessLookupError):
            os.kill(pid, 0)


def test_a_gone_worker_pipe_is_never_written_again(backend: LocalBackend, tmp_path: Path) -> None:
    """Once a worker's pipe is closed its fd number is free for the next file or socket;
    a frame dispatched to that worker late must not land there."""
    w = backend._workers[0]
    old_fd = w.fd
    w.signal(signal.SIGKILL)
    assert w.writer is not None
    w.writer.join(10)  # the writer thread closed the pipe
    assert w.closed and not w.writer.is_alive()
    fd = os.open(tmp_path / "bystander", os.O_WRONLY | os.O_CREAT, 0o600)
    try:
        if fd != old_fd:  # (the lowest free number may be the freed one itself)
            os.dup2(fd, old_fd)  # the freed number, as the next file or socket may get it
        LocalBackend._send([(w, [spec(1)])])
    finally:
        os.close(old_fd)
        if fd != old_fd:
            os.close(fd)
    assert (tmp_path / "bystander").read_bytes() == b""
