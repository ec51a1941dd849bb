"""``python -m idds_jupyter.worker --http``: a real worker process against a real HTTP server.

The server here is a small stand-in of the three job routes (``/jobs/{id}/spec``,
``/blobs/{sha256}``, ``/result``) that can fail on purpose: 503s, a corrupt
download, a 502 on the result, a refusal. The real API is exercised by
tests/api/test_api_jobs.py and, end to end, by tests/engines (``transfer: http``).
"""

from __future__ import annotations

import hashlib
import json
import operator
import os
import subprocess
import sys
import tempfile
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import cloudpickle
import pytest
import tornado.httputil

TOKEN = "idj1.test-token"


class Stub:
    """The job routes of one job, with scripted failures."""

    def __init__(self, job_id: int, spec: dict[str, Any], blobs: dict[str, bytes]) -> None:
        self.job_id = job_id
        self.spec = spec
        self.blobs = blobs
        self.fail_spec = 0  # answer 503 this many times first
        self.corrupt_blob = 0  # send wrong bytes this many times first
        self.fail_result = 0  # answer 502 this many times first
        self.refuse = False  # 403 on everything
        self.calls: list[str] = []
        self.posted: list[dict[str, bytes]] = []
        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        stub = self

        class H(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *a: Any) -> None:
                pass

            def reply(self, code: int, body: bytes, ctype: str = "application/json") -> None:
                self.send_response(code)
                self.send_header("Content-Type", ctype)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def error(self, code: int, msg: str) -> None:
                self.reply(code, json.dumps({"error": msg}).encode())

            def route(self) -> str | None:
                prefix = f"/idds/api/v1/jobs/{stub.job_id}"
                stub.calls.append(f"{self.command} {self.path}")
                if self.headers.get("Authorization") != f"Bearer {TOKEN}":
                    self.error(401, "bad token")
                    return None
                if stub.refuse:
                    self.error(403, "this job token is for attempt 1 of job 5, which is now at 2")
                    return None
                if not self.path.startswith(prefix):
                    self.error(404, "no such route")
                    return None
                return self.path[len(prefix) :]

            def do_GET(self) -> None:
                path = self.route()
                if path is None:
                    return
                if path == "/spec":
                    if stub.fail_spec > 0:
                        stub.fail_spec -= 1
                        self.error(503, "busy")
                        return
                    self.reply(200, json.dumps(stub.spec).encode())
                elif path.startswith("/blobs/"):
                    data = stub.blobs.get(path[len("/blobs/") :])
                    if data is None:
                        self.error(403, "not an input of this job")
                        return
                    if stub.corrupt_blob > 0:
                        stub.corrupt_blob -= 1
                        data = data[:-1] + b"?"
                    self.reply(200, data, "application/octet-stream")
                else:
                    self.error(404, "no such route")

            def do_POST(self) -> None:
                path = self.route()
                if path is None:
                    return
                body = self.rfile.read(int(self.headers["Content-Length"]))
                if path != "/result":
                    self.error(404, "no such route")
                    return
                if stub.fail_result > 0:
                    stub.fail_result -= 1
                    self.error(502, "bad gateway")
                    return
                args: dict[str, list[bytes]] = {}
                files: dict[str, list[Any]] = {}
                boundary = self.headers["Content-Type"].split("boundary=")[1].encode()
                tornado.httputil.parse_multipart_form_data(boundary, body, args, files)
                stub.posted.append({k: v[0].body for k, v in files.items()})
                self.reply(201, b'{"accepted": true}')

        return H

    def stop(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


def function_spec(job_id: int, payload: bytes, **kw: Any) -> dict[str, Any]:
    """A FaaT job as the server hands it out: blobs by digest only, value sent back pickled."""
    return {
        "job_id": job_id,
        "attempt": 1,
        "work_id": 2,
        "workflow_id": 3,
        "kind": "function",
        "function": None,
        "command": None,
        "kwargs": {},
        "env": {},
        "timeout_s": 60,
        "payload": {"sha256": hashlib.sha256(payload).hexdigest()},
        "result_blobs": True,
        "transfer": "http",
        **kw,
    }


def run_worker(stub: Stub, tmp: Path, **env: str) -> subprocess.CompletedProcess[str]:
    e = dict(
        os.environ,
        PYTHONPATH=os.pathsep.join(sys.path),
        IDDS_SERVER_URL=stub.url,
        IDDS_JOB_ID=str(stub.job_id),
        IDDS_JOB_TOKEN=TOKEN,
        TMPDIR=str(tmp),
        **env,
    )
    return subprocess.run(
        [sys.executable, "-m", "idds_jupyter.worker", "--http"],
        env=e,
        capture_output=True,
        text=True,
        timeout=120,
        cwd="/",
    )


@pytest.fixture
def scratch() -> Iterator[Path]:
    d = Path(tempfile.mkdtemp(prefix="idds-remote-test-"))
    yield d
    import shutil

    shutil.rmtree(d, ignore_errors=True)


def test_function_job_with_transient_errors(scratch: Path) -> None:
    payload = cloudpickle.dumps((operator.mul, ("ab", 20_000), {}))  # a 40 kB value: a blob
    sha = hashlib.sha256(payload).hexdigest()
    stub = Stub(5, function_spec(5, payload), {sha: payload})
    stub.fail_spec, stub.corrupt_blob, stub.fail_result = 2, 1, 1
    try:
        proc = run_worker(stub, scratch)
    finally:
        stub.stop()
    assert proc.returncode == 0, proc.stderr
    assert "retrying" in proc.stderr  # the 503s, the corrupt download, the 502
    [posted] = stub.posted
    res = json.loads(posted["result"])
    assert res["ok"] and res["job_id"] == 5 and res["attempt"] == 1
    assert res["result"] == "ab" * 20_000
    assert hashlib.sha256(posted["blob"]).hexdigest() == res["blob"]
    assert (
        cloudpickle.loads(posted["blob"]) == "ab" * 20_000
    )  # the test may unpickle; the server never
    assert "log_path" not in res
    assert os.listdir(scratch) == []  # the scratch dir is gone


def test_job_runs_in_its_scratch_dir_and_exceptions_travel(scratch: Path) -> None:
    payload = cloudpickle.dumps((os.getcwd, (), {}))
    sha = hashlib.sha256(payload).hexdigest()
    stub = Stub(6, function_spec(6, payload), {sha: payload})
    try:
        assert run_worker(stub, scratch).returncode == 0
        cwd = json.loads(stub.posted[0]["result"])["result"]
        assert cwd.startswith(str(scratch) + "/idds-job-6-"), cwd
        # a failing function: the exception comes back (inline, it is small) with its traceback
        bad = cloudpickle.dumps((operator.truediv, (1, 0), {}))
        stub.spec = function_spec(6, bad)
        stub.blobs = {hashlib.sha256(bad).hexdigest(): bad}
        proc = run_worker(stub, scratch)
        assert proc.returncode == 1, proc.stderr
        res = json.loads(stub.posted[1]["result"])
        assert not res["ok"] and res["exc_type"] == "ZeroDivisionError"
        assert "ZeroDivisionError" in res["traceback"] and res["error_inline"]
    finally:
        stub.stop()


def test_command_job_and_its_log(scratch: Path) -> None:
    spec = {
        "job_id": 7,
        "attempt": 1,
        "kind": "command",
        "env": {"WHO": "node"},
        "command": 'echo "hello from $WHO in $(pwd)"; echo \'{"x": 1}\'',
        "kwargs": {},
        "transfer": "http",
    }
    stub = Stub(7, spec, {})
    try:
        proc = run_worker(stub, scratch)
    finally:
        stub.stop()
    assert proc.returncode == 0, proc.stderr
    [posted] = stub.posted
    res = json.loads(posted["result"])
    assert res["ok"] and res["result"] == {"x": 1} and res["exit_code"] == 0
    assert b"hello from node in " + str(scratch).encode() in posted["log"]


def test_unreachable_input_is_reported_as_a_failed_job(scratch: Path) -> None:
    payload = b"whatever"
    stub = Stub(8, function_spec(8, payload), {})  # the blob is refused (403)
    try:
        proc = run_worker(stub, scratch)
    finally:
        stub.stop()
    assert proc.returncode == 1, proc.stderr
    res = json.loads(stub.posted[0]["result"])
    assert not res["ok"] and "could not fetch the job's inputs" in res["error"]
    assert "403" in res["error"]


def test_refused_token_is_final(scratch: Path) -> None:
    stub = Stub(9, {"job_id": 9, "attempt": 1, "kind": "command", "command": "true"}, {})
    stub.refuse = True
    try:
        proc = run_worker(stub, scratch)
        assert proc.returncode == 2
        assert "now at 2" in proc.stderr and "retrying" not in proc.stderr
        assert stub.calls == ["GET /idds/api/v1/jobs/9/spec"] and not stub.posted
        # no job token at all: a clear message, nothing asked
        e = {k: v for k, v in os.environ.items() if k != "IDDS_JOB_TOKEN"}
        proc = subprocess.run(
            [
                sys.executable,
                "-m",
                "idds_jupyter.worker",
                "--http",
                "--server",
                stub.url,
                "--job-id",
                "9",
            ],
            env=e,
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert proc.returncode == 2 and "IDDS_JOB_TOKEN" in proc.stderr
    finally:
        stub.stop()
