"""The agents' runner as the supervised child of a Jupyter server.

``python -m idds_jupyter.agents.supervised`` is ``idds-jupyter agents`` tied to the
process that started it (named by ``IDDS_SUPERVISOR_PID``): it stops when that
process is gone, even killed with SIGKILL (``PR_SET_PDEATHSIG`` on Linux, and a
watch of the parent pid everywhere), so a Jupyter server never leaves its agents
behind. The supervision itself (restarts, stop) is the extension's
(``idds_jupyter_server.supervisor``).
"""

from __future__ import annotations

import contextlib
import os
import signal
import sys
import threading
import time
from collections.abc import Sequence

PARENT_ENV = "IDDS_SUPERVISOR_PID"


def die_with_parent(parent: int) -> None:
    """SIGTERM this process (its runner then stops cleanly) when ``parent`` is gone."""
    if sys.platform.startswith("linux"):
        import ctypes

        with contextlib.suppress(OSError, AttributeError):
            libc = ctypes.CDLL(None, use_errno=True)
            libc.prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    if os.getppid() != parent:  # it died before we asked
        os.kill(os.getpid(), signal.SIGTERM)

    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(1.0)
        os.kill(os.getpid(), signal.SIGTERM)

    threading.Thread(target=watch, name="idds-parent-watch", daemon=True).start()


def main(argv: Sequence[str] | None = None) -> int:
    parent = os.environ.get(PARENT_ENV, "")
    if parent.isdigit():
        die_with_parent(int(parent))
    from idds_jupyter.cli import main as cli_main

    return cli_main(["agents", *(argv if argv is not None else sys.argv[1:])])


__all__ = ["PARENT_ENV", "die_with_parent", "main"]

if __name__ == "__main__":
    raise SystemExit(main())
