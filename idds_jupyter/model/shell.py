"""Shell safety of ``command`` templates: placeholder values are quoted, never parsed.

A string ``command`` runs under ``/bin/sh -c``. Each ``{placeholder}`` value
(workflow parameters, sweep keys, file names, upstream job results) is inserted
as one shell word — bare when it is a plain word (``5``, ``a/b.txt``), otherwise
single-quoted — so no character of it (``'``, ``"``, ``$(…)``,
backticks, ``;``, newlines, spaces, globs) is ever read as shell syntax: the
command receives the value verbatim.

Where the author wrote a quote around the placeholder the value stays literal
too: inside ``'…'`` the insertion closes the author's quote, adds the quoted
word and reopens it (``'{x}'`` → ``''…''``); inside ``"…"`` likewise with ``"``.
Contexts where a quoted word would not stay one word — right after ``$`` or an
unquoted backslash, inside backticks, ``${…}``, ``$((…))``, ``$'…'``, a comment,
a here-document, a ``case`` inside ``$(…)`` — are refused with a
:class:`TemplateError`: pass the value as an argument instead, or use a list
``command`` (argv, no shell).

Quoting cannot help where bash itself evaluates text as arithmetic or as a
variable name (``[[ … -eq … ]]``, ``((…))``, ``$((…))``, ``let``, ``declare``,
``typeset``, ``local``, ``read``: ``a[$(cmd)]`` runs ``cmd`` even when quoted):
in a command that uses one of these, a value that is not a plain word is
refused when the job is rendered.

``{expr!raw}`` inserts the value as shell text, unquoted. The template validator
allows it only for values the submitter chose (declared workflow parameters and
literal work parameters), never for job results, files or run-time sweeps.

A list ``command`` is an argv: each element is substituted (as text) and no
shell runs, so no quoting is needed.
"""

from __future__ import annotations

import re
from collections.abc import Collection, Mapping
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

from .errors import TemplateError
from .expression import Expression
from .parameter import (
    RawExpression,
    _format,
    escape,
    parse_template,
    substitute,
    substitute_partial,
)

__all__ = ["check_command", "format_command", "quote", "render_command"]

# frames of the shell lexer
_TOP, _CMD, _SQ, _DQ, _BQ, _PARAM, _ARITH, _ANSI = (
    "top",
    "$(…)",
    "'…'",
    '"…"',
    "backticks",
    "${…}",
    "$((…))",
    "$'…'",
)
_WHAT = {
    _BQ: "inside backticks",
    _PARAM: "inside ${…}",
    _ARITH: "inside $((…))",
    _ANSI: "inside $'…'",
}
_BREAK = set(" \t\n;&|<>()")
#: bash evaluates the operands of these as arithmetic or variable names (a[$(cmd)] runs cmd)
_EVALUATES = frozenset({"[[", "let", "declare", "typeset", "local", "read"})
_BARE = re.compile(r"[A-Za-z0-9_@%+:,./-]+")


def quote(value: Any) -> str:
    """``value`` (as text, lists and dicts as JSON) as one shell word: bare when made only
    of characters no shell context treats specially (``5``, ``run-1/a.txt``), otherwise
    single-quoted. Unlike :func:`shlex.quote`, ``=`` is quoted (``A=B`` would be an
    assignment), as are globs, ``~`` and braces.
    """
    text = _format(value)
    if _BARE.fullmatch(text):
        return text
    return "'" + text.replace("'", "'\\''") + "'"


