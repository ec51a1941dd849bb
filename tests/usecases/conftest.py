"""Fixtures of the use-case tests: one real server per module (see usecase_helpers)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from usecase_helpers import server_on

from idds_jupyter.client import Client, set_client


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    handle = server_on(tmp_path_factory.mktemp("usecases"), workers=4)
    try:
        yield handle
    finally:
        handle.stop()


@pytest.fixture
def client(server: Any) -> Iterator[Client]:
    c = Client(server.url, server.token)
    old = set_client(c)
    try:
        yield c
    finally:
        set_client(old)
        c.shutdown()
