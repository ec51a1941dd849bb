from __future__ import annotations

import os
from pathlib import Path

import pytest

HERE = Path(__file__).parent


@pytest.fixture(autouse=True)
def _worker_path(monkeypatch: pytest.MonkeyPatch) -> None:
    """Worker processes import the test job functions from this directory.

    A function pickled from a test module is unpickled by reference: the worker
    imports the module, hence also what it imports from ``tests/`` (``waiting``
    through ``helpers``), so both directories go on the workers' ``PYTHONPATH``.
    """
    monkeypatch.setenv(
        "PYTHONPATH",
        os.pathsep.join(
            p for p in (str(HERE), str(HERE.parent), os.environ.get("PYTHONPATH", "")) if p
        ),
    )
