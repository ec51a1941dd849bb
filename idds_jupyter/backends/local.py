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

Tenancy: a worker process runs the jobs of one owner only (a job spec's
``owner``). Fresh workers are unbound and are bound to the first owner whose
jobs they get; an owner with fewer workers takes an idle worker of one with
more (it is ended, a new one started); workers idle for ``idle_s`` are ended.
The total stays at most ``workers``. Workers start with the allow-listed
environment only (:func:`idds_jupyter.worker.env.job_environment`), each in its
own session: when one dies, whatever it started (shell commands and their
children) is killed with it. ``isolation`` (``none`` | ``account`` | ``uid``,
see :mod:`idds_jupyter.backends.isolation`) chooses the OS account they run as.
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
from idds_jupyter.backends.isolation import (
    ISOLATION_LEVELS,
    IsolationError,
    JobArea,
    RunAs,
    Sudo,
    kill_session,
    run_as,
    unreachable,
)
from idds_jupyter.worker.env import job_environment
from idds_jupyter.worker.pool import encode_message, read_message

__all__ = ["LocalBackend", "CHUNKS_PER_WORKER"]

CHUNKS_PER_WORKER = 2
_DONE_CAP = 200_000
_KILL_GRACE_S = 1.0
ACCT_RETRY_S = 30.0  # an owner without a usable account is looked up again after this
IDLE_S = 60.0  # default: a worker bound to an owner and idle this long is ended
# A chunk is sized to take about CHUNK_S at its owner's measured pace (FIRST_CHUNK jobs
# until measured), so a worker promised to another owner is free within about that.
CHUNK_S = 0.2
FIRST_CHUNK = 8

# the directory that contains the idds_jupyter package, so workers can import it
_PKG_ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def _pace(results: list[dict[str, Any]]) -> float | None:
    """Jobs per second of one worker over ``results`` (one flush), timed by the worker's
    own clock: the moment their frames are read here says nothing (two flushes read in
    one burst would make a 20 ms job look instantaneous and the next chunks huge)."""
    timed = [r for r in results if (r.get("started_at") or 0) > 0 and r.get("finished_at")]
    if not timed:
        return None
    span = max(r["finished_at"] for r in timed) - min(r["started_at"] for r in timed)
    return len(timed) / max(span, 1e-4)


def _write_all(fd: int, data: bytes) -> None:
    """Write ``data`` to a non-blocking pipe, waiting for room as needed."""
    view = memoryview(data)
    while view:
        try:
            view = view[os.write(fd, view) :]
        except BlockingIOError:
            select.select([], [fd], [], 1.0)


class _Chunk:
    __slots__ = ("ids", "started")

    def __init__(self, ids: dict[int, int]) -> None:
        self.ids = ids  # job_id -> attempt, removed as results arrive
        self.started = False


class _Worker:
    def __init__(
        self,
        slot: int,
        env: dict[str, str],
        cwd: str | None,
        owner: str | None = None,
        acct: RunAs | None = None,
        sudo: Sudo | None = None,
    ) -> None:
        self.slot = slot
        #: the owner whose jobs it runs (None: not bound yet, has run nothing)
        self.owner = owner
        self.acct = acct
        self.sudo = sudo if acct is not None else None
        #: the worker's own pid (under sudo, ``pid`` is sudo's), from its hello
        self.worker_pid: int | None = None
        as_acct: dict[str, Any] = {}
        argv = [sys.executable, "-m", "idds_jupyter.worker", "--pool"]
        setup: bytes | None = None
        if self.sudo is not None:
            assert acct is not None
            # sudo resets the environment and keeps our cwd: the worker takes both (and
            # its umask) from a first message, then leads a session of its own
            argv = self.sudo.argv(acct, "--pool", "--setup")
            setup = encode_message(
                {
                    "setup": {
                        "env": env,
                        "cwd": cwd,
                        "umask": 0o077,
                        "share_results": True,
                        "service_pid": os.getpid(),
                    }
                }
            )
            env, cwd = {"PATH": env.get("PATH", os.defpath)}, "/"
        elif acct is not None:  # the service is root: setuid/setgid, no other groups
            as_acct = {"user": acct.uid, "group": acct.gid, "extra_groups": []}
        self.proc = subprocess.Popen(
            argv,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=None,
            env=env,
            cwd=cwd or None,
            # its own session: what it starts is found (and killed) by the session id
            start_new_session=True,
            close_fds=True,
            umask=0o077,  # its logs and results: 0600 files in 0700 directories
            **as_acct,
        )
        self.pid = self.proc.pid
        self.idle_since = time.monotonic()
        self.retired = False  # ended on purpose (idle, or its slot given to another owner)
        #: promised to an owner with no worker: gets no new chunk, replaced once it has none
        self.draining = False
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
        if setup is not None:  # first in line
            self.backlog = 1
            self.outq.put(setup)
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


