"""Backend policy: site rules that choose where works run when they do not say.

A work's own ``backend`` wins, then its workflow's; otherwise the first rule
whose ``when`` holds picks the backend, else the configured default::

    backend: slurm
    backend_policy:
      - when: "kind == 'function' and mean_wall_s < 1"   # short functions stay local
        backend: local
      - when: "cores >= 16"
        backend: htcondor

``when`` is written in the same safe expression language as conditions, over
the facts below. ``mean_wall_s`` and ``runs`` are measured: the mean run time
and the number of finished jobs of the same function so far (``None`` and 0
before its first run). A rule whose expression cannot be evaluated on a work
(``None < 1``) does not match it.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from .errors import ExpressionError
from .expression import Expression, expression

__all__ = ["BackendPolicy", "FACTS", "Rule"]

#: The names a rule may use.
FACTS = ("kind", "function", "n_jobs", "cores", "memory_mb", "timeout_s", "mean_wall_s", "runs")


@dataclass(frozen=True)
class Rule:
    when: Expression
    backend: str


class BackendPolicy:
    """Ordered rules; :meth:`choose` returns the backend of the first that holds."""

    def __init__(self, rules: Sequence[Mapping[str, Any]] = ()) -> None:
        self.rules: list[Rule] = []
        for i, r in enumerate(rules):
            where = f"backend_policy[{i}]"
            if not isinstance(r, Mapping) or set(r) != {"when", "backend"}:
                raise ValueError(
                    f"{where}: a rule is a mapping with exactly 'when' and 'backend', got {r!r}"
                )
            if not isinstance(r["backend"], str) or not r["backend"]:
                raise ValueError(f"{where}.backend: must be a backend name, got {r['backend']!r}")
            try:
                when = expression(str(r["when"]))
            except ExpressionError as exc:
                raise ValueError(f"{where}.when: {exc}") from None
            unknown = sorted(when.names - set(FACTS))
            if unknown:
                raise ValueError(
                    f"{where}.when: unknown name {unknown[0]!r}; a rule may use {', '.join(FACTS)}"
                )
            self.rules.append(Rule(when, r["backend"]))

    def __bool__(self) -> bool:
        return bool(self.rules)

    @property
    def backends(self) -> list[str]:
        return [r.backend for r in self.rules]

    @property
    def measured(self) -> bool:
        """Whether a rule reads the measured facts (the store is asked only then)."""
        return any(r.when.names & {"mean_wall_s", "runs"} for r in self.rules)

    def choose(self, facts: Mapping[str, Any]) -> str | None:
        for r in self.rules:
            try:
                if r.when.evaluate(facts):
                    return r.backend
            except (ExpressionError, TypeError, ValueError, ArithmeticError):
                continue
        return None
