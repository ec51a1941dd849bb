"""The template of a workflow: its format, how it is read, and its validation.

A template is the static part of a workflow (dict, YAML or JSON), validated
before anything runs: first against the JSON Schema ``workflow.schema.json``
(normalised first, so YAML 1.1's booleans do not break it), then semantically —
names, references, parameter types, placeholders, the raw insertion rule — with
messages naming the work and the field. The :class:`~.workflow.Workflow` class
reads and writes it through this module.
"""

from __future__ import annotations

import json
import re
from collections.abc import Container, Iterable, Mapping, Sequence
from functools import lru_cache
from importlib import resources
from typing import TYPE_CHECKING, Any

import yaml

from .analysis import BUILTIN_NAMES, Analysis, analyze
from .errors import TemplateError
from .parameter import RawExpression, placeholders
from .work import Work

if TYPE_CHECKING:
    from .workflow import Workflow

__all__ = ["load_schema", "normalize", "parse_json", "parse_yaml", "schema_check", "validate"]


@lru_cache(maxsize=1)
def load_schema() -> dict[str, Any]:
    """The JSON Schema of the template format, shipped inside the package."""
    text = resources.files("idds_jupyter.model").joinpath("workflow.schema.json").read_text("utf-8")
    schema: dict[str, Any] = json.loads(text)
    return schema


@lru_cache(maxsize=1)
def _validator() -> Any:
    import jsonschema

    schema = load_schema()
    cls = jsonschema.validators.validator_for(schema)
    cls.check_schema(schema)
    return cls(schema)


# -- reading ---------------------------------------------------------------------------------
def parse_yaml(text: str) -> Any:
    """The data of a YAML template: safe loading, aliases and nesting bounded (TemplateError if bad)."""
    from .limits import LimitError, load_yaml

    try:
        return load_yaml(text, what="the template")
    except yaml.YAMLError as exc:
        raise TemplateError(None, "yaml", f"not valid YAML: {exc}") from None
    except LimitError as exc:
        raise TemplateError(None, "yaml", str(exc)) from None


def parse_json(text: str) -> Any:
    """The data of a JSON template (TemplateError if bad)."""
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise TemplateError(None, "json", f"not valid JSON: {exc}") from None
    except RecursionError:  # '[[[[...' thousands deep: the decoder's recursion
        raise TemplateError(None, "json", "not valid JSON: nested too deeply") from None


def normalize(d: Mapping[str, Any]) -> dict[str, Any]:
    """Undo YAML 1.1 turning unquoted ``true:``/``false:`` keys of conditions into booleans."""
    out = dict(d)
    conds = out.get("conditions")
    if isinstance(conds, list):
        fixed = []
        for c in conds:
            if isinstance(c, Mapping):
                c = {
                    ("true" if k is True else "false" if k is False else k): v for k, v in c.items()
                }
            fixed.append(c)
        out["conditions"] = fixed
    works = out.get("works")
    if isinstance(works, list):
        out["works"] = [
            {**w, "workflow": normalize(w["workflow"])}
            if isinstance(w, Mapping) and isinstance(w.get("workflow"), Mapping)
            else w
            for w in works
        ]
    return out


@lru_cache(maxsize=1)
def _fast_validator() -> Any:
    import jsonschema_rs

    return jsonschema_rs.validator_for(load_schema())


def _non_string_key(node: Any, path: str = "") -> str | None:
    """Where the first key that is not a string is (``works[0].kwargs``, ``None`` key shown
    as its repr), or None."""
    stack: list[tuple[Any, str]] = [(node, path)]
    while stack:
        item, at = stack.pop()
        if isinstance(item, Mapping):
            for k, v in item.items():
                if not isinstance(k, str):
                    return f"{at}[{k!r}]" if at else f"[{k!r}]"
                stack.append((v, f"{at}.{k}" if at else k))
        elif isinstance(item, list):
            stack.extend((v, f"{at}[{i}]") for i, v in enumerate(item))
    return None


