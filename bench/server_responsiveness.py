"""Jupyter server responsiveness while a big DAG runs through the extension's core.

For each agents mode (``process``: the supervised child, the default;
``thread``: the agents in the server's interpreter), a fresh ``jupyter server``
with the extension is started and, in the same run, ``GET /api/contents``
(Jupyter's own API) and ``GET /idds/api/v1/requests`` (the extension's) are
timed one after the other: first with the server idle, then while a layered
DAG of ``--jobs`` no-op jobs (3 levels, fan-in 2) submitted through the
extension's REST API runs. Prints p50/p99 per endpoint and state, and the DAG's
jobs/s.

    python bench/server_responsiveness.py --jobs 100000
"""

from __future__ import annotations

import argparse
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import requests

from idds_jupyter.model.generators import layered_dag

TOKEN = "bench-token"
AUTH = {"Authorization": f"token {TOKEN}"}
ENDPOINTS = (
    ("GET /api/contents", "api/contents"),
    ("GET /idds/api/v1/requests", "idds/api/v1/requests"),
)
TERMINAL = {"finished", "failed", "subfinished", "aborted"}
ERRORS: dict[str, int] = {}  # answers other than 200, by request (all modes, all states)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextmanager
def jupyter_server(mode: str, workers: int) -> Iterator[str]:
    with tempfile.TemporaryDirectory(prefix="idds-bench-resp-") as tmp:
        port = free_port()
        env = {
            **os.environ,
            "JUPYTER_RUNTIME_DIR": f"{tmp}/runtime",
            "IDDS_HOME": f"{tmp}/idds",
            "IDDS_WORKERS": str(workers),
        }
        for var in ("IDDS_URL", "IDDS_TOKEN", "IDDS_DB_URL", "IDDS_AGENTS", "IDDS_BUS"):
            env.pop(var, None)
        with open(Path(tmp) / "jupyter.log", "wb") as log:
            proc = subprocess.Popen(
                [
                    *(sys.executable, "-m", "jupyter", "server", "--allow-root", "--no-browser"),
                    *("--ip", "127.0.0.1", f"--port={port}", "--ServerApp.port_retries=0"),
                    f"--IdentityProvider.token={TOKEN}",
                    f"--ServerApp.root_dir={tmp}",
                    f"--IddsExtension.agents={mode}",
                ],
                env=env,
                cwd=tmp,
                stdout=log,
                stderr=subprocess.STDOUT,
            )
            url = f"http://127.0.0.1:{port}/"
            try:
                deadline = time.monotonic() + 120
                while True:
                    try:
                        if requests.get(url + "idds/api/v1/requests", headers=AUTH, timeout=5).ok:
                            break
                    except requests.RequestException:
                        pass
                    if proc.poll() is not None or time.monotonic() > deadline:
                        raise RuntimeError((Path(tmp) / "jupyter.log").read_text()[-3000:])
                    time.sleep(0.2)
                yield url
            finally:
                proc.terminate()
                try:
                    proc.wait(60)
                except subprocess.TimeoutExpired:
                    proc.kill()


def sample(
    s: requests.Session, url: str, n: int, until: float | None = None
) -> dict[str, list[float]]:
    """``n`` rounds of one GET per endpoint (or until the time ``until``): latencies in ms."""
    out: dict[str, list[float]] = {name: [] for name, _ in ENDPOINTS}
    for _ in range(n):
        for name, path in ENDPOINTS:
            t = time.perf_counter()
            r = s.get(url + path, headers=AUTH, timeout=60)
            out[name].append((time.perf_counter() - t) * 1000)
            if r.status_code != 200:  # counted, shown in the table (a 503 "database busy")
                ERRORS[name] = ERRORS.get(name, 0) + 1
        time.sleep(0.01)
        if until is not None and time.monotonic() > until:
            break
    return out


def p(values: list[float], q: float) -> float:
    if len(values) < 2:
        return values[0] if values else float("nan")
    return statistics.quantiles(values, n=100, method="inclusive")[int(q) - 1]


def run_mode(mode: str, jobs: int, workers: int, idle_rounds: int) -> list[tuple[str, ...]]:
    rows = []
    with jupyter_server(mode, workers) as url, requests.Session() as s:
        sample(s, url, 20)  # warm both endpoints (imports, first queries)
        time.sleep(3)  # the agents' start-up settles
        idle = sample(s, url, idle_rounds)
        body = {"template": layered_dag(jobs, 3).to_dict()}
        t0 = time.monotonic()
        r = s.post(url + "idds/api/v1/requests", json=body, headers=AUTH, timeout=120)
        r.raise_for_status()
        wid = r.json()["id"]
        busy: dict[str, list[float]] = {name: [] for name, _ in ENDPOINTS}
        status = "?"
        while True:
            for name, values in sample(s, url, 10).items():
                busy[name] += values
            status = s.get(url + f"idds/api/v1/requests/{wid}", headers=AUTH, timeout=60).json()[
                "status"
            ]
            if status in TERMINAL or time.monotonic() - t0 > 1800:
                break
        wall = time.monotonic() - t0
        for name, _ in ENDPOINTS:
            for state, values in (("idle", idle[name]), ("DAG running", busy[name])):
                rows.append(
                    (
                        mode,
                        name,
                        state,
                        str(len(values)),
                        f"{p(values, 50):.1f}",
                        f"{p(values, 99):.1f}",
                    )
                )
        rows.append(
            (
                mode,
                f"DAG {jobs:,} jobs: {status}",
                f"{wall:.1f} s",
                "",
                f"{jobs / wall:,.0f} jobs/s",
                "",
            )
        )
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--jobs", type=int, default=100_000)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--idle-rounds", type=int, default=200)
    ap.add_argument("--modes", default="process,thread", help="agents modes, comma-separated")
    args = ap.parse_args()
    rows: list[tuple[str, ...]] = []
    for mode in args.modes.split(","):
        rows += run_mode(mode, args.jobs, args.workers, args.idle_rounds)
    head = ("agents", "request", "server", "n", "p50 ms", "p99 ms")
    widths = [max(len(r[i]) for r in [head, *rows]) for i in range(len(head))]
    print(f"\nJupyter server responsiveness, {args.jobs:,}-job layered DAG, {args.workers} workers")
    for r in [head, tuple("-" * w for w in widths), *rows]:
        print("| " + " | ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)) + " |")
    print(f"answers other than 200: {ERRORS or 'none'}")


if __name__ == "__main__":
    main()
