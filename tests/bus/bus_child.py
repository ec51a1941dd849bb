"""A subscriber in another process (run by the bus tests, not collected by pytest).

    python bus_child.py SPEC TYPES COUNT TIMEOUT

SPEC is a make_bus spec, or "db:URL" for the db bus. Prints READY once
subscribed, then the received events as one JSON line, then exits.
"""

from __future__ import annotations

import json
import sys
import time

from idds_jupyter.bus import make_bus
from idds_jupyter.store.engine import make_engine


def main() -> int:
    spec, types, count, timeout = sys.argv[1], sys.argv[2], int(sys.argv[3]), float(sys.argv[4])
    engine = None
    if spec.startswith("db:"):
        engine = make_engine(spec[3:])
        spec = "db"
    bus = make_bus(spec, engine)
    sub = bus.subscribe(types.split(","))
    print("READY", flush=True)
    got: list[dict[str, object]] = []
    deadline = time.monotonic() + timeout
    while len(got) < count and time.monotonic() < deadline:
        got.extend(ev.to_json() for ev in sub.get(timeout=0.2))
    print(json.dumps(got), flush=True)
    sub.close()
    bus.close()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