def schema_check(d: Mapping[str, Any]) -> None:
    """Valid templates pass the compiled (Rust) validator in microseconds; an invalid
    one is checked again by ``jsonschema``, whose best match names what is wrong."""
    try:
        if _fast_validator().is_valid(d):
            return
    except ValueError:  # a key that is not a string (YAML's ``? x`` or ``1: x``): JSON has none
        where = _non_string_key(d)
        raise TemplateError(
            None, where or "template", "keys must be strings (a template is JSON)"
        ) from None
    import jsonschema

    error = jsonschema.exceptions.best_match(_validator().iter_errors(d))
    if error is None:
        return
    path = list(error.absolute_path)
    work: str | None = None
    prefix = ""
    node: Any = d
    fld_parts: list[str] = []
    i = 0
    while i < len(path):
        key = path[i]
        if (
            key in ("works", "conditions", "loops")
            and i + 1 < len(path)
            and isinstance(path[i + 1], int)
        ):
            idx = path[i + 1]
            item = node[key][idx] if isinstance(node, Mapping) else None
            name = item.get("name") if isinstance(item, Mapping) else None
            label = name if isinstance(name, str) and name else f"{key}[{idx}]"
            work = prefix + label
            fld_parts = [f"conditions[{idx}]"] if key == "conditions" else []
            node = item
            i += 2
            if key == "works" and i < len(path) and path[i] == "workflow":
                prefix = work + "."
                node = node["workflow"] if isinstance(node, Mapping) else None
                i += 1
                if i == len(path):
                    fld_parts = ["workflow"]
            continue
        fld_parts.append(f"[{key}]" if isinstance(key, int) else str(key))
        node = node[key] if isinstance(node, Mapping | list) else None
        i += 1
    message = error.message
    if error.validator == "required":
        m = re.match(r"'([^']+)' is a required property", message)
        if m:
            fld_parts.append(m.group(1))
    elif error.validator == "additionalProperties":
        m = re.search(r"\('([^']+)'", message)
        if m:
            fld_parts.append(m.group(1))
            message = f"unknown field {m.group(1)!r}"
    fld = ".".join(fld_parts).replace(".[", "[") or "workflow"
    raise TemplateError(work, fld, message)


# -- semantic validation ---------------------------------------------------------------------
def _names(value: Any) -> set[str]:
    """The root names the placeholders of ``value`` read."""
    return {n for e in placeholders(value) for n in e.names}


def _raw_names(w: Work, chosen: set[str]) -> set[str]:
    """The names ``{x!raw}`` may read in ``w``'s command: ``chosen`` names, and work-local
    names (parameters, sweep keys) whose values are built only from chosen ones.

    A sweep resolved at run time (``kwargs_list: "{gen.result}"``) may bind any name,
    so it allows none.
    """
    if isinstance(w.kwargs_list, str):
        return set()
    items = w.kwargs_list or []
    local = set(w.parameters) | {k for item in items for k in item}
    ok = chosen - local
    ok |= {
        k
        for k, v in w.parameters.items()
        if _names(v) <= chosen and not any(k in item for item in items)
    }
    ok |= {
        k
        for k in local - set(w.parameters)
        if all(k in it and _names(it[k]) <= chosen for it in items)
    }
    return ok


def validate(
    wf: Workflow,
    qual: str,
    params: Mapping[str, Any] | None,
    only: Sequence[Work] | None = None,
    trusted: frozenset[str] | None = None,
) -> None:
    """Check ``wf``; with ``only`` (works of ``wf``), the per-work checks cover just those.

    Nothing here is O(all works) then: a run that grows one work at a time stays
    cheap to extend at its ten-thousandth work. ``trusted``: the parameters of a
    sub-workflow whose values the submitter chose (``{x!raw}`` may read only those).
    """
    _check_parameter_specs(wf, qual)
    checked = wf.works if only is None else only
    for w in checked:
        w.check(qual + w.name)
    an = analyze(wf, qual, remember=only is not None)
    bound = set(params) if params is not None else set(wf.defaults())
    bound |= {p.name for p in wf.parameter_specs}
    names = _Names(an, bound)
    # what the submitter chose: the only values ``{x!raw}`` may insert into a shell command
    chosen = (bound | {"params"}) if trusted is None else set(trusted)
    chosen = (chosen - set(an.kinds)) | {"job_index", "iteration"}
    for w in checked:
        who = qual + w.name
        _check_placeholders(w, who, names)
        _check_job_deps(w, who, an)
        raw_ok = _raw_names(w, chosen)
        _check_raw(w, who, raw_ok)
        if w.workflow is not None:
            _validate_sub_workflow(w, who, raw_ok)
    for i, c in enumerate(wf.conditions):
        for n in names.unbound(c.expression.names):
            raise TemplateError(
                qual + c.name, f"conditions[{i}].expr", f"unknown name {n!r} in {c.expr!r}"
            )
    for lp in wf.loops:
        for n in names.unbound(lp.expression.names):
            raise TemplateError(qual + lp.name, "until", f"unknown name {n!r} in {lp.until!r}")


