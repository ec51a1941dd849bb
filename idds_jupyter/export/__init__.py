"""Notebook → batch workflow: whole-notebook mode and cell-graph mode.

:func:`export_template` reads a notebook and returns the template (a dict, or
YAML text with :func:`to_yaml`) that ``idds-jupyter run``/``submit`` run with no
notebook server: ``mode="notebook"`` (:mod:`.notebook`, papermill's convention)
or ``mode="cells"`` (:mod:`.cells`, a DAG of its cells). The jobs run
:mod:`.runtime` on the worker. Importing this package imports neither nbclient
nor the service.
"""

from __future__ import annotations

from typing import Any

__all__ = ["MODES", "export_template", "parse_sweep", "to_yaml"]

MODES = ("notebook", "cells")


def export_template(
    path: str,
    mode: str = "notebook",
    sweep: list[dict[str, Any]] | None = None,
    group: str = "cell",
    name: str | None = None,
    kernel: str | None = None,
) -> dict[str, Any]:
    """The workflow template of the notebook at ``path``, checked against the schema."""
    from idds_jupyter.model import Workflow

    if mode == "notebook":
        from idds_jupyter.export.notebook import notebook_template

        tmpl = notebook_template(path, sweep=sweep, name=name, kernel=kernel)
    elif mode == "cells":
        from idds_jupyter.export.cells import cells_template

        if sweep:
            raise ValueError(
                "--sweep is for whole-notebook mode; in cell-graph mode tag a "
                "cell idds:map=VAR to fan it out"
            )
        tmpl = cells_template(path, group=group, name=name)
    else:
        raise ValueError(f"mode must be one of {', '.join(MODES)}, got {mode!r}")
    Workflow.from_dict(tmpl)  # validates: a TemplateError names the work and field
    return tmpl


def parse_sweep(items: list[str]) -> list[dict[str, Any]]:
    """``["seed=1,2,3", "lr=0.1,0.2"]`` → the cross product, one dict per job."""
    import itertools

    from idds_jupyter.model.parameter import parse_assignments

    axes: list[list[dict[str, Any]]] = []
    for item in items:
        key, sep, values = item.partition("=")
        if not sep or not key.strip():
            raise ValueError(f"--sweep {item!r}: expected NAME=V1,V2,...")
        axes.append([parse_assignments([f"{key.strip()}={v}"]) for v in values.split(",")])
    return (
        [dict(kv for d in combo for kv in d.items()) for combo in itertools.product(*axes)]
        if axes
        else []
    )


def to_yaml(tmpl: dict[str, Any]) -> str:
    """Readable YAML: keys in the template's order, multi-line sources as blocks."""
    import yaml

    class _Dumper(yaml.SafeDumper):
        pass

    def _str(dumper: yaml.SafeDumper, data: str) -> yaml.ScalarNode:
        style = "|" if "\n" in data and not any(c in data for c in "\t\r") else None
        return dumper.represent_scalar("tag:yaml.org,2002:str", data, style=style)

    _Dumper.add_representer(str, _str)
    return yaml.dump(
        tmpl,
        Dumper=_Dumper,
        sort_keys=False,
        default_flow_style=None,
        allow_unicode=True,
        width=100,
    )
