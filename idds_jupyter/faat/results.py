"""Routing of pushed job results to the works waiting for them.

One :class:`ResultRouter` per client listens to the push channel. Each
submitted work registers a :class:`WorkSink` (one slot per job) under
``(workflow id, work name)``; ``job.result`` messages fill its slots (resolving
:class:`~idds_jupyter.faat.future.JobFuture` objects when there are some).
Messages that arrive before their sink is registered (the workflow id is only
known once ``POST requests`` answered) are kept for a while and replayed.

A failed attempt that will be retried is held until the last attempt. When a
work or workflow is reported terminal and a sink still misses jobs, and after
every reconnection of the push channel, the results are fetched over REST once
(``GET requests/{id}/works/{name}/results``). Events are hints (a lost one must
only delay): a sink that hears nothing for a while has its results fetched too, the
pause doubling from ``QUIET_FIRST`` up to ``QUIET_MAX`` seconds while nothing changes.
"""

from __future__ import annotations

import threading
import time
from collections import OrderedDict
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from idds_jupyter.client import Client
    from idds_jupyter.faat.future import JobFuture

__all__ = ["ResultRouter", "WorkSink", "router"]

_FINAL = ("finished", "failed", "cancelled")
_ORPHAN_WORKFLOWS = 512
_ORPHAN_JOBS = 200_000
QUIET_FIRST = 5.0
QUIET_MAX = 60.0


class WorkSink:
    """Collects the results of the ``n`` jobs of one work (in job order)."""

    def __init__(
        self,
        workflow_id: int,
        work: str,
        n: int,
        retries: int = 0,
        futures: list[JobFuture] | None = None,
    ) -> None:
        self.workflow_id = int(workflow_id)
        self.work = work
        self.n = n
        self.retries = retries
        self.futures = futures
        self.slots: list[dict[str, Any] | None] = [None] * n
        self.pending = n
        self.held: dict[int, dict[str, Any]] = {}
        self.done = threading.Event()
        self._lock = threading.Lock()
        self.router: ResultRouter | None = None
        self.heard = time.monotonic()  # last news of this sink's jobs
        self.quiet = QUIET_FIRST  # silence after which the store is asked
        if n == 0:
            self.done.set()

    @property
    def key(self) -> tuple[int, str]:
        return self.workflow_id, self.work

    def offer(self, job: dict[str, Any], final: bool = False) -> None:
        status = job.get("status")
        if status not in _FINAL:
            return
        try:
            idx = int(job.get("idx", 0))
        except (TypeError, ValueError):
            return
        if not 0 <= idx < self.n:
            return
        with self._lock:
            if self.slots[idx] is not None:
                return
            if status == "failed" and not final and int(job.get("attempt") or 1) <= self.retries:
                self.held[idx] = job  # another attempt is coming
                return
            self.held.pop(idx, None)
            self.heard = time.monotonic()
            self.quiet = QUIET_FIRST
            self.slots[idx] = job
            self.pending -= 1
            complete = self.pending == 0
        if self.futures is not None:
            self.futures[idx]._resolve(job)
        if complete:
            self._complete()

    def finalize(self, rows: Iterable[dict[str, Any]], reason: str) -> None:
        """The work is over: take ``rows`` as final, and fail the jobs that never ran."""
        for row in rows:
            self.offer(row, final=True)
        with self._lock:
            held = list(self.held.values())
        for job in held:
            self.offer(job, final=True)
        for idx in range(self.n):
            if self.slots[idx] is None:
                self.offer(
                    {"idx": idx, "status": "cancelled", "error": reason, "exc_type": "Cancelled"},
                    final=True,
                )

    def _complete(self) -> None:
        self.done.set()
        if self.router is not None:
            self.router.unregister(self)

    def wait(self, timeout: float | None = None) -> list[dict[str, Any]]:
        if not self.done.wait(timeout):
            raise TimeoutError(
                f"work {self.work} of workflow {self.workflow_id}: "
                f"{self.pending} of {self.n} jobs still pending after {timeout} s"
            )
        return [s for s in self.slots if s is not None]


