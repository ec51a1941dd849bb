"""The agents' child process of a Jupyter server (``agents = process``, the default):
started with the server, serving the extension's REST API's runs, restarted when it is
killed (its runs go on), gone with the server, no orphan left. The in-process mode
(``agents = thread``) is the server of test_jupyter_conventions.py."""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

import psutil
from jupyter_helpers import JupyterServer

SLOW = (
    "name: slow\nworks:\n  - {name: a, function: 'idds_jupyter.worker.job:sleep', "
    "kwargs_list: [{seconds: 1}, {seconds: 1}]}\n"
    "  - {name: b, function: 'idds_jupyter.worker.job:noop', depends_on: [a]}\n"
)
CHILD_MODULE = "idds_jupyter.agents.supervised"


def agents_children(server: JupyterServer) -> list[psutil.Process]:
    out = []
    for p in psutil.Process(server.proc.pid).children(recursive=True):
        try:
            if CHILD_MODULE in p.cmdline():
                out.append(p)
        except psutil.NoSuchProcess:
            pass
    return out


def wait_for(pred, timeout: float, what: str):  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = pred()
        if value:
            return value
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}")


def wait_run(server: JupyterServer, wid: int, timeout: float = 60) -> str:
    def ended() -> str | None:
        status = server.api("GET", f"requests/{wid}").json()["status"]
        return status if status in ("finished", "failed", "subfinished", "aborted") else None

    return str(wait_for(ended, timeout, f"run {wid} to end"))


def alive(pids: list[int]) -> list[int]:
    out = []
    for pid in pids:
        try:
            if psutil.Process(pid).status() != psutil.STATUS_ZOMBIE:
                out.append(pid)
        except psutil.NoSuchProcess:
            pass
    return out


def test_agents_child_is_supervised_and_leaves_no_orphans(tmp_path: Path) -> None:
    # lock_ttl: the jobs a killed child held are reclaimed within seconds
    server = JupyterServer(tmp_path, args=("--IddsExtension.lock_ttl=3",))
    family: list[int] = []
    try:
        (child,) = wait_for(lambda: agents_children(server), 30, "the agents child")
        assert child.pid != server.proc.pid
        # the extension's REST API, served by the server, runs through the child's agents
        wid = server.api("POST", "requests", json={"yaml": SLOW}).json()["id"]

        def running() -> bool:
            counts = server.api("GET", f"requests/{wid}").json()["works"][0]["jobs"]
            return bool(counts.get("running"))

        wait_for(running, 30, "the slow jobs to run")
        family = [child.pid] + [p.pid for p in child.children(recursive=True)]
        assert len(family) > 1  # the child and its local workers
        os.kill(child.pid, signal.SIGKILL)
        (second,) = wait_for(
            lambda: [p for p in agents_children(server) if p.pid != child.pid],
            30,
            "a new agents child",
        )
        # the dead child's workers see their parent gone and exit (worker/pool.py)
        assert wait_for(lambda: not alive(family), 10, "the dead child's workers to exit")
        assert wait_run(server, wid) == "finished"  # its run goes on in the new child
        family = [second.pid] + [p.pid for p in second.children(recursive=True)]
    finally:
        server.stop()
    assert server.proc.returncode is not None
    assert wait_for(lambda: not alive(family), 10, "the child to stop with the server")
