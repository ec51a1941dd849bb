"""The safe expression language that conditions, loops, policies and parameters are written in.

Expressions are evaluated by the orchestrator on JSON data (results, parameters,
statuses). The server never runs user code, so expressions are parsed with
:func:`ast.parse` and interpreted node by node by a small walker here; nothing
is ever passed to ``eval``/``exec``/``compile``. Each evaluation has a budget
(:class:`ExpressionLimits`).
"""

from __future__ import annotations

import ast
import math
import operator
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

from .errors import ExpressionError

__all__ = [
    "FUNCTIONS",
    "LIMITS",
    "LITERAL_NAMES",
    "Expression",
    "ExpressionLimits",
    "expression",
    "set_limits",
]

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
_MAX_LENGTH = 10_000  # expression text size cap
_MAX_NDIGITS = 1000  # round(x, n): |n| above this is refused (round(5, -10**9) computes 10**10**9)


@dataclass
class ExpressionLimits:
    """The budget of one evaluation; each refusal names its setting (``idds_jupyter.config``).

    ``max_steps``: work units — one per node evaluated, plus one per value (character
    or element, deep) that an operator or function reads or builds, ``n log n`` for
    ``sorted``. ``max_size``: the size (characters + elements, deep) of any value an
    expression builds with ``*``, ``+``, ``%``, ``str()``, literals, ``sorted()`` …, and
    of what a function is given. ``max_depth``: nesting of the expression's syntax.
    With the defaults no expression holds a thread for more than about 100 ms.
    """

    max_steps: int = 10_000_000
    max_size: int = 1_000_000
    max_depth: int = 100


#: the limits in force in this process (set from the configuration by the orchestrator)
LIMITS = ExpressionLimits()


def set_limits(
    max_steps: int | None = None, max_size: int | None = None, max_depth: int | None = None
) -> None:
    """Set this process's expression budget (``None`` keeps a value)."""
    if max_steps is not None:
        LIMITS.max_steps = int(max_steps)
    if max_size is not None:
        LIMITS.max_size = int(max_size)
    if max_depth is not None:
        LIMITS.max_depth = int(max_depth)
    expression.cache_clear()  # parsed under the old depth limit


