"""The ``slurm`` backend: each submitted batch becomes ONE Slurm job array.

Specs and results travel through a shared directory (see
:mod:`idds_jupyter.backends.batch`): ``sbatch --parsable --array=0-(N-1)`` runs a
generated script whose task ``$SLURM_ARRAY_TASK_ID`` is::

    python -m idds_jupyter.worker --job DIR/spec-$SLURM_ARRAY_TASK_ID.json \\
                                  --out DIR/result-$SLURM_ARRAY_TASK_ID.json

Resources come from the spec (``"resources": {"cores", "memory_mb",
"walltime_s"}`` or the same keys at the top level): ``--cpus-per-task``,
``--mem``, ``--time`` (without a walltime, the job's ``timeout_s`` + 60 s).
Jobs with different resources go into different arrays.

Polling makes ONE ``squeue --array --states=all --name=<this backend's job
name>`` call per round for all arrays (tasks Slurm has already forgotten are
looked up in one ``sacct`` call when accounting is enabled). A task that ends
FAILED / CANCELLED / TIMEOUT / NODE_FAIL / OUT_OF_MEMORY / PREEMPTED / … without
writing its result file — e.g. killed by ``scancel`` from outside — comes back as
a failed result whose ``error`` names the Slurm task, its state, reason and exit
code, so the engine retries it. :meth:`SlurmBackend.cancel` calls ``scancel
ARRAYID_[tasks]`` once for all the jobs given.

Client commands find the cluster through ``SLURM_CONF`` (or ``slurm_conf=``).

With ``transfer: http`` (see :mod:`idds_jupyter.backends.transfer`) no path of
the submit host reaches the compute node: the array's script (kept 0700 next
to the batch, read by ``sbatch`` only) maps ``$SLURM_ARRAY_TASK_ID`` to the
job id and job token of each task and runs ``python -m idds_jupyter.worker
--http``; tasks start in ``/tmp`` and their stdout/stderr go to a node-local
``/tmp/<job name>-<array>_<task>.log``, removed once the wrapper delivered
its result.
"""

from __future__ import annotations

import os
import re
import shlex
import subprocess
import uuid
from typing import Any

from idds_jupyter.backends.batch import (
    DONE,
    FAILED,
    QUEUED,
    RUNNING,
    BatchBackend,
    TaskState,
    _Batch,
    safe_path_flags,
)

__all__ = ["SlurmBackend", "slurm_state", "array_ranges"]

_RUNNING = {"RUNNING", "COMPLETING", "CONFIGURING", "RESIZING", "SIGNALING", "STAGE_OUT"}
_QUEUED = {
    "PENDING",
    "REQUEUED",
    "REQUEUE_HOLD",
    "REQUEUE_FED",
    "RESV_DEL_HOLD",
    "SUSPENDED",
    "STOPPED",
}
_FAILED = {
    "FAILED",
    "CANCELLED",
    "TIMEOUT",
    "NODE_FAIL",
    "OUT_OF_MEMORY",
    "BOOT_FAIL",
    "DEADLINE",
    "PREEMPTED",
    "SPECIAL_EXIT",
    "REVOKED",
}
_CMD_TIMEOUT = 60.0


def slurm_state(state: str) -> str:
    """The backend's state (queued/running/done/failed) of a Slurm job state name."""
    state = state.split()[0].rstrip("+").upper() if state.strip() else ""
    if state in _RUNNING:
        return RUNNING
    if state in _QUEUED:
        return QUEUED
    if state == "COMPLETED":
        return DONE
    if state in _FAILED:
        return FAILED
    return QUEUED if not state else FAILED


def array_ranges(indexes: list[int]) -> str:
    """``[0, 1, 2, 5]`` → ``"0-2,5"`` (Slurm's array index syntax)."""
    parts: list[str] = []
    idx = sorted(set(indexes))
    i = 0
    while i < len(idx):
        j = i
        while j + 1 < len(idx) and idx[j + 1] == idx[j] + 1:
            j += 1
        parts.append(str(idx[i]) if i == j else f"{idx[i]}-{idx[j]}")
        i = j + 1
    return ",".join(parts)


def _expand(spec: str) -> list[int]:
    """Task indexes of ``"4"`` or ``"[0-3,7]%2"``."""
    spec = spec.split("%")[0].strip("[]")
    out: list[int] = []
    for part in spec.split(","):
        if not part:
            continue
        if "-" in part:
            a, b = part.split("-", 1)
            out.extend(range(int(a), int(b) + 1))
        else:
            out.append(int(part))
    return out


def _exit_text(status: int | None) -> str:
    if status is None:
        return ""
    if status & 0x7F:
        return f"signal {status & 0x7F}"
    return f"exit code {status >> 8}"


def _walltime(seconds: int) -> str:
    minutes, s = divmod(int(seconds), 60)
    hours, m = divmod(minutes, 60)
    days, h = divmod(hours, 24)
    return f"{days}-{h:02d}:{m:02d}:{s:02d}"


