"""The Condition concept and the safe expression language it is written in.

Conditions are evaluated by the orchestrator on JSON data (results, parameters,
statuses). The server never runs user code, so expressions are parsed with
:func:`ast.parse` and interpreted node by node by a small walker here; nothing
is ever passed to ``eval``/``exec``/``compile``.
"""

from __future__ import annotations

import ast
import math
import operator
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any

from .errors import ExpressionError

__all__ = ["Condition", "Expression", "FUNCTIONS", "expression"]

#: Functions an expression may call, and only by these names.
FUNCTIONS: dict[str, Callable[..., Any]] = {
    "len": len,
    "min": min,
    "max": max,
    "abs": abs,
    "any": any,
    "all": all,
    "sum": sum,
    "round": round,
    "int": int,
    "float": float,
    "str": str,
    "bool": bool,
    "sorted": sorted,
}
_KEYWORDS: dict[str, frozenset[str]] = {
    "sorted": frozenset({"reverse"}),
    "min": frozenset({"default"}),
    "max": frozenset({"default"}),
}
#: Lowercase JSON spellings accepted as literals.
LITERAL_NAMES: dict[str, Any] = {"true": True, "false": False, "null": None}

_MAX_EXPONENT = 1000  # |exponent| above this is refused: no 10**10**10
_MAX_POWER_BITS = 100_000  # an integer power result may not exceed this many bits
_MAX_SEQUENCE = 1_000_000  # string/list repetition and concatenation size cap
_MAX_LENGTH = 10_000  # expression text size cap

_BINOPS: dict[type[ast.operator], Callable[[Any, Any], Any]] = {
    ast.Add: operator.add,
    ast.Sub: operator.sub,
    ast.Mult: operator.mul,
    ast.Div: operator.truediv,
    ast.FloorDiv: operator.floordiv,
    ast.Mod: operator.mod,
    ast.Pow: operator.pow,
}
_CMPOPS: dict[type[ast.cmpop], Callable[[Any, Any], Any]] = {
    ast.Eq: operator.eq,
    ast.NotEq: operator.ne,
    ast.Lt: operator.lt,
    ast.LtE: operator.le,
    ast.Gt: operator.gt,
    ast.GtE: operator.ge,
    ast.In: lambda a, b: a in b,
    ast.NotIn: lambda a, b: a not in b,
}
_UNARY: dict[type[ast.unaryop], Callable[[Any], Any]] = {
    ast.Not: operator.not_,
    ast.USub: operator.neg,
    ast.UAdd: operator.pos,
}
_CONSTANT_TYPES = (int, float, str, bool, type(None))


