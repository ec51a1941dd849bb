"""The core's settings as traitlets of ``IddsExtension``, and the configuration reference.

Every field of :class:`idds_jupyter.config.Config` becomes a configurable traitlet of the
same name (``c.IddsExtension.slurm_partition = "short"`` in ``jupyter_server_config.py``),
so a setting added to ``Config`` can be given in a Jupyter server without touching this
package. A traitlet left unset is ``None``: the setting then comes from the environment,
the YAML file or ``Config``'s default, as for ``idds-jupyter serve``.

The reference page, docs/configuration.md, is generated from the same fields
(:mod:`idds_jupyter_server.reference`).
"""

from __future__ import annotations

import json
from dataclasses import MISSING
from typing import Any

from traitlets import Bool, Dict, Enum, Float, Int, List, TraitType, Unicode

from idds_jupyter.config import Setting, settings

TRAITLET_CLASS = "IddsExtension"


def default_text(s: Setting) -> str:
    """A setting's default as the reference shows it."""
    if s.default is MISSING:
        return "computed (see description)"
    if s.default is None:
        return "none"
    if isinstance(s.default, tuple):
        return json.dumps(list(s.default))
    return json.dumps(s.default)


def _trait(s: Setting) -> TraitType[Any, Any]:
    help = f"{s.help} [YAML key {s.name}, env {s.env}; default {default_text(s)}]"
    kw: dict[str, Any] = {"default_value": None, "allow_none": True, "help": help}
    trait: TraitType[Any, Any]
    if s.choices:
        trait = Enum(list(s.choices), **kw)
    elif s.kind in ("str", "path"):
        trait = Unicode(**kw)
    elif s.kind == "int":
        trait = Int(**kw)
    elif s.kind == "float":
        trait = Float(**kw)
    elif s.kind == "bool":
        trait = Bool(**kw)
    elif s.kind == "list[str]":
        trait = List(Unicode(), **kw)
    elif s.kind == "list[dict]":
        trait = List(Dict(), **kw)
    elif s.kind == "dict":
        trait = Dict(**kw)
    else:  # Config's own check names the kinds a field may have
        raise TypeError(f"no traitlet for setting {s.name} of kind {s.kind}")
    return trait.tag(config=True)


def config_traits() -> dict[str, TraitType[Any, Any]]:
    """One configurable traitlet per :class:`Config` field, each ``None`` unless set."""
    return {s.name: _trait(s) for s in settings()}


def overrides(app: Any) -> dict[str, Any]:
    """The settings given as traitlets of ``app`` (those set: not ``None``)."""
    out = {}
    for s in settings():
        value = getattr(app, s.name)
        if value is not None:
            out[s.name] = value
    return out


def env_of(values: dict[str, Any]) -> dict[str, str]:
    """Settings as the environment variables that give them (for a child process)."""
    out = {}
    for s in settings():
        if s.name not in values:
            continue
        v = values[s.name]
        if s.kind == "list[str]":
            out[s.env] = ",".join(v)
        elif s.kind in ("list[dict]", "dict"):
            out[s.env] = json.dumps(list(v) if s.kind == "list[dict]" else dict(v))
        elif s.kind == "bool":
            out[s.env] = "1" if v else "0"
        else:
            out[s.env] = str(v)
    return out
