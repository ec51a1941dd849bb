"""The ``dask`` backend: jobs run as ``idds_jupyter.worker.job.run_job`` calls on Dask.

Named ``dask_backend`` so that it never shadows the ``dask`` package.

One Dask task per job costs about as much scheduling as a no-op job's whole
run, so by default (``batch=None``) jobs are grouped when many wait: a submit
is split into chunks of ``(new + in flight) // (4 × worker threads)`` jobs (at
most ``max_batch``), each run by :func:`run_batch` as one task keyed
``idds-batch-…``. A few jobs at a time still get one task each, keyed
``idds-<job_id>-<attempt>``; ``batch=1`` always does that, ``batch=N`` uses
fixed chunks of N.

Batching keeps per-job semantics: each job has its own result (state, error,
traceback, log path), one job's failure fails only that job, and cancelling a
job skips it where its batch has not reached it yet (the client tells the
workers through ``Client.run``) while its neighbours run on. A batch running
longer than :data:`STREAM_AFTER_S` sends each further result as soon as it is
ready (a worker event, ``Worker.log_event``), so that long jobs do not wait for
their batch; the task's return value still carries every result, and each is
reported once. A task that fails at the Dask level (``KilledWorker``) fails its
unreported jobs with the Dask error and traceback. The Dask workers must be
able to import ``idds_jupyter`` (same environment).
"""

from __future__ import annotations

import contextlib
import itertools
import threading
import time
import traceback
import uuid
from typing import Any

from idds_jupyter.backends.base import Backend, failed_result
from idds_jupyter.worker.job import run_job

__all__ = ["DaskBackend", "run_batch"]

_DONE_CAP = 200_000
#: a batch that has run this long sends each further result at once (seconds)
STREAM_AFTER_S = 0.5
#: largest batch of the default (adaptive) grouping
MAX_BATCH = 64

# --------------------------------------------------------------------------- worker side

#: in a worker process: (topic, job_id, attempt) of cancelled jobs a batch must skip
_SKIP: dict[tuple[str, int, int], None] = {}
_SKIP_CAP = 100_000