class Expression:
    """One parsed expression; refused at construction when it uses anything unsafe.

    ``names`` holds the root names it reads (``train`` in ``train.result.loss``),
    which the model uses to derive implicit dependencies and to find unbound names.
    """

    __slots__ = ("text", "_tree", "_lead", "names")

    def __init__(self, text: str) -> None:
        if not isinstance(text, str):
            raise ExpressionError(repr(text), "expression must be a string")
        self.text = text
        if len(text) > _MAX_LENGTH:
            raise ExpressionError(text[:80] + "...", f"expression longer than {_MAX_LENGTH} characters")
        self._lead = len(text) - len(text.lstrip())
        try:
            tree = ast.parse(text.strip(), mode="eval")
        except SyntaxError as exc:
            pos = exc.offset - 1 + self._lead if exc.offset else None
            raise ExpressionError(text, f"syntax error: {exc.msg}", pos) from None
        self._tree: ast.expr = tree.body
        names: set[str] = set()
        self._check(self._tree, names)
        self.names: frozenset[str] = frozenset(names)

    def __repr__(self) -> str:
        return f"Expression({self.text!r})"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Expression) and other.text == self.text

    def __hash__(self) -> int:
        return hash(self.text)

    # -- static checks -------------------------------------------------------------
    def _position(self, node: ast.AST) -> int | None:
        col = getattr(node, "col_offset", None)
        return None if col is None else col + self._lead

    def _refuse(self, node: ast.AST, reason: str) -> ExpressionError:
        return ExpressionError(self.text, reason, self._position(node))

    def _check(self, node: ast.AST, names: set[str]) -> None:
        """Walk the tree; refuse every node type not explicitly supported."""
        if isinstance(node, ast.Constant):
            if not isinstance(node.value, _CONSTANT_TYPES):
                raise self._refuse(node, f"unsupported literal {node.value!r}")
        elif isinstance(node, ast.Name):
            if node.id.startswith("_"):
                raise self._refuse(node, f"name {node.id!r} is not allowed (starts with '_')")
            if node.id in FUNCTIONS:
                # A whitelisted function may only be called, never passed around.
                raise self._refuse(node, f"function {node.id!r} may only be called")
            if node.id not in LITERAL_NAMES:
                names.add(node.id)
        elif isinstance(node, ast.List | ast.Tuple):
            for elt in node.elts:
                if isinstance(elt, ast.Starred):
                    raise self._refuse(elt, "unpacking (*) is not allowed")
                self._check(elt, names)
        elif isinstance(node, ast.Dict):
            for key, value in zip(node.keys, node.values, strict=True):
                if key is None:
                    raise self._refuse(value, "dict unpacking (**) is not allowed")
                self._check(key, names)
                self._check(value, names)
        elif isinstance(node, ast.Compare):
            for op in node.ops:
                if type(op) not in _CMPOPS:
                    raise self._refuse(node, f"operator {type(op).__name__} is not allowed")
            self._check(node.left, names)
            for comp in node.comparators:
                self._check(comp, names)
        elif isinstance(node, ast.BoolOp):
            for value in node.values:
                self._check(value, names)
        elif isinstance(node, ast.UnaryOp):
            if type(node.op) not in _UNARY:
                raise self._refuse(node, f"operator {type(node.op).__name__} is not allowed")
            self._check(node.operand, names)
        elif isinstance(node, ast.BinOp):
            if type(node.op) not in _BINOPS:
                raise self._refuse(node, f"operator {type(node.op).__name__} is not allowed")
            self._check(node.left, names)
            self._check(node.right, names)
        elif isinstance(node, ast.Attribute):
            if node.attr.startswith("_"):
                raise self._refuse(node, f"attribute {node.attr!r} is not allowed")
            self._check(node.value, names)
        elif isinstance(node, ast.Subscript):
            self._check(node.value, names)
            self._check(node.slice, names)
        elif isinstance(node, ast.Slice):
            for part in (node.lower, node.upper, node.step):
                if part is not None:
                    self._check(part, names)
        elif isinstance(node, ast.IfExp):
            self._check(node.test, names)
            self._check(node.body, names)
            self._check(node.orelse, names)
        elif isinstance(node, ast.Call):
            func = node.func
            if not isinstance(func, ast.Name) or func.id not in FUNCTIONS:
                what = ast.unparse(func)
                raise self._refuse(node, f"call of {what!r} is not allowed (allowed: {', '.join(FUNCTIONS)})")
            allowed_kw = _KEYWORDS.get(func.id, frozenset())
            for kw in node.keywords:
                if kw.arg is None or kw.arg not in allowed_kw:
                    raise self._refuse(node, f"keyword argument {kw.arg or '**'!r} is not allowed for {func.id}()")
                self._check(kw.value, names)
            for arg in node.args:
                if isinstance(arg, ast.Starred):
                    raise self._refuse(arg, "unpacking (*) is not allowed")
                self._check(arg, names)
        else:
            raise self._refuse(node, f"{type(node).__name__} is not allowed")

    # -- evaluation ----------------------------------------------------------------
    def evaluate(self, namespace: Mapping[str, Any]) -> Any:
        """Evaluate on JSON-like data; any data error becomes :class:`ExpressionError`."""
        try:
            return self._eval(self._tree, namespace)
        except ExpressionError:
            raise
        except RecursionError:
            raise ExpressionError(self.text, "expression nested too deeply") from None
        except (TypeError, ValueError, ArithmeticError, KeyError, IndexError, AttributeError) as exc:
            raise ExpressionError(self.text, f"{type(exc).__name__}: {exc}") from None

    def _fail(self, node: ast.AST, reason: str) -> ExpressionError:
        return ExpressionError(self.text, reason, self._position(node))

    def _eval(self, node: ast.expr, ns: Mapping[str, Any]) -> Any:
        if isinstance(node, ast.Constant):
            return node.value
        if isinstance(node, ast.Name):
            if node.id in LITERAL_NAMES:
                return LITERAL_NAMES[node.id]
            try:
                return ns[node.id]
            except KeyError:
                raise self._fail(node, f"unknown name {node.id!r}") from None
        if isinstance(node, ast.Attribute):
            base = self._eval(node.value, ns)
            if not isinstance(base, Mapping):
                raise self._fail(
                    node, f"cannot read {ast.unparse(node)!r}: {ast.unparse(node.value)!r} is {_kind(base)}, not a mapping"
                )
            try:
                return base[node.attr]
            except KeyError:
                raise self._fail(node, f"no key {node.attr!r} in {ast.unparse(node.value)!r} (reading {ast.unparse(node)!r})") from None
        if isinstance(node, ast.Subscript):
            base = self._eval(node.value, ns)
            key = self._eval(node.slice, ns) if not isinstance(node.slice, ast.Slice) else self._slice(node.slice, ns)
            if isinstance(base, Mapping):
                try:
                    return base[key]
                except (KeyError, TypeError):
                    raise self._fail(node, f"no key {key!r} in {ast.unparse(node.value)!r} (reading {ast.unparse(node)!r})") from None
            if isinstance(base, str | list | tuple):
                if isinstance(key, bool) or not isinstance(key, int | slice):
                    raise self._fail(node, f"index of {ast.unparse(node.value)!r} must be an integer, got {_kind(key)}")
                try:
                    return base[key]
                except IndexError:
                    raise self._fail(node, f"index {key!r} out of range for {ast.unparse(node.value)!r} of length {len(base)}") from None
            raise self._fail(node, f"cannot index {ast.unparse(node.value)!r}: it is {_kind(base)}")
        if isinstance(node, ast.BoolOp):
            if isinstance(node.op, ast.And):
                value: Any = True
                for sub in node.values:
                    value = self._eval(sub, ns)
                    if not value:
                        return value
                return value
            value = False
            for sub in node.values:
                value = self._eval(sub, ns)
                if value:
                    return value
            return value
        if isinstance(node, ast.Compare):
            left = self._eval(node.left, ns)
            for op, comp in zip(node.ops, node.comparators, strict=True):
                right = self._eval(comp, ns)
                try:
                    ok = _CMPOPS[type(op)](left, right)
                except TypeError as exc:
                    raise self._fail(node, f"cannot compare: {exc}") from None
                if not ok:
                    return False
                left = right
            return True
        if isinstance(node, ast.UnaryOp):
            operand = self._eval(node.operand, ns)
            try:
                return _UNARY[type(node.op)](operand)
            except TypeError as exc:
                raise self._fail(node, str(exc)) from None
        if isinstance(node, ast.BinOp):
            return self._binop(node, self._eval(node.left, ns), self._eval(node.right, ns))
        if isinstance(node, ast.IfExp):
            return self._eval(node.body, ns) if self._eval(node.test, ns) else self._eval(node.orelse, ns)
        if isinstance(node, ast.List):
            return [self._eval(e, ns) for e in node.elts]
        if isinstance(node, ast.Tuple):
            return tuple(self._eval(e, ns) for e in node.elts)
        if isinstance(node, ast.Dict):
            return {self._eval(k, ns): self._eval(v, ns) for k, v in zip(node.keys, node.values, strict=True) if k is not None}
        if isinstance(node, ast.Call):
            assert isinstance(node.func, ast.Name)
            fn = FUNCTIONS[node.func.id]
            args = [self._eval(a, ns) for a in node.args]
            kwargs = {kw.arg: self._eval(kw.value, ns) for kw in node.keywords if kw.arg}
            if fn is str:
                for a in args:
                    if isinstance(a, int) and not isinstance(a, bool) and a.bit_length() > 10_000:
                        raise self._fail(node, "integer too large to convert to str")
            try:
                return fn(*args, **kwargs)
            except (TypeError, ValueError, OverflowError) as exc:
                raise self._fail(node, f"{node.func.id}(): {exc}") from None
        raise self._fail(node, f"{type(node).__name__} is not allowed")  # pragma: no cover - refused by _check

    def _slice(self, node: ast.Slice, ns: Mapping[str, Any]) -> slice:
        parts = [None if p is None else self._eval(p, ns) for p in (node.lower, node.upper, node.step)]
        return slice(*parts)

    def _binop(self, node: ast.BinOp, left: Any, right: Any) -> Any:
        op = type(node.op)
        if op is ast.Pow:
            self._guard_pow(node, left, right)
        elif op is ast.Mult:
            self._guard_repeat(node, left, right)
        elif (
            op is ast.Add
            and isinstance(left, str | list | tuple)
            and isinstance(right, str | list | tuple)
            and len(left) + len(right) > _MAX_SEQUENCE
        ):
            raise self._fail(node, f"result longer than {_MAX_SEQUENCE}")
        try:
            return _BINOPS[op](left, right)
        except ZeroDivisionError:
            raise self._fail(node, "division by zero") from None
        except OverflowError:
            raise self._fail(node, "numeric overflow") from None
        except TypeError as exc:
            raise self._fail(node, str(exc)) from None

    def _guard_pow(self, node: ast.BinOp, base: Any, exp: Any) -> None:
        if isinstance(exp, int | float) and not isinstance(exp, bool) and abs(exp) > _MAX_EXPONENT:
            raise self._fail(node, f"exponent {exp!r} too large (limit {_MAX_EXPONENT})")
        big = isinstance(base, int) and isinstance(exp, int) and exp > 0 and abs(base) > 1
        if big and exp * math.log2(abs(base)) > _MAX_POWER_BITS:
            raise self._fail(node, "power result too large")

    def _guard_repeat(self, node: ast.BinOp, left: Any, right: Any) -> None:
        for seq, count in ((left, right), (right, left)):
            is_rep = isinstance(seq, str | list | tuple) and isinstance(count, int) and count > 0
            if is_rep and len(seq) * count > _MAX_SEQUENCE:
                raise self._fail(node, f"repetition result longer than {_MAX_SEQUENCE}")
        both_int = isinstance(left, int) and isinstance(right, int)
        if both_int and left.bit_length() + right.bit_length() > _MAX_POWER_BITS:
            raise self._fail(node, "product too large")


def _kind(value: Any) -> str:
    if value is None:
        return "null"
    return f"a {type(value).__name__}"


@lru_cache(maxsize=4096)
def expression(text: str) -> Expression:
    """Parse ``text`` once and reuse it: templates are planned again and again."""
    return Expression(text)


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
