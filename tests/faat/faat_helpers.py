"""Shared by the FaaT tests."""

from __future__ import annotations

import textwrap
from typing import Any


def main_namespace(source: str) -> dict[str, Any]:
    """Run ``source`` as if it were a notebook cell / script: in a ``__main__`` namespace."""
    ns: dict[str, Any] = {"__name__": "__main__"}
    exec(compile(textwrap.dedent(source), "<notebook cell>", "exec"), ns)
    return ns
