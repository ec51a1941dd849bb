"""The Loop concept: a group of works re-run iteration after iteration until a condition holds."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from .expression import Expression, expression

__all__ = ["Loop"]


@dataclass
class Loop:
    """Body ``works`` (names of works/conditions of the same workflow) repeated until ``until``.

    Iteration ``i`` of body work ``step`` of loop ``refine`` runs as instance
    ``refine[i].step``; ``until`` is evaluated in that iteration's scope (body
    names mean this iteration's instances, ``iteration`` is ``i`` and ``previous``
    maps body names to the previous iteration's instances). Hitting
    ``max_iterations`` ends the loop too, unconverged. Outside the loop a body
    name means its last iteration, and depending on it means depending on the loop.
    """

    name: str
    works: list[str]
    until: str
    max_iterations: int = 10
    depends_on: list[str] = field(default_factory=list)

    @property
    def expression(self) -> Expression:
        """The parsed ``until`` expression (raises ExpressionError if malformed)."""
        return expression(self.until)

    def to_dict(self) -> dict[str, Any]:
        d: dict[str, Any] = {
            "name": self.name,
            "works": list(self.works),
            "until": self.until,
            "max_iterations": self.max_iterations,
        }
        if self.depends_on:
            d["depends_on"] = list(self.depends_on)
        return d

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> Loop:
        return cls(
            name=d["name"],
            works=list(d.get("works") or []),
            until=d["until"],
            max_iterations=d.get("max_iterations", 10),
            depends_on=list(d.get("depends_on") or []),
        )
