"""A database locked by another process, against the Jupyter extension: 503 within 5 s.

The extension's API runs in the Jupyter server; another process holds SQLite's write
lock (``BEGIN EXCLUSIVE``) on the extension's store. Writes answer 503 "database
busy, retry" with ``Retry-After`` within 5 s instead of hanging, reads answer from the
last commit (WAL), and the service works again once the lock is gone.
"""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

from jupyter_helpers import JupyterServer

QUICK = {"name": "quick", "works": [{"name": "a", "command": "echo ok"}]}


def test_extension_answers_503_soon_while_another_process_locks_the_store(tmp_path: Path) -> None:
    server = JupyterServer(tmp_path)
    try:
        r = server.api("POST", "requests", json={"template": QUICK})
        assert r.status_code == 201, r.text
        wid = r.json()["id"]
        db = tmp_path / "idds" / "idds.db"
        assert db.exists()
        code = (
            "import sqlite3, sys, time\n"
            "c = sqlite3.connect(sys.argv[1], isolation_level=None, timeout=30)\n"
            "c.execute('BEGIN EXCLUSIVE')\n"
            "print('locked', flush=True)\n"
            "time.sleep(120)\n"
        )
        holder = subprocess.Popen([sys.executable, "-c", code, str(db)], stdout=subprocess.PIPE)
        try:
            assert holder.stdout is not None and holder.stdout.readline().strip() == b"locked"
            for method, path, body in (
                ("GET", "requests", None),
                ("GET", f"requests/{wid}", None),
                ("POST", "requests", {"template": QUICK}),
            ):
                t = time.monotonic()
                r = server.api(method, path, json=body)
                took = time.monotonic() - t
                assert took < 5.0, f"{method} {path}: answered after {took:.1f} s"
                if method == "GET":  # SQLite in WAL mode: a read needs no write lock
                    assert r.status_code == 200, (method, path, r.status_code, r.text)
                    continue
                assert r.status_code == 503, (method, path, r.status_code, r.text)
                assert "database busy" in r.json()["error"]
                assert int(r.headers["Retry-After"]) > 0
        finally:
            holder.kill()
            holder.wait()
        r = server.api("GET", "requests")
        assert r.status_code == 200, r.text
        assert [x["id"] for x in r.json()["requests"]] == [
            wid
        ]  # the refused submission: not stored
    finally:
        server.stop()
