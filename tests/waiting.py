"""The tests' one way to wait: poll a condition until it holds, never a fixed sleep.

``wait_for(predicate, timeout, interval, message)`` returns the predicate's first
truthy value (so a test can wait for and read a state in one step) and fails the
test with ``message`` and the last value seen when ``timeout`` passes first.
``holds_for(predicate, duration, ...)`` is its counterpart for "nothing happens":
the predicate must hold at every poll during ``duration`` seconds.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any, TypeVar

T = TypeVar("T")


def wait_for(
    predicate: Callable[[], T | None],
    timeout: float = 30.0,
    interval: float = 0.05,
    message: str = "condition",
) -> T:
    """Poll ``predicate`` every ``interval`` s until it returns a truthy value; return it.

    Raises ``AssertionError`` naming ``message`` (and the last value) after ``timeout`` s.
    """
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() >= deadline:
            raise AssertionError(f"{message}: not met within {timeout:g} s (last: {value!r})")
        time.sleep(interval)


def holds_for(
    predicate: Callable[[], Any],
    duration: float,
    interval: float = 0.05,
    message: str = "condition",
) -> None:
    """Check ``predicate`` every ``interval`` s for ``duration`` s: it must hold each time."""
    deadline = time.monotonic() + duration
    while True:
        value = predicate()
        if not value:
            raise AssertionError(f"{message}: stopped holding (got {value!r})")
        if time.monotonic() >= deadline:
            return
        time.sleep(interval)


__all__ = ["holds_for", "wait_for"]
