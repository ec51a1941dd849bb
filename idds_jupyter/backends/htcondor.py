"""The ``htcondor`` backend: one HTCondor cluster per submitted batch, one proc per job.

Built on the ``htcondor2`` bindings (PyPI ``htcondor``; imported only when the
backend is created). Specs and results travel through a shared directory (see
:mod:`idds_jupyter.backends.batch`); a batch of N specs is ONE
``Schedd.submit(Submit, itemdata=[{"idx": "0"}, …])`` call whose proc ``i`` runs::

    python -m idds_jupyter.worker --job DIR/spec-$(idx).json --out DIR/result-$(idx).json

with ``request_cpus`` / ``request_memory`` / ``request_disk`` / ``allowed_execute_duration`` from
the spec's resources. Each cluster writes its job event log (``DIR/events.log``);
polling reads the new events of every log (file reads, no schedd query at all):
execute → running, terminated → done (the result file is read), aborted
(``condor_rm``) → failed, held → failed with the hold reason (the held proc is
then removed, unless ``fail_held=False``: then it waits for :meth:`release`).
:meth:`HTCondorBackend.cancel` removes the procs with one ``Schedd.act`` call;
:meth:`hold` and :meth:`release` act the same way.

Authentication: an IDTOKEN (``token=`` a file, or the token text) is put in a
private token directory used by these bindings only, with ``IDTOKENS`` (then
``FS``) as client methods. Jobs see ``IDDS_BATCH_TASK=<cluster>.<proc>``.
HTCondor never runs a job as root: the shared directory must be writable by
the user jobs run as (batch directories are created mode 0777).

With ``transfer: http`` (see :mod:`idds_jupyter.backends.transfer`) procs run
``python -m idds_jupyter.worker --http`` with HTCondor's file transfer on
(``should_transfer_files = YES``): they start in the execute node's scratch
directory, their job id and token come as per-proc item data into their
``environment``, and their stdout/stderr are transferred back to the batch
directory on the submit side. No path of the submit host is used on the
execute node (except the Python, which must exist there).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
import threading
from typing import Any

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

__all__ = ["HTCondorBackend"]

_htcondor_lock = threading.Lock()


def _import_htcondor(token_dir: str | None) -> Any:
    """Import ``htcondor2`` with our security settings in place (env and param)."""
    settings = {"SEC_CLIENT_AUTHENTICATION_METHODS": "IDTOKENS, FS"}
    if token_dir:
        settings["SEC_TOKEN_DIRECTORY"] = token_dir
    with _htcondor_lock:
        for k, v in settings.items():
            os.environ[f"_CONDOR_{k}"] = v
        import htcondor2

        for k, v in settings.items():
            htcondor2.param[k] = v
    return htcondor2


def _quote_env(env: dict[str, str]) -> str:
    """HTCondor's new ``environment`` syntax: ``"A='x' B='y z'"``."""
    parts = []
    for k, v in env.items():
        v = str(v).replace("'", "''").replace('"', '""')
        parts.append(f"{k}='{v}'")
    return '"' + " ".join(parts) + '"'


