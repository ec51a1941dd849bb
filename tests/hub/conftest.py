"""One real JupyterHub for the module's tests (see hub_helpers), its iDDS service on PostgreSQL."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))

from hub_helpers import Hub  # noqa: E402


@pytest.fixture(scope="session")
def hub(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory, postgres: object
) -> Iterator[Hub]:
    db_url = postgres.create_database("idds_hub")  # type: ignore[attr-defined]
    h = Hub(tmp_path_factory.mktemp("hub"), db_url=db_url)
    try:
        yield h
    finally:
        h.stop()
        if request.session.testsfailed:  # the hub's and the service's log, for the failure
            print(f"\n--- the end of {h.log_path} ---\n{h.log_tail(150)}")
