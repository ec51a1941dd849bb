"""Errors of the model: bad templates and bad expressions, each naming what is wrong."""

from __future__ import annotations


class TemplateError(ValueError):
    """A workflow template is invalid.

    ``work`` is the work/condition/loop name (qualified like ``sub.inner`` inside a
    sub-workflow) or None for the workflow level; ``field`` is the offending field.
    """

    def __init__(self, work: str | None, field: str, message: str) -> None:
        self.work = work
        self.field = field
        self.message = message
        super().__init__(str(self))

    def __str__(self) -> str:
        where = (
            f"work {self.work!r}, field {self.field!r}" if self.work else f"field {self.field!r}"
        )
        return f"{where}: {self.message}"

    def __reduce__(self) -> tuple[type[TemplateError], tuple[str | None, str, str]]:
        return (type(self), (self.work, self.field, self.message))


class ExpressionError(ValueError):
    """An expression of the safe expression language was refused or failed to evaluate.

    ``expression`` is the full text, ``position`` the 0-based column (or None) and
    ``reason`` what went wrong, so a user can find the mistake in a long condition.
    """

    def __init__(self, expression: str, reason: str, position: int | None = None) -> None:
        self.expression = expression
        self.reason = reason
        self.position = position
        super().__init__(str(self))

    def __str__(self) -> str:
        at = f" at position {self.position}" if self.position is not None else ""
        return f"{self.reason} in expression {self.expression!r}{at}"

    def __reduce__(self) -> tuple[type[ExpressionError], tuple[str, str, int | None]]:
        return (type(self), (self.expression, self.reason, self.position))
