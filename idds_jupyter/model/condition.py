"""The Condition concept: a run-time branch of a workflow.

A Condition is evaluated by the orchestrator on JSON data (results, parameters,
statuses) with the safe expression language of :mod:`idds_jupyter.model.expression`;
the works it enables run next, the others are recorded as skipped.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from .expression import Expression, expression

__all__ = ["Condition"]


@dataclass
class Condition:
    """A run-time branch: when ``expr`` is true the ``true`` names are enabled, else ``false``.

    Targets are names of works, nested conditions or loops in the same scope; the
    names not enabled are recorded as skipped so the DAG shows the road not taken.
    """

    name: str
    expr: str
    true: list[str] = field(default_factory=list)
    false: list[str] = field(default_factory=list)

    @property
    def expression(self) -> Expression:
        """The parsed expression (raises :class:`ExpressionError` if malformed)."""
        return expression(self.expr)

    def evaluate(self, namespace: Mapping[str, Any]) -> bool:
        """Evaluate the condition to a bool."""
        return bool(self.expression.evaluate(namespace))

    def targets(self) -> Sequence[str]:
        """All names this condition enables or disables."""
        return [*self.true, *self.false]

    def to_dict(self) -> dict[str, Any]:
        d: dict[str, Any] = {"name": self.name, "expr": self.expr}
        if self.true:
            d["true"] = list(self.true)
        if self.false:
            d["false"] = list(self.false)
        return d

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> Condition:
        return cls(
            name=d["name"],
            expr=d["expr"],
            true=list(d.get("true") or []),
            false=list(d.get("false") or []),
        )
