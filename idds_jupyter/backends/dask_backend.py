"""The ``dask`` backend: jobs run as ``idds_jupyter.worker.job.run_job`` tasks on Dask.

Named ``dask_backend`` so that it never shadows the ``dask`` package. Each job is
one task keyed ``idds-<job_id>-<attempt>`` (or, with ``batch > 1``, one
``run_jobs`` task per chunk of jobs, keyed ``idds-batch-…``). Results are pushed
into the backend's queue by ``Future.add_done_callback``; a task that fails at
the Dask level (it should not: ``run_job`` catches everything — but e.g.
``KilledWorker``) becomes a failed result carrying the Dask error and traceback.
The Dask workers must be able to import ``idds_jupyter`` (same environment).
"""

from __future__ import annotations

import contextlib
import itertools
import threading
import traceback
import uuid
from typing import Any

from idds_jupyter.backends.base import Backend, failed_result
from idds_jupyter.worker.job import run_job, run_jobs

__all__ = ["DaskBackend"]

_DONE_CAP = 200_000


class _Task:
    __slots__ = ("future", "specs")

    def __init__(self, future: Any, specs: list[dict[str, Any]]) -> None:
        self.future = future
        self.specs = specs


class DaskBackend(Backend):
    """Jobs on a Dask ``distributed`` cluster.

    :param address: scheduler address (``tcp://host:8786``)
    :param cluster: an existing cluster object (e.g. ``distributed.LocalCluster``)
    :param client: an existing ``distributed.Client`` (not closed by :meth:`close`)
    :param batch: jobs per Dask task (1 = one task per job: per-job cancel and status)
    :param log_dir: default ``log_dir`` for specs that have none
    :param capacity: jobs wanted in flight (default: 4 × total worker threads × batch)

    With none of ``address``, ``cluster``, ``client`` a private ``LocalCluster``
    is started (``cluster_options`` are passed to it) and closed by :meth:`close`.
    """

    name = "dask"

    def __init__(
        self,
        address: str | None = None,
        cluster: Any = None,
        batch: int = 1,
        *,
        client: Any = None,
        log_dir: str | None = None,
        capacity: int | None = None,
        **cluster_options: Any,
    ) -> None:
        super().__init__()
        from distributed import Client, LocalCluster

        self.batch = max(1, int(batch))
        self.log_dir = log_dir
        self._own_client = client is None
        self._own_cluster: Any = None
        if client is not None:
            self._client = client
        elif cluster is not None:
            self._client = Client(cluster)
        elif address:
            self._client = Client(address)
        else:
            options = {"processes": True, "dashboard_address": None, **cluster_options}
            self._own_cluster = LocalCluster(**options)
            self._client = Client(self._own_cluster)
        if capacity is None:
            try:
                threads = sum(self._client.nthreads().values())
            except Exception:
                threads = 0
            capacity = max(1, threads) * self.batch * 4
        self.capacity = int(capacity)
        self._lock = threading.Lock()
        self._tasks: dict[str, _Task] = {}
        self._job_key: dict[int, str] = {}
        self._done: dict[int, None] = {}
        self._closing = False

    @property
    def client(self) -> Any:
        return self._client

    # ------------------------------------------------------------------ submit

    def submit(self, specs: list[dict[str, Any]]) -> None:
        if not specs:
            return
        if self._closing:
            raise RuntimeError("backend is closed")
        # the job sees the allow-listed environment, not the Dask worker's
        # (idds_jupyter.worker.env; a LocalCluster's workers inherit this process's)
        specs = [
            {
                **s,
                "scrub_env": True,
                **({} if s.get("log_dir") or not self.log_dir else {"log_dir": self.log_dir}),
            }
            for s in specs
        ]
        if self.batch == 1:
            keys = [f"idds-{s['job_id']}-{s.get('attempt', 0)}" for s in specs]
            groups = [[s] for s in specs]
            futures = self._client.map(run_job, specs, key=keys, pure=False)
        else:
            groups = [specs[i : i + self.batch] for i in range(0, len(specs), self.batch)]
            tag = uuid.uuid4().hex[:12]
            keys = [
                f"idds-batch-{g[0]['job_id']}-{g[-1]['job_id']}-{tag}-{i}"
                for i, g in enumerate(groups)
            ]
            futures = self._client.map(run_jobs, groups, key=keys, pure=False)
        with self._lock:
            for key, fut, group in zip(keys, futures, groups, strict=True):
                self._tasks[key] = _Task(fut, group)
                for s in group:
                    self._job_key[int(s["job_id"])] = key
        for fut in futures:
            fut.add_done_callback(self._on_done)

    def _forget_locked(self, task: _Task, key: str) -> None:
        for s in task.specs:
            jid = int(s["job_id"])
            if self._job_key.get(jid) == key:
                del self._job_key[jid]
                self._done[jid] = None
        if len(self._done) > _DONE_CAP:
            for k in list(itertools.islice(self._done, len(self._done) - _DONE_CAP // 2)):
                del self._done[k]

    def _on_done(self, fut: Any) -> None:
        key = fut.key
        with self._lock:
            task = self._tasks.pop(key, None)
        if task is None:  # cancelled by us and already reported, or closing
            return
        results: list[dict[str, Any]]
        status = fut.status
        try:
            if status == "finished":
                value = fut.result()
                results = value if isinstance(value, list) else [value]
            elif status == "cancelled":
                results = [
                    failed_result(
                        s["job_id"], s.get("attempt", 0), "cancelled", exc_type="Cancelled"
                    )
                    for s in task.specs
                ]
            else:
                exc = fut.exception()
                tb = fut.traceback()
                text = "".join(traceback.format_exception(type(exc), exc, tb))
                name = type(exc).__name__
                mod = type(exc).__module__
                qual = name if mod == "builtins" else f"{mod}.{type(exc).__qualname__}"
                msg = str(exc).strip().replace("\n", " ")
                results = [
                    failed_result(
                        s["job_id"],
                        s.get("attempt", 0),
                        f"{name}: {msg}" if msg else name,
                        exc_type=qual,
                        traceback=text,
                    )
                    for s in task.specs
                ]
        except Exception as exc:  # e.g. the client lost the result
            results = [
                failed_result(s["job_id"], s.get("attempt", 0), f"{type(exc).__name__}: {exc}")
                for s in task.specs
            ]
        with self._lock:
            self._forget_locked(task, key)
        task.future = None  # release the Dask future
        self._queue.push(results)

    # ------------------------------------------------------------------ interface

    def cancel(self, job_ids: list[int]) -> None:
        wanted = set(job_ids)
        report: list[dict[str, Any]] = []
        futures: list[Any] = []
        resubmit: list[dict[str, Any]] = []
        with self._lock:
            for jid in job_ids:
                key = self._job_key.get(jid)
                if key is None:
                    continue
                task = self._tasks.pop(key, None)
                if task is None:
                    continue
                futures.append(task.future)
                self._forget_locked(task, key)
                for s in task.specs:
                    if s["job_id"] in wanted:
                        report.append(
                            failed_result(
                                s["job_id"], s.get("attempt", 0), "cancelled", exc_type="Cancelled"
                            )
                        )
                    else:
                        resubmit.append(s)  # batched neighbours of a cancelled job
        if futures:
            with contextlib.suppress(Exception):
                self._client.cancel(futures)
        if report:
            self._queue.push(report)
        if resubmit:
            self.submit(resubmit)

    def status(self, job_ids: list[int]) -> dict[int, str]:
        out: dict[int, str] = {}
        with self._lock:
            for jid in job_ids:
                key = self._job_key.get(jid)
                task = self._tasks.get(key) if key is not None else None
                if task is None:
                    out[jid] = "done" if jid in self._done else "unknown"
                    continue
                st = task.future.status if task.future is not None else "finished"
                # Dask does not tell "waiting" from "executing" cheaply: pending = queued
                out[jid] = "queued" if st == "pending" else "done"
        return out

    def in_flight(self) -> int:
        with self._lock:
            return len(self._job_key)

    def close(self) -> None:
        with self._lock:
            if self._closing:
                return
            self._closing = True
            futures = [t.future for t in self._tasks.values() if t.future is not None]
            self._tasks.clear()
            self._job_key.clear()
        if futures:
            with contextlib.suppress(Exception):
                self._client.cancel(futures)
        if self._own_client:
            with contextlib.suppress(Exception):
                self._client.close()
        if self._own_cluster is not None:
            with contextlib.suppress(Exception):
                self._own_cluster.close()
        self._queue.wake()
