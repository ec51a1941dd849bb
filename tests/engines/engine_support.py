"""What the engine tests know about each engine (kept out of conftest.py to import it by name)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from idds_jupyter.config import Config


@dataclass
class Engine:
    """One engine under test: how to configure the core for it and how to act on it."""

    name: str  # the test parameter
    backend: str  # Config.backend
    workdir: Path  # home of the core and the tests' files (jobs must be able to write there)
    options: dict[str, Any] = field(default_factory=dict)  # further Config overrides
    #: kill a running job from outside the engine, given what die_once recorded
    kill: Callable[[dict[str, Any]], None] = lambda info: None
    #: jobs of this runner the engine still queues or runs (after an abort: 0)
    active: Callable[[Any], int] = lambda runner: 0
    #: whether a job killed from outside comes back failed (so the core retries it);
    #: Dask instead reschedules the task itself on a fresh worker
    kill_fails_job: bool = True
    #: whether the engine tells when a job starts (Dask does not: jobs stay "submitted")
    reports_start: bool = True
    #: whether cancelling kills a running job (Dask cannot stop a running task: it finishes
    #: in the background, its result dropped)
    kills_running: bool = True
    #: jobs run as another user than this process (HTCondor's job user): what they read
    #: and write under the core's home (the FaaT cache) must be open to that user
    jobs_run_as_other_user: bool = False


def engine_config(engine: Engine, **kw: Any) -> Config:
    """The core's configuration for ``engine``: its home and SQLite store in its workdir."""
    opts = {
        "poll_interval": 0.5,
        "workers": 2,
        "batch_poll_interval": 0.5,
        "lock_ttl": 60.0,
        **engine.options,
        **kw,
    }
    work = engine.workdir
    return Config.load(
        None,
        home=work / "home",
        db_url=f"sqlite:///{work / 'idds.db'}",
        backend=engine.backend,
        **opts,
    )


def http_config(engine: Engine) -> Config:
    """``transfer: http``, with the core's home closed to everybody but this process's user.

    The batch directory (the scheduler's own files on the submit side: HTCondor's
    event log and transferred output) lives outside the home; the jobs get
    nothing of either: no path of the home reaches them.
    """
    extra: dict[str, Any] = {"transfer": "http"}
    if engine.backend != "panda":  # the PanDA stand-in's shared_dir is set by its fixture
        batch = engine.workdir / "batch"
        batch.mkdir(exist_ok=True)
        batch.chmod(0o777)  # HTCondor's shadow writes there as the job's user
        extra["shared_dir"] = str(batch)
    c = engine_config(engine, **extra)
    c.home.mkdir(parents=True, exist_ok=True)
    c.home.chmod(0o700)
    return c
