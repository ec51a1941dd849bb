"""A stand-in PanDA server and pilots for the engine tests (a test double of a third-party server).

A real PanDA server needs its Oracle/PostgreSQL schema, which no registry ships,
so the tests talk to this small HTTP server instead. It implements, in the
encodings of panda-client 2.2 and panda-server 1.0 (``/api/v1``, JSON bodies,
``{"success", "message", "data"}`` envelopes):

* the client side panda-client calls: ``job/submit`` (``{"jobs": "<JSON list of
  JobSpec states>"}`` → ``[[PandaID, jobDefinitionID, {"jobsetID": …}], …]``),
  ``job/get_description`` (``{"job_ids": […]}`` → a dict per job, ``None`` for
  unknown ids), ``job/kill`` (queued jobs become ``cancelled`` at once, running
  ones get ``commandToPilot = "tobekilled"`` and become ``cancelled`` when their
  pilot reports);
* the pilot side: ``pilot/acquire_jobs`` (``site_name``, ``n_jobs``,
  ``prod_source_label``; form or JSON) and ``pilot/update_job`` (``job_id``,
  ``job_status``, error codes/diags; the answer carries the pilot ``command``).

Pilots (threads here) acquire jobs of their queue, run ``transformation
jobParameters`` as a subprocess (its own process group; ``PANDAID`` set),
heart-beat through ``update_job`` (and kill the payload on ``tobekilled``), and
report ``finished`` or ``failed`` with exe/pilot error codes and diagnostics.

With ``token=`` every call must carry ``Authorization: Bearer <token>`` (what
panda-client sends with ``PANDA_AUTH=oidc``), else 403.
"""

from __future__ import annotations

import contextlib
import itertools
import json
import os
import shlex
import signal
import subprocess
import tempfile
import threading
import time
import urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlparse

from pandaclient.JobSpec import JobSpec

ATTRS = JobSpec._attributes
FINAL = {"finished", "failed", "cancelled", "closed"}
QUEUED = {"defined", "assigned", "activated", "waiting", "pending"}


def _now() -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime())


