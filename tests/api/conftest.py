"""A real API server (agents + tornado) in this process, and tokens for three users."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))

from api_helpers import Served, _serve  # noqa: E402


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    """One sqlite-backed server shared by a module's tests (fast)."""
    tmp = tmp_path_factory.mktemp("api")
    s = _serve(tmp / "home", f"sqlite:///{tmp / 'idds.db'}")
    try:
        yield s
    finally:
        s.handle.stop()


@pytest.fixture
def served_db(tmp_path: Path, db_url: str) -> Iterator[Served]:
    """A server on each database (sqlite and the real PostgreSQL)."""
    s = _serve(tmp_path / "home", db_url)
    try:
        yield s
    finally:
        s.handle.stop()
