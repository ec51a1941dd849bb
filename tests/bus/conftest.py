"""Fixtures of the bus tests: databases for the db bus, a ZeroMQ broker on loopback."""

from __future__ import annotations

import itertools
import os
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy.engine import Engine, make_url

from idds_jupyter.bus.zmqbus import ZmqBroker
from idds_jupyter.store.engine import make_engine
from idds_jupyter.store.tables import metadata

_counter = itertools.count()


@pytest.fixture(params=["sqlite", "postgresql"])
def bus_db_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """A SQLite file; or a fresh database on the session's real PostgreSQL."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'bus.db'}"
        return
    url = request.getfixturevalue("postgres").url  # the real PostgreSQL of the test session
    admin = make_engine(url, isolation_level="AUTOCOMMIT")
    name = f"idds_bus_{os.getpid()}_{next(_counter)}"
    with admin.connect() as conn:
        conn.exec_driver_sql(f'DROP DATABASE IF EXISTS "{name}"')
        conn.exec_driver_sql(f'CREATE DATABASE "{name}"')
    try:
        yield make_url(url).set(database=name).render_as_string(hide_password=False)
    finally:
        with admin.connect() as conn:
            conn.exec_driver_sql(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        admin.dispose()


@pytest.fixture
def bus_engine(bus_db_url: str) -> Iterator[Engine]:
    engine = make_engine(bus_db_url)
    metadata.create_all(engine)
    try:
        yield engine
    finally:
        engine.dispose()


@pytest.fixture
def broker() -> Iterator[ZmqBroker]:
    with ZmqBroker("tcp://127.0.0.1:*", "tcp://127.0.0.1:*") as b:
        yield b