class SlurmBackend(BatchBackend):
    """Jobs as Slurm job arrays (one array per submitted batch and resource set).

    :param partition: ``--partition`` (default: the cluster's default partition)
    :param account: ``--account``
    :param shared_dir: a directory the compute nodes see at the same path
    :param sbatch_args: extra ``sbatch`` arguments (e.g. ``["--qos=short"]``)
    :param slurm_conf: the ``SLURM_CONF`` the client commands use (default: inherited)
    :param max_array: largest array submitted at once (Slurm's ``MaxArraySize`` - 1)

    Other keyword arguments: see :class:`~idds_jupyter.backends.batch.BatchBackend`.
    """

    name = "slurm"
    engine_label = "slurm"

    def __init__(
        self,
        partition: str | None = None,
        account: str | None = None,
        shared_dir: str | os.PathLike[str] | None = None,
        *,
        sbatch_args: list[str] | tuple[str, ...] = (),
        slurm_conf: str | None = None,
        max_array: int = 1000,
        **options: Any,
    ) -> None:
        self.partition = partition or None
        self.account = account or None
        self.sbatch_args = list(sbatch_args)
        self.slurm_conf = slurm_conf
        self.max_batch = max(1, int(max_array))
        self.job_name = f"idds-{uuid.uuid4().hex[:10]}"
        self._accounting: bool | None = None  # sacct usable? (found out on first need)
        super().__init__(shared_dir, **options)

    # ------------------------------------------------------------------ commands

    def _env(self, transfer: str = "shared") -> dict[str, str]:
        env = self.job_env(transfer)
        if self.slurm_conf:
            env["SLURM_CONF"] = self.slurm_conf
        return env

    def _run(self, argv: list[str], env: dict[str, str] | None = None) -> str:
        try:
            proc = subprocess.run(
                argv,
                capture_output=True,
                text=True,
                timeout=_CMD_TIMEOUT,
                env=env or self._env(),
                stdin=subprocess.DEVNULL,
            )
        except FileNotFoundError:
            raise RuntimeError(f"{argv[0]} not found: is Slurm installed on this host?") from None
        if proc.returncode != 0:
            msg = (proc.stderr or proc.stdout).strip().replace("\n", " ")
            raise RuntimeError(f"{' '.join(argv[:2])}… exited {proc.returncode}: {msg}")
        return proc.stdout

    def task_id(self, batch: _Batch, index: int) -> str:
        return f"{batch.engine_id}_{index}"

    def task_log(self, batch: _Batch, index: int) -> str:
        if batch.transfer == "http":  # on the compute node (readable here only if it is this host)
            return f"/tmp/{self.job_name}-{batch.engine_id}_{index}.log"
        return super().task_log(batch, index)

    def _http_script(self, batch: _Batch) -> str:
        """The array's script for ``transfer: http``: task index → job id and token."""
        py = shlex.quote(self.python)
        flags = "".join(f" {f}" for f in safe_path_flags(self.python))
        cases = "".join(
            f"  {i}) IDDS_JOB_ID={job.job_id}; IDDS_JOB_TOKEN={shlex.quote(job.token or '')} ;;\n"
            for i, job in enumerate(batch.jobs)
        )
        log = f"/tmp/{self.job_name}-${{SLURM_ARRAY_JOB_ID}}_${{SLURM_ARRAY_TASK_ID}}.log"
        return (
            "#!/bin/sh\n# generated by idds_jupyter.backends.slurm (transfer: http)\n"
            'IDDS_BATCH_TASK="${SLURM_ARRAY_JOB_ID}_${SLURM_ARRAY_TASK_ID}"\n'
            f"IDDS_SERVER_URL={shlex.quote(batch.server_url)}\n"
            'case "$SLURM_ARRAY_TASK_ID" in\n'
            f"{cases}"
            '  *) echo "idds: no job for array task $SLURM_ARRAY_TASK_ID" >&2; exit 2 ;;\n'
            "esac\n"
            "export IDDS_BATCH_TASK IDDS_SERVER_URL IDDS_JOB_ID IDDS_JOB_TOKEN\n"
            f"{py}{flags} -m idds_jupyter.worker --http\n"
            "rc=$?\n"
            f'if [ "$rc" -ne 2 ]; then rm -f "{log}"; fi\n'
            "exit $rc\n"
        )

    # ------------------------------------------------------------------ hooks

    def _submit_batch(self, batch: _Batch) -> str:
        n = len(batch.jobs)
        script = os.path.join(batch.dir, "job.sh")
        d = shlex.quote(batch.dir)
        py = shlex.quote(self.python)
        flags = "".join(f" {f}" for f in safe_path_flags(self.python))
        http = batch.transfer == "http"
        fd = os.open(script, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o700)
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            if http:  # holds the job tokens: readable by this user (and sbatch) only
                fh.write(self._http_script(batch))
            else:
                fh.write(
                    "#!/bin/sh\n# generated by idds_jupyter.backends.slurm\n"
                    'IDDS_BATCH_TASK="${SLURM_ARRAY_JOB_ID}_${SLURM_ARRAY_TASK_ID}"\n'
                    "export IDDS_BATCH_TASK\n"
                    f"exec {py}{flags} -m idds_jupyter.worker"
                    f" --job {d}/spec-$SLURM_ARRAY_TASK_ID.json"
                    f" --out {d}/result-$SLURM_ARRAY_TASK_ID.json\n"
                )
        os.chmod(script, 0o700 if http else 0o755)
        if http:  # nothing of the submit host's filesystem on the compute node
            where = [f"--output=/tmp/{self.job_name}-%A_%a.log", "--chdir=/tmp"]
        else:
            where = [f"--output={batch.dir}/task-%a.log", f"--chdir={batch.dir}"]
        argv = [
            "sbatch",
            "--parsable",
            f"--array=0-{n - 1}",
            f"--job-name={self.job_name}",
            *where,
            "--export=ALL",
            "--no-requeue",
        ]
        if self.partition:
            argv.append(f"--partition={self.partition}")
        if self.account:
            argv.append(f"--account={self.account}")
        res = batch.resources
        if res.get("cores"):
            argv.append(f"--cpus-per-task={res['cores']}")
        if res.get("memory_mb"):
            argv.append(f"--mem={res['memory_mb']}M")
        if res.get("disk_mb"):
            argv.append(f"--tmp={res['disk_mb']}M")
        if res.get("walltime_s"):
            argv.append(f"--time={_walltime(res['walltime_s'])}")
        if res.get("gpus"):
            argv.append(f"--gres=gpu:{int(res['gpus'])}")
        argv += self.sbatch_args
        argv.append(script)
        out = self._run(argv, env=self._env(batch.transfer)).strip()
        array_id = out.splitlines()[-1].split(";")[0].strip() if out else ""
        if not array_id.isdigit():
            raise RuntimeError(f"sbatch gave no job id: {out!r}")
        return array_id

    def _poll(self, batches: list[_Batch]) -> dict[tuple[str, int], TaskState]:
        by_id = {b.engine_id: b for b in batches}
        text = self._run(
            [
                "squeue",
                "--noheader",
                "--array",
                "--states=all",
                f"--name={self.job_name}",
                "--Format=JobArrayID:|,State:|,Reason:|,exit_code:|",
            ]
        )
        states: dict[tuple[str, int], TaskState] = {}
        for line in text.splitlines():
            parts = line.split("|")
            if len(parts) < 4:
                continue
            job, state, reason, code = (p.strip() for p in parts[:4])
            self._note(states, by_id, job, state, reason, code)
        # tasks Slurm no longer shows (older than MinJobAge): ask the accounting, once
        missing = sorted(
            {b.engine_id for b in batches for i in b.outstanding if (b.key, i) not in states}
        )
        if missing and self._accounting is not False:
            try:
                text = self._run(
                    [
                        "sacct",
                        "--noheader",
                        "--parsable2",
                        "--allocations",
                        f"--jobs={','.join(missing)}",
                        "--format=JobID,State,Reason,ExitCode",
                    ]
                )
                self._accounting = True
            except RuntimeError as exc:
                if self._accounting is None and "disabled" in str(exc).lower():
                    self._accounting = False
                text = ""
            for line in text.splitlines():
                parts = line.split("|")
                if len(parts) >= 4:
                    job, state, reason, code = (p.strip() for p in parts[:4])
                    self._note(states, by_id, job, state, reason, code, overwrite=False)
        return states

    @staticmethod
    def _note(
        states: dict[tuple[str, int], TaskState],
        by_id: dict[str, _Batch],
        job: str,
        state: str,
        reason: str,
        code: str,
        overwrite: bool = True,
    ) -> None:
        array_id, sep, task = job.partition("_")
        batch = by_id.get(array_id)
        if batch is None or not sep:
            return
        status: int | None = None
        m = re.fullmatch(r"(\d+)(?::(\d+))?", code)
        if m and m.group(2) is not None:  # sacct: "exit:signal"
            status = (int(m.group(1)) << 8) | int(m.group(2))
        elif m:  # squeue: the raw wait status
            status = int(m.group(1))
        name = state.split()[0] if state.strip() else ""
        kind = slurm_state(state)
        detail = name
        extra = [f"reason: {reason}"] if reason and reason not in ("None", "(null)") else []
        if kind in (FAILED, DONE) and status:
            extra.append(_exit_text(status))
        if extra:
            detail += f" ({', '.join(extra)})"
        try:
            indexes = _expand(task)
        except ValueError:
            return
        for i in indexes:
            if overwrite or (batch.key, i) not in states:
                states[(batch.key, i)] = TaskState(kind, detail, status >> 8 if status else None)

    def _cancel_tasks(self, tasks: list[tuple[_Batch, int]]) -> None:
        per_array: dict[str, list[int]] = {}
        for b, i in tasks:
            if b.engine_id:
                per_array.setdefault(b.engine_id, []).append(i)
        if not per_array:
            return
        self._run(["scancel"] + [f"{a}_[{array_ranges(ix)}]" for a, ix in per_array.items()])
