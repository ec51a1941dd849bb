"""The agents' child process: the core's agents run beside the Jupyter server, not in it.

A Jupyter server with the extension (``agents = process``, the default) starts
``python -m idds_jupyter.agents.supervised`` — the same runner as
``idds-jupyter agents`` — and keeps it alive: if it dies it is started again
(after a short backoff), and it is stopped with the server. The agents then
never hold the server's interpreter (its GIL, its garbage collector), so
Jupyter's own API and the extension's REST handlers stay responsive while a
big DAG runs. The two talk through the store and the event bus (a ZeroMQ
broker in the server, ``Config.bus``).

No orphans: the child leads its own process group (its local workers are in it),
so whatever is left of a dead child is killed with the group before the next
one starts (its pool workers leave on their own when their parent is gone); the
child also stops when the server dies (:mod:`idds_jupyter.agents.supervised`).
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Mapping, Sequence

from idds_jupyter.agents.supervised import PARENT_ENV

log = logging.getLogger("idds_jupyter_server.supervisor")

#: seconds before a dead child is started again, doubling up to MAX_BACKOFF while it
#: keeps dying young (a child that lived STABLE_AFTER seconds starts the count afresh)
FIRST_BACKOFF = 0.5
MAX_BACKOFF = 30.0
STABLE_AFTER = 60.0


class AgentsSupervisor:
    """Starts the agents' child, restarts it when it dies, stops it (and its group)."""

    def __init__(
        self,
        env: Mapping[str, str],
        argv: Sequence[str] = (),
        stop_timeout: float = 30.0,
    ) -> None:
        self.env = {**env, PARENT_ENV: str(os.getpid())}
        self.argv = [sys.executable, "-m", "idds_jupyter.agents.supervised", *argv]
        self.stop_timeout = stop_timeout
        self.proc: subprocess.Popen[bytes] | None = None
        self.restarts = 0  # children started after the first died
        self._stopping = threading.Event()
        self._started = threading.Event()
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None

    @property
    def pid(self) -> int | None:
        return self.proc.pid if self.proc is not None else None

    def start(self) -> AgentsSupervisor:
        """Start the child; a thread waits on it and restarts it (that thread forks every
        child, so the child's parent-death signal follows the supervisor, not a request)."""
        self._thread = threading.Thread(target=self._watch, name="idds-agents-supervisor")
        self._thread.daemon = True
        self._thread.start()
        self._started.wait(30)
        return self

    def _spawn(self) -> subprocess.Popen[bytes]:
        return subprocess.Popen(self.argv, env=self.env, start_new_session=True)

    def _watch(self) -> None:
        backoff = FIRST_BACKOFF
        while not self._stopping.is_set():
            with self._lock:
                if self._stopping.is_set():
                    break
                self.proc = proc = self._spawn()
            self._started.set()
            log.info("idds-jupyter: agents child started, pid %d", proc.pid)
            born = time.monotonic()
            code = proc.wait()
            _kill_group(proc.pid)  # its workers, left by a child that died hard
            if self._stopping.is_set():
                break
            backoff = FIRST_BACKOFF if time.monotonic() - born > STABLE_AFTER else backoff
            log.error(
                "idds-jupyter: the agents child (pid %d) exited with %s; restarting in %.1fs",
                proc.pid,
                code,
                backoff,
            )
            if self._stopping.wait(backoff):
                break
            backoff = min(backoff * 2, MAX_BACKOFF)
            self.restarts += 1

    def stop(self) -> None:
        """SIGTERM the child (its runner stops its agents and workers), SIGKILL its group
        after ``stop_timeout``. Idempotent; blocks until it is gone."""
        with self._lock:
            self._stopping.set()
            proc = self.proc
        if proc is not None and proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                proc.terminate()
            try:
                proc.wait(self.stop_timeout)
            except subprocess.TimeoutExpired:
                log.warning("idds-jupyter: agents child %d did not stop: killed", proc.pid)
        if proc is not None:
            _kill_group(proc.pid)
            proc.wait()
        if self._thread is not None:
            self._thread.join(5)


def _kill_group(pgid: int) -> None:
    """SIGKILL what is left of a process group (the child leads its own)."""
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, signal.SIGKILL)


__all__ = ["AgentsSupervisor"]