def _check_parameter_specs(wf: Workflow, qual: str) -> None:
    """The parameters are a mapping; each declared once, its default of its declared type."""
    if not isinstance(wf.parameters, dict):
        raise TemplateError(
            qual.rstrip(".") or None, "parameters", "must be a mapping of names to default values"
        )
    seen: set[str] = set()
    for spec in wf.parameter_specs:
        if spec.name in seen:
            raise TemplateError(
                qual.rstrip(".") or None, f"parameters.{spec.name}", "declared twice"
            )
        seen.add(spec.name)
        if spec.name in wf.parameters:
            spec.check(wf.parameters[spec.name])
        elif spec.default is not None:
            spec.check(spec.default)
        else:
            spec.check(None)


class _Names:
    """The names a scope binds: its parameters, its elements and the built-in names."""

    def __init__(self, an: Analysis, bound: set[str]) -> None:
        self.an = an
        self.bound = bound

    def unbound(self, names: Iterable[str], local: Container[str] = ()) -> list[str]:
        return sorted(
            n
            for n in names
            if n not in local
            and n not in self.bound
            and n not in self.an.kinds
            and n not in BUILTIN_NAMES
        )


def _check_placeholders(w: Work, who: str, names: _Names) -> None:
    """Every placeholder of ``parameters``, ``command`` and ``kwargs_list`` reads bound names."""
    local = set(w.parameters)
    kl = w.kwargs_list
    dynamic_keys = isinstance(kl, str)
    if isinstance(kl, list):
        for item in kl:
            local |= set(item)
    for fld_name, value in (
        ("parameters", w.parameters),
        ("command", w.command),
        ("kwargs_list", w.kwargs_list),
    ):
        if value is None or dynamic_keys and fld_name != "kwargs_list":
            continue
        also = () if fld_name == "kwargs_list" else local
        for e in placeholders(value):
            for n in names.unbound(e.names, also):
                raise TemplateError(
                    who, fld_name, f"unbound parameter {n!r} in placeholder {{{e.text}}}"
                )


def _check_job_deps(w: Work, who: str, an: Analysis) -> None:
    """Job dependencies fit the job counts known before the run."""
    for i, jd in enumerate(w.job_deps):
        parent = an.works[jd.work]
        n_child, n_parent = w.fixed_job_count(), parent.fixed_job_count()
        if (
            jd.pattern == "one_to_one"
            and n_child is not None
            and n_parent is not None
            and n_child != n_parent
        ):
            raise TemplateError(
                who,
                f"job_deps[{i}]",
                f"one_to_one with {jd.work!r} needs equal job counts, got {n_child} and {n_parent}",
            )
        if jd.pattern == "explicit" and jd.map is not None:
            if n_child is not None and len(jd.map) != n_child:
                raise TemplateError(
                    who, f"job_deps[{i}].map", f"has {len(jd.map)} rows for {n_child} jobs"
                )
            if n_parent is not None and any(p >= n_parent for row in jd.map for p in row):
                raise TemplateError(
                    who,
                    f"job_deps[{i}].map",
                    f"parent index out of range: {jd.work!r} has {n_parent} jobs",
                )


def _check_raw(w: Work, who: str, raw_ok: set[str]) -> None:
    """``{x!raw}`` in a command reads only values the submitter chose."""
    if not isinstance(w.command, str):
        return
    for e in placeholders(w.command):
        bad = sorted(e.names - raw_ok) if isinstance(e, RawExpression) else []
        if bad:
            raise TemplateError(
                who,
                "command",
                (
                    f"{{{e.text}!raw}} reads {bad[0]!r}: raw (unquoted) insertion is allowed only for "
                    "workflow parameters the submitter chose, never for job results, files, "
                    "run-time sweeps or values built from them; drop '!raw' to have it quoted"
                ),
            )


def _validate_sub_workflow(w: Work, who: str, raw_ok: set[str]) -> None:
    """A sub-workflow is validated as its own scope, trusting the parameters built from chosen values."""
    assert w.workflow is not None
    inner_params = {**w.workflow.defaults(), **{k: None for k in w.parameters}}
    inner_ok = frozenset(
        k for k in inner_params if k not in w.parameters or _names(w.parameters[k]) <= raw_ok
    )
    if inner_ok >= set(inner_params):
        inner_ok |= {"params"}
    validate(w.workflow, who + ".", inner_params, trusted=inner_ok)
