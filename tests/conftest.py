"""Shared fixtures: a real PostgreSQL for the session, a fresh store per test on each database."""

from __future__ import annotations

import itertools
import os
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

sys.path.insert(0, str(Path(__file__).parent))

from postgres import PostgresServer  # noqa: E402

from idds_jupyter.client import Client, set_client  # noqa: E402

_counter = itertools.count()


@pytest.fixture(scope="session")
def postgres() -> Iterator[PostgresServer]:
    pg = PostgresServer().start()
    os.environ["IDDS_TEST_PG_URL"] = pg.url
    try:
        yield pg
    finally:
        pg.stop()


@pytest.fixture(params=["sqlite", "postgresql"])
def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """A fresh, empty database URL: a SQLite file, or a new database on the real PostgreSQL."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'idds.db'}"
    pg: PostgresServer = request.getfixturevalue("postgres")
    return pg.create_database(f"t{os.getpid()}_{next(_counter)}")


@pytest.fixture
def sqlite_url(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'idds.db'}"


@pytest.fixture
def pg_url(postgres: PostgresServer) -> str:
    return postgres.create_database(f"t{os.getpid()}_{next(_counter)}")


@pytest.fixture
def client(server: Any) -> Iterator[Client]:
    """A client of the directory's ``server`` fixture, also the process-wide default meanwhile."""
    c = Client(server.url, server.token)
    old = set_client(c)
    try:
        yield c
    finally:
        set_client(old)
        c.shutdown()