class HTCondorBackend(BatchBackend):
    """Jobs on HTCondor: one cluster per batch (and resource set), one proc per job.

    :param schedd: ``"host:port"`` of the pool's collector to find the schedd at
        (default: the local pool of this host's HTCondor configuration)
    :param schedd_name: the schedd's name, when the collector knows several
    :param token: IDTOKEN file, or the token text itself
    :param shared_dir: a directory the execute nodes see at the same path
    :param submit_options: extra submit commands (e.g. ``{"requirements": "..."}``)
    :param fail_held: report a held job failed (with its hold reason) and remove it

    Other keyword arguments: see :class:`~idds_jupyter.backends.batch.BatchBackend`.
    """

    name = "htcondor"
    engine_label = "htcondor"
    #: with a backlog queued, jobs released within 3 s go as one cluster (a schedd
    #: transaction and a negotiation request per cluster, not per handful of jobs)
    submit_interval = 3.0

    def __init__(
        self,
        schedd: str | None = None,
        shared_dir: str | os.PathLike[str] | None = None,
        *,
        schedd_name: str | None = None,
        token: str | None = None,
        submit_options: dict[str, str] | None = None,
        fail_held: bool = True,
        max_cluster: int = 10_000,
        **options: Any,
    ) -> None:
        self._token_dir: str | None = None
        if token:
            self._token_dir = tempfile.mkdtemp(prefix="idds-condor-token-")
            dest = os.path.join(self._token_dir, "idds")
            if os.path.isfile(token):
                shutil.copyfile(token, dest)
            else:
                with open(dest, "w", encoding="utf-8") as fh:
                    fh.write(token.strip() + "\n")
            os.chmod(dest, 0o600)
        self.htcondor = _import_htcondor(self._token_dir)
        self.schedd_address = schedd
        self.schedd_name = schedd_name
        self.submit_options = dict(submit_options or {})
        self.fail_held = fail_held
        self.max_batch = max(1, int(max_cluster))
        self._schedd_lock = threading.Lock()
        self._schedd: Any = None
        self.schedd()  # fail now (not at the first submit) if the pool cannot be reached
        super().__init__(shared_dir, **options)

    # ------------------------------------------------------------------ schedd

    def schedd(self) -> Any:
        """The ``htcondor2.Schedd`` (located once, through the collector)."""
        with self._schedd_lock:
            if self._schedd is None:
                htc = self.htcondor
                if self.schedd_address or self.schedd_name:
                    coll = (
                        htc.Collector(self.schedd_address)
                        if self.schedd_address
                        else htc.Collector()
                    )
                    ad = coll.locate(htc.DaemonType.Schedd, self.schedd_name)
                    self._schedd = htc.Schedd(ad)
                else:
                    self._schedd = htc.Schedd()
            return self._schedd

    def task_id(self, batch: _Batch, index: int) -> str:
        return f"{batch.engine_id}.{index}"

    def _act(self, action: str, ids: list[str], reason: str | None = None) -> None:
        if not ids:
            return
        htc = self.htcondor
        kind = getattr(htc.JobAction, action)
        if reason:
            self.schedd().act(kind, ids, reason)
        else:
            self.schedd().act(kind, ids)

    def _ids(self, job_ids: list[int]) -> list[str]:
        with self._lock:
            jobs = [self._jobs.get(j) for j in job_ids]
        return [
            self.task_id(j.batch, j.index)
            for j in jobs
            if j is not None and j.batch is not None and j.batch.engine_id
        ]

    def hold(self, job_ids: list[int], reason: str = "held by idds") -> None:
        """Put these jobs on hold (with ``fail_held`` they then come back failed)."""
        self._act("Hold", self._ids(job_ids), reason)

    def release(self, job_ids: list[int]) -> None:
        """Release held jobs (meaningful with ``fail_held=False``)."""
        self._act("Release", self._ids(job_ids))

    def queued_in_schedd(self) -> int:
        """Procs of this backend the schedd still holds idle/running/held (one query; tests)."""
        ads = self.schedd().query(
            constraint=f'IddsBackend == "{self.tag}" && JobStatus =!= 3 && JobStatus =!= 4',
            projection=["ClusterId", "ProcId"],
        )
        return len(list(ads))

    # ------------------------------------------------------------------ hooks

    def _submit_batch(self, batch: _Batch) -> str:
        htc = self.htcondor
        d = batch.dir
        http = batch.transfer == "http"
        # http: the submit host's HOME means nothing on the execute node
        keep = (
            ("PYTHONPATH", "PATH", "LANG", "LC_ALL", "TZ")
            + (() if http else ("HOME",))
            + self.env_allow
        )
        env = {k: v for k, v in self.job_env(batch.transfer).items() if k in keep}
        env.update(self.extra_env)
        env["IDDS_BATCH_TASK"] = "$(ClusterId).$(ProcId)"
        if http:
            env.update(
                IDDS_SERVER_URL=batch.server_url,
                IDDS_JOB_ID="$(jobid)",
                IDDS_JOB_TOKEN="$(jobtoken)",
            )
        desc: dict[str, str] = {
            "universe": "vanilla",
            "executable": self.python,
            "transfer_executable": "false",
            "arguments": " ".join(worker_command(self.python, d, "$(idx)")[1:]),
            "initialdir": d,
            "output": f"{d}/task-$(idx).log",
            "error": f"{d}/task-$(idx).log",
            "log": f"{d}/events.log",
            "should_transfer_files": "NO",
            "environment": _quote_env(env),
            "+IddsBackend": f'"{self.tag}"',
            "+IddsBatch": f'"{batch.key}"',
        }
        if http:  # the proc starts in the execute node's scratch dir; its output comes back
            desc.update(
                {
                    "arguments": " ".join(http_worker_argv(self.python)[1:]),
                    "should_transfer_files": "YES",
                    "when_to_transfer_output": "ON_EXIT",
                }
            )
        res = batch.resources
        if res.get("cores"):
            desc["request_cpus"] = str(res["cores"])
        if res.get("memory_mb"):
            desc["request_memory"] = str(res["memory_mb"])
        if res.get("disk_mb"):  # else HTCondor asks 1 GiB of scratch disk per job
            desc["request_disk"] = f"{res['disk_mb']}MB"
        if res.get("walltime_s"):
            desc["allowed_execute_duration"] = str(res["walltime_s"])
        if res.get("gpus"):
            desc["request_gpus"] = str(res["gpus"])
        desc.update(self.submit_options)
        sub = htc.Submit(desc)
        if http:
            items = [
                {"idx": str(i), "jobid": str(j.job_id), "jobtoken": j.token or ""}
                for i, j in enumerate(batch.jobs)
            ]
        else:
            items = [{"idx": str(i)} for i in range(len(batch.jobs))]
        result = self.schedd().submit(sub, itemdata=iter(items))
        batch.data["log_path"] = f"{d}/events.log"
        batch.data["states"] = {}
        return str(result.cluster())

    def _poll(self, batches: list[_Batch]) -> dict[tuple[str, int], TaskState]:
        htc = self.htcondor
        ET = htc.JobEventType
        states: dict[tuple[str, int], TaskState] = {}
        to_remove: list[str] = []
        for b in batches:
            known: dict[int, TaskState] = b.data.setdefault("states", {})
            log = b.data.get("log")
            if log is None and os.path.exists(b.data.get("log_path", "")):
                log = b.data["log"] = htc.JobEventLog(b.data["log_path"])
            if log is not None:
                for ev in log.events(stop_after=0):
                    if str(ev.cluster) != b.engine_id:
                        continue
                    i = int(ev.proc)
                    t = ev.type
                    if t == ET.SUBMIT or t == ET.JOB_RELEASED or t == ET.JOB_EVICTED:
                        known[i] = TaskState(QUEUED, "idle")
                    elif t == ET.EXECUTE:
                        known[i] = TaskState(RUNNING, "running")
                    elif t == ET.JOB_TERMINATED:
                        if ev.get("TerminatedNormally", True):
                            code = int(ev.get("ReturnValue", 0))
                            known[i] = TaskState(DONE, f"terminated (exit code {code})", code)
                        else:
                            sig = ev.get("TerminatedBySignal", "?")
                            known[i] = TaskState(FAILED, f"terminated by signal {sig}")
                    elif t == ET.JOB_ABORTED:
                        why = ev.get("Reason") or "removed"
                        known[i] = TaskState(FAILED, f"removed (reason: {why})")
                    elif t == ET.JOB_HELD:
                        why = ev.get("HoldReason") or "held"
                        code = ev.get("HoldReasonCode")
                        detail = f"held (reason: {why}" + (f", code {code})" if code else ")")
                        if self.fail_held:
                            known[i] = TaskState(FAILED, detail)
                            to_remove.append(f"{b.engine_id}.{i}")
                        else:
                            known[i] = TaskState(QUEUED, detail)
                    elif t == ET.EXECUTABLE_ERROR:
                        known[i] = TaskState(FAILED, "executable error")
            for i in b.outstanding:
                states[(b.key, i)] = known.get(i) or TaskState(UNKNOWN)
        if to_remove:
            with contextlib.suppress(Exception):
                self._act("Remove", to_remove, "held: failed by idds")
        return states

    def _cancel_tasks(self, tasks: list[tuple[_Batch, int]]) -> None:
        self._act(
            "Remove", [self.task_id(b, i) for b, i in tasks if b.engine_id], "cancelled by idds"
        )

    def _close_engine(self) -> None:
        if self._token_dir:
            shutil.rmtree(self._token_dir, ignore_errors=True)
