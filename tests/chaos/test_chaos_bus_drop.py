"""Half of the bus's events are lost: everything still finishes (events are hints, the store
is the truth, DESIGN §4).

The server (agents + REST API + stream) runs in this process on a real in-process
:class:`~idds_jupyter.bus.local.LocalBus` behind :class:`DroppingBus`, a shim that drops
every other event it is asked to publish. A job-level DAG, a FaaT ``.map`` (whose client
is told of results over the stream, fed by the same bus) and a server-steered HPO study
run on it.
"""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import pytest
from chaos_helpers import MAP_SCRIPT, STUDY_SCRIPT, audit, executions, size

from idds_jupyter.bus.base import Bus, Subscription
from idds_jupyter.bus.event import Event
from idds_jupyter.bus.local import LocalBus
from idds_jupyter.client import Client
from idds_jupyter.config import Config
from idds_jupyter.model.generators import layered_dag

DAG_JOBS = size(1_000, 10_000)
MAP_ITEMS = size(200, 1_000)
TRIALS = size(12, 40)
HAVE_OPTUNA = importlib.util.find_spec("optuna") is not None

pytestmark = pytest.mark.timeout(size(400, 2400))


class DroppingBus(Bus):
    """A real bus behind a shim that drops every other published event (50 %)."""

    def __init__(self, inner: Bus, every: int = 2) -> None:
        self.inner = inner
        self.every = every  # keep one event in ``every`` (0: drop them all)
        self._lock = threading.Lock()
        self._n = 0
        self.dropped = 0
        self.delivered = 0

    def publish(self, events: Sequence[Event]) -> None:
        kept = []
        with self._lock:
            for ev in events:
                self._n += 1
                if self.every and self._n % self.every == 1 % self.every:
                    kept.append(ev)
                else:
                    self.dropped += 1
            self.delivered += len(kept)
        if kept:
            self.inner.publish(kept)

    def subscribe(self, types: Iterable[str]) -> Subscription:
        return self.inner.subscribe(types)

    def close(self) -> None:
        self.inner.close()


def serve_on_dropping_bus(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, every: int
) -> tuple[Any, DroppingBus]:
    """A server (in this process) whose bus keeps one event in ``every`` (0: none)."""
    import idds_jupyter.bus as bus_module
    from idds_jupyter.api.server import start_server

    buses: list[DroppingBus] = []

    def make_dropping_bus(spec: str, engine: object = None) -> Bus:
        buses.append(DroppingBus(LocalBus(), every=every))
        return buses[-1]

    monkeypatch.setattr(bus_module, "make_bus", make_dropping_bus)
    cfg = Config.load(
        None,
        home=tmp_path / "home",
        db_url=f"sqlite:///{tmp_path / 'idds.db'}",
        workers=2,
        poll_interval=0.5,
    )
    handle = start_server(cfg, port=0)
    assert len(buses) == 1
    return handle, buses[0]


def test_half_the_events_dropped_everything_finishes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    handle, bus = serve_on_dropping_bus(tmp_path, monkeypatch, every=2)
    client = Client(handle.url, handle.token)
    record = tmp_path / "executions.txt"
    t0 = time.monotonic()
    try:
        wid = client.submit(
            layered_dag(
                DAG_JOBS, function="chaosfuncs:record", parameters={"path": str(record)}
            ).to_dict()
        )
        env = {**os.environ, "IDDS_URL": handle.url, "IDDS_TOKEN": handle.token}
        scripts = {"map": MAP_SCRIPT.format(n=MAP_ITEMS, timeout=300)}
        if HAVE_OPTUNA:
            scripts["hpo"] = STUDY_SCRIPT.format(n=TRIALS, timeout=300)
        procs = {}
        for name, src in scripts.items():
            path = tmp_path / f"{name}.py"
            path.write_text(textwrap.dedent(src))
            procs[name] = subprocess.Popen(
                [sys.executable, str(path)],
                env=env,
                cwd=tmp_path,
                text=True,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
            )
        outs = {}
        for name, proc in procs.items():
            out, err = proc.communicate(timeout=size(330, 2000))
            assert proc.returncode == 0, f"{name} script failed:\n{out}\n{err[-4000:]}"
            outs[name] = json.loads(out.strip().splitlines()[-1])
        assert client.wait_workflow(wid, timeout=size(300, 1800)) == "finished"
        engine = handle.ctx.orch.engine
        dag = audit(engine, wid)
    finally:
        client.shutdown()
        handle.stop()
    print(
        f"\nbus-drop: {bus.dropped} events dropped, {bus.delivered} delivered; DAG {DAG_JOBS} "
        f"jobs, FaaT map {MAP_ITEMS}, HPO {outs.get('hpo')}; {time.monotonic() - t0:.1f} s"
    )
    assert bus.dropped >= 10 and abs(bus.dropped - bus.delivered) <= 1
    assert dag == {
        "jobs": DAG_JOBS,
        "successes": DAG_JOBS,
        "min_success": 1,
        "max_success": 1,
        "min_release": 1,
        "max_release": 1,
        "finished": DAG_JOBS,
    }, dag
    ran = executions(record)
    assert len(ran) == DAG_JOBS and max(ran.values()) == 1
    assert outs["map"] == [x * x for x in range(MAP_ITEMS)]
    if HAVE_OPTUNA:
        assert outs["hpo"]["n"] == TRIALS and outs["hpo"]["complete"] == TRIALS, outs["hpo"]


def test_every_event_lost_a_map_still_returns(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """No event reaches the client (no result, no work or workflow end): the router's
    watch on quiet sinks fetches the results from the store after ``QUIET_FIRST`` s."""
    from idds_jupyter.faat.results import QUIET_FIRST

    handle, bus = serve_on_dropping_bus(tmp_path, monkeypatch, every=0)
    try:
        env = {**os.environ, "IDDS_URL": handle.url, "IDDS_TOKEN": handle.token}
        path = tmp_path / "map.py"
        path.write_text(textwrap.dedent(MAP_SCRIPT.format(n=20, timeout=120)))
        t0 = time.monotonic()
        proc = subprocess.run(
            [sys.executable, str(path)],
            env=env,
            cwd=tmp_path,
            capture_output=True,
            text=True,
            timeout=180,
        )
        took = time.monotonic() - t0
    finally:
        handle.stop()
    assert proc.returncode == 0, proc.stderr[-4000:]
    assert json.loads(proc.stdout.strip().splitlines()[-1]) == [x * x for x in range(20)]
    assert bus.delivered == 0 and bus.dropped > 0
    assert took < QUIET_FIRST + 60, took