class _Lexer:
    """Tracks enough of POSIX sh / bash quoting to know the context of each placeholder.

    It errs on the refusing side: constructs it does not follow exactly mark the
    rest of the command as untracked, and placeholders there are refused.
    """

    def __init__(self) -> None:
        self.stack: list[list[Any]] = [[_TOP, 0]]
        self.esc = False
        self.pending = ""  # "$" or "$(" or "))" (the second paren of $((…)))
        self.comment = False
        self.word_start = True
        self.word = ""
        self.lt_run = 0
        self.untracked: str | None = None
        self.evaluates: str | None = None  # a bash construct that evaluates text as arithmetic
        self.prev = ""

    @property
    def top(self) -> str:
        return str(self.stack[-1][0])

    def feed(self, text: str) -> None:
        for ch in text:
            self._char(ch)

    def _char(self, c: str) -> None:
        if self.comment:
            if c == "\n":
                self.comment = False
                self.word_start = True
            return
        if self.esc:
            self.esc = False
            self.word_start = False
            return
        if self.pending == "))":
            self.pending = ""
            if c == ")":
                return
        if self.pending == "$(":
            self.pending = ""
            if c == "(":
                self.stack.append([_ARITH, 0])
                self.evaluates = "$((…))"
                return
            self.stack.append([_CMD, 0])
            self.word_start = True
            self.word = ""
        elif self.pending == "$":
            self.pending = ""
            if c == "(":
                self.pending = "$("
                return
            if c == "{":
                self.stack.append([_PARAM, 0])
                return
            if c == "'" and self.top in (_TOP, _CMD):
                self.stack.append([_ANSI, 0])
                self.untracked = "after $'…' (quoting differs between shells)"
                return
            self.word_start = False  # `$#`, `$$`, `$x`: not a comment, not a word start
        frame = self.stack[-1]
        kind = frame[0]
        if c != "<" and self.lt_run:
            if self.lt_run == 2 and kind in (_TOP, _CMD):
                self.untracked = "after a here-document (<<)"
            self.lt_run = 0
        if kind == _SQ:
            if c == "'":
                self.stack.pop()
        elif kind == _ANSI:
            if c == "\\":
                self.esc = True
            elif c == "'":
                self.stack.pop()
        elif kind == _DQ:
            if c == "\\":
                self.esc = True
            elif c == '"':
                self.stack.pop()
                self.word_start = False
            elif c == "$":
                self.pending = "$"
            elif c == "`":
                self.stack.append([_BQ, 0])
        elif kind == _BQ:
            if c == "\\":
                self.esc = True
            elif c == "`":
                self.stack.pop()
                self.word_start = False
        elif kind in (_PARAM, _ARITH):
            self._nested(frame, c)
        else:
            self._code(frame, c)

    def _nested(self, frame: list[Any], c: str) -> None:
        opener, closer = ("{", "}") if frame[0] == _PARAM else ("(", ")")
        if c == "\\":
            self.esc = True
        elif c in "'\"":
            self.untracked = f"after a quote {_WHAT[frame[0]]}"
        elif c == "$":
            self.pending = "$"
        elif c == "`":
            self.stack.append([_BQ, 0])
        elif c == opener:
            frame[1] += 1
        elif c == closer:
            if frame[1] == 0:
                self.stack.pop()
                self.word_start = False
                if frame[0] == _ARITH:
                    self.pending = "))"
            else:
                frame[1] -= 1

    def _code(self, frame: list[Any], c: str) -> None:
        if c == "#" and self.word_start:
            self.comment = True
            return
        prev, self.prev = self.prev, c
        if c in _BREAK:
            if self.word == "case" and frame[0] == _CMD:
                self.untracked = "after 'case' inside $(…)"
            if self.word in _EVALUATES:
                self.evaluates = self.word
            if c == "(" and prev == "(":
                self.evaluates = "((…))"
            self.word = ""
            self.word_start = True
            if c == "<":
                self.lt_run += 1
            elif c == "(" and frame[0] == _CMD:
                frame[1] += 1
            elif c == ")" and frame[0] == _CMD:
                if frame[1] == 0:
                    self.stack.pop()
                    self.word_start = False
                else:
                    frame[1] -= 1
            return
        self.word_start = False
        self.word = self.word + c if len(self.word) < 8 else "-"
        if c == "\\":
            self.esc = True
        elif c == "'":
            self.stack.append([_SQ, 0])
        elif c == '"':
            self.stack.append([_DQ, 0])
        elif c == "`":
            self.stack.append([_BQ, 0])
        elif c == "$":
            self.pending = "$"

    def context(self) -> str:
        """The quoting context at a placeholder here (``top``, ``'…'``, ``"…"``); refuses others."""
        if self.pending == "$(":
            self.pending = ""
            self.stack.append([_CMD, 0])
            self.word_start = True
        if self.pending == "$":
            raise ValueError("a placeholder right after '$' (write the value as its own word)")
        if self.esc:
            raise ValueError("a placeholder right after a backslash")
        if self.comment:
            raise ValueError("a placeholder inside a comment")
        if self.lt_run == 2 and self.top in (_TOP, _CMD):
            raise ValueError("a placeholder as a here-document delimiter")
        if self.untracked:
            raise ValueError(f"a placeholder {self.untracked}")
        for kind, _ in self.stack:
            if kind in _WHAT:
                raise ValueError(f"a placeholder {_WHAT[kind]}")
        return self.top

    def placed(self) -> None:
        """A quoted value now stands here: part of a word, balanced quotes."""
        self.word_start = False
        self.word = "-"
        self.lt_run = 0
        self.pending = ""

    def balanced(self) -> bool:
        return len(self.stack) == 1 and not self.esc and not self.pending.startswith("$")


