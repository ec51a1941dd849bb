"""What a ``%%idds work`` cell becomes on the worker: its code run on the captured variables.

Kept apart from the magics (which import IPython and widgets) so that a worker
imports nothing but this small module.
"""

from __future__ import annotations

from typing import Any


def run_cell(
    inputs: dict[str, Any], body: str, outputs: list[str], name: str = "<%%idds work>"
) -> dict[str, Any]:
    """Execute ``body`` with ``inputs`` as its globals; return the ``outputs`` it assigned."""
    ns: dict[str, Any] = {"__name__": "__idds_cell__", "__builtins__": __builtins__}
    ns.update(inputs)
    exec(compile(body, name, "exec"), ns)
    return {k: ns[k] for k in outputs if k in ns}