# a %-format conversion: width and precision (``*`` takes them from the arguments)
_FORMAT = re.compile(r"%(?:\([^)]*\))?[-#0 +]*(\*|\d+)?(?:\.(\*|\d*))?[hlL]?(.)", re.S)

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
            raise ExpressionError(
                text[:80] + "...", f"expression longer than {_MAX_LENGTH} characters"
            )
        self._lead = len(text) - len(text.lstrip())
        try:
            tree = ast.parse(text.strip(), mode="eval")
        except SyntaxError as exc:
            pos = exc.offset - 1 + self._lead if exc.offset else None
            raise ExpressionError(text, f"syntax error: {exc.msg}", pos) from None
        except (RecursionError, MemoryError):
            raise ExpressionError(
                text,
                f"expression nested too deeply (limit expression_max_depth = {LIMITS.max_depth})",
            ) from None
        self._tree: ast.expr = tree.body
        names: set[str] = set()
        if _tree_depth(self._tree) > LIMITS.max_depth:
            raise ExpressionError(
                text,
                f"expression nested more than {LIMITS.max_depth} levels deep "
                f"(limit expression_max_depth = {LIMITS.max_depth})",
            )
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
                raise self._refuse(
                    node, f"call of {what!r} is not allowed (allowed: {', '.join(FUNCTIONS)})"
                )
            allowed_kw = _KEYWORDS.get(func.id, frozenset())
            for kw in node.keywords:
                if kw.arg is None or kw.arg not in allowed_kw:
                    raise self._refuse(
                        node, f"keyword argument {kw.arg or '**'!r} is not allowed for {func.id}()"
                    )
                self._check(kw.value, names)
            for arg in node.args:
                if isinstance(arg, ast.Starred):
                    raise self._refuse(arg, "unpacking (*) is not allowed")
                self._check(arg, names)
        else:
            raise self._refuse(node, f"{type(node).__name__} is not allowed")

    # -- evaluation ----------------------------------------------------------------
    def evaluate(self, namespace: Mapping[str, Any]) -> Any:
        """Evaluate on JSON-like data; any data error becomes :class:`ExpressionError`.

        The evaluation has a budget (:data:`LIMITS`): refused, with the setting named,
        before any operation that would exceed it.
        """
        try:
            return self._eval(self._tree, namespace, _Budget(LIMITS))
        except ExpressionError:
            raise
        except RecursionError:
            raise ExpressionError(self.text, "expression nested too deeply") from None
        except MemoryError:
            raise ExpressionError(self.text, "out of memory") from None
        except (
            TypeError,
            ValueError,
            ArithmeticError,
            KeyError,
            IndexError,
            AttributeError,
        ) as exc:
            raise ExpressionError(self.text, f"{type(exc).__name__}: {exc}") from None

    def _fail(self, node: ast.AST, reason: str) -> ExpressionError:
        return ExpressionError(self.text, reason, self._position(node))

    def _charge(self, b: _Budget, node: ast.AST, units: int) -> None:
        b.steps -= units
        if b.steps < 0:
            raise self._fail(
                node,
                f"expression exceeds its budget of {b.limits.max_steps} steps "
                f"(limit expression_max_steps)",
            )

    def _sized(self, b: _Budget, node: ast.AST, value: Any, what: str) -> int:
        """The size of ``value``, refused (naming ``what``) when over the size limit."""
        n = b.size(value)
        if n > b.limits.max_size:
            raise self._fail(
                node, f"{what} is of size over {b.limits.max_size} (limit expression_max_size)"
            )
        return n

    def _eval(self, node: ast.expr, ns: Mapping[str, Any], b: _Budget) -> Any:
        self._charge(b, node, 1)
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
            base = self._eval(node.value, ns, b)
            if not isinstance(base, Mapping):
                raise self._fail(
                    node,
                    f"cannot read {ast.unparse(node)!r}: {ast.unparse(node.value)!r} is {_kind(base)}, not a mapping",
                )
            try:
                return base[node.attr]
            except KeyError:
                raise self._fail(
                    node,
                    f"no key {node.attr!r} in {ast.unparse(node.value)!r} (reading {ast.unparse(node)!r})",
                ) from None
        if isinstance(node, ast.Subscript):
            base = self._eval(node.value, ns, b)
            key = (
                self._eval(node.slice, ns, b)
                if not isinstance(node.slice, ast.Slice)
                else self._slice(node.slice, ns, b)
            )
            if isinstance(base, Mapping):
                try:
                    return base[key]
                except (KeyError, TypeError):
                    raise self._fail(
                        node,
                        f"no key {key!r} in {ast.unparse(node.value)!r} (reading {ast.unparse(node)!r})",
                    ) from None
            if isinstance(base, str | list | tuple):
                if isinstance(key, bool) or not isinstance(key, int | slice):
                    raise self._fail(
                        node,
                        f"index of {ast.unparse(node.value)!r} must be an integer, got {_kind(key)}",
                    )
                if isinstance(key, slice):
                    self._charge(b, node, len(base))
                try:
                    return base[key]
                except IndexError:
                    raise self._fail(
                        node,
                        f"index {key!r} out of range for {ast.unparse(node.value)!r} of length {len(base)}",
                    ) from None
            raise self._fail(node, f"cannot index {ast.unparse(node.value)!r}: it is {_kind(base)}")
        if isinstance(node, ast.BoolOp):
            if isinstance(node.op, ast.And):
                value: Any = True
                for sub in node.values:
                    value = self._eval(sub, ns, b)
                    if not value:
                        return value
                return value
            value = False
            for sub in node.values:
                value = self._eval(sub, ns, b)
                if value:
                    return value
            return value
        if isinstance(node, ast.Compare):
            left = self._eval(node.left, ns, b)
            for op, comp in zip(node.ops, node.comparators, strict=True):
                right = self._eval(comp, ns, b)
                # comparing or searching containers and strings reads them
                if isinstance(op, ast.In | ast.NotIn):
                    self._charge(b, node, b.size(right))
                elif not (_is_scalar(left) and _is_scalar(right)):
                    self._charge(b, node, min(b.size(left), b.size(right)))
                try:
                    ok = _CMPOPS[type(op)](left, right)
                except TypeError as exc:
                    raise self._fail(node, f"cannot compare: {exc}") from None
                if not ok:
                    return False
                left = right
            return True
        if isinstance(node, ast.UnaryOp):
            operand = self._eval(node.operand, ns, b)
            try:
                return _UNARY[type(node.op)](operand)
            except TypeError as exc:
                raise self._fail(node, str(exc)) from None
        if isinstance(node, ast.BinOp):
            return self._binop(node, self._eval(node.left, ns, b), self._eval(node.right, ns, b), b)
        if isinstance(node, ast.IfExp):
            return (
                self._eval(node.body, ns, b)
                if self._eval(node.test, ns, b)
                else self._eval(node.orelse, ns, b)
            )
        if isinstance(node, ast.List | ast.Tuple | ast.Dict):
            if isinstance(node, ast.Dict):
                built: Any = {
                    self._eval(k, ns, b): self._eval(v, ns, b)
                    for k, v in zip(node.keys, node.values, strict=True)
                    if k is not None
                }
            else:
                items = [self._eval(e, ns, b) for e in node.elts]
                built = items if isinstance(node, ast.List) else tuple(items)
            self._charge(b, node, self._sized(b, node, built, "the literal"))
            return built
        if isinstance(node, ast.Call):
            assert isinstance(node.func, ast.Name)
            name = node.func.id
            fn = FUNCTIONS[name]
            args = [self._eval(a, ns, b) for a in node.args]
            kwargs = {kw.arg: self._eval(kw.value, ns, b) for kw in node.keywords if kw.arg}
            if fn is str:
                for a in args:
                    if isinstance(a, int) and not isinstance(a, bool) and a.bit_length() > 10_000:
                        raise self._fail(node, "integer too large to convert to str")
            if (
                fn is round
                and len(args) > 1
                and isinstance(args[1], int)
                and abs(args[1]) > _MAX_NDIGITS
            ):
                raise self._fail(
                    node, f"round(): ndigits {args[1]} out of range (limit {_MAX_NDIGITS})"
                )
            if fn is not len:  # len() reads nothing; the others read their arguments
                given = [*args, *kwargs.values()]
                # str() and sorted() build from them, and sum() of lists concatenates
                builds = (
                    fn is str or fn is sorted or (fn is sum and len(args) > 1 and _is_seq(args[1]))
                )
                size = (
                    self._sized(b, node, given, f"the argument of {name}()")
                    if builds
                    else b.size(given)
                )
                n = len(args[0]) if fn is sorted and args and hasattr(args[0], "__len__") else 0
                self._charge(b, node, size * max(1, n.bit_length()))
            try:
                return fn(*args, **kwargs)
            except (TypeError, ValueError, OverflowError) as exc:
                raise self._fail(node, f"{name}(): {exc}") from None
        raise self._fail(
            node, f"{type(node).__name__} is not allowed"
        )  # pragma: no cover - refused by _check

    def _slice(self, node: ast.Slice, ns: Mapping[str, Any], b: _Budget) -> slice:
        parts = [
            None if p is None else self._eval(p, ns, b) for p in (node.lower, node.upper, node.step)
        ]
        return slice(*parts)

    def _binop(self, node: ast.BinOp, left: Any, right: Any, b: _Budget) -> Any:
        op = type(node.op)
        if op is ast.Pow:
            self._guard_pow(node, left, right)
        elif op is ast.Mult:
            self._guard_repeat(node, left, right, b)
        elif op is ast.Add and _is_seq(left) and _is_seq(right):
            n = b.size(left) + b.size(right)
            if n > b.limits.max_size:
                raise self._fail(
                    node,
                    f"concatenation result of size {n} is over {b.limits.max_size} "
                    f"(limit expression_max_size)",
                )
            self._charge(b, node, n)
        elif op is ast.Mod and isinstance(left, str):
            self._guard_format(node, left, right, b)
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

    def _guard_repeat(self, node: ast.BinOp, left: Any, right: Any, b: _Budget) -> None:
        for seq, count in ((left, right), (right, left)):
            if _is_seq(seq) and isinstance(count, int) and count > 0:
                # deep: ['x' * 10**6] * 10**6 is a list of a million megabyte strings
                n = (b.size(seq) - 2) * count + 2  # the brackets or quotes once
                if n > b.limits.max_size:
                    raise self._fail(
                        node,
                        f"repetition result of size {n} is over "
                        f"{b.limits.max_size} (limit expression_max_size)",
                    )
                self._charge(b, node, n)
        both_int = isinstance(left, int) and isinstance(right, int)
        if both_int and left.bit_length() + right.bit_length() > _MAX_POWER_BITS:
            raise self._fail(node, "product too large")

    def _guard_format(self, node: ast.BinOp, fmt: str, args: Any, b: _Budget) -> None:
        """``'%0900000000d' % 0``: the widths and precisions count toward the result's size."""
        n = len(fmt) + b.size(args)
        for m in _FORMAT.finditer(fmt):
            width, precision = m.group(1), m.group(2)
            if width == "*" or precision == "*":
                raise self._fail(node, "'*' width or precision in % formatting is not allowed")
            n += int(width or 0) + int(precision or 0)
            if n > b.limits.max_size:
                break
        if n > b.limits.max_size:
            raise self._fail(
                node,
                f"%-formatting result of size over {b.limits.max_size} (limit expression_max_size)",
            )
        self._charge(b, node, n)


