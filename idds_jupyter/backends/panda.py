"""The ``panda`` backend: each submitted batch becomes a set of PanDA jobs (``panda-client``).

Specs and results travel through a shared directory (see
:mod:`idds_jupyter.backends.batch`): a batch of N specs is ONE
``pandaclient.Client.submitJobs`` call with N ``JobSpec`` s (at most 5,000, the
server's limit per call) whose job ``i`` runs the worker wrapper::

    transformation = <python>
    jobParameters  = -m idds_jupyter.worker --job DIR/spec-<i>.json --out DIR/result-<i>.json

(with ``env=`` extras: ``/usr/bin/env K=V … <python> -m …``). The PanDA queue
(``computingSite``) is the spec's ``resources.queue`` (or ``resources.site``),
else ``queue=`` (``panda_queue`` / ``IDDS_PANDA_QUEUE``); ``resources.cloud`` or
``cloud=`` gives ``cloud``; ``cores`` → ``coreCount``, ``memory_mb`` →
``minRamCount`` (MB), ``walltime_s`` → ``maxWalltime`` / ``maxCpuCount``.
PanDA's own retries are off (``maxAttempt = 1``): the core retries.

Polling makes ONE ``Client.getJobStatus`` call per round for the PanDA ids of
all outstanding jobs (split only beyond 5,000 ids). PanDA states:
defined/assigned/activated/waiting/sent/pending/throttled → queued;
starting/running/holding/transferring/merging → running; finished → the result
file is read; failed/cancelled/closed → a failed result whose error names the
PanDA id, the state and PanDA's error codes and diagnostics (pilot, exe,
taskbuffer, ddm, …), so the engine retries it. :meth:`cancel` is one
``Client.killJobs`` call for all the ids given.

Server and auth: ``url`` (``PANDA_URL``) and ``url_ssl`` (``PANDA_URL_SSL``,
default ``url``); panda-client reads both, and resolves a CERN host at import
unless ``PANDACACHE_URL`` / ``PANDA_BEHIND_REAL_LB`` are set, so the module is
imported lazily with those set to our server. ``token=`` (text, or a file read
at every call) with ``vo=`` selects OIDC: ``PANDA_AUTH=oidc``,
``PANDA_AUTH_VO``, ``PANDA_AUTH_ID_TOKEN`` as panda-client expects them. Without
a token panda-client's own setup applies (``PANDA_AUTH*`` / ``OIDC_AUTH_*``
variables, or an X.509 proxy). panda-client keeps its server URLs in module
globals and its auth in environment variables, so every call runs under one
process-wide lock with those set for this backend (and restored after); what
panda-client prints meanwhile is captured and, on failure, becomes the error.

Options not given are taken from the configuration (file and ``IDDS_*``
environment, :class:`idds_jupyter.config.Config`): ``panda_url``,
``panda_url_ssl``, ``panda_queue``, ``panda_cloud``, ``panda_token``,
``panda_vo``, ``shared_dir``, ``batch_poll_interval``, ``transfer``.

Sandbox: a PanDA user job normally downloads its sandbox from PanDA's own
cache (``PANDACACHE_URL``), which this backend only points at the server so
that panda-client imports offline. With ``transfer: http`` this service's
cache takes that role for every input of a job (spec, pickled function,
calls, sandbox zip) and the result goes back to it too: ``jobParameters`` are
``IDDS_SERVER_URL=… IDDS_JOB_ID=… IDDS_JOB_TOKEN=… <python> -m
idds_jupyter.worker --http`` run through ``/usr/bin/env`` (so the job token,
short-lived and scoped to that one job's blobs and result, is visible to
whoever may read the job's parameters in PanDA), and the worker node needs no
shared filesystem, only HTTP access to this service.
"""

from __future__ import annotations

import contextlib
import io
import os
import shlex
import sys
import threading
import time
from collections.abc import Iterator
from typing import Any
from urllib.parse import urlparse

from idds_jupyter.backends.batch import (
    DONE,
    FAILED,
    QUEUED,
    RUNNING,
    UNKNOWN,
    BatchBackend,
    TaskState,
    _Batch,
    http_worker_argv,
    worker_command,
)