async def _skip(keys: list[tuple[str, int, int]]) -> None:
    """Run on the workers by :meth:`DaskBackend.cancel` (``Client.run``, not awaited: async)."""
    for k in keys:
        _SKIP[(str(k[0]), int(k[1]), int(k[2]))] = None
    if len(_SKIP) > _SKIP_CAP:  # entries of jobs that had run before their cancel came
        for k in list(itertools.islice(_SKIP, len(_SKIP) - _SKIP_CAP // 2)):
            _SKIP.pop(k, None)


def run_batch(specs: list[dict[str, Any]], topic: str = "") -> list[dict[str, Any]]:
    """Run job specs one after the other in a Dask task; one result per spec, never raises.

    Jobs cancelled meanwhile are skipped; once the batch has run
    :data:`STREAM_AFTER_S`, each result is also sent at once as a worker event on ``topic``.
    """
    out: list[dict[str, Any]] = []
    t0 = time.monotonic()
    worker: Any = None
    for spec in specs:
        jid, attempt = int(spec["job_id"]), int(spec.get("attempt", 0))
        if (topic, jid, attempt) in _SKIP:
            _SKIP.pop((topic, jid, attempt), None)
            out.append(failed_result(jid, attempt, "cancelled", exc_type="Cancelled"))
            continue
        res = run_job(spec)
        out.append(res)
        if topic and time.monotonic() - t0 >= STREAM_AFTER_S:
            with contextlib.suppress(Exception):  # the task's return value has it anyway
                if worker is None:
                    from distributed import get_worker

                    worker = get_worker()
                worker.log_event(topic, res)
    return out


# --------------------------------------------------------------------------- client side


class _Task:
    __slots__ = ("future", "specs", "pending")

    def __init__(self, future: Any, specs: list[dict[str, Any]]) -> None:
        self.future = future
        self.specs = specs
        #: jobs of this task whose result (or cancellation) is not reported yet
        self.pending = {int(s["job_id"]) for s in specs}


class DaskBackend(Backend):
    """Jobs on a Dask ``distributed`` cluster.

    :param address: scheduler address (``tcp://host:8786``)
    :param cluster: an existing cluster object (e.g. ``distributed.LocalCluster``)
    :param client: an existing ``distributed.Client`` (not closed by :meth:`close`)
    :param batch: jobs per Dask task: ``None`` (default) groups jobs when many wait
        (up to ``max_batch``), 1 gives every job its own task, N > 1 fixed chunks of N
    :param max_batch: the largest group of the default grouping
    :param log_dir: default ``log_dir`` for specs that have none
    :param capacity: jobs wanted in flight (default: 4 × total worker threads × batch,
        where batch is ``max_batch`` for the default grouping)

    With none of ``address``, ``cluster``, ``client`` a private ``LocalCluster``
    is started (``cluster_options`` are passed to it) and closed by :meth:`close`.
    """

    name = "dask"

    def __init__(
        self,
        address: str | None = None,
        cluster: Any = None,
        batch: int | None = None,
        *,
        client: Any = None,
        log_dir: str | None = None,
        capacity: int | None = None,
        max_batch: int = MAX_BATCH,
        **cluster_options: Any,
    ) -> None:
        super().__init__()
        from distributed import Client, LocalCluster

        if batch is not None and int(batch) < 1:
            raise ValueError(f"batch must be None (adaptive) or >= 1, not {batch!r}")
        if int(max_batch) < 1:
            raise ValueError(f"max_batch must be >= 1, not {max_batch!r}")
        self.batch = None if batch is None else int(batch)
        self.max_batch = int(max_batch)
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
        self._threads = 0
        self._threads_at = 0.0
        threads = self._worker_threads()
        if capacity is None:
            per_task = self.max_batch if self.batch is None else self.batch
            capacity = max(1, threads) * per_task * 4
        self.capacity = int(capacity)
        self._lock = threading.Lock()
        self._tasks: dict[str, _Task] = {}
        self._job_key: dict[int, str] = {}
        self._done: dict[int, None] = {}
        self._closing = False
        self._topic = f"idds-results-{uuid.uuid4().hex}"
        self._subscribed = False
        with contextlib.suppress(Exception):
            self._client.subscribe_topic(self._topic, self._on_event)
            self._subscribed = True

    @property
    def client(self) -> Any:
        return self._client

    def _worker_threads(self) -> int:
        """Total worker threads, asked again at most every 10 s (clusters scale)."""
        now = time.monotonic()
        if now - self._threads_at > 10.0 or not self._threads:
            with contextlib.suppress(Exception):
                self._threads = sum(self._client.nthreads().values())
            self._threads_at = now
        return self._threads

    def _chunk(self, n: int) -> int:
        """Jobs per task for a submit of ``n``: fixed, or enough tasks for every thread."""
        if self.batch is not None:
            return self.batch
        backlog = n + self.in_flight()
        return max(1, min(self.max_batch, backlog // (4 * max(1, self._worker_threads()))))

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
        size = self._chunk(len(specs))
        if size == 1:
            keys = [f"idds-{s['job_id']}-{s.get('attempt', 0)}" for s in specs]
            groups = [[s] for s in specs]
            futures = self._client.map(run_job, specs, key=keys, pure=False)
        else:
            groups = [specs[i : i + size] for i in range(0, len(specs), size)]
            tag = uuid.uuid4().hex[:12]
            keys = [
                f"idds-batch-{g[0]['job_id']}-{g[-1]['job_id']}-{tag}-{i}"
                for i, g in enumerate(groups)
            ]
            topic = self._topic if self._subscribed else ""
            futures = self._client.map(
                run_batch, groups, [topic] * len(groups), key=keys, pure=False
            )
        with self._lock:
            for key, fut, group in zip(keys, futures, groups, strict=True):
                self._tasks[key] = _Task(fut, group)
                for s in group:
                    self._job_key[int(s["job_id"])] = key
        for fut in futures:
            fut.add_done_callback(self._on_done)

    def _reported_locked(self, task: _Task, key: str, jid: int) -> None:
        """``jid`` of ``task`` is reported: no longer in flight."""
        task.pending.discard(jid)
        if self._job_key.get(jid) == key:
            del self._job_key[jid]
            self._done[jid] = None
        if len(self._done) > _DONE_CAP:
            for k in list(itertools.islice(self._done, len(self._done) - _DONE_CAP // 2)):
                del self._done[k]

    def _on_event(self, event: Any) -> None:
        """A result a long batch sent before its end (a worker event)."""
        try:
            res = event[1]
            jid, attempt = int(res["job_id"]), int(res.get("attempt", 0))
        except Exception:
            return
        with self._lock:
            key = self._job_key.get(jid)
            task = self._tasks.get(key) if key is not None else None
            if task is None or jid not in task.pending:
                return
            spec = next((s for s in task.specs if int(s["job_id"]) == jid), None)
            if spec is None or int(spec.get("attempt", 0)) != attempt:
                return
            self._reported_locked(task, key, jid)  # type: ignore[arg-type]
        self._queue.push([res])

    def _on_done(self, fut: Any) -> None:
        key = fut.key
        with self._lock:
            task = self._tasks.pop(key, None)
        if task is None:  # all its jobs cancelled by us and already reported, or closing
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
            # only what was not reported yet (sent early by a long batch, or cancelled)
            results = [r for r in results if int(r["job_id"]) in task.pending]
            for r in results:
                self._reported_locked(task, key, int(r["job_id"]))
        task.future = None  # release the Dask future
        self._queue.push(results)

    # ------------------------------------------------------------------ interface

    def cancel(self, job_ids: list[int]) -> None:
        report: list[dict[str, Any]] = []
        futures: list[Any] = []
        skip: list[tuple[str, int, int]] = []
        with self._lock:
            for jid in job_ids:
                key = self._job_key.get(jid)
                task = self._tasks.get(key) if key is not None else None
                if task is None or jid not in task.pending:
                    continue
                spec = next(s for s in task.specs if int(s["job_id"]) == jid)
                attempt = int(spec.get("attempt", 0))
                report.append(failed_result(jid, attempt, "cancelled", exc_type="Cancelled"))
                self._reported_locked(task, key, jid)  # type: ignore[arg-type]
                if task.pending:  # its batch runs on for the others: skip this one
                    skip.append((self._topic, jid, attempt))
                elif self._tasks.pop(key, None) is not None:  # type: ignore[arg-type]
                    futures.append(task.future)
        if futures:
            with contextlib.suppress(Exception):
                self._client.cancel(futures)
        if skip:
            with contextlib.suppress(Exception):
                self._client.run(_skip, skip, wait=False, on_error="ignore")
        if report:
            self._queue.push(report)

    def status(self, job_ids: list[int]) -> dict[int, str]:
        out: dict[int, str] = {}
        with self._lock:
            for jid in job_ids:
                key = self._job_key.get(jid)
                task = self._tasks.get(key) if key is not None else None
                if task is None or jid not in task.pending:
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
        if self._subscribed:
            with contextlib.suppress(Exception):
                self._client.unsubscribe_topic(self._topic)
        if self._own_client:
            with contextlib.suppress(Exception):
                self._client.close()
        if self._own_cluster is not None:
            with contextlib.suppress(Exception):
                self._own_cluster.close()
        self._queue.wake()
