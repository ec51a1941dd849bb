"""The Parameter concept: declared workflow inputs and ``{placeholder}`` substitution.

Placeholders hold full expressions of the safe expression language
(``{seed * 2}``, ``{gen.result.x}``). A string that is exactly one placeholder
keeps the JSON type of its value, so ``kwargs_list: "{gen.result}"`` yields a
list; placeholders mixed with text are formatted with ``str``. ``{{``/``}}`` are
literal braces, as in :meth:`str.format`.
"""

from __future__ import annotations

import json
from collections.abc import Collection, Mapping
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

from .errors import ExpressionError, TemplateError
from .expression import Expression, expression

__all__ = [
    "PARAMETER_TYPES",
    "RAW_SUFFIX",
    "Parameter",
    "RawExpression",
    "escape",
    "literal",
    "parse_bool",
    "parse_template",
    "placeholders",
    "substitute",
    "substitute_partial",
]

Part = str | Expression


@lru_cache(maxsize=8192)
def parse_template(text: str) -> tuple[Part, ...]:
    """Split ``text`` into literal strings and placeholder expressions.

    Braces inside a placeholder may nest (dict literals) and may appear inside
    quoted strings, so a small scanner finds the closing brace.
    """
    parts: list[Part] = []
    buf: list[str] = []
    i, n = 0, len(text)
    while i < n:
        ch = text[i]
        if ch == "{":
            if i + 1 < n and text[i + 1] == "{":
                buf.append("{")
                i += 2
                continue
            end = _closing_brace(text, i)
            if buf:
                parts.append("".join(buf))
                buf = []
            inner = text[i + 1 : end]
            raw = inner.rstrip().endswith(RAW_SUFFIX)
            if raw:
                inner = inner.rstrip()[: -len(RAW_SUFFIX)]
            if not inner.strip():
                raise ExpressionError(text, "empty placeholder '{}'", i)
            try:
                parts.append(RawExpression(inner.strip()) if raw else expression(inner.strip()))
            except ExpressionError as exc:
                pos = None if exc.position is None else exc.position + i + 1
                raise ExpressionError(text, exc.reason, pos) from None
            i = end + 1
        elif ch == "}":
            if i + 1 < n and text[i + 1] == "}":
                buf.append("}")
                i += 2
                continue
            raise ExpressionError(text, "single '}' (write '}}' for a literal brace)", i)
        else:
            buf.append(ch)
            i += 1
    if buf:
        parts.append("".join(buf))
    return tuple(parts)


#: ``{expr!raw}``: insert the value into a string ``command`` unquoted (see :mod:`.shell`).
RAW_SUFFIX = "!raw"


class RawExpression(Expression):
    """A placeholder written ``{expr!raw}``: in a string ``command`` its value is shell
    text, not a quoted word. Elsewhere it substitutes like ``{expr}``."""

    __slots__ = ()

    def __eq__(self, other: object) -> bool:
        return type(other) is RawExpression and other.text == self.text

    def __hash__(self) -> int:
        return hash((RAW_SUFFIX, self.text))


def _closing_brace(text: str, start: int) -> int:
    depth = 0
    quote: str | None = None
    i = start
    while i < len(text):
        ch = text[i]
        if quote:
            if ch == "\\":
                i += 2
                continue
            if ch == quote:
                quote = None
        elif ch in "'\"":
            quote = ch
        elif ch == "{":
            depth += 1
        elif ch == "}":
            depth -= 1
            if depth == 0:
                return i
        i += 1
    raise ExpressionError(text, "unterminated placeholder (write '{{' for a literal brace)", start)


def escape(text: str) -> str:
    """Make ``text`` literal inside a template."""
    return text.replace("{", "{{").replace("}", "}}")


def literal(value: Any) -> Any:
    """``value`` (str, list, dict, nested) with every string escaped (:func:`escape`): data,
    such as a trial's parameters, that :func:`substitute` gives back unchanged."""
    if isinstance(value, str):
        return escape(value)
    if isinstance(value, list | tuple):
        return [literal(v) for v in value]
    if isinstance(value, Mapping):
        return {k: literal(v) for k, v in value.items()}
    return value


def placeholders(value: Any) -> list[Expression]:
    """All placeholder expressions in ``value`` (recursing into lists and dict values)."""
    found: list[Expression] = []
    _collect(value, found)
    return found


def _collect(value: Any, found: list[Expression]) -> None:
    if isinstance(value, str):
        found.extend(p for p in parse_template(value) if isinstance(p, Expression))
    elif isinstance(value, list | tuple):
        for v in value:
            _collect(v, found)
    elif isinstance(value, Mapping):
        for v in value.values():
            _collect(v, found)


def substitute(value: Any, namespace: Mapping[str, Any]) -> Any:
    """Resolve every placeholder in ``value`` (str, list, dict, nested) from ``namespace``."""
    if isinstance(value, str):
        parts = parse_template(value)
        if len(parts) == 1 and isinstance(parts[0], Expression):
            return parts[0].evaluate(namespace)
        return "".join(p if isinstance(p, str) else _format(p.evaluate(namespace)) for p in parts)
    if isinstance(value, list | tuple):
        return [substitute(v, namespace) for v in value]
    if isinstance(value, Mapping):
        return {k: substitute(v, namespace) for k, v in value.items()}
    return value


