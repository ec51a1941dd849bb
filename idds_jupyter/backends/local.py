"""The ``local`` backend: a pool of ``python -m idds_jupyter.worker --pool`` processes.

Jobs are sent to the workers in chunks (JSON lists, never pickles) over their
stdin; results come back on their stdout (see :mod:`idds_jupyter.worker.pool`).
Each worker holds at most :data:`CHUNKS_PER_WORKER` chunks; the rest waits in
the backend. One reader and one writer thread per worker; all results go into
one queue drained by :meth:`LocalBackend.results`.

If a worker process dies (killed from outside, OOM), every job it held is
reported failed with error ``"worker process died (signal N)"`` and the worker is
replaced. :meth:`LocalBackend.cancel` drops queued jobs (reported failed with
error ``"cancelled"``) and kills the worker(s) running the others: the cancelled
jobs it held are reported ``"cancelled"`` (unless their result arrived first),
the other jobs it held are re-queued and run again (same attempt).
"""

from __future__ import annotations

import contextlib
import itertools
import math
import os
import queue
import select
import signal
import subprocess
import sys
import threading
import time
from collections import deque
from typing import Any

from idds_jupyter.backends.base import Backend, failed_result
from idds_jupyter.worker.pool import encode_message, read_message

__all__ = ["LocalBackend", "CHUNKS_PER_WORKER"]

CHUNKS_PER_WORKER = 2
_DONE_CAP = 200_000
_KILL_GRACE_S = 1.0

# the directory that contains the idds_jupyter package, so workers can import it
_PKG_ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def _write_all(fd: int, data: bytes) -> None:
    """Write ``data`` to a non-blocking pipe, waiting for room as needed."""
    view = memoryview(data)
    while view:
        try:
            view = view[os.write(fd, view):]
        except BlockingIOError:
            select.select([], [fd], [], 1.0)


class _Chunk:
    __slots__ = ("ids", "started")

    def __init__(self, ids: dict[int, int]) -> None:
        self.ids = ids  # job_id -> attempt, removed as results arrive
        self.started = False


class _Worker:
    def __init__(self, slot: int, env: dict[str, str], log_dir: str | None) -> None:
        self.slot = slot
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "idds_jupyter.worker", "--pool"],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=None,
            env=env,
            cwd=log_dir or None,
            start_new_session=False,
            close_fds=True,
        )
        self.pid = self.proc.pid
        self.spawned_at = time.monotonic()
        self.chunks: deque[_Chunk] = deque()
        assert self.proc.stdin is not None
        # Non-blocking: a small frame is written by the thread that dispatches it
        # (no hop to the writer thread) unless the pipe is full or frames wait before it.
        self.fd = self.proc.stdin.fileno()
        os.set_blocking(self.fd, False)
        self.outq: queue.SimpleQueue[bytes | None] = queue.SimpleQueue()
        self.wlock = threading.Lock()
        self.backlog = 0  # frames given to the writer thread and not fully written yet
        # set (under wlock) before the pipe is closed: its fd number may be reused at once
        # (by a socket, say), so nothing may be written to it afterwards
        self.closed = False
        self.alive = True
        self.killed_for_cancel = False
        self.reader: threading.Thread | None = None
        self.writer: threading.Thread | None = None

    def signal(self, sig: int) -> None:
        if self.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                self.proc.send_signal(sig)


