"""``%idds export`` and ``%idds submit-notebook``: a notebook as a batch workflow, from a cell.

``%idds export NB.ipynb [--mode notebook|cells] [-o FILE] [--sweep K=V1,V2] [--group heading]``
prints (or writes) the template :mod:`idds_jupyter.export` makes; ``%idds submit-notebook NB.ipynb
[--mode …] [-p K=V] [--sweep …]`` submits it to the connected server and returns the run
(``run.wait()``, ``run.status()``). A mistake is one line (``UsageError``), naming the cell.
"""

from __future__ import annotations

from typing import Any

from IPython.core.error import UsageError

__all__ = ["export_notebook", "submit_notebook"]


def _parser(magics_module: Any, name: str, description: str) -> Any:
    p = magics_module._parser(name, description)
    p.add_argument("notebook", help="the notebook (.ipynb)")
    p.add_argument("--mode", choices=["notebook", "cells"], default="notebook")
    p.add_argument("--sweep", action="append", default=[], metavar="K=V1,V2")
    p.add_argument("--group", choices=["cell", "heading"], default="cell")
    return p


def _template(a: Any) -> dict[str, Any]:
    from idds_jupyter.export import export_template, parse_sweep
    from idds_jupyter.model import TemplateError

    try:
        return export_template(a.notebook, mode=a.mode, sweep=parse_sweep(a.sweep), group=a.group)
    except (TemplateError, ValueError, OSError) as exc:
        raise UsageError(f"{a.notebook}: {exc}") from None


def export_notebook(magics: Any, argv: list[str]) -> dict[str, Any] | None:
    """``%idds export``: the YAML printed, or written with ``-o``; the template is returned."""
    from idds_jupyter.export import to_yaml
    from idds_jupyter.kernel import magics as mod

    p = _parser(mod, "export", "A notebook as a workflow template (YAML).")
    p.add_argument("-o", "--output")
    a = p.parse_args(argv)
    tmpl = _template(a)
    text = to_yaml(tmpl)
    if a.output:
        with open(a.output, "w", encoding="utf-8") as fh:
            fh.write(text)
        print(f"wrote {a.output}: {len(tmpl['works'])} works, valid")
        return None
    print(text, end="")
    return None


def submit_notebook(magics: Any, argv: list[str]) -> Any:
    """``%idds submit-notebook``: export and submit; the :class:`~idds_jupyter.faat.workflow.Run`."""
    from idds_jupyter.faat.workflow import Run
    from idds_jupyter.kernel import magics as mod

    p = _parser(mod, "submit-notebook", "Submit a notebook as a workflow (exported on the fly).")
    p.add_argument("-p", "--param", action="append", default=[], metavar="K=V")
    p.add_argument("--backend")
    a = p.parse_args(argv)
    tmpl = _template(a)
    params = mod._params(a.param)
    extra = {"backend": a.backend} if a.backend else {}
    wid = magics._call(magics.client.submit, tmpl, params, **extra)
    print(
        f"submitted {a.notebook} as run {wid} ({a.mode} mode, "
        f"{len(tmpl['works'])} work{'s' if len(tmpl['works']) != 1 else ''})"
    )
    return Run(magics.client, wid, name=tmpl["name"])
