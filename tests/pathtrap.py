"""The path trap (issue 19, item 8): tests whose jobs run as another OS account.

A checkout (or pytest's temp dir) inside a directory only its owner can enter — a
clone in ``mktemp -d`` (0700), root's home, ``/tmp/pytest-of-root`` — cannot be
reached by the accounts jobs run as (the isolation tests' job accounts, the
HTCondor test pool's job user): they cannot even execute the venv's python
(``errno=13 Permission denied``). CI clones into a directory we do not choose, so
such tests open the way for their duration with :func:`reachable`: every directory
on the way to the paths the jobs need that others cannot *search* gets ``o+x``
(search only: nothing becomes listable or readable), and the modes are restored
afterwards.
"""

from __future__ import annotations

import contextlib
import os
import stat
from collections.abc import Iterator

__all__ = ["reachable"]


@contextlib.contextmanager
def reachable(paths: list[str]) -> Iterator[list[tuple[str, int]]]:
    """Open search permission (o+x) on the way to ``paths`` (as given and resolved)
    while the block runs; restore the modes after. Yields ``(directory, old mode)``."""
    changed: list[tuple[str, int]] = []
    seen: set[str] = set()
    for path in paths:
        for p in (os.path.abspath(path), os.path.realpath(path)):
            d = p if os.path.isdir(p) else os.path.dirname(p)
            chain = []
            while d not in seen:
                seen.add(d)
                chain.append(d)
                if d == os.path.dirname(d):
                    break
                d = os.path.dirname(d)
            for d in chain:
                mode = stat.S_IMODE(os.stat(d).st_mode)
                if not mode & stat.S_IXOTH:
                    os.chmod(d, mode | stat.S_IXOTH)
                    changed.append((d, mode))
    try:
        yield changed
    finally:
        for d, mode in reversed(changed):
            with contextlib.suppress(OSError):
                os.chmod(d, mode)
