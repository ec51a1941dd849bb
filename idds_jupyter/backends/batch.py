"""Shared logic of the file-based batch backends (Slurm, HTCondor, PanDA).

A batch backend hands jobs to an external scheduler through a shared
filesystem directory. Each :meth:`BatchBackend.submit` call queues specs; a
single background thread (the *loop*) then

1. groups the queued specs by their resources and, per group, writes
   ``<batch dir>/spec-<i>.json`` and submits the group as ONE scheduler
   submission (a Slurm job array, an HTCondor cluster with one proc per job,
   a PanDA job set) whose task ``i`` runs::

       python -m idds_jupyter.worker --job <dir>/spec-<i>.json --out <dir>/result-<i>.json

2. every ``poll_interval`` seconds asks the scheduler about ALL its batches in
   one call (:meth:`BatchBackend._poll`), lists each batch directory once, and
   turns what it learns into results: a result file → that result; a task the
   scheduler reports failed/cancelled/held/lost without a result file → a failed
   result carrying the scheduler's state and reason (so the engine retries it);
   a task that began running → a ``{"started": True}`` note.

:meth:`BatchBackend.cancel` removes the tasks from the scheduler and reports
them failed with error ``"cancelled"`` at once. :meth:`BatchBackend.close`
removes every task still in flight (``cancel_on_close``) so that no orphan
keeps running after the Carrier stops (a restarted Carrier resubmits them).

Subclasses implement :meth:`_submit_batch`, :meth:`_poll` and
:meth:`_cancel_tasks` (and may override :meth:`_close_engine`).

**Transfer** (``transfer=`` or a work's ``resources.transfer``): with
``"shared"`` (the default) the spec files, the FaaT cache and the result files
are shared with the execute nodes by path, as above. With ``"http"`` nothing
is: each job's spec becomes a cache blob, the task runs ``python -m
idds_jupyter.worker --http`` with the service URL, its job id and a per-job
token in its environment, and its result arrives in the result inbox through
the API (see :mod:`idds_jupyter.backends.transfer`); the poll loop reads it
from there instead of the batch directory. Everything else (grouping, one
scheduler call per round, failures, cancel) is the same.
"""

from __future__ import annotations

import contextlib
import functools
import itertools
import json
import os
import shutil
import subprocess
import sys
import threading
import time
import uuid
from dataclasses import dataclass, field
from typing import Any

from idds_jupyter.backends.base import Backend, failed_result, job_environment
from idds_jupyter.backends.transfer import (
    HttpTransfer,
    check_transfer,
    http_spec,
    inbox_name,
    read_inbox,
    sweep_inbox,
)

__all__ = [
    "BatchBackend",
    "BatchJob",
    "TaskState",
    "QUEUED",
    "RUNNING",
    "DONE",
    "FAILED",
    "UNKNOWN",
    "http_worker_argv",
    "resources_of",
    "safe_path_flags",
    "worker_command",
]

# the directory that contains the idds_jupyter package, so that jobs can import it
PKG_ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

QUEUED = "queued"  # waiting in the scheduler
RUNNING = "running"
DONE = "done"  # the scheduler says it ended normally: its result file should be there
FAILED = "failed"  # ended abnormally (failed, cancelled, held, timed out, node failure, ...)
UNKNOWN = "unknown"  # the scheduler does not know the task (not yet, or no longer)

_DONE_CAP = 200_000


@dataclass
class TaskState:
    """What the scheduler says about one task."""

    state: str  # QUEUED | RUNNING | DONE | FAILED | UNKNOWN
    detail: str = ""  # scheduler state and reason, e.g. "CANCELLED (reason: None)"
    exit_code: int | None = None


@dataclass
class BatchJob:
    job_id: int
    attempt: int
    spec: dict[str, Any]
    batch: _Batch | None = None
    index: int = -1
    state: str = QUEUED
    started: bool = False
    missing_since: float = 0.0  # first poll that saw DONE/UNKNOWN without a result file
    token: str | None = None  # transfer http: the job token (bound to job id and attempt)
    spec_sha: str | None = None  # transfer http: the cache blob of the spec it fetches