class ResultRouter:
    def __init__(self, client: Client) -> None:
        self.client = client
        self._lock = threading.Lock()
        self._sinks: dict[tuple[int, str], WorkSink] = {}
        self._orphans: OrderedDict[int, list[dict[str, Any]]] = OrderedDict()
        self._n_orphans = 0
        self._terminal: OrderedDict[int, str] = OrderedDict()
        self._checking: dict[int, bool] = {}  # workflow id -> changed again during the check
        self._watchdog: threading.Thread | None = None
        push = client.push
        push.add_listener(self.on_message)
        push.add_on_connect(self.resync)

    # ------------------------------------------------------------ registry
    def register(self, sink: WorkSink) -> None:
        sink.router = self
        with self._lock:
            if sink.done.is_set():
                return
            self._sinks[sink.key] = sink
            jobs = self._orphans.get(sink.workflow_id)
            replay: list[dict[str, Any]] = []
            if jobs:
                keep: list[dict[str, Any]] = []
                for j in jobs:
                    (replay if j.get("work") == sink.work else keep).append(j)
                self._n_orphans -= len(replay)
                if keep:
                    self._orphans[sink.workflow_id] = keep
                else:
                    del self._orphans[sink.workflow_id]
            ended = self._terminal.get(sink.workflow_id)
            if self._watchdog is None or not self._watchdog.is_alive():
                self._watchdog = threading.Thread(
                    target=self._watch, name="idds-quiet-sinks", daemon=True
                )
                self._watchdog.start()
        for job in replay:
            sink.offer(job)
        if ended is not None and not sink.done.is_set():
            self._fetch_and_finalize(sink, f"workflow {sink.workflow_id} ended {ended}")

    def unregister(self, sink: WorkSink) -> None:
        with self._lock:
            if self._sinks.get(sink.key) is sink:
                del self._sinks[sink.key]

    # ------------------------------------------------------------ messages
    def on_message(self, msg: dict[str, Any]) -> None:
        kind = msg.get("type")
        if kind == "job.result":
            default_wf = _int(msg.get("key"))
            for job in msg.get("jobs") or ():
                wf = _int(job.get("workflow_id"), default_wf)
                if wf is None:
                    continue
                key = (wf, str(job.get("work")))
                sink = self._sinks.get(key) or self._orphan(wf, key, job)
                if sink is not None:
                    sink.offer(job)
        elif kind == "work.terminal":
            wf = _int(msg.get("key"))
            name = msg.get("name")  # "work" is its id
            sink = self._sinks.get((wf, str(name))) if wf is not None else None
            if sink is not None and not sink.done.is_set():
                self._later(sink, f"work {name} ended {msg.get('status')}")
        elif kind == "workflow.dirty":
            from idds_jupyter.client import TERMINAL

            wf = _int(msg.get("key"))  # a status it goes on in: nothing to check
            goes_on = msg.get("status") is not None and msg["status"] not in TERMINAL
            if wf is not None and not goes_on and any(k[0] == wf for k in list(self._sinks)):
                self._check_soon(wf)
        elif kind == "workflow.terminal":
            wf = _int(msg.get("key"))
            if wf is None:
                return
            with self._lock:
                self._terminal[wf] = str(msg.get("status"))
                while len(self._terminal) > _ORPHAN_WORKFLOWS:
                    self._terminal.popitem(last=False)
                sinks = [s for k, s in self._sinks.items() if k[0] == wf]
            for sink in sinks:
                if not sink.done.is_set():
                    self._later(sink, f"workflow {wf} ended {msg.get('status')}")

    def _orphan(self, wf: int, key: tuple[int, str], job: dict[str, Any]) -> WorkSink | None:
        """Keep a result no sink waits for yet; the sink if one was registered meanwhile."""
        with self._lock:
            sink = self._sinks.get(key)
            if sink is not None:
                return sink
            self._orphans.setdefault(wf, []).append(job)
            self._orphans.move_to_end(wf)
            self._n_orphans += 1
            while self._orphans and (
                len(self._orphans) > _ORPHAN_WORKFLOWS or self._n_orphans > _ORPHAN_JOBS
            ):
                _, dropped = self._orphans.popitem(last=False)
                self._n_orphans -= len(dropped)
        return None

    # ------------------------------------------------------------ fallbacks
    def _check_soon(self, wf: int) -> None:
        """A state change of ``wf`` (e.g. an abort, which ends jobs without results):
        look whether it ended. One check in flight per workflow; changes seen meanwhile
        cause one more check after it."""
        with self._lock:
            if wf in self._checking:
                self._checking[wf] = True
                return
            self._checking[wf] = False
        threading.Thread(target=self._check, args=(wf,), name="idds-check", daemon=True).start()

    def _check(self, wf: int) -> None:
        from idds_jupyter.client import TERMINAL

        while True:
            try:
                status = self.client.status(wf).get("status")
            except Exception:
                status = None
            if status in TERMINAL:
                with self._lock:
                    sinks = [s for k, s in self._sinks.items() if k[0] == wf]
                for sink in sinks:
                    if not sink.done.is_set():
                        self._fetch_and_finalize(sink, f"workflow {wf} ended {status}")
            with self._lock:
                again = self._checking.get(wf)
                if not again or status in TERMINAL:
                    self._checking.pop(wf, None)
                    return
                self._checking[wf] = False

    def _later(self, sink: WorkSink, reason: str) -> None:
        threading.Thread(
            target=self._fetch_and_finalize, args=(sink, reason), name="idds-finalize", daemon=True
        ).start()

    def _fetch_and_finalize(self, sink: WorkSink, reason: str) -> None:
        try:
            rows = self.client.work_results(sink.workflow_id, sink.work)
        except Exception as exc:
            rows = []
            reason = f"{reason}; its results could not be fetched: {exc}"
        sink.finalize(rows, reason)

    def resync(self) -> None:
        """After a (re)connection: fetch what was pushed while disconnected."""
        with self._lock:
            sinks = [s for s in self._sinks.values() if not s.done.is_set()]
        for sink in sinks:
            self._fetch(sink)

    def _fetch(self, sink: WorkSink) -> None:
        """Take the stored results of ``sink``'s jobs; finalize it if its workflow ended."""
        from idds_jupyter.client import TERMINAL

        try:
            rows = self.client.work_results(sink.workflow_id, sink.work)
        except Exception:
            return
        for row in rows:
            sink.offer(row)
        if sink.done.is_set():
            return
        try:
            status = self.client.status(sink.workflow_id).get("status")
        except Exception:
            return
        if status in TERMINAL:
            # Jobs may have ended between the first fetch and the status: fetch
            # again now that nothing more can change.
            self._fetch_and_finalize(sink, f"workflow {sink.workflow_id} ended {status}")

    def _watch(self) -> None:
        """Fetch the results of sinks that heard nothing for their ``quiet`` time (a
        lost event), backing off while nothing changes; ends when no sink waits."""
        while True:
            time.sleep(1.0)
            with self._lock:
                sinks = [s for s in self._sinks.values() if not s.done.is_set()]
                if not sinks:
                    self._watchdog = None
                    return
            now = time.monotonic()
            for sink in sinks:
                if now - sink.heard >= sink.quiet:
                    sink.heard = now
                    sink.quiet = min(sink.quiet * 2, QUIET_MAX)
                    self._fetch(sink)


def _int(value: Any, default: int | None = None) -> int | None:
    try:
        return int(value)
    except (TypeError, ValueError):
        return default


_routers_lock = threading.Lock()


def router(client: Client) -> ResultRouter:
    """The result router of ``client`` (starting its push channel on first use)."""
    r = getattr(client, "_router", None)
    if r is None:
        with _routers_lock:
            r = getattr(client, "_router", None)
            if r is None:
                r = ResultRouter(client)
                client._router = r
    return r
