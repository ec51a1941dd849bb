"""The notebooks are tests (nbval): a real standalone iDDS server for their kernels.

The server starts when this directory is collected — before nbval starts the
notebooks' kernels, which find it through ``IDDS_URL``/``IDDS_TOKEN``.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Any

from idds_jupyter.api.server import start_server
from idds_jupyter.config import Config

_home = Path(tempfile.mkdtemp(prefix="idds-notebooks-"))
_handle: Any = start_server(
    Config.load(
        None, home=_home, db_url=f"sqlite:///{_home / 'idds.db'}", workers=2, poll_interval=0.5
    )
)
os.environ["IDDS_URL"] = _handle.url
os.environ["IDDS_TOKEN"] = _handle.token


def pytest_unconfigure(config: Any) -> None:
    _handle.stop()
