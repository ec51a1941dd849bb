"""BatchBackend's two transfers on a scripted scheduler: what a batch gets, where results come from.

The scheduler here is a test double (it says every task is done); the files,
spec blobs, job tokens and the result inbox are the real ones. The engines
themselves run ``transfer: http`` in tests/engines.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Any

from idds_jupyter.backends.base import Backend
from idds_jupyter.backends.batch import DONE, BatchBackend, TaskState, _Batch
from idds_jupyter.backends.transfer import HttpTransfer, http_spec, write_inbox
from idds_jupyter.store.cache import blob_path, write_blob
from idds_jupyter.store.job_tokens import JobTokens


class Scripted(BatchBackend):
    name = "scripted"
    engine_label = "scripted"

    def __init__(self, *a: Any, **kw: Any) -> None:
        self.submitted: list[_Batch] = []
        super().__init__(*a, **kw)

    def _submit_batch(self, batch: _Batch) -> str:
        self.submitted.append(batch)
        return str(len(self.submitted))

    def _poll(self, batches: list[_Batch]) -> dict[tuple[str, int], TaskState]:
        return {(b.key, i): TaskState(DONE, "done") for b in batches for i in b.outstanding}

    def _cancel_tasks(self, tasks: list[tuple[_Batch, int]]) -> None:
        pass


def spec(job_id: int, **kw: Any) -> dict[str, Any]:
    return {
        "job_id": job_id,
        "attempt": 1,
        "work_id": 1,
        "workflow_id": 1,
        "kind": "function",
        "function": None,
        "command": None,
        "kwargs": {},
        "env": {},
        "timeout_s": None,
        "log_dir": "/srv/idds/logs/1",
        "cwd": "/home/someone/analysis",
        "payload": {
            "sha256": "a" * 64,
            "path": f"/srv/idds/cache/aa/{'a' * 64}",
            "sandbox": {"sha256": "b" * 64, "path": "/srv/idds/cache/bb/b"},
        },
        "call": {"sha256": "c" * 64, "index": 3, "path": "/srv/idds/cache/cc/c"},
        "result_dir": "/srv/idds/cache",
        **kw,
    }


def drain(b: Backend, n: int, timeout: float = 30) -> dict[int, dict[str, Any]]:
    out: dict[int, dict[str, Any]] = {}
    deadline = time.monotonic() + timeout
    while len(out) < n and time.monotonic() < deadline:
        for r in b.results(0.2):
            if "ok" in r:
                out[int(r["job_id"])] = r
    return out


def http_transfer(tmp_path: Path, url: str | None = "http://127.0.0.1:1/") -> HttpTransfer:
    tokens = JobTokens.for_home(tmp_path / "home")
    cache = tmp_path / "cache"
    return HttpTransfer(
        server_url=lambda: url,
        mint=lambda j, a, s, ttl: tokens.mint(j, a, s, ttl),
        put_spec=lambda data: write_blob(cache, data)[0],
        drop_spec=lambda sha: blob_path(cache, sha).unlink(missing_ok=True),
        inbox=str(tmp_path / "inbox"),
    )


def test_http_spec_names_no_path() -> None:
    out = http_spec(spec(1))
    text = json.dumps(out)
    assert "/srv/idds" not in text and "/home/someone" not in text
    assert out["payload"] == {"sha256": "a" * 64, "sandbox": {"sha256": "b" * 64}}
    assert out["call"] == {"sha256": "c" * 64, "index": 3}
    assert out["result_blobs"] is True and out["transfer"] == "http"


def test_a_work_chooses_its_transfer_and_results_come_from_the_inbox(tmp_path: Path) -> None:
    http = http_transfer(tmp_path)
    b = Scripted(tmp_path / "batch", poll_interval=0.1, http=http)  # default transfer: shared
    try:
        b.submit(
            [
                spec(1),
                spec(2, resources={"transfer": "http"}),
                spec(3, resources={"transfer": "HTTP"}),
            ]
        )
        deadline = time.monotonic() + 10
        while len(b.submitted) < 2 and time.monotonic() < deadline:
            time.sleep(0.05)
        shared, remote = sorted(b.submitted, key=lambda x: x.transfer != "shared")
        assert shared.transfer == "shared" and [j.job_id for j in shared.jobs] == [1]
        assert os.path.exists(os.path.join(shared.dir, "spec-0.json"))
        assert remote.transfer == "http" and [j.job_id for j in remote.jobs] == [2, 3]
        assert "transfer" not in remote.resources
        assert not any(n.startswith("spec-") for n in os.listdir(remote.dir))
        tokens = JobTokens.for_home(tmp_path / "home")
        for i, job in enumerate(remote.jobs):
            claim = tokens.verify(job.token or "")
            assert (claim.job_id, claim.attempt, claim.spec_sha) == (job.job_id, 1, job.spec_sha)
            stored = json.loads(blob_path(tmp_path / "cache", claim.spec_sha).read_text())
            want = spec(job.job_id, resources={"transfer": "http" if i == 0 else "HTTP"})
            assert stored == http_spec(want)
            assert remote.server_url == "http://127.0.0.1:1/"
            assert b.task_env(remote, i)["IDDS_JOB_TOKEN"] == job.token
        # results: the shared job's file, the http jobs' inbox entries (the API writes them)
        Path(shared.dir, "result-0.json").write_text(
            json.dumps({"job_id": 1, "attempt": 1, "ok": True, "result": "file"})
        )
        for jid in (2, 3):
            write_inbox(http.inbox, {"job_id": jid, "attempt": 1, "ok": True, "result": "inbox"})
        got = drain(b, 3)
        assert {j: r["result"] for j, r in got.items()} == {1: "file", 2: "inbox", 3: "inbox"}
        assert os.listdir(http.inbox) == []  # taken
        # the batch is over: its spec blobs are dropped
        deadline = time.monotonic() + 5
        while any(j.spec_sha for j in remote.jobs) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert all(p.is_dir() for p in (tmp_path / "cache").rglob("*"))
    finally:
        b.close()


def test_clear_errors(tmp_path: Path) -> None:
    b = Scripted(
        tmp_path / "batch",
        poll_interval=0.1,
        transfer="http",
        http=http_transfer(tmp_path, url=None),
    )
    try:
        b.submit([spec(1), spec(2, resources={"transfer": "ftp"})])
        got = drain(b, 2)
        assert "server_url" in got[1]["error"] and "IDDS_SERVER_URL" in got[1]["error"]
        assert "transfer must be one of shared, http" in got[2]["error"]
    finally:
        b.close()
    b = Scripted(tmp_path / "batch2", poll_interval=0.1, transfer="http")  # no http= given
    try:
        b.submit([spec(1)])
        assert "needs the service's job-token" in drain(b, 1)[1]["error"]
    finally:
        b.close()


def test_a_task_done_without_posting_fails(tmp_path: Path) -> None:
    b = Scripted(
        tmp_path / "batch", poll_interval=0.1, transfer="http", http=http_transfer(tmp_path)
    )
    try:
        b.submit([spec(1)])
        got = drain(b, 1, timeout=30)
        assert "without posting its result" in got[1]["error"]
    finally:
        b.close()