def _insert(context: str, value: Any) -> str:
    q = quote(value)
    if _BARE.fullmatch(q):  # literal in every context: no need to leave the author's quotes
        return q
    if context == _SQ:
        return "'" + q + "'"
    if context == _DQ:
        return '"' + q + '"'
    return q


@dataclass(frozen=True)
class _Layout:
    """What the literal text of a command without ``!raw`` fixes: each placeholder's context
    (``"!reason"`` where refused), the bash construct that evaluates text, whether the
    quotes close. Quoted values never change the context, so it is computed once per
    template, not once per job."""

    contexts: tuple[str, ...]
    evaluates: str | None
    balanced: bool


@lru_cache(maxsize=4096)
def _layout(command: str) -> _Layout | None:
    """The :class:`_Layout` of ``command``; None when it has ``!raw`` placeholders (their
    values may change the contexts after them: those commands are lexed with the values)."""
    parts = parse_template(command)
    if any(isinstance(p, RawExpression) for p in parts):
        return None
    lex = _Lexer()
    contexts: list[str] = []
    for part in parts:
        if isinstance(part, str):
            lex.feed(part)
            continue
        try:
            contexts.append(lex.context())
        except ValueError as exc:
            contexts.append("!" + str(exc))
        lex.placed()
    return _Layout(tuple(contexts), lex.evaluates, bool(lex.untracked) or lex.balanced())


def check_command(text: str) -> None:
    """Refuse (``ValueError``, a reason) placeholders in a string ``command`` whose context
    would let a value escape its quoting; also unterminated quotes around them."""
    layout = _layout(text)
    if layout is None:  # with !raw: check the others as if raw values were balanced
        lex = _Lexer()
        for part in parse_template(text):
            if isinstance(part, str):
                lex.feed(part)
                continue
            if not isinstance(part, RawExpression):
                _context(lex, part, text, ValueError)
            lex.placed()
        return
    exprs = [p for p in parse_template(text) if isinstance(p, Expression)]
    for part, ctx in zip(exprs, layout.contexts, strict=True):
        if ctx.startswith("!"):
            raise ValueError(_refusal(ctx[1:], part))
    if exprs and not layout.balanced:
        raise ValueError("unterminated quote or substitution in a command with placeholders")


def render_command(
    command: str | list[Any], namespace: Mapping[str, Any], defer: Collection[str] | None = None
) -> str | list[str]:
    """Substitute the placeholders of a ``command``: quoted in a string, as text in a list.

    With ``defer`` (names known only per job) placeholders reading those names,
    or names missing from ``namespace``, are kept and the result is again a
    template (literal text escaped), finished later by a call without ``defer``.
    """
    if isinstance(command, list):
        if defer is not None:
            return [substitute_partial(str(el), namespace, defer) for el in command]
        return [_format(substitute(str(el), namespace)) for el in command]
    layout = _layout(command)
    if layout is not None and defer is None:
        return _render(command, layout, namespace)
    lex = _Lexer() if layout is None else None  # with !raw: lexed along with the values
    out: list[str] = []
    keep_rest = False  # after a deferred raw value the contexts are unknown: defer all
    quoted: list[str] = []  # values that needed quotes (not plain words)
    k = 0
    for part in parse_template(command):
        if isinstance(part, str):
            if lex is not None:
                lex.feed(part)
            out.append(part if defer is None else escape(part))
            continue
        raw = isinstance(part, RawExpression)
        ctx = ""
        if not raw:
            if layout is not None:
                ctx = layout.contexts[k]
                k += 1
                if ctx.startswith("!"):
                    raise TemplateError(
                        None, "command", f"{_refusal(ctx[1:], part)}: {command[:200]!r}"
                    )
            else:
                assert lex is not None
                ctx = _context(lex, part, command, None)
        if defer is not None and (
            keep_rest or any(n in defer or n not in namespace for n in part.names)
        ):
            out.append("{" + part.text + ("!raw" if raw else "") + "}")
            if lex is not None:
                lex.placed()
            keep_rest = keep_rest or raw
            continue
        value = part.evaluate(namespace)
        text = _format(value) if raw else _insert(ctx, value)
        if lex is not None and raw:
            lex.feed(text)
        elif lex is not None:
            lex.placed()
        if not raw and not _BARE.fullmatch(text):
            quoted.append(part.text)
        out.append(text if defer is None else escape(text))
    evaluates = (
        layout.evaluates if layout is not None else lex.evaluates if lex is not None else None
    )
    if evaluates and quoted:
        raise TemplateError(None, "command", _evaluated(quoted[0], evaluates))
    return "".join(out)


