"""Exponential backoff: the delay before the next try, doubled after each failure.

One helper for every retry loop — the agents' step loop, the client's push
channel reconnecting, the worker's calls to the job API. It imports nothing of
ours (nor anything outside the standard library), so the worker on a compute
node and the kernel's client can both use it.
"""

from __future__ import annotations

__all__ = ["Backoff"]


class Backoff:
    """Delays ``initial``, ``initial * factor``, … up to ``maximum``; :meth:`reset` after a success.

    >>> b = Backoff(0.5, maximum=2.0)
    >>> [b.next() for _ in range(4)]
    [0.5, 1.0, 2.0, 2.0]
    >>> b.reset(); b.delay
    0.5
    """

    __slots__ = ("initial", "maximum", "factor", "delay")

    def __init__(self, initial: float, maximum: float, factor: float = 2.0) -> None:
        if initial < 0 or maximum < initial or factor < 1:
            raise ValueError(
                f"backoff needs 0 <= initial <= maximum and factor >= 1, "
                f"got {initial}, {maximum}, {factor}"
            )
        self.initial = initial
        self.maximum = maximum
        self.factor = factor
        #: the delay to wait before the next try
        self.delay = initial

    def next(self) -> float:
        """The delay to wait now; the one after it grows by ``factor``, up to ``maximum``."""
        delay = self.delay
        self.delay = min(self.maximum, delay * self.factor)
        return delay

    def reset(self) -> None:
        """Back to ``initial``: the last try succeeded."""
        self.delay = self.initial
