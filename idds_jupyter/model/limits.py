"""Limits on hostile input, checked before the work is done: YAML, JSON nesting, job counts.

* :func:`load_yaml` reads a template with PyYAML's safe loader, after a first pass
  over its events (PyYAML's parser is a state machine, not recursive) that refuses
  more than ``max_aliases`` alias uses, nesting deeper than ``max_depth`` and more
  than ``max_nodes`` values once aliases are expanded: a 400-byte alias bomb is
  refused after reading 400 bytes, never expanded.
* :func:`check_depth` refuses JSON-like data nested deeper than a limit, without
  recursion.
* :func:`count_jobs` counts the jobs a template declares (``n_jobs``, ``kwargs_list``
  items, one per plain work) from the raw mapping, before anything is built.

Every refusal is a :class:`LimitError` (a ``ValueError``) naming the setting.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import yaml

__all__ = ["RUNTIME", "LimitError", "RuntimeLimits", "check_depth", "count_jobs", "load_yaml"]

#: PyYAML's safe loader, its C version when built (the same documents, ten times faster)
_Loader: Any = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


@dataclass
class RuntimeLimits:
    """Limits checked while a run is planned (set from the configuration by the orchestrator):
    a sweep resolved at run time (``kwargs_list: "{gen.result}"``) may give at most
    ``max_jobs_per_work`` jobs (0: no limit), else its work fails naming the setting."""

    max_jobs_per_work: int = 50_000


#: the limits in force in this process
RUNTIME = RuntimeLimits()


class LimitError(ValueError):
    """Input over a configured limit; ``limit`` names the setting, ``value`` its value."""

    def __init__(self, limit: str, value: int, message: str) -> None:
        self.limit = limit
        self.value = value
        super().__init__(f"{message} (limit {limit} = {value})")


def load_yaml(
    text: str,
    *,
    max_nodes: int = 1_000_000,
    max_depth: int = 64,
    max_aliases: int = 100,
    what: str = "YAML",
) -> Any:
    """``yaml.safe_load(text)`` once the text is known to stay within the limits."""
    sizes: dict[str, int] = {}  # anchor -> values it stands for (aliases expanded)
    stack: list[list[Any]] = []  # open collections: [anchor, values so far]
    done = aliases = 0  # values of completed documents; alias uses
    in_open = 0  # values in the open collections (the sum of their sizes)
    for event in yaml.parse(text, Loader=_Loader):
        if isinstance(event, yaml.AliasEvent):
            aliases += 1
            if aliases > max_aliases:
                raise LimitError(
                    "max_yaml_aliases",
                    max_aliases,
                    f"{what} uses more than {max_aliases} aliases (*name)",
                )
            if event.anchor not in sizes:
                if any(a == event.anchor for a, _ in stack):
                    raise LimitError(
                        "max_template_nodes",
                        max_nodes,
                        f"{what} has a recursive alias *{event.anchor}",
                    )
                continue  # undefined: safe_load says so
            n = sizes[event.anchor]
        elif isinstance(event, yaml.ScalarEvent):
            n = 1
            if event.anchor is not None:
                sizes[event.anchor] = 1
        elif isinstance(event, yaml.SequenceStartEvent | yaml.MappingStartEvent):
            stack.append([event.anchor, 1])
            in_open += 1
            if len(stack) > max_depth:
                raise LimitError(
                    "max_json_depth", max_depth, f"{what} is nested deeper than {max_depth} levels"
                )
            continue
        elif isinstance(event, yaml.SequenceEndEvent | yaml.MappingEndEvent):
            anchor, n = stack.pop()
            in_open -= n
            if anchor is not None:
                sizes[anchor] = n
        else:
            continue
        if stack:
            stack[-1][1] += n
            in_open += n
        else:
            done += n
        if done + in_open > max_nodes:
            raise LimitError(
                "max_template_nodes",
                max_nodes,
                f"{what} holds more than {max_nodes} values (aliases expanded)",
            )
    return yaml.load(text, Loader=_Loader)  # noqa: S506 - a safe loader


def check_depth(data: Any, max_depth: int, what: str = "request body") -> None:
    """Refuse ``data`` (JSON-like) nested deeper than ``max_depth`` lists/objects."""
    todo: list[tuple[Any, int]] = [(data, 1)]
    while todo:
        value, depth = todo.pop()
        if isinstance(value, Mapping):
            children: Any = value.values()
        elif isinstance(value, list | tuple):
            children = value
        else:
            continue
        if depth > max_depth:
            raise LimitError(
                "max_json_depth", max_depth, f"{what} is nested deeper than {max_depth} levels"
            )
        todo.extend((c, depth + 1) for c in children if isinstance(c, Mapping | list | tuple))


def count_jobs(works: Any) -> dict[str, int]:
    """Jobs each work of a template's ``works`` list declares (by name; sweeps resolved at
    run time, datasets and sub-workflows count 0 here, a plain work 1)."""
    out: dict[str, int] = {}
    if not isinstance(works, list):
        return out
    for i, w in enumerate(works):
        if not isinstance(w, Mapping):
            continue
        name = str(w.get("name") or f"#{i}")
        kl, n = w.get("kwargs_list"), w.get("n_jobs")
        if (
            w.get("workflow") is not None
            or w.get("input_dataset") is not None
            or isinstance(kl, str)
        ):
            count = 0
        elif isinstance(kl, list):
            count = len(kl)
        elif isinstance(n, int) and not isinstance(n, bool):
            count = max(n, 0)
        else:
            count = 1
        out[name] = out.get(name, 0) + count
    return out