def _end_session(w: _Worker) -> None:
    """Kill what is left of a dead worker's session (through sudo: as its account)."""
    if w.sudo is not None and w.acct is not None:
        if w.worker_pid is not None:
            w.sudo.reap(w.acct, w.worker_pid)
    else:
        kill_session(w.pid)


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
        *,
        isolation: str = "none",
        job_account: str | None = None,
        user_map: dict[str, str] | None = None,
        env_allow: tuple[str, ...] | list[str] = (),
        idle_s: float = IDLE_S,
        jobs_dir: str | None = None,
        sudo_worker: str | None = None,
    ) -> None:
        super().__init__()
        if isolation not in ISOLATION_LEVELS:
            raise IsolationError(
                f"isolation must be one of {', '.join(ISOLATION_LEVELS)}, got {isolation!r}"
            )
        self.n_workers = max(1, int(workers or os.cpu_count() or 1))
        self.batch = max(1, int(batch))
        self.log_dir = log_dir
        self.capacity = self.n_workers * self.batch * CHUNKS_PER_WORKER
        self.isolation = isolation
        self.idle_s = float(idle_s)
        self.user_map = dict(user_map or {})
        if log_dir:
            os.makedirs(log_dir, mode=0o700, exist_ok=True)
        self._env_extra = dict(env or {})
        self._env_allow = tuple(env_allow)
        self._env = self._worker_env(None)
        self._area: JobArea | None = None
        self._account: RunAs | None = None
        #: not root: workers start through sudo (a sudoers rule names the worker command)
        self._sudo: Sudo | None = None
        if isolation != "none":
            if os.geteuid() != 0:
                self._sudo = Sudo(sudo_worker)
            root = jobs_dir or (
                os.path.join(os.path.dirname(os.path.abspath(log_dir)), "jobs") if log_dir else None
            )
            if not root:
                raise IsolationError(f"isolation {isolation!r} needs a jobs_dir (or a log_dir)")
            self._area = JobArea(root, acl=self._sudo is not None)
            if isolation == "account":
                self._account = run_as(job_account or "idds-job")
                self._check_reach(self._account)
                self._area.prepare(self._account)
        self._lock = threading.Lock()
        self._closing = False
        # owner -> its queued specs
        self._pending: dict[str, deque[dict[str, Any]]] = {}
        self._pace: dict[str, float] = {}  # owner -> jobs/s of one of its workers (EWMA)
        # job_id -> [attempt, worker | None, chunk | None, spec, original spec]
        self._jobs: dict[int, list[Any]] = {}
        self._done: dict[int, None] = {}
        self._cancel_requested: set[int] = set()
        self._undelivered: list[dict[str, Any]] = []  # failed in dispatch, pushed after it
        # owner -> account (uid), or why none and since when (asked again after ACCT_RETRY_S:
        # an account or a sudoers rule added meanwhile is taken without a restart)
        self._accts: dict[str, RunAs | tuple[str, float]] = {}
        self._workers: list[_Worker | None] = [None] * self.n_workers
        if isolation != "uid":  # a warm pool of unbound workers (uid: started per owner)
            for slot in range(self.n_workers):
                self._workers[slot] = self._spawn(slot, None, self._account)
        self._stop = threading.Event()
        threading.Thread(target=self._reap_loop, name="idds-local-reaper", daemon=True).start()

    # ------------------------------------------------------------------ workers

    def _worker_env(self, acct: RunAs | None) -> dict[str, str]:
        env = job_environment(
            self._env_extra,
            allow=self._env_allow,
            user=acct.name if acct is not None else None,
            pythonpath=_PKG_ROOT,
        )
        if acct is not None and self._area is not None:
            env["TMPDIR"] = os.path.join(self._area.dir(acct), "tmp")
        return env

    def _check_reach(self, acct: RunAs) -> None:
        """Fail clearly when the account cannot reach the interpreter, the package or its area."""
        assert self._area is not None
        paths = [
            sys.executable,
            os.path.join(_PKG_ROOT, "idds_jupyter", "__init__.py"),
            os.path.join(self._area.root, "x"),
        ]
        if self._sudo is not None:
            paths.append(self._sudo.worker)
        for path in paths:
            why = unreachable(path, acct)
            if why:
                raise IsolationError(
                    f"isolation {self.isolation!r}: {why}; make the directories "
                    "on the way searchable by others (chmod o+x) or install the "
                    "service elsewhere"
                )
        if self._sudo is not None:
            self._sudo.check(acct)

    def _acct_for(self, owner: str) -> RunAs | None:
        """The account the owner's jobs run as (ValueError when there is none)."""
        if self.isolation == "none":
            return None
        if self.isolation == "account":
            return self._account
        got = self._accts.get(owner)
        if got is None or (isinstance(got, tuple) and time.monotonic() - got[1] > ACCT_RETRY_S):
            try:
                if not owner:
                    raise IsolationError("a job without an owner cannot run under uid isolation")
                got = run_as(self.user_map.get(owner, owner))
                self._check_reach(got)
            except ValueError as exc:
                got = (str(exc), time.monotonic())
            self._accts[owner] = got
        if isinstance(got, tuple):
            raise ValueError(got[0])
        return got

    def _spawn(self, slot: int, owner: str | None, acct: RunAs | None) -> _Worker:
        cwd = self.log_dir
        env = self._env
        if acct is not None:
            assert self._area is not None
            cwd = self._area.prepare(acct)
            env = self._worker_env(acct)
        w = _Worker(slot, env, cwd, owner, acct, self._sudo)
        w.reader = threading.Thread(
            target=self._read_loop, args=(w,), name=f"idds-local-r{slot}", daemon=True
        )
        w.writer = threading.Thread(
            target=self._write_loop, args=(w,), name=f"idds-local-w{slot}", daemon=True
        )
        w.reader.start()
        w.writer.start()
        return w

    def _retire_locked(self, w: _Worker) -> None:
        """End an idle worker on purpose (its slot is free at once)."""
        w.retired = True
        if self._workers[w.slot] is w:
            self._workers[w.slot] = None
        w.outq.put(None)  # EOF: it exits; its reader cleans up

    def _refill_locked(self) -> None:
        """Unbound workers in the free slots (not under uid isolation: started per owner)."""
        if self.isolation == "uid" or self._closing:
            return
        for slot, w in enumerate(self._workers):
            if w is None:
                with contextlib.suppress(OSError):
                    self._workers[slot] = self._spawn(slot, None, self._account)

    def _reap_loop(self) -> None:
        while not self._stop.wait(max(0.05, min(self.idle_s / 2, 5.0))):
            now = time.monotonic()
            with self._lock:
                if self._closing:
                    return
                reaped = False
                for w in self._workers:
                    if (
                        w is not None
                        and w.alive
                        and not w.retired
                        and w.owner is not None
                        and not w.chunks
                        and now - w.idle_since >= self.idle_s
                    ):
                        self._retire_locked(w)
                        reaped = True
                if reaped:
                    self._refill_locked()

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
                now = time.time()
                with self._lock:
                    for jid, attempt in started:
                        entry = self._jobs.get(jid)
                        if entry is not None and entry[1] is w:
                            if entry[2] is not None:
                                entry[2].started = True
                            notes.append(
                                {
                                    "job_id": jid,
                                    "attempt": attempt,
                                    "started": True,
                                    "started_at": now,
                                }
                            )
                push(notes)
                continue
            hello = msg.get("hello")
            if isinstance(hello, dict) and isinstance(hello.get("pid"), int):
                w.worker_pid = hello["pid"]
                continue
            if "error" in msg:
                sys.stderr.write(f"idds local worker {w.pid}: {msg['error']}\n")
        self._on_death(w)

    def _on_results(self, w: _Worker, results: list[dict[str, Any]]) -> list[dict[str, Any]]:
        if w.acct is not None:
            self._take_outputs(w, results)
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
            if w.owner is not None:
                pace = _pace(out)
                if pace is not None:
                    old = self._pace.get(w.owner)
                    self._pace[w.owner] = pace if old is None else 0.7 * old + 0.3 * pace
            # retire finished chunks (normally the oldest)
            freed = False
            while w.chunks and not w.chunks[0].ids:
                w.chunks.popleft()
                freed = True
            if freed and not w.chunks:
                w.idle_since = time.monotonic()
            if len(done) > _DONE_CAP:
                for k in list(itertools.islice(done, len(done) - _DONE_CAP // 2)):
                    del done[k]
            sends = self._dispatch_locked() if freed else []
        self._send(sends)
        self._deliver()
        return out

    def _take_outputs(self, w: _Worker, results: list[dict[str, Any]]) -> None:
        """Results of a worker under another account: its result blobs move into the cache
        (digest checked) and its logs are copied into the service's log directory; nothing
        in the account's area is followed through a symlink."""
        area, acct = self._area, w.acct
        assert area is not None and acct is not None
        for r in results:
            entry = self._jobs.get(r.get("job_id"))  # type: ignore[arg-type]
            if entry is None or entry[1] is not w:
                continue
            orig = entry[4]
            cache_dir = orig.get("result_dir")
            for key in ("blob", "error_blob"):
                sha = r.get(key)
                if not sha:
                    continue
                err = (
                    area.take_blob(acct, str(sha), cache_dir)
                    if cache_dir
                    else "the job has no result directory"
                )
                if err:
                    r.pop(key, None)
                    r.update(ok=False, error=err, exc_type="ResultError")
            r["log_path"] = None
            log_dir = orig.get("log_dir")
            if log_dir:
                name = f"job-{r['job_id']}.{r.get('attempt', 0)}.log"
                r["log_path"] = area.take_log(acct, os.path.basename(log_dir), name, log_dir)

    def _on_death(self, w: _Worker) -> None:
        try:
            rc = w.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            w.signal(signal.SIGKILL)
            rc = w.proc.wait()
        w.outq.put(None)
        # what it started (shell commands, their children) dies with it: no orphans
        _end_session(w)
        if w.retired:
            with self._lock:
                w.alive = False
                if self._workers[w.slot] is w:
                    self._workers[w.slot] = None
            return
        if rc < 0:
            why = f"worker process died (signal {-rc})"
        else:
            why = f"worker process died (exit code {rc})"
        report: list[dict[str, Any]] = []
        requeue: list[dict[str, Any]] = []
        if time.monotonic() - w.spawned_at < 1.0 and not self._closing:
            time.sleep(0.5)  # do not spin when workers cannot even start
        with self._lock:
            w.alive = False
            closing = self._closing
            if self._workers[w.slot] is w:
                self._workers[w.slot] = None
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
                    report.append(failed_result(jid, att, why, exc_type="WorkerDied", exit_code=rc))
            sends: list[tuple[_Worker, list[dict[str, Any]]]] = []
            if not closing:
                # the pool is whole again before failures are reported
                if requeue:
                    pq = self._pending.setdefault(w.owner or "", deque())
                    pq.extendleft(reversed(requeue))
                sends = self._dispatch_locked()
                self._refill_locked()
        if report:
            self._queue.push(report)
        self._send(sends)
        self._deliver()

    # ------------------------------------------------------------------ dispatch

    def _dispatch_locked(self) -> list[tuple[_Worker, list[dict[str, Any]]]]:
        """Assign queued specs to their owners' workers with free chunk slots (lock held);
        binds, starts or takes over workers for owners that need more."""
        if not self._pending or self._closing:
            return []
        sends: list[tuple[_Worker, list[dict[str, Any]]]] = []
        mine: dict[str, list[_Worker]] = {}
        for w in self._workers:
            if w is not None and w.alive and not w.retired and w.owner is not None:
                mine.setdefault(w.owner, []).append(w)
        if not any(not mine.get(o) for o in self._pending):
            for w in self._workers:  # no owner waits for a first worker: none is promised
                if w is not None:
                    w.draining = False
        # owners with the fewest workers first: they may take an idle one of another owner
        for owner in sorted(self._pending, key=lambda o: len(mine.get(o, ()))):
            pq = self._pending[owner]
            ws = mine.setdefault(owner, [])
            try:
                while pq and sum(1 for w in ws if not w.chunks) < len(pq):
                    got = self._acquire_locked(owner, ws, mine)
                    if got is None:
                        break
                    ws.append(got)
            except (ValueError, OSError) as exc:
                self._fail_queued_locked(owner, f"cannot start a worker for {owner!r}: {exc}")
                continue
            if ws:
                sends.extend(self._fill_locked(pq, ws, owner))
            if not pq:
                del self._pending[owner]
        return sends

    def _acquire_locked(
        self, owner: str, ws: list[_Worker], mine: dict[str, list[_Worker]]
    ) -> _Worker | None:
        """One more worker for ``owner``: an unbound one, a new one in a free slot, or, when
        another owner holds more workers than this one, a new one instead of its idlest."""
        acct = self._acct_for(owner)
        for w in self._workers:
            if (
                w is not None
                and w.alive
                and not w.retired
                and w.owner is None
                and w.acct == acct
                and not w.chunks
            ):
                w.owner = owner
                return w
        for slot, w in enumerate(self._workers):
            if w is None:
                self._workers[slot] = new = self._spawn(slot, owner, acct)
                return new
        victim: _Worker | None = None
        for other, theirs in mine.items():
            if other == owner or len(theirs) <= len(ws):
                continue
            for w in theirs:
                if not w.chunks and (victim is None or w.idle_since < victim.idle_since):
                    victim = w
        if victim is None:
            # Every worker of the owners ahead is busy: the one with the least queued
            # takes no more chunks (fair share: a user's first job waits for one chunk
            # of another's, not for the whole of their backlog) and is replaced when idle.
            busy = [
                w
                for other, theirs in mine.items()
                if other != owner and len(theirs) > len(ws)
                for w in theirs
            ]
            if not ws and not any(w.draining for w in busy) and busy:
                min(busy, key=lambda w: sum(len(c.ids) for c in w.chunks)).draining = True
            return None
        mine[victim.owner or ""].remove(victim)
        slot = victim.slot
        self._retire_locked(victim)
        self._workers[slot] = new = self._spawn(slot, owner, acct)
        return new

    def _fail_queued_locked(self, owner: str, why: str) -> None:
        for spec in self._pending.pop(owner, ()):
            jid = spec["job_id"]
            entry = self._jobs.pop(jid, None)
            self._done[jid] = None
            self._undelivered.append(
                failed_result(
                    jid, entry[0] if entry else spec.get("attempt", 0), why, exc_type="WorkerError"
                )
            )

    def _deliver(self) -> None:
        if self._undelivered:
            with self._lock:
                out, self._undelivered = self._undelivered, []
            self._queue.push(out)

    def _fill_locked(
        self, pending: deque[dict[str, Any]], workers: list[_Worker], owner: str
    ) -> list[tuple[_Worker, list[dict[str, Any]]]]:
        slots = sum(max(0, CHUNKS_PER_WORKER - len(w.chunks)) for w in workers)
        if not slots:
            return []
        pace = self._pace.get(owner)
        most = FIRST_CHUNK if pace is None else max(1, int(pace * CHUNK_S))
        size = max(
            1,
            min(self.batch, most, math.ceil(len(pending) / (len(workers) * CHUNKS_PER_WORKER))),
        )
        sends: list[tuple[_Worker, list[dict[str, Any]]]] = []
        jobs = self._jobs
        # fill the emptiest workers first, one round per chunk level
        for level in range(CHUNKS_PER_WORKER):
            for w in workers:
                if not pending:
                    return sends
                if len(w.chunks) != level or w.draining:
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
        if log_dir:
            specs = [s if s.get("log_dir") else {**s, "log_dir": log_dir} for s in specs]
        staged: list[tuple[dict[str, Any], dict[str, Any] | str]] | None = None
        if self._area is not None:  # isolation: what the account's worker reads and writes
            staged = []
            for spec in specs:
                try:
                    staged.append((spec, self._stage(spec)))
                except (ValueError, OSError) as exc:
                    staged.append((spec, f"cannot prepare the job for its account: {exc}"))
        failed: list[dict[str, Any]] = []
        with self._lock:
            if self._closing:
                raise RuntimeError("backend is closed")
            jobs = self._jobs
            pending = self._pending
            for orig, ready in staged if staged is not None else zip(specs, specs, strict=True):
                jid = int(orig["job_id"])
                if isinstance(ready, str):
                    self._done[jid] = None
                    failed.append(
                        failed_result(jid, orig.get("attempt", 0), ready, exc_type="WorkerError")
                    )
                    continue
                spec = ready
                jobs[jid] = [spec.get("attempt", 0), None, None, spec, orig]
                owner = spec.get("owner") or ""
                pq = pending.get(owner)
                if pq is None:
                    pq = pending[owner] = deque()
                pq.append(spec)
            sends = self._dispatch_locked()
        self._send(sends)
        if failed:
            self._queue.push(failed)
        self._deliver()

    def _stage(self, spec: dict[str, Any]) -> dict[str, Any]:
        """The spec as its account's worker sees it: run in the account's area, blobs
        copied there, results and logs written there (the service takes them back, see
        _take_outputs)."""
        area = self._area
        assert area is not None
        acct = self._acct_for(spec.get("owner") or "")
        assert acct is not None
        top = area.prepare(acct)
        # it runs in its account's area: not in the directory of the service or of whoever
        # submitted it, which belong to other accounts
        out = {**spec, "cwd": top}
        if spec.get("log_dir"):
            out["log_dir"] = os.path.join(top, "logs", os.path.basename(str(spec["log_dir"])))
        payload = spec.get("payload")
        if payload:
            p = area.stage(acct, payload)
            if payload.get("sandbox"):
                p["sandbox"] = area.stage(acct, payload["sandbox"])
            out["payload"] = p
        if spec.get("call"):
            out["call"] = area.stage(acct, spec["call"])
        if spec.get("result_dir"):
            out["result_dir"] = os.path.join(top, "results")
        return out

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
                for owner, pq in list(self._pending.items()):
                    left = deque(s for s in pq if s["job_id"] not in queued)
                    if left:
                        self._pending[owner] = left
                    else:
                        del self._pending[owner]
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
            return [w.pid for w in self._workers if w is not None and w.alive]

    def worker_owners(self) -> dict[int, str | None]:
        """``{pid: owner}`` of the live workers (None: not bound yet)."""
        with self._lock:
            return {w.pid: w.owner for w in self._workers if w is not None and w.alive}

    def close(self) -> None:
        with self._lock:
            if self._closing:
                return
            self._closing = True
            workers = [w for w in self._workers if w is not None]
            self._pending.clear()
            self._jobs.clear()
        self._stop.set()
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
            _end_session(w)
        for w in workers:
            if w.reader is not None and w.reader is not threading.current_thread():
                w.reader.join(timeout=2)
        self._queue.wake()

    def __del__(self) -> None:
        with contextlib.suppress(Exception):
            if not self._closing:
                self.close()
