"""IPython syntax in a cell, translated to plain Python where its meaning is clear.

Translated (the batch side has no IPython):

- ``!cmd`` (a whole line) → ``subprocess.run('cmd', shell=True, check=True)``; a failing
  command fails the cell as it would be noticed in the notebook;
- ``%%bash`` / ``%%sh`` → the cell body fed to ``bash`` / ``sh``;
- ``%%writefile [-a] FILE`` → the body written to FILE;
- ``%time STMT`` / ``%%time`` / ``%%capture`` → the statement(s) themselves;
- ``%cd DIR`` → ``os.chdir``; ``%env NAME=VALUE`` → ``os.environ``;
- ``%matplotlib …``, ``%load_ext autoreload``, ``%autoreload``, ``%config …``,
  ``%pip``/``%conda`` (the batch environment is installed beforehand) → nothing.

Everything else (``x = !ls``, ``%run``, ``%timeit``, ``%%idds``, ``obj?``, other magics)
is refused with :class:`MagicError` naming the cell number and the line.
"""

from __future__ import annotations

import ast
import re
import shlex

__all__ = ["MagicError", "translate_cell"]


class MagicError(ValueError):
    """IPython syntax with no clear batch meaning; the message names the cell."""


_DROP = {
    "matplotlib",
    "load_ext",
    "autoreload",
    "config",
    "pip",
    "conda",
    "reload_ext",
    "precision",
    "pylab",
}
_ASSIGN_MAGIC = re.compile(r"^\s*[\w.,\s\[\]]+=\s*[!%]")


def _refuse(cell_no: int, lineno: int, line: str, why: str) -> MagicError:
    return MagicError(
        f"cell {cell_no}, line {lineno}: {line.strip()[:80]!r}: {why}; "
        "rewrite it in Python or leave this cell out of the export"
    )


def _cell_magic(cell_no: int, first: str, body: str) -> str:
    parts = first[2:].split()
    name, args = (parts[0] if parts else ""), parts[1:]
    if name in ("bash", "sh") and not args:
        return f"__import__('subprocess').run([{name!r}], input={body!r}, text=True, check=True)\n"
    if name == "writefile" and args:
        mode = "a" if args[0] in ("-a", "--append") else "w"
        target = args[-1]
        return f"with open({target!r}, {mode!r}) as __f:\n    __f.write({body!r})\n"
    if name in ("time", "capture") and (name != "capture" or not args):
        return body
    raise _refuse(cell_no, 1, first, f"the cell magic %%{name} has no batch equivalent")


def translate_cell(source: str | list[str], cell_no: int) -> str:
    """The cell's source as plain Python (``cell_no`` is 1-based, for messages)."""
    src = "".join(source) if isinstance(source, list) else source
    try:  # plain Python (a '%' or '!' line inside a string stays as it is)
        ast.parse(src)
        return src if src.endswith("\n") or not src else src + "\n"
    except SyntaxError:
        pass
    lines = src.splitlines()
    if lines and lines[0].lstrip().startswith("%%"):
        return _cell_magic(cell_no, lines[0].strip(), "\n".join(lines[1:]) + "\n")
    out: list[str] = []
    for i, line in enumerate(lines, 1):
        stripped = line.lstrip()
        indent = line[: len(line) - len(stripped)]
        if stripped.startswith("!"):
            cmd = stripped[1:].strip()
            if not cmd:
                raise _refuse(cell_no, i, line, "an empty shell escape")
            out.append(f"{indent}__import__('subprocess').run({cmd!r}, shell=True, check=True)")
        elif stripped.startswith("%"):
            out.append(indent + _line_magic(cell_no, i, stripped))
        elif _ASSIGN_MAGIC.match(line) and not stripped.startswith("#"):
            raise _refuse(
                cell_no, i, line, "capturing a magic's or a shell's output has no batch equivalent"
            )
        elif (
            stripped.endswith("?")
            and not stripped.startswith("#")
            and re.fullmatch(r"[\w.]+\?\??", stripped)
        ):
            raise _refuse(cell_no, i, line, "help (?) has no batch equivalent")
        else:
            out.append(line)
    return "\n".join(out) + ("\n" if out else "")


def _line_magic(cell_no: int, lineno: int, stripped: str) -> str:
    body = stripped[1:]
    name, _, rest = body.partition(" ")
    rest = rest.strip()
    if name in _DROP:
        return f"pass  # {stripped}: nothing to do in batch"
    if name == "time" and rest:
        return rest
    if name == "cd" and rest:
        return f"__import__('os').chdir(__import__('os').path.expanduser({' '.join(shlex.split(rest))!r}))"
    if name == "env" and "=" in rest:
        key, _, value = rest.partition("=")
        return f"__import__('os').environ[{key.strip()!r}] = {value.strip()!r}"
    raise _refuse(cell_no, lineno, stripped, f"the magic %{name} has no batch equivalent")