@dataclass
class _Batch:
    key: str
    dir: str
    jobs: list[BatchJob]
    resources: dict[str, Any]
    engine_id: str = ""  # Slurm array id, HTCondor cluster id, ... (set once submitted)
    submitted_at: float = 0.0
    outstanding: set[int] = field(default_factory=set)  # task indexes without a result yet
    data: dict[str, Any] = field(default_factory=dict)  # engine-specific state
    transfer: str = "shared"  # "shared" | "http" (see idds_jupyter.backends.transfer)
    server_url: str = ""  # transfer http: the URL the tasks reach the API at


_RESOURCES = ("cores", "memory_mb", "disk_mb", "walltime_s")  # the keys every engine reads


def resources_of(spec: dict[str, Any]) -> dict[str, Any]:
    """``cores``, ``memory_mb``, ``disk_mb``, ``walltime_s`` of a job spec (``resources`` or top level).

    ``walltime_s`` falls back to the job's ``timeout_s`` plus a margin, so that the
    scheduler does not kill a job its own timeout would have ended cleanly.
    """
    res = dict(spec.get("resources") or {})
    for key in _RESOURCES:
        if res.get(key) is None and spec.get(key) is not None:
            res[key] = spec[key]
    out: dict[str, Any] = {}
    if res.get("cores"):
        out["cores"] = max(1, int(res["cores"]))
    if res.get("memory_mb"):
        out["memory_mb"] = max(1, int(res["memory_mb"]))
    if res.get("disk_mb"):
        out["disk_mb"] = max(1, int(res["disk_mb"]))
    wall = res.get("walltime_s")
    if not wall and spec.get("timeout_s"):
        wall = float(spec["timeout_s"]) + 60
    if wall:
        out["walltime_s"] = max(1, int(float(wall) + 0.999))
    for key, value in res.items():  # engine-specific extras pass through (e.g. "gpus")
        if key not in _RESOURCES and value is not None:
            out[key] = value
    if isinstance(out.get("transfer"), str):  # one batch for "http" and "HTTP"
        out["transfer"] = out["transfer"].strip().lower()
    return out


@functools.lru_cache(maxsize=16)
def safe_path_flags(python: str) -> tuple[str, ...]:
    """``("-P",)`` when ``python`` takes it (3.11+), else nothing.

    A task starts in its batch directory (thousands of spec, result and log files,
    changing all the time) or in ``/tmp``. With ``-m`` that directory is ``sys.path[0]``:
    every import of every task then re-reads it whenever it changed (at 10,000 tasks in
    one directory, 0.4 s of CPU per no-op task instead of 0.06 s), and a file there could
    shadow a module. ``-P`` leaves it out. An interpreter this host cannot run is
    started as before.
    """
    try:
        if os.path.realpath(python) == os.path.realpath(sys.executable):
            return ("-P",) if sys.version_info >= (3, 11) else ()
        ok = (
            subprocess.run(
                [python, "-P", "-c", ""], capture_output=True, timeout=30, stdin=subprocess.DEVNULL
            ).returncode
            == 0
        )
    except (OSError, subprocess.SubprocessError):
        return ()
    return ("-P",) if ok else ()


def http_worker_argv(python: str) -> list[str]:
    """The wrapper command line of a ``transfer: http`` task (URL, job id, token in its env)."""
    return [python, *safe_path_flags(python), "-m", "idds_jupyter.worker", "--http"]


def worker_command(python: str, batch_dir: str, index: str) -> list[str]:
    """The wrapper command line of task ``index`` (a literal or a scheduler macro)."""
    return [
        python,
        *safe_path_flags(python),
        "-m",
        "idds_jupyter.worker",
        "--job",
        f"{batch_dir}/spec-{index}.json",
        "--out",
        f"{batch_dir}/result-{index}.json",
    ]


