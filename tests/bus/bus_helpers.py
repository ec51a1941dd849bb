"""Helpers shared by the bus tests: run a subscriber in another process."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

CHILD = Path(__file__).with_name("bus_child.py")
ROOT = Path(__file__).resolve().parents[2]


class ChildSubscriber:
    """``bus_child.py`` in a subprocess; ``start`` returns once it has subscribed."""

    def __init__(self, spec: str, types: list[str], count: int, timeout: float = 20.0) -> None:
        self.args = [sys.executable, str(CHILD), spec, ",".join(types), str(count), str(timeout)]
        self.proc: subprocess.Popen[str] | None = None

    def start(self) -> ChildSubscriber:
        self.proc = subprocess.Popen(
            self.args, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
        )
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline()
        if line.strip() != "READY":
            _, err = self.proc.communicate(timeout=10)
            raise AssertionError(f"child did not subscribe: {line!r} {err}")
        return self

    def result(self, timeout: float = 30.0) -> list[dict[str, Any]]:
        assert self.proc is not None
        out, err = self.proc.communicate(timeout=timeout)
        assert self.proc.returncode == 0, err
        return list(json.loads(out.strip().splitlines()[-1]))