__all__ = ["PandaBackend", "panda_state", "error_detail"]

_QUEUED = {
    "pending",
    "defined",
    "assigned",
    "activated",
    "waiting",
    "sent",
    "throttled",
    "scouting",
}
_RUNNING = {"starting", "running", "holding", "transferring", "merging"}
_DONE = {"finished"}
_FAILED = {"failed", "cancelled", "closed"}

#: the server's limits: job/submit truncates at 5,000 jobs, job/get_description at 5,500 ids
MAX_SUBMIT = 5000
MAX_STATUS = 5000

# panda-client keeps its server URLs in module globals and reads its auth from os.environ
_call_lock = threading.RLock()
_import_lock = threading.Lock()
_GLOBALS = ("baseURL", "baseURLSSL", "server_base_path", "server_base_path_ssl")
_ERRORS = (
    ("pilotErrorCode", "pilotErrorDiag", "pilot"),
    ("exeErrorCode", "exeErrorDiag", "exe"),
    ("supErrorCode", "supErrorDiag", "sup"),
    ("ddmErrorCode", "ddmErrorDiag", "ddm"),
    ("brokerageErrorCode", "brokerageErrorDiag", "brokerage"),
    ("jobDispatcherErrorCode", "jobDispatcherErrorDiag", "dispatcher"),
    ("taskBufferErrorCode", "taskBufferErrorDiag", "taskbuffer"),
)


def panda_state(status: str) -> str:
    """The backend's state (queued/running/done/failed) of a PanDA ``jobStatus``."""
    s = (status or "").strip().lower()
    if s in _RUNNING:
        return RUNNING
    if s in _DONE:
        return DONE
    if s in _FAILED:
        return FAILED
    if s in _QUEUED or s in ("", "null"):
        return QUEUED
    return QUEUED  # a state this version does not know: keep waiting (lost_grace_s does not apply)


def _value(job: Any, attr: str) -> Any:
    """An attribute of a ``JobSpec`` (which answers ``"NULL"`` for None) or of a dict."""
    v = job.get(attr) if isinstance(job, dict) else getattr(job, attr, None)
    return None if v in (None, "NULL", "None", "") else v


def error_detail(job: Any) -> tuple[str, int | None]:
    """``"failed (pilot error 1305: …; exe error 137: …)"`` and an exit code of a PanDA job."""
    status = str(_value(job, "jobStatus") or "unknown")
    parts: list[str] = []
    for code_attr, diag_attr, label in _ERRORS:
        code, diag = _value(job, code_attr), _value(job, diag_attr)
        if code in (None, 0, "0") and not diag:
            continue
        text = f"{label} error"
        if code not in (None, 0, "0"):
            text += f" {code}"
        if diag:
            text += f": {diag}"
        parts.append(text)
    exit_code: int | None = None
    for attr in ("transExitCode", "exeErrorCode"):
        v = _value(job, attr)
        try:
            if v is not None and int(v) != 0:
                exit_code = int(v)
                break
        except (TypeError, ValueError):
            continue
    if exit_code is not None and not any(p.startswith("exe error") for p in parts):
        parts.append(f"exit code {exit_code}")
    return (f"{status} ({'; '.join(parts)})" if parts else status), exit_code


def _api_base(url: str) -> str:
    p = urlparse(url)
    return f"{p.scheme}://{p.netloc}/api/v1"


def _import_client(url: str, url_ssl: str) -> Any:
    """``pandaclient.Client``, imported with its server variables pointing at ours.

    At import panda-client resolves its cache server's name (a CERN host by
    default); with ``PANDACACHE_URL`` at our server and ``PANDA_BEHIND_REAL_LB``
    set it resolves nothing. The variables are restored after the import.
    """
    with _import_lock:
        mod = sys.modules.get("pandaclient.Client")
        if mod is not None:
            return mod
        want = {
            "PANDA_URL": url,
            "PANDA_URL_SSL": url_ssl,
            "PANDACACHE_URL": url_ssl,
            "PANDA_BEHIND_REAL_LB": "1",
        }
        saved = {k: os.environ.get(k) for k in want}
        os.environ.update(want)
        try:
            from pandaclient import Client
        except ImportError as exc:
            raise ImportError(
                "the panda backend needs panda-client: pip install 'idds-jupyter[panda]'"
            ) from exc
        finally:
            for k, old in saved.items():
                if old is None:
                    os.environ.pop(k, None)
                else:
                    os.environ[k] = old
        return Client


