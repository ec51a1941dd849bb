"""What a notebook shows of a run, an HPO study or an active-learning loop.

The run, study and loop objects (:mod:`idds_jupyter.faat`, :mod:`idds_jupyter.hpo`,
:mod:`idds_jupyter.al`) build no widgets: they are displayed, or hand out a
:class:`View`, and IPython's display machinery turns either into the kernel's
live widget (:mod:`idds_jupyter.kernel.display` registers one formatter per type,
by name, so nothing here imports the kernel or ipywidgets). Outside a notebook a
view is its text.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

__all__ = ["VIEW_KINDS", "View"]

#: the kinds of view: a run's status and progress, its DAG, its HPO trials, its AL iterations
VIEW_KINDS = ("run", "dag", "hpo", "al")


@dataclass(frozen=True, eq=False)
class View:
    """A live view of run ``run_id`` through ``client``; ``options`` go to the widget
    (``direction``, ``work`` of an HPO view, ``metric`` of an AL view)."""

    kind: str
    client: Any
    run_id: int
    options: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.kind not in VIEW_KINDS:
            raise ValueError(f"unknown view kind {self.kind!r} (one of {', '.join(VIEW_KINDS)})")

    def __repr__(self) -> str:
        return f"<idds {self.kind} view of run {self.run_id}>"