class BatchBackend(Backend):
    """Base of the backends that submit to a batch scheduler through a shared directory.

    :param shared_dir: a directory every execute node sees at the same path; one
        sub-directory per batch holds the specs, results and scheduler logs
    :param capacity: jobs wanted in flight
    :param poll_interval: seconds between two scheduler polls
    :param log_dir: default ``log_dir`` for specs that have none
    :param env: extra environment of the jobs
    :param python: interpreter the jobs run (default: this one)
    :param keep_dirs: keep each batch directory after its last result (debugging)
    :param lost_grace_s: how long a task may be unknown to the scheduler, or done
        without a result file, before it is reported failed
    :param cancel_on_close: remove the tasks still in flight when closing
    :param submit_interval: while the scheduler already holds at least
        ``submit_backlog`` of our jobs waiting to start, the least seconds between
        two submissions: jobs released meanwhile wait and go together, as one
        array/cluster. Each submission costs the scheduler a transaction whatever
        its size, and jobs released a few at a time as a DAG progresses would
        otherwise become as many tiny arrays or clusters; with a backlog queued,
        holding them back delays no start. Without one (a chain of jobs, the first
        submission), jobs go at once.
    :param submit_backlog: see ``submit_interval``
    :param transfer: ``"shared"`` (paths on a shared filesystem) or ``"http"`` (tasks
        fetch their spec and blobs and post their result over HTTP with a job token);
        a work's ``resources.transfer`` overrides it for its jobs
    :param http: what ``"http"`` needs (URL, token minting, spec blobs, the result
        inbox); the Carrier builds it from the configuration
    """

    name = "batch"
    #: word used in error messages ("slurm", "htcondor", ...)
    engine_label = "batch"
    #: largest number of tasks in one scheduler submission
    max_batch: int = 100_000
    #: default least seconds between two submissions (``submit_interval``)
    submit_interval: float = 0.0

    def __init__(
        self,
        shared_dir: str | os.PathLike[str] | None = None,
        *,
        capacity: int = 1000,
        poll_interval: float = 1.0,
        log_dir: str | None = None,
        env: dict[str, str] | None = None,
        python: str | None = None,
        keep_dirs: bool = False,
        lost_grace_s: float = 30.0,
        cancel_on_close: bool = True,
        transfer: str = "shared",
        http: HttpTransfer | None = None,
        submit_interval: float | None = None,
        submit_backlog: int = 100,
        env_allow: tuple[str, ...] | list[str] = (),
    ) -> None:
        super().__init__()
        self.transfer = check_transfer(transfer)
        self.http = http
        base = os.fspath(shared_dir) if shared_dir else os.path.join(os.getcwd(), ".idds-batch")
        self.tag = f"{self.name}-{os.getpid()}-{uuid.uuid4().hex[:8]}"
        self.shared_dir = os.path.abspath(os.path.join(base, self.tag))
        os.makedirs(self.shared_dir, exist_ok=True)
        self.capacity = max(1, int(capacity))
        self.poll_interval = float(poll_interval)
        self.log_dir = log_dir
        self.extra_env = dict(env or {})
        self.env_allow = tuple(env_allow)  # more of this service's variables jobs may see
        self.python = python or sys.executable
        self.keep_dirs = keep_dirs
        self.lost_grace_s = float(lost_grace_s)
        self.cancel_on_close = cancel_on_close
        if submit_interval is not None:
            self.submit_interval = max(0.0, float(submit_interval))
        self.submit_backlog = max(0, int(submit_backlog))
        #: the last error the scheduler gave (submission or poll), for diagnostics
        self.last_error: str | None = None
        #: number of scheduler polls made (tests check there is one per round, not per job)
        self.polls = 0
        self._lock = threading.Lock()
        self._cond = threading.Condition(self._lock)
        self._pending: list[BatchJob] = []
        self._jobs: dict[int, BatchJob] = {}
        self._batches: dict[str, _Batch] = {}
        self._done: dict[int, None] = {}
        self._closing = False
        self._seq = itertools.count()
        self._kick = False
        self._last_sweep = 0.0
        self._thread = threading.Thread(target=self._loop, name=f"idds-{self.name}", daemon=True)
        self._thread.start()

    # ------------------------------------------------------------------ engine hooks

    def _submit_batch(self, batch: _Batch) -> str:
        """Submit the batch's tasks ``0..len(batch.jobs)-1`` as one scheduler submission.

        The spec files are written already. Returns the scheduler's id of the
        submission; raises on failure (every job of the batch is then failed).
        """
        raise NotImplementedError

    def _poll(self, batches: list[_Batch]) -> dict[tuple[str, int], TaskState]:
        """States of the tasks of ``batches`` keyed ``(batch.key, index)``, in one scheduler call.

        Tasks left out count as :data:`UNKNOWN`. Raise if the scheduler cannot be asked.
        """
        raise NotImplementedError

    def _cancel_tasks(self, tasks: list[tuple[_Batch, int]]) -> None:
        """Remove these tasks from the scheduler (best effort, one call)."""
        raise NotImplementedError

    def _close_engine(self) -> None:
        """Release the scheduler connection (optional)."""

    # ------------------------------------------------------------------ helpers

    def job_env(self, transfer: str = "shared") -> dict[str, str]:
        """Environment for the jobs: the allow-list of :func:`job_environment` (never this
        service's own: no ``IDDS_TOKEN``, ``IDDS_DB_URL``, Jupyter tokens), the extras, and
        PYTHONPATH reaching idds_jupyter. The same for ``shared`` and ``http`` transfer
        (``http`` tasks get their own job token from :meth:`task_env`).
        """
        return job_environment(
            self.extra_env,
            base=os.environ,
            allow=getattr(self, "env_allow", ()),
            pythonpath=PKG_ROOT,
        )

    def task_log(self, batch: _Batch, index: int) -> str:
        """Where the scheduler writes task ``index``'s stdout/stderr."""
        return os.path.join(batch.dir, f"task-{index}.log")

    def task_env(self, batch: _Batch, index: int) -> dict[str, str]:
        """What a ``transfer: http`` task needs in its environment: URL, job id, token."""
        job = batch.jobs[index]
        return {
            "IDDS_SERVER_URL": batch.server_url,
            "IDDS_JOB_ID": str(job.job_id),
            "IDDS_JOB_TOKEN": job.token or "",
        }

    def _failed(
        self,
        job: BatchJob,
        error: str,
        exit_code: int | None = None,
        exc_type: str = "BatchJobFailed",
    ) -> dict[str, Any]:
        tb = None
        if job.batch is not None:
            tb = _tail(self.task_log(job.batch, job.index)) or None
        return failed_result(
            job.job_id, job.attempt, error, exc_type=exc_type, traceback=tb, exit_code=exit_code
        )

    def _task_name(self, job: BatchJob) -> str:
        b = job.batch
        if b is None or not b.engine_id:
            return f"{self.engine_label} job (not submitted)"
        return f"{self.engine_label} job {self.task_id(b, job.index)}"

    def task_id(self, batch: _Batch, index: int) -> str:
        """The scheduler's name of one task (e.g. ``ARRAYID_TASK``)."""
        return f"{batch.engine_id}.{index}"

    # ------------------------------------------------------------------ interface

    def submit(self, specs: list[dict[str, Any]]) -> None:
        if not specs:
            return
        log_dir = self.log_dir
        with self._cond:
            if self._closing:
                raise RuntimeError("backend is closed")
            for spec in specs:
                if log_dir and not spec.get("log_dir"):
                    spec = {**spec, "log_dir": log_dir}
                jid = int(spec["job_id"])
                job = BatchJob(jid, int(spec.get("attempt", 0)), spec)
                self._jobs[jid] = job
                self._pending.append(job)
            self._kick = True
            self._cond.notify_all()

    def cancel(self, job_ids: list[int]) -> None:
        report: list[dict[str, Any]] = []
        tasks: list[tuple[_Batch, int]] = []
        with self._cond:
            pending_gone: set[int] = set()
            for jid in job_ids:
                job = self._jobs.pop(jid, None)
                if job is None:
                    continue
                self._mark_done_locked(jid)
                report.append(failed_result(jid, job.attempt, "cancelled", exc_type="Cancelled"))
                b = job.batch
                if b is None:
                    pending_gone.add(jid)
                else:
                    b.outstanding.discard(job.index)
                    if b.engine_id:
                        tasks.append((b, job.index))
                    # else: being submitted right now; the loop cancels it afterwards
            if pending_gone:
                self._pending = [j for j in self._pending if j.job_id not in pending_gone]
        if report:
            self._queue.push(report)
        if tasks:
            try:
                self._cancel_tasks(tasks)
            except Exception as exc:  # best effort
                self.last_error = f"cancel: {type(exc).__name__}: {exc}"
            self._retire(list({id(b): b for b, _ in tasks}.values()))

    def status(self, job_ids: list[int]) -> dict[int, str]:
        out: dict[int, str] = {}
        with self._lock:
            for jid in job_ids:
                job = self._jobs.get(jid)
                if job is None:
                    out[jid] = "done" if jid in self._done else "unknown"
                elif job.state == RUNNING:
                    out[jid] = "running"
                else:
                    out[jid] = "queued"
        return out

    def in_flight(self) -> int:
        with self._lock:
            return len(self._jobs)

    def close(self) -> None:
        with self._cond:
            if self._closing:
                return
            self._closing = True
            self._cond.notify_all()
        self._thread.join(timeout=30)
        with self._lock:
            tasks = [
                (b, i) for b in self._batches.values() if b.engine_id for i in sorted(b.outstanding)
            ]
            batches = list(self._batches.values())
            self._jobs.clear()
            self._pending.clear()
            self._batches.clear()
        if tasks and self.cancel_on_close:
            with contextlib.suppress(Exception):
                self._cancel_tasks(tasks)
        self._drop_specs(batches)
        with contextlib.suppress(Exception):
            self._close_engine()
        if not self.keep_dirs:
            for b in batches:
                shutil.rmtree(b.dir, ignore_errors=True)
            with contextlib.suppress(OSError):
                os.rmdir(self.shared_dir)
        self._queue.wake()

    # ------------------------------------------------------------------ the loop

    def _loop(self) -> None:
        last_poll = 0.0
        last_submit = -1e9
        while True:
            with self._cond:
                if self._closing:
                    return
                now = time.monotonic()
                wait = self.poll_interval - (now - last_poll)
                hold = bool(self._pending) and self._holding_locked(now - last_submit)
                if hold:  # gather what is released until the interval is over
                    wait = min(wait, last_submit + self.submit_interval - now)
                if (not self._kick or hold) and wait > 0:
                    self._cond.wait(wait)
                if self._closing:
                    return
                self._kick = False
                pending: list[BatchJob] = []
                if not self._holding_locked(time.monotonic() - last_submit):
                    pending, self._pending = self._pending, []
            if pending:
                last_submit = time.monotonic()
                try:
                    self._submit_pending(pending)
                except Exception as exc:  # never let the loop die
                    self._fail_jobs(pending, f"{self.engine_label} submission failed: {exc}")
            if time.monotonic() - last_poll >= self.poll_interval:
                last_poll = time.monotonic()
                try:
                    self._poll_once()
                except Exception as exc:
                    self.last_error = f"poll: {type(exc).__name__}: {exc}"
                if self.http is not None and time.monotonic() - self._last_sweep > 600:
                    self._last_sweep = time.monotonic()
                    sweep_inbox(self.http.inbox)

    def _holding_locked(self, since_submit: float) -> bool:
        """Whether released jobs wait for the next submission (see ``submit_interval``)."""
        if since_submit >= self.submit_interval:
            return False
        queued = 0
        for job in self._jobs.values():
            if job.batch is not None and job.state == QUEUED:
                queued += 1
                if queued >= self.submit_backlog:
                    return True
        return False

    def _submit_pending(self, pending: list[BatchJob]) -> None:
        groups: dict[str, list[BatchJob]] = {}
        for job in pending:
            res = resources_of(job.spec)
            groups.setdefault(json.dumps(res, sort_keys=True), []).append(job)
        step = max(1, int(self.max_batch))
        for key, jobs in groups.items():
            for start in range(0, len(jobs), step):
                self._submit_group(jobs[start : start + step], json.loads(key))

    def _prepare_http(self, batch: _Batch) -> None:
        """``transfer: http``: each job's spec becomes a cache blob, each job gets its token."""
        http = self.http
        if http is None:
            raise RuntimeError(
                "transfer 'http' needs the service's job-token and cache set-up "
                "(the Carrier passes it; a backend made by hand needs http=)"
            )
        url = (http.server_url() or "").strip()
        if not url:
            raise RuntimeError(
                "transfer 'http' needs the URL jobs reach the API at: set "
                "server_url (IDDS_SERVER_URL), or run the API server in this "
                "process (idds-jupyter serve / the Jupyter extension)"
            )
        batch.server_url = url
        wall = float(batch.resources.get("walltime_s") or 0)
        for job in batch.jobs:
            data = json.dumps(http_spec(job.spec), sort_keys=True).encode("utf-8")
            job.spec_sha = http.put_spec(data)
            job.token = http.mint(job.job_id, job.attempt, job.spec_sha, http.token_ttl + wall)

    def _drop_specs(self, batches: list[_Batch]) -> None:
        http = self.http
        if http is None:
            return
        for b in batches:
            for job in b.jobs:
                if job.spec_sha:
                    with contextlib.suppress(Exception):
                        http.drop_spec(job.spec_sha)
                    job.spec_sha = None

    def _submit_group(self, jobs: list[BatchJob], resources: dict[str, Any]) -> None:
        try:
            transfer = check_transfer(resources.pop("transfer", None) or self.transfer)
        except ValueError as exc:
            self._fail_jobs(jobs, f"{self.engine_label}: resources.{exc}")
            return
        seq = next(self._seq)
        bdir = os.path.join(self.shared_dir, f"b{seq:06d}")
        os.makedirs(bdir, exist_ok=True)
        # jobs (shared) or the scheduler on their behalf (HTCondor's shadow writes the
        # event log and transferred output as the job's user) may write here
        os.chmod(bdir, 0o777)
        batch = _Batch(key=f"b{seq}", dir=bdir, jobs=jobs, resources=resources, transfer=transfer)
        for i, job in enumerate(jobs):
            job.batch, job.index = batch, i
        if transfer == "http":
            try:
                self._prepare_http(batch)
            except Exception as exc:
                self.last_error = f"submit: {type(exc).__name__}: {exc}"
                self._drop_specs([batch])
                self._fail_jobs(jobs, f"{self.engine_label} submission failed: {exc}")
                shutil.rmtree(bdir, ignore_errors=True)
                return
        else:
            for i, job in enumerate(jobs):
                with open(os.path.join(bdir, f"spec-{i}.json"), "w", encoding="utf-8") as fh:
                    json.dump(job.spec, fh)
        with self._lock:
            live = [j for j in jobs if self._jobs.get(j.job_id) is j]
            batch.outstanding = {j.index for j in live}
            if not live:
                self._drop_specs([batch])
                shutil.rmtree(bdir, ignore_errors=True)
                return
            self._batches[batch.key] = batch
        try:
            engine_id = self._submit_batch(batch)
        except Exception as exc:
            self.last_error = f"submit: {type(exc).__name__}: {exc}"
            with self._lock:
                self._batches.pop(batch.key, None)
            self._fail_jobs(jobs, f"{self.engine_label} submission failed: {exc}")
            self._drop_specs([batch])
            shutil.rmtree(bdir, ignore_errors=True)
            return
        with self._lock:
            batch.engine_id = str(engine_id)
            batch.submitted_at = time.monotonic()
            # cancelled while we were submitting: take those tasks back out
            late = [(batch, j.index) for j in jobs if self._jobs.get(j.job_id) is not j]
        if late:
            with contextlib.suppress(Exception):
                self._cancel_tasks(late)
            self._retire([batch])

    def _fail_jobs(self, jobs: list[BatchJob], error: str) -> None:
        report = []
        with self._lock:
            for job in jobs:
                if self._jobs.get(job.job_id) is job:
                    del self._jobs[job.job_id]
                    self._mark_done_locked(job.job_id)
                    report.append(
                        failed_result(job.job_id, job.attempt, error, exc_type="BatchSubmitError")
                    )
        self._queue.push(report)

    def _mark_done_locked(self, jid: int) -> None:
        self._done[jid] = None
        if len(self._done) > _DONE_CAP:
            for k in list(itertools.islice(self._done, len(self._done) - _DONE_CAP // 2)):
                del self._done[k]

    def _poll_once(self) -> None:
        with self._lock:
            batches = [b for b in self._batches.values() if b.engine_id and b.outstanding]
        if not batches:
            return
        # the scheduler first, then the files: a task it calls ended has written its file by then
        states = self._poll(batches)
        self.polls += 1
        self.last_error = None
        now = time.monotonic()
        out: list[dict[str, Any]] = []
        finished: list[_Batch] = []
        inbox: set[str] | None = None  # the result inbox, listed once per round (http)
        for b in batches:
            http = b.transfer == "http" and self.http is not None
            if http:
                names = set()
                if inbox is None:
                    try:
                        inbox = set(os.listdir(self.http.inbox))  # type: ignore[union-attr]
                    except OSError:
                        inbox = set()
            else:
                try:
                    names = set(os.listdir(b.dir))
                except OSError:
                    names = set()
            with self._lock:
                todo = [(i, b.jobs[i]) for i in sorted(b.outstanding)]
            for i, job in todo:
                ts = states.get((b.key, i)) or TaskState(UNKNOWN)
                res: dict[str, Any] | None = None
                if http and inbox is not None and inbox_name(job.job_id, job.attempt) in inbox:
                    res = read_inbox(self.http.inbox, job.job_id, job.attempt)  # type: ignore[union-attr]
                elif f"result-{i}.json" in names:
                    res = _read_result(os.path.join(b.dir, f"result-{i}.json"))
                    if res is not None and (
                        res.get("job_id") != job.job_id or res.get("attempt", 0) != job.attempt
                    ):
                        res = self._failed(
                            job,
                            f"{self._task_name(job)}: result file is for "
                            f"job {res.get('job_id')} attempt {res.get('attempt')}",
                        )
                if res is None:
                    if ts.state == RUNNING and not job.started:
                        job.started = True
                        out.append(
                            {
                                "job_id": job.job_id,
                                "attempt": job.attempt,
                                "started": True,
                                "started_at": time.time(),
                            }
                        )
                    if ts.state in (QUEUED, RUNNING):
                        job.state = ts.state
                        job.missing_since = 0.0
                        continue
                    if ts.state == FAILED:
                        res = self._failed(
                            job,
                            f"{self._task_name(job)} {ts.detail}".rstrip(),
                            exit_code=ts.exit_code,
                        )
                    else:  # DONE without a result file, or unknown: allow for lag, then fail
                        if not job.missing_since:
                            job.missing_since = now
                        if ts.state == DONE:
                            limit = max(5.0, 2 * self.poll_interval)
                        else:
                            limit = self.lost_grace_s
                            if now - b.submitted_at < self.lost_grace_s:
                                continue
                        if now - job.missing_since < limit:
                            continue
                        what = "posting its result" if http else "writing its result file"
                        why = (
                            f"ended ({ts.detail}) without {what}"
                            if ts.state == DONE
                            else "is unknown to the scheduler (lost)"
                        )
                        res = self._failed(
                            job, f"{self._task_name(job)} {why}", exit_code=ts.exit_code
                        )
                with self._lock:
                    if self._jobs.get(job.job_id) is not job:
                        b.outstanding.discard(i)
                        continue  # cancelled meanwhile: already reported
                    del self._jobs[job.job_id]
                    self._mark_done_locked(job.job_id)
                    b.outstanding.discard(i)
                out.append(res)
            if not b.outstanding:
                finished.append(b)
        if out:
            self._queue.push(out)
        self._retire(finished)

    def _retire(self, batches: list[_Batch]) -> None:
        """Forget (and delete the directory of) batches without outstanding tasks."""
        for b in batches:
            with self._lock:
                if b.outstanding or self._batches.get(b.key) is not b:
                    continue
                del self._batches[b.key]
            self._drop_specs([b])
            if not self.keep_dirs:
                shutil.rmtree(b.dir, ignore_errors=True)

    def __del__(self) -> None:
        with contextlib.suppress(Exception):
            if not self._closing:
                self.close()


def _read_result(path: str) -> dict[str, Any] | None:
    try:
        with open(path, encoding="utf-8") as fh:
            value = json.load(fh)
    except (OSError, ValueError):
        return None
    return value if isinstance(value, dict) else None


def _tail(path: str, nbytes: int = 8192, lines: int = 20) -> str:
    try:
        with open(path, "rb") as fh:
            fh.seek(0, os.SEEK_END)
            fh.seek(max(0, fh.tell() - nbytes))
            data = fh.read()
    except OSError:
        return ""
    return "\n".join(data.decode("utf-8", errors="replace").splitlines()[-lines:])