def substitute_partial(text: str, namespace: Mapping[str, Any], defer: Collection[str]) -> str:
    """Resolve what can be resolved now and return a template for the rest.

    Placeholders reading a name in ``defer`` (per-job names such as ``job_index``)
    or a name missing from ``namespace`` are kept; resolved values and literal
    text are escaped, so the result can be passed to :func:`substitute` later.
    """
    out: list[str] = []
    for part in parse_template(text):
        if isinstance(part, str):
            out.append(escape(part))
        elif any(name in defer or name not in namespace for name in part.names):
            out.append(
                "{" + part.text + (RAW_SUFFIX if isinstance(part, RawExpression) else "") + "}"
            )
        else:
            out.append(escape(_format(part.evaluate(namespace))))
    return "".join(out)


def _format(value: Any) -> str:
    """Text as is; lists, dicts, booleans and null as JSON, so a command can parse them back."""
    if isinstance(value, str):
        return value
    if isinstance(value, (list, dict, bool)) or value is None:
        return json.dumps(value, separators=(",", ":"))
    return str(value)


#: Declared parameter types and the Python types they accept.
PARAMETER_TYPES: dict[str, tuple[type, ...]] = {
    "int": (int,),
    "float": (int, float),
    "str": (str,),
    "bool": (bool,),
    "list": (list, tuple),
    "dict": (dict,),
}
_TRUE = {"true", "yes", "1", "on"}
_FALSE = {"false", "no", "0", "off"}
_MISSING: Any = object()


@dataclass
class Parameter:
    """A declared workflow parameter: a name, a default, an optional type, a description.

    Declaring a type lets bad submissions fail before anything runs, with a
    message naming the parameter.
    """

    name: str
    default: Any = None
    type: str | None = None
    description: str = ""
    required: bool = False

    @property
    def field(self) -> str:
        return f"parameters.{self.name}"

    def to_dict(self) -> dict[str, Any]:
        """This declaration as an item of a template's ``parameter_specs``."""
        d: dict[str, Any] = {"name": self.name}
        if self.default is not None:
            d["default"] = self.default
        if self.type is not None:
            d["type"] = self.type
        if self.description:
            d["description"] = self.description
        if self.required:
            d["required"] = True
        return d

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> Parameter:
        return cls(
            name=d["name"],
            default=d.get("default"),
            type=d.get("type"),
            description=d.get("description", ""),
            required=d.get("required", False),
        )

    def check(self, value: Any) -> None:
        """Raise :class:`TemplateError` unless ``value`` already has the declared type."""
        if self.type is None or value is None:
            return
        if self.type not in PARAMETER_TYPES:
            raise TemplateError(
                None,
                self.field,
                f"unknown type {self.type!r} (one of {', '.join(PARAMETER_TYPES)})",
            )
        ok = isinstance(value, PARAMETER_TYPES[self.type])
        if self.type in ("int", "float") and isinstance(value, bool):
            ok = False
        if not ok:
            raise TemplateError(
                None, self.field, f"expected {self.type}, got {type(value).__name__} {value!r}"
            )

    def coerce(self, value: Any = _MISSING) -> Any:
        """Convert ``value`` (or the default) to the declared type, or raise :class:`TemplateError`.

        Strings from a command line or a form (``"3"``, ``"true"``) are converted.
        """
        if value is _MISSING:
            if self.required:
                raise TemplateError(None, self.field, "required parameter has no value")
            value = self.default
        if self.type is None or value is None:
            return value
        if self.type not in PARAMETER_TYPES:
            raise TemplateError(
                None,
                self.field,
                f"unknown type {self.type!r} (one of {', '.join(PARAMETER_TYPES)})",
            )
        try:
            converted = _convert(self.type, value)
        except (TypeError, ValueError):
            raise TemplateError(
                None, self.field, f"expected {self.type}, got {type(value).__name__} {value!r}"
            ) from None
        self.check(converted)
        return converted


def _convert(kind: str, value: Any) -> Any:
    if kind == "int":
        if isinstance(value, bool):
            raise TypeError
        if isinstance(value, float):
            if not value.is_integer():
                raise ValueError
            return int(value)
        return int(value) if isinstance(value, str) else value
    if kind == "float":
        if isinstance(value, bool):
            raise TypeError
        return float(value) if isinstance(value, str | int) else value
    if kind == "bool":
        return parse_bool(value) if isinstance(value, str) else value
    if kind == "list" and isinstance(value, tuple):
        return list(value)
    return value


def parse_bool(text: str) -> bool:
    """``true/yes/1/on`` or ``false/no/0/off`` (any case) from a form, a command line or a
    query string; ValueError otherwise."""
    low = text.strip().lower()
    if low in _TRUE:
        return True
    if low in _FALSE:
        return False
    raise ValueError(f"not a boolean: {text!r}")


def parse_assignments(items: list[str]) -> dict[str, Any]:
    """``["seed=3", "xs=[1, 2]", "name=run a"]`` → typed values (YAML scalars): for the
    command line's ``--param`` and the magics' ``--param``."""
    import yaml

    out: dict[str, Any] = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise ValueError(f"--param {item!r}: expected KEY=VALUE")
        out[key.strip()] = yaml.safe_load(value)
    return out
