"""The one error of the client: what the iDDS service answered, or the failure to reach it."""

from __future__ import annotations

__all__ = ["IddsError"]


class IddsError(Exception):
    """An error answered by the iDDS service (or the failure to reach it)."""

    def __init__(self, status: int, message: str, retry_after: float | None = None) -> None:
        self.status = status
        self.message = " ".join(str(message).split())
        # seconds the service asked to wait before trying again (503: database busy)
        self.retry_after = retry_after
        super().__init__(status, self.message)

    def __str__(self) -> str:
        return f"{self.status}: {self.message}" if self.status else self.message