class _Budget:
    """What is left of one evaluation's budget; sizes of the values it has seen (by id)."""

    __slots__ = ("limits", "steps", "_sizes")

    def __init__(self, limits: ExpressionLimits) -> None:
        self.limits = limits
        self.steps = limits.max_steps
        self._sizes: dict[int, int] = {}

    def size(self, value: Any) -> int:
        """Characters + elements of ``value``, deep: about its length as text. Counting
        stops past the size limit, so measuring costs at most that much."""
        if isinstance(value, str):
            return len(value) + 2
        if not isinstance(value, list | tuple | dict):
            return _scalar_size(value)
        known = self._sizes.get(id(value))
        if known is not None:
            return known
        cap = self.limits.max_size
        total = 2
        todo: list[Any] = [value]
        while todo and total <= cap:
            v = todo.pop()
            items = [*v.keys(), *v.values()] if isinstance(v, dict) else v
            total += 3 * len(items) + 2  # a separator and a short value each
            # only strings, containers and ints can be long: the rest costs no Python loop
            for x in [
                x for x in items if type(x) in _LONG or (type(x) is int and not -_BIG < x < _BIG)
            ]:
                if type(x) is str:
                    total += len(x)
                elif type(x) is int:
                    total += x.bit_length() // 3
                elif id(x) in self._sizes:
                    total += self._sizes[id(x)]
                else:
                    todo.append(x)
                if total > cap:
                    break
        self._sizes[id(value)] = total
        return total


_LONG = frozenset({str, list, tuple, dict})
_BIG = 2**64  # ints below this print in at most 20 characters


def _scalar_size(value: Any) -> int:
    if isinstance(value, bool) or value is None:
        return 5
    if isinstance(value, int):
        return value.bit_length() // 3 + 2  # at least its decimal digits
    return 24  # float


def _is_scalar(value: Any) -> bool:
    return not isinstance(value, str | list | tuple | dict)


def _is_seq(value: Any) -> bool:
    return isinstance(value, str | list | tuple)


def _tree_depth(tree: ast.AST) -> int:
    """Nesting depth of a syntax tree, without recursion."""
    deepest = 0
    todo = [(tree, 1)]
    while todo:
        node, d = todo.pop()
        deepest = max(deepest, d)
        todo.extend((c, d + 1) for c in ast.iter_child_nodes(node))
    return deepest


def _kind(value: Any) -> str:
    if value is None:
        return "null"
    return f"a {type(value).__name__}"


@lru_cache(maxsize=4096)
def expression(text: str) -> Expression:
    """Parse ``text`` once and reuse it: templates are planned again and again."""
    return Expression(text)
