"""What the engine tests know about each engine (kept out of conftest.py to import it by name)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any


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
