"""``python skewed_agents.py SECONDS AGENTS-ARGS...``: ``idds-jupyter agents`` in a process
whose wall clock (``time.time``/``time.time_ns``) is shifted by SECONDS.

Only this process's clock moves; the database's and the test's stay true. It is the
agents process of another host whose clock drifted, without touching the host's clock.
"""

from __future__ import annotations

import sys
import time

shift = float(sys.argv[1])
_time, _time_ns = time.time, time.time_ns
time.time = lambda: _time() + shift
time.time_ns = lambda: _time_ns() + int(shift * 1e9)

from idds_jupyter.cli import main  # noqa: E402 - after the clock is shifted

if __name__ == "__main__":
    print(f"skewed_agents: wall clock shifted by {shift:+.0f} s", flush=True)
    sys.exit(main(sys.argv[2:]))
