"""A real standalone iDDS server (agents + REST API, local backend) for the FaaT tests."""

from __future__ import annotations

import textwrap
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    from idds_jupyter.api.server import start_server
    from idds_jupyter.config import Config

    tmp = tmp_path_factory.mktemp("faat")
    config = Config.load(
        None, home=tmp / "home", db_url=f"sqlite:///{tmp}/idds.db", workers=2, poll_interval=0.5
    )
    handle = start_server(config)
    try:
        yield handle
    finally:
        handle.stop()


@pytest.fixture
def run_script(server: Any, tmp_path: Path) -> Any:
    """Run a Python script in a new process, pointed at the test server; returns its stdout."""
    import os
    import subprocess
    import sys

    def run(source: str, timeout: float = 120) -> str:
        path = tmp_path / "script.py"
        path.write_text(textwrap.dedent(source))
        env = {**os.environ, "IDDS_URL": server.url, "IDDS_TOKEN": server.token}
        proc = subprocess.run(
            [sys.executable, str(path)],
            env=env,
            cwd=tmp_path,
            capture_output=True,
            text=True,
            timeout=timeout,
        )
        assert proc.returncode == 0, f"script failed:\n{proc.stdout}\n{proc.stderr}"
        return proc.stdout

    return run