class PandaBackend(BatchBackend):
    """Jobs as PanDA jobs (one ``submitJobs`` call per batch and resource set).

    :param url: the PanDA server, e.g. ``https://pandaserver.cern.ch:25443/server/panda``
        (``/api/v1`` on its host is what panda-client calls)
    :param shared_dir: a directory the worker nodes see at the same path
    :param url_ssl: the server's SSL URL (default ``url``)
    :param queue: default PanDA queue (``computingSite``) of the jobs
    :param cloud: default ``cloud``
    :param token: OIDC id token (text, or a file read at each call); needs ``vo``
    :param vo: the auth VO (``PANDA_AUTH_VO``), also the jobs' ``VO``
    :param prod_source_label: ``prodSourceLabel`` of the jobs (``"user"``)
    :param transformation: what the pilot runs (default: the jobs' Python)
    :param container: ``container_name`` of the jobs
    :param priority: ``assignedPriority`` / ``currentPriority``
    :param verify_host: verify the server's certificate (``PANDA_VERIFY_HOST``)
    :param behind_real_lb: the server has a real load balancer: no DNS
        round-robin of its name (``PANDA_BEHIND_REAL_LB``)

    Other keyword arguments: see :class:`~idds_jupyter.backends.batch.BatchBackend`.
    """

    name = "panda"
    engine_label = "panda"
    max_batch = MAX_SUBMIT

    def __init__(
        self,
        url: str | None = None,
        shared_dir: str | os.PathLike[str] | None = None,
        *,
        url_ssl: str | None = None,
        queue: str | None = None,
        cloud: str | None = None,
        token: str | None = None,
        vo: str | None = None,
        prod_source_label: str = "user",
        transformation: str | None = None,
        container: str | None = None,
        priority: int = 1000,
        verify_host: bool = True,
        behind_real_lb: bool = True,
        **options: Any,
    ) -> None:
        if not url:
            # not configured by the caller: the configuration (file, IDDS_* environment)
            from idds_jupyter.config import Config

            cfg = Config.load()
            url = cfg.panda_url
            url_ssl = url_ssl or cfg.panda_url_ssl
            queue = queue or cfg.panda_queue
            cloud = cloud or cfg.panda_cloud
            token = token or cfg.panda_token
            vo = vo or cfg.panda_vo
            shared_dir = shared_dir or str(cfg.batch_dir)
            options.setdefault("poll_interval", cfg.batch_poll_interval)
            options.setdefault("transfer", cfg.transfer)
        if not url:
            raise ValueError(
                "panda backend: no PanDA server URL; set panda_url (IDDS_PANDA_URL) or pass url="
            )
        if token and not vo:
            raise ValueError(
                "panda backend: an OIDC token needs its VO; set panda_vo "
                "(IDDS_PANDA_VO) or pass vo="
            )
        self.url = url.rstrip("/")
        self.url_ssl = (url_ssl or url).rstrip("/")
        self.queue = queue or None
        self.cloud = cloud or None
        self.token = token or None
        self.vo = vo or None
        self.prod_source_label = prod_source_label
        self.transformation = transformation
        self.container = container
        self.priority = int(priority)
        self.verify_host = verify_host
        self.behind_real_lb = behind_real_lb
        #: what panda-client printed during the last call (diagnostics)
        self.last_output = ""
        self._client = _import_client(self.url, self.url_ssl)
        super().__init__(shared_dir, **options)

    # ------------------------------------------------------------------ calls

    def _token_text(self) -> str | None:
        tok = self.token
        if tok and os.path.isfile(tok):
            with open(tok, encoding="utf-8") as fh:
                return fh.read().strip()
        return tok

    def _call_env(self) -> dict[str, str]:
        env: dict[str, str] = {}
        if self.behind_real_lb:
            env["PANDA_BEHIND_REAL_LB"] = "1"
        if not self.verify_host:
            env["PANDA_VERIFY_HOST"] = "off"
        tok = self._token_text()
        if tok and self.vo:
            env.update(PANDA_AUTH="oidc", PANDA_AUTH_VO=self.vo, PANDA_AUTH_ID_TOKEN=tok)
        return env

    @contextlib.contextmanager
    def _session(self) -> Iterator[io.StringIO]:
        """panda-client set up for this backend (URLs, auth) for one call; its prints captured."""
        client = self._client
        out = io.StringIO()
        with _call_lock:
            saved_globals = {k: getattr(client, k, None) for k in _GLOBALS}
            env = self._call_env()
            saved_env = {k: os.environ.get(k) for k in env}
            client.baseURL = self.url
            client.baseURLSSL = self.url_ssl
            client.server_base_path = _api_base(self.url)
            client.server_base_path_ssl = _api_base(self.url_ssl)
            os.environ.update(env)
            try:
                with contextlib.redirect_stdout(out):
                    yield out
            finally:
                for k, old in saved_env.items():
                    if old is None:
                        os.environ.pop(k, None)
                    else:
                        os.environ[k] = old
                for k, v in saved_globals.items():
                    setattr(client, k, v)
                self.last_output = out.getvalue()[-4000:]

    def _call(self, what: str, fn: Any, *args: Any) -> Any:
        """``fn(*args)`` of panda-client; its data, or RuntimeError with the server's message."""
        with self._session() as out:
            try:
                status, data = fn(*args)
            except SystemExit as exc:  # panda-client exits on some auth problems
                raise RuntimeError(
                    f"{what}: panda-client exited ({exc.code}): {_tail_text(out.getvalue())}"
                ) from None
        if status != 0 or data is None:
            raise RuntimeError(
                f"{what} failed (status {status}) at {self.url_ssl}: "
                f"{_tail_text(out.getvalue()) or data!r}"
            )
        return data

    def task_id(self, batch: _Batch, index: int) -> str:
        ids = batch.data.get("ids") or []
        pid = ids[index] if index < len(ids) else None
        return str(pid) if pid is not None else f"{batch.engine_id}#{index}"

    # ------------------------------------------------------------------ JobSpecs

    def _job_spec(self, batch: _Batch, index: int, defid: int, queue: str) -> Any:
        from pandaclient.FileSpec import FileSpec
        from pandaclient.JobSpec import JobSpec

        job = batch.jobs[index]
        res = batch.resources
        if batch.transfer == "http":
            argv = http_worker_argv(self.python)
            env = {**self.extra_env, **self.task_env(batch, index)}
        else:
            argv = worker_command(self.python, batch.dir, str(index))
            env = dict(self.extra_env)
        transformation = self.transformation or argv[0]
        args = argv[1:]
        if env:
            args = [f"{k}={v}" for k, v in env.items()] + [transformation] + args
            transformation = "/usr/bin/env"
        js = JobSpec()
        js.jobDefinitionID = defid
        js.jobName = f"idds.{self.tag}.{batch.key}.{index}.j{job.job_id}.a{job.attempt}"
        js.transformation = transformation
        js.jobParameters = " ".join(shlex.quote(a) for a in args)
        js.prodSourceLabel = self.prod_source_label
        js.processingType = "idds-jupyter"
        js.computingSite = queue
        cloud = res.get("cloud") or self.cloud
        if cloud:
            js.cloud = cloud
        if self.vo:
            js.VO = self.vo
        if self.container:
            js.container_name = self.container
        js.assignedPriority = js.currentPriority = self.priority
        js.maxAttempt = 1  # the core retries, not PanDA
        if res.get("cores"):
            js.coreCount = int(res["cores"])
        if res.get("memory_mb"):
            js.minRamCount = int(res["memory_mb"])
            js.minRamUnit = "MB"
        if res.get("walltime_s"):
            js.maxWalltime = js.maxCpuCount = int(res["walltime_s"])
        dataset = f"user.idds.{self.tag}"
        js.destinationDBlock = dataset
        log = FileSpec()
        log.lfn = f"{js.jobName}.log.tgz"
        log.type = "log"
        log.dataset = log.destinationDBlock = dataset
        js.addFile(log)
        return js

    # ------------------------------------------------------------------ hooks

    def _submit_batch(self, batch: _Batch) -> str:
        res = batch.resources
        queue = res.get("queue") or res.get("site") or self.queue
        if not queue:
            raise RuntimeError(
                "no PanDA queue for the jobs: set panda_queue (IDDS_PANDA_QUEUE) "
                "or the works' resources.queue"
            )
        defid = int(time.time() * 1000) % 2_000_000_000
        specs = [self._job_spec(batch, i, defid, str(queue)) for i in range(len(batch.jobs))]
        data = self._call("submitJobs", self._client.submitJobs, specs)
        if not isinstance(data, list) or len(data) != len(specs):
            raise RuntimeError(
                f"submitJobs gave {len(data) if isinstance(data, list) else data!r}"
                f" answers for {len(specs)} jobs"
            )
        ids: list[int | None] = []
        jobset = None
        for item in data:
            pid = item[0] if isinstance(item, list | tuple) and item else None
            try:
                ids.append(int(pid) if pid not in (None, "NULL") else None)
            except (TypeError, ValueError):
                ids.append(None)
            if (
                jobset is None
                and isinstance(item, list | tuple)
                and len(item) > 2
                and isinstance(item[2], dict)
            ):
                jobset = item[2].get("jobsetID")
        if not any(i is not None for i in ids):
            raise RuntimeError(
                f"the PanDA server stored none of the {len(specs)} jobs: {data!r}"[:2000]
            )
        batch.data["ids"] = ids
        batch.data["queue"] = queue
        first = next(i for i in ids if i is not None)
        return f"jobset {jobset}" if jobset not in (None, "NULL") else f"from {first}"

    def _poll(self, batches: list[_Batch]) -> dict[tuple[str, int], TaskState]:
        states: dict[tuple[str, int], TaskState] = {}
        wanted: list[tuple[int, _Batch, int]] = []
        for b in batches:
            ids = b.data.get("ids") or []
            for i in sorted(b.outstanding):
                pid = ids[i] if i < len(ids) else None
                if pid is None:
                    states[(b.key, i)] = TaskState(
                        FAILED, "rejected by the PanDA server at submission"
                    )
                else:
                    wanted.append((pid, b, i))
        for start in range(0, len(wanted), MAX_STATUS):
            chunk = wanted[start : start + MAX_STATUS]
            data = self._call("getJobStatus", self._client.getJobStatus, [p for p, _, _ in chunk])
            if not isinstance(data, list):
                raise RuntimeError(f"getJobStatus gave {type(data).__name__}")
            for (_pid, b, i), js in zip(chunk, data, strict=False):
                if js is None:
                    states[(b.key, i)] = TaskState(UNKNOWN)
                    continue
                status = str(_value(js, "jobStatus") or "")
                kind = panda_state(status)
                if kind == FAILED:
                    detail, code = error_detail(js)
                    states[(b.key, i)] = TaskState(FAILED, detail, code)
                else:
                    states[(b.key, i)] = TaskState(kind, status)
        return states

    def _cancel_tasks(self, tasks: list[tuple[_Batch, int]]) -> None:
        ids: list[int] = []
        for b, i in tasks:
            pids = b.data.get("ids") or []
            if i < len(pids) and pids[i] is not None:
                ids.append(int(pids[i]))
        for start in range(0, len(ids), MAX_STATUS):
            self._call("killJobs", self._client.killJobs, ids[start : start + MAX_STATUS])


def _tail_text(text: str, lines: int = 15) -> str:
    return " | ".join(line for line in text.strip().splitlines()[-lines:] if line.strip())