class PandaStandin:
    """The stand-in server (``.url``) plus ``pilots`` pilot threads serving ``queues``."""

    def __init__(
        self,
        pilots: int = 4,
        queues: tuple[str, ...] = ("IDDS_TEST",),
        token: str | None = None,
        vo: str | None = None,
    ) -> None:
        self.token = token
        self.vo = vo
        self.queues = queues
        self.n_pilots = pilots
        self.jobs: dict[int, dict[str, Any]] = {}
        self.lock = threading.Lock()
        self._ids = itertools.count(1_000_001)
        self._jobsets = itertools.count(501)
        self.calls: dict[str, int] = {}
        self.procs: dict[int, subprocess.Popen[bytes]] = {}  # PandaID -> running payload
        self.stopping = threading.Event()
        self.workdir = tempfile.mkdtemp(prefix="panda-standin-")
        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self.httpd.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/server/panda"
        self.threads: list[threading.Thread] = []

    # ------------------------------------------------------------------ lifecycle

    def start(self) -> PandaStandin:
        t = threading.Thread(
            target=self.httpd.serve_forever,
            kwargs={"poll_interval": 0.2},
            name="panda-standin-http",
            daemon=True,
        )
        t.start()
        self.threads.append(t)
        for n in range(self.n_pilots):
            for q in self.queues:
                p = threading.Thread(
                    target=self._pilot,
                    args=(q, f"pilot-{q}-{n}"),
                    name=f"panda-pilot-{q}-{n}",
                    daemon=True,
                )
                p.start()
                self.threads.append(p)
        return self

    def stop(self) -> None:
        self.stopping.set()
        with self.lock:
            procs = list(self.procs.values())
        for proc in procs:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(proc.pid, signal.SIGKILL)
        self.httpd.shutdown()
        self.httpd.server_close()
        for t in self.threads:
            t.join(timeout=10)

    def active(self) -> int:
        """Jobs not yet final, plus payloads still running (after an abort: 0)."""
        with self.lock:
            live = {pid for pid, j in self.jobs.items() if j["jobStatus"] not in FINAL}
            live |= {pid for pid, p in self.procs.items() if p.poll() is None}
        return len(live)

    # ------------------------------------------------------------------ the server

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        server = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, format: str, *args: Any) -> None:  # quiet
                pass

            def _params(self) -> dict[str, Any]:
                parsed = urlparse(self.path)
                params: dict[str, Any] = {
                    k: v[-1] if len(v) == 1 else v for k, v in parse_qs(parsed.query).items()
                }
                n = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(n) if n else b""
                if body:
                    ctype = self.headers.get("Content-Type", "")
                    if "json" in ctype:
                        params.update(json.loads(body))
                    else:
                        params.update({k: v[-1] for k, v in parse_qs(body.decode()).items()})
                return params

            def _reply(self, code: int, payload: Any) -> None:
                data = json.dumps(payload, default=str).encode()
                self.send_response(code)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def _dispatch(self) -> None:
                path = urlparse(self.path).path
                if not path.startswith("/api/v1/"):
                    self._reply(404, {"success": False, "message": f"no such path {path}"})
                    return
                endpoint = path[len("/api/v1/") :]
                if server.token is not None:
                    auth = self.headers.get("Authorization", "")
                    if auth != f"Bearer {server.token}" or (
                        server.vo and self.headers.get("Origin") != server.vo
                    ):
                        self._reply(403, {"success": False, "message": "bad or missing token"})
                        return
                params = self._params()
                fn = getattr(server, "api_" + endpoint.replace("/", "_"), None)
                if fn is None:
                    self._reply(404, {"success": False, "message": f"unknown endpoint {endpoint}"})
                    return
                with server.lock:
                    server.calls[endpoint] = server.calls.get(endpoint, 0) + 1
                try:
                    ok, message, data = fn(params)
                except Exception as exc:  # a broken request: the server's usual envelope
                    ok, message, data = False, f"{type(exc).__name__}: {exc}", None
                self._reply(200, {"success": ok, "message": message, "data": data})

            do_GET = _dispatch
            do_POST = _dispatch

        return Handler

    # --- client side -----------------------------------------------------------

    def api_job_submit(self, p: dict[str, Any]) -> tuple[bool, str, Any]:
        states = json.loads(p["jobs"]) if isinstance(p["jobs"], str) else p["jobs"]
        out = []
        with self.lock:
            jobset = next(self._jobsets)
            for state in states:
                job = dict(zip(ATTRS, state[: len(ATTRS)], strict=False))
                files = state[-1] if isinstance(state[-1], list) else []
                pid = next(self._ids)
                job.update(
                    PandaID=pid,
                    jobsetID=jobset,
                    jobStatus="activated",
                    creationTime=_now(),
                    modificationTime=_now(),
                    commandToPilot=None,
                    attemptNr=1,
                    Files=[
                        {"lfn": f[1] if len(f) > 1 else None} for f in files if isinstance(f, list)
                    ],
                )
                self.jobs[pid] = job
                out.append([pid, job.get("jobDefinitionID"), {"jobsetID": jobset}])
        return True, "", out

    def api_job_get_description(self, p: dict[str, Any]) -> tuple[bool, str, Any]:
        ids = p.get("job_ids") or []
        if isinstance(ids, str):
            ids = json.loads(ids)
        with self.lock:
            return True, "", [dict(self.jobs[int(i)]) if int(i) in self.jobs else None for i in ids]

    def api_job_kill(self, p: dict[str, Any]) -> tuple[bool, str, Any]:
        ids = p.get("job_ids") or []
        out = []
        with self.lock:
            for i in ids:
                job = self.jobs.get(int(i))
                if job is None or job["jobStatus"] in FINAL:
                    out.append(False)
                    continue
                if job["jobStatus"] in QUEUED:
                    job.update(
                        jobStatus="cancelled",
                        taskBufferErrorCode=100,
                        taskBufferErrorDiag="killed by the owner",
                        modificationTime=_now(),
                    )
                else:  # sent/starting/running: the pilot is told at its next heart-beat
                    job["commandToPilot"] = "tobekilled"
                out.append(True)
        return True, "", out

    # --- pilot side --------------------------------------------------------------

    def api_pilot_acquire_jobs(self, p: dict[str, Any]) -> tuple[bool, str, Any]:
        site = p.get("site_name")
        n = int(p.get("n_jobs") or 1)
        label = p.get("prod_source_label")
        got = []
        with self.lock:
            for pid in sorted(self.jobs):
                job = self.jobs[pid]
                if job["jobStatus"] != "activated" or job.get("computingSite") != site:
                    continue
                if label and job.get("prodSourceLabel") not in (label, None):
                    continue
                job.update(
                    jobStatus="sent", modificationHost=p.get("node"), modificationTime=_now()
                )
                got.append(
                    {
                        "PandaID": pid,
                        "jobsetID": job["jobsetID"],
                        "jobName": job.get("jobName"),
                        "transformation": job.get("transformation"),
                        "jobPars": job.get("jobParameters") or "",
                        "coreCount": job.get("coreCount"),
                        "minRamCount": job.get("minRamCount"),
                        "maxWalltime": job.get("maxWalltime"),
                        "prodSourceLabel": job.get("prodSourceLabel"),
                        "container_name": job.get("container_name"),
                    }
                )
                if len(got) >= n:
                    break
        if not got:
            return False, "No jobs in PanDA", None
        return True, "", {"StatusCode": 0, "jobs": got}

    def api_pilot_update_job(self, p: dict[str, Any]) -> tuple[bool, str, Any]:
        pid = int(p["job_id"])
        status = str(p["job_status"])
        with self.lock:
            job = self.jobs.get(pid)
            if job is None:
                return False, f"unknown job {pid}", None
            command = job.get("commandToPilot")
            if job["jobStatus"] in FINAL:
                return True, "", {"StatusCode": 0, "command": "tobekilled"}
            for key, attr in (
                ("pilot_error_code", "pilotErrorCode"),
                ("pilot_error_diag", "pilotErrorDiag"),
                ("exe_error_code", "exeErrorCode"),
                ("exe_error_diag", "exeErrorDiag"),
                ("trans_exit_code", "transExitCode"),
                ("start_time", "startTime"),
                ("end_time", "endTime"),
                ("node", "modificationHost"),
            ):
                if p.get(key) not in (None, ""):
                    job[attr] = p[key]
            if status in FINAL and command == "tobekilled":
                status = "cancelled"
                job.update(taskBufferErrorCode=100, taskBufferErrorDiag="killed by the owner")
            job.update(jobStatus=status, modificationTime=_now())
        return True, "", {"StatusCode": 0, "command": command or "NULL"}

    # ------------------------------------------------------------------ pilots

    def _post(self, endpoint: str, data: dict[str, Any]) -> dict[str, Any]:
        body = json.dumps(data).encode()
        req = urllib.request.Request(
            f"{self.url.split('/server/')[0]}/api/v1/{endpoint}",
            data=body,
            method="POST",
            headers={"Content-Type": "application/json", "Accept": "application/json"},
        )
        if self.token:
            req.add_header("Authorization", f"Bearer {self.token}")
            if self.vo:
                req.add_header("Origin", self.vo)
        with urllib.request.urlopen(req, timeout=30) as resp:
            result: dict[str, Any] = json.loads(resp.read())
        return result

    def _pilot(self, queue: str, node: str) -> None:
        while not self.stopping.is_set():
            try:
                r = self._post(
                    "pilot/acquire_jobs",
                    {"site_name": queue, "n_jobs": 1, "node": node, "prod_source_label": "user"},
                )
            except OSError:
                if self.stopping.wait(0.5):
                    return
                continue
            jobs = (r.get("data") or {}).get("jobs") or [] if r.get("success") else []
            if not jobs:
                self.stopping.wait(0.1)
                continue
            for job in jobs:
                with contextlib.suppress(OSError):
                    self._run(job, node)

    def _run(self, job: dict[str, Any], node: str) -> None:
        pid = int(job["PandaID"])
        cmd = [job["transformation"], *shlex.split(job.get("jobPars") or "")]
        log = os.path.join(self.workdir, f"payload-{pid}.log")
        started = time.time()
        self._post("pilot/update_job", {"job_id": pid, "job_status": "starting", "node": node})
        with open(log, "wb") as out:
            try:
                proc = subprocess.Popen(
                    cmd,
                    stdout=out,
                    stderr=subprocess.STDOUT,
                    stdin=subprocess.DEVNULL,
                    start_new_session=True,
                    env={**os.environ, "PANDAID": str(pid)},
                )
            except OSError as exc:
                self._post(
                    "pilot/update_job",
                    {
                        "job_id": pid,
                        "job_status": "failed",
                        "pilot_error_code": 1008,
                        "pilot_error_diag": f"cannot start payload: {exc}",
                    },
                )
                return
        with self.lock:
            self.procs[pid] = proc
        killed = False
        r = self._post(
            "pilot/update_job",
            {"job_id": pid, "job_status": "running", "start_time": _now(), "node": node},
        )
        next_beat = time.monotonic() + 0.3
        while proc.poll() is None:
            if self.stopping.is_set() or (r.get("data") or {}).get("command") == "tobekilled":
                killed = True
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
                break
            if time.monotonic() >= next_beat:
                next_beat = time.monotonic() + 0.3
                with contextlib.suppress(OSError):
                    r = self._post("pilot/update_job", {"job_id": pid, "job_status": "running"})
            time.sleep(0.05)
        code = proc.returncode
        with self.lock:
            self.procs.pop(pid, None)
        report: dict[str, Any] = {
            "job_id": pid,
            "end_time": _now(),
            "node": node,
            "cpu_consumption_time": int(time.time() - started),
        }
        if code == 0 and not killed:
            report.update(job_status="finished", trans_exit_code=0)
        else:
            tail = _tail(log)
            if killed:
                report.update(
                    pilot_error_code=1144, pilot_error_diag="job killed by the server (tobekilled)"
                )
            elif code < 0:
                report.update(
                    pilot_error_code=1305, pilot_error_diag=f"payload killed by signal {-code}"
                )
            report.update(
                job_status="failed",
                exe_error_code=code if code > 0 else 128 - code,
                exe_error_diag=f"payload exited with {code}: {tail}"[:500],
                trans_exit_code=code if code > 0 else 128 - code,
            )
        self._post("pilot/update_job", report)


def _tail(path: str, lines: int = 5) -> str:
    try:
        with open(path, "rb") as fh:
            fh.seek(0, os.SEEK_END)
            fh.seek(max(0, fh.tell() - 4000))
            text = fh.read().decode("utf-8", errors="replace")
    except OSError:
        return ""
    return " | ".join(text.strip().splitlines()[-lines:])