class LocalBackend(Backend):
    """Local worker processes.

    :param workers: number of worker processes (default ``os.cpu_count()``)
    :param batch: largest chunk of jobs sent to a worker in one message
    :param log_dir: default ``log_dir`` for specs that have none (also the workers' cwd)
    """

    name = "local"

    def __init__(
        self,
        workers: int | None = None,
        batch: int = 500,
        log_dir: str | None = None,
        env: dict[str, str] | None = None,
    ) -> None:
        super().__init__()
        self.n_workers = max(1, int(workers or os.cpu_count() or 1))
        self.batch = max(1, int(batch))
        self.log_dir = log_dir
        self.capacity = self.n_workers * self.batch * CHUNKS_PER_WORKER
        if log_dir:
            os.makedirs(log_dir, exist_ok=True)
        child_env = dict(os.environ)
        child_env.update(env or {})
        pp = child_env.get("PYTHONPATH")
        child_env["PYTHONPATH"] = _PKG_ROOT + (os.pathsep + pp if pp else "")
        self._env = child_env
        self._lock = threading.Lock()
        self._closing = False
        self._pending: deque[dict[str, Any]] = deque()
        # job_id -> [attempt, worker | None, chunk | None]
        self._jobs: dict[int, list[Any]] = {}
        self._done: dict[int, None] = {}
        self._cancel_requested: set[int] = set()
        self._workers: list[_Worker] = []
        for slot in range(self.n_workers):
            self._workers.append(self._spawn(slot))

    # ------------------------------------------------------------------ workers

    def _spawn(self, slot: int) -> _Worker:
        w = _Worker(slot, self._env, self.log_dir)
        w.reader = threading.Thread(
            target=self._read_loop, args=(w,), name=f"idds-local-r{slot}", daemon=True
        )
        w.writer = threading.Thread(
            target=self._write_loop, args=(w,), name=f"idds-local-w{slot}", daemon=True
        )
        w.reader.start()
        w.writer.start()
        return w

    @staticmethod
    def _write_loop(w: _Worker) -> None:
        stdin = w.proc.stdin
        assert stdin is not None
        try:
            while True:
                frame = w.outq.get()
                if frame is None:
                    break
                _write_all(w.fd, frame)
                with w.wlock:
                    w.backlog -= 1
        except (BrokenPipeError, OSError, ValueError):
            pass  # the reader notices the death
        finally:
            with w.wlock:
                w.closed = True
                with contextlib.suppress(OSError, ValueError):
                    stdin.close()

    def _read_loop(self, w: _Worker) -> None:
        stdout = w.proc.stdout
        assert stdout is not None
        push = self._queue.push
        while True:
            try:
                msg = read_message(stdout)
            except (EOFError, OSError, ValueError):
                break
            if not isinstance(msg, dict):
                continue
            results = msg.get("results")
            if results:
                push(self._on_results(w, results))
                continue
            started = msg.get("started")
            if started:
                notes = []
                with self._lock:
                    for jid, attempt in started:
                        entry = self._jobs.get(jid)
                        if entry is not None and entry[1] is w:
                            if entry[2] is not None:
                                entry[2].started = True
                            notes.append({"job_id": jid, "attempt": attempt, "started": True})
                push(notes)
                continue
            if "error" in msg:
                sys.stderr.write(f"idds local worker {w.pid}: {msg['error']}\n")
        self._on_death(w)

    def _on_results(self, w: _Worker, results: list[dict[str, Any]]) -> list[dict[str, Any]]:
        out: list[dict[str, Any]] = []
        jobs = self._jobs
        done = self._done
        with self._lock:
            for r in results:
                jid = r["job_id"]
                attempt = r.get("attempt")
                entry = jobs.get(jid)
                if entry is None or entry[1] is not w:
                    # stale (e.g. reported cancelled already) or a foreign id
                    continue
                chunk = entry[2]
                if chunk is not None:
                    chunk.started = True
                    chunk.ids.pop(jid, None)
                if entry[0] == attempt:
                    del jobs[jid]
                    done[jid] = None
                if self._cancel_requested:
                    self._cancel_requested.discard(jid)
                out.append(r)
            # retire finished chunks (normally the oldest)
            freed = False
            while w.chunks and not w.chunks[0].ids:
                w.chunks.popleft()
                freed = True
            if len(done) > _DONE_CAP:
                for k in list(itertools.islice(done, len(done) - _DONE_CAP // 2)):
                    del done[k]
            sends = self._dispatch_locked() if freed else []
        self._send(sends)
        return out

    def _on_death(self, w: _Worker) -> None:
        try:
            rc = w.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            w.signal(signal.SIGKILL)
            rc = w.proc.wait()
        w.outq.put(None)
        if rc < 0:
            why = f"worker process died (signal {-rc})"
        else:
            why = f"worker process died (exit code {rc})"
        report: list[dict[str, Any]] = []
        requeue: list[dict[str, Any]] = []
        if time.monotonic() - w.spawned_at < 1.0 and not self._closing:
            time.sleep(0.5)  # do not spin when workers cannot even start
        # the replacement first, so that the pool is whole again when failures are reported
        new = None if self._closing else self._spawn(w.slot)
        with self._lock:
            w.alive = False
            closing = self._closing
            if new is not None:
                if closing:
                    new.alive = False
                else:
                    self._workers[w.slot] = new
            held = [(jid, att) for chunk in w.chunks for jid, att in chunk.ids.items()]
            w.chunks.clear()
            for jid, att in held:
                entry = self._jobs.get(jid)
                if entry is None or entry[1] is not w:
                    continue
                if jid in self._cancel_requested:
                    self._cancel_requested.discard(jid)
                    del self._jobs[jid]
                    self._done[jid] = None
                    report.append(failed_result(jid, att, "cancelled", exc_type="Cancelled"))
                elif closing:
                    del self._jobs[jid]
                elif w.killed_for_cancel:
                    entry[1] = entry[2] = None
                    requeue.append(entry[3])
                else:
                    del self._jobs[jid]
                    self._done[jid] = None
                    report.append(
                        failed_result(jid, att, why, exc_type="WorkerDied", exit_code=rc)
                    )
            if requeue:
                self._pending.extendleft(reversed(requeue))
            sends = self._dispatch_locked()
        if new is not None and not new.alive:
            new.outq.put(None)
            new.signal(signal.SIGTERM)
        if report:
            self._queue.push(report)
        self._send(sends)

    # ------------------------------------------------------------------ dispatch

    def _dispatch_locked(self) -> list[tuple[_Worker, list[dict[str, Any]]]]:
        """Assign queued specs to workers with free chunk slots (lock held)."""
        pending = self._pending
        if not pending or self._closing:
            return []
        workers = [w for w in self._workers if w.alive]
        slots = sum(max(0, CHUNKS_PER_WORKER - len(w.chunks)) for w in workers)
        if not slots:
            return []
        size = max(1, min(self.batch, math.ceil(len(pending) / (len(workers) * CHUNKS_PER_WORKER))))
        sends: list[tuple[_Worker, list[dict[str, Any]]]] = []
        jobs = self._jobs
        # fill the emptiest workers first, one round per chunk level
        for level in range(CHUNKS_PER_WORKER):
            for w in workers:
                if not pending:
                    return sends
                if len(w.chunks) != level:
                    continue
                n = min(size, len(pending))
                specs = [pending.popleft() for _ in range(n)]
                ids: dict[int, int] = {}
                chunk = _Chunk(ids)
                for spec in specs:
                    jid = spec["job_id"]
                    ids[jid] = spec.get("attempt", 0)
                    entry = jobs.get(jid)
                    if entry is not None:
                        entry[1] = w
                        entry[2] = chunk
                w.chunks.append(chunk)
                sends.append((w, specs))
        return sends

    @staticmethod
    def _send(sends: list[tuple[_Worker, list[dict[str, Any]]]]) -> None:
        """Frames up to ``PIPE_BUF`` go straight into an idle worker's pipe (written whole
        or not at all); the others, and any behind a frame still queued, in order through
        the worker's writer thread, so that a slow reader never blocks the caller."""
        for w, specs in sends:
            frame = encode_message(specs)
            with w.wlock:
                if w.closed:
                    continue  # the worker is gone: its reader reports its jobs
                if not w.backlog and len(frame) <= select.PIPE_BUF:
                    try:
                        if os.write(w.fd, frame) == len(frame):
                            continue
                    except BlockingIOError:
                        pass  # the pipe is full: the writer thread waits for room
                    except OSError:
                        continue  # the worker is gone: its reader reports its jobs
                w.backlog += 1
                w.outq.put(frame)

    # ------------------------------------------------------------------ interface

    def submit(self, specs: list[dict[str, Any]]) -> None:
        if not specs:
            return
        log_dir = self.log_dir
        with self._lock:
            if self._closing:
                raise RuntimeError("backend is closed")
            jobs = self._jobs
            for spec in specs:
                if log_dir and not spec.get("log_dir"):
                    spec = {**spec, "log_dir": log_dir}
                jid = int(spec["job_id"])
                jobs[jid] = [spec.get("attempt", 0), None, None, spec]
                self._pending.append(spec)
            sends = self._dispatch_locked()
        self._send(sends)

    def cancel(self, job_ids: list[int]) -> None:
        report: list[dict[str, Any]] = []
        to_kill: dict[int, _Worker] = {}
        with self._lock:
            queued: set[int] = set()
            for jid in job_ids:
                entry = self._jobs.get(jid)
                if entry is None:
                    continue
                w = entry[1]
                if w is None:
                    queued.add(jid)
                    del self._jobs[jid]
                    self._done[jid] = None
                    report.append(failed_result(jid, entry[0], "cancelled", exc_type="Cancelled"))
                else:
                    self._cancel_requested.add(jid)
                    w.killed_for_cancel = True
                    to_kill[id(w)] = w
            if queued:
                self._pending = deque(s for s in self._pending if s["job_id"] not in queued)
        if report:
            self._queue.push(report)
        for w in to_kill.values():
            self._kill(w)

    @staticmethod
    def _kill(w: _Worker) -> None:
        """SIGTERM (the worker kills its shell command's group), SIGKILL after a grace."""
        w.signal(signal.SIGTERM)

        def escalate() -> None:
            try:
                w.proc.wait(timeout=_KILL_GRACE_S)
            except subprocess.TimeoutExpired:
                w.signal(signal.SIGKILL)

        threading.Thread(target=escalate, name=f"idds-local-kill{w.pid}", daemon=True).start()

    def status(self, job_ids: list[int]) -> dict[int, str]:
        out: dict[int, str] = {}
        with self._lock:
            for jid in job_ids:
                entry = self._jobs.get(jid)
                if entry is None:
                    out[jid] = "done" if jid in self._done else "unknown"
                elif entry[1] is None:
                    out[jid] = "queued"
                else:
                    w, chunk = entry[1], entry[2]
                    running = chunk is not None and (
                        chunk.started or (bool(w.chunks) and w.chunks[0] is chunk)
                    )
                    out[jid] = "running" if running else "queued"
        return out

    def in_flight(self) -> int:
        with self._lock:
            return len(self._jobs)

    def worker_pids(self) -> list[int]:
        """Process ids of the live workers (tests, diagnostics)."""
        with self._lock:
            return [w.pid for w in self._workers if w.alive]

    def close(self) -> None:
        with self._lock:
            if self._closing:
                return
            self._closing = True
            workers = list(self._workers)
            self._pending.clear()
            self._jobs.clear()
        for w in workers:
            w.outq.put(None)
            w.signal(signal.SIGTERM)
        for w in workers:
            try:
                w.proc.wait(timeout=2)
            except subprocess.TimeoutExpired:
                w.signal(signal.SIGKILL)
                with contextlib.suppress(subprocess.TimeoutExpired):
                    w.proc.wait(timeout=2)
        for w in workers:
            if w.reader is not None and w.reader is not threading.current_thread():
                w.reader.join(timeout=2)
        self._queue.wake()

    def __del__(self) -> None:
        with contextlib.suppress(Exception):
            if not self._closing:
                self.close()