def _render(command: str, layout: _Layout, namespace: Mapping[str, Any]) -> str:
    """The per-job path of :func:`render_command` (no ``!raw``, nothing deferred), kept lean."""
    out: list[str] = []
    k = 0
    quoted = None
    for part in parse_template(command):
        if isinstance(part, str):
            out.append(part)
            continue
        ctx = layout.contexts[k]
        k += 1
        if ctx[0] == "!":
            raise TemplateError(None, "command", f"{_refusal(ctx[1:], part)}: {command[:200]!r}")
        text = _format(part.evaluate(namespace))
        if _BARE.fullmatch(text):
            out.append(text)
            continue
        quoted = quoted or part.text
        q = "'" + text.replace("'", "'\\''") + "'"
        out.append("'" + q + "'" if ctx == _SQ else '"' + q + '"' if ctx == _DQ else q)
    if layout.evaluates and quoted:
        raise TemplateError(None, "command", _evaluated(quoted, layout.evaluates))
    return "".join(out)


def format_command(template: str, params: Mapping[str, Any]) -> str:
    """:meth:`str.format` for a shell command (``{lr}``, ``{lr:.3g}``), each field's text
    quoted like a placeholder's value: for the HPO objective command, whose template is
    :meth:`str.format` syntax. ``TemplateError`` where a field cannot be quoted."""
    import string

    fmt = string.Formatter()
    lex = _Lexer()
    out: list[str] = []
    quoted = None
    for literal, field, spec, conversion in fmt.parse(template):
        lex.feed(literal)
        out.append(literal)
        if field is None:
            continue
        value, _ = fmt.get_field(field, (), params)
        text = fmt.format_field(fmt.convert_field(value, conversion), spec or "")
        ctx = _context(lex, _Field(field), template, None)
        lex.placed()
        if not _BARE.fullmatch(text):
            quoted = quoted or field
        out.append(_insert(ctx, text))
    if lex.evaluates and quoted:
        raise TemplateError(None, "command", _evaluated(quoted, lex.evaluates))
    return "".join(out)


class _Field:
    """A :meth:`str.format` field, named in refusals like a placeholder."""

    def __init__(self, text: str) -> None:
        self.text = text


def _evaluated(expr: str, construct: str) -> str:
    return (
        f"the value of {{{expr}}} is not a plain word and the command uses {construct}, "
        "where bash evaluates text as arithmetic (running any $(…) in it) even inside quotes; "
        "pass the value to a script as an argument, or use a list command"
    )


def _refusal(reason: str, part: Expression | _Field) -> str:
    return (
        f"{reason} in {{{part.text}}}: values are quoted as one shell word "
        "(see docs/templates.md, 'Commands and quoting')"
    )


def _context(
    lex: _Lexer, part: Expression | _Field, command: str, error: type[Exception] | None
) -> str:
    """The context of ``part`` from the running lexer; refusals as ``error`` (ValueError for
    the validator) or, with None, as a TemplateError naming the command."""
    try:
        return lex.context()
    except ValueError as exc:
        if error is not None:
            raise error(_refusal(str(exc), part)) from None
        raise TemplateError(
            None, "command", f"{_refusal(str(exc), part)}: {command[:200]!r}"
        ) from None
