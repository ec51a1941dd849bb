"""Fixtures of the use-case tests: one real server per module (see usecase_helpers)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from usecase_helpers import server_on


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    handle = server_on(tmp_path_factory.mktemp("usecases"), workers=4)
    try:
        yield handle
    finally:
        handle.stop()
