"""Storage faults against a running server: a database locked by another process, a full disk.

- Locked: another process holds SQLite's write lock (``BEGIN EXCLUSIVE``), or another
  PostgreSQL connection holds ``ACCESS EXCLUSIVE`` locks on the run tables. Every request
  answers 503 "database busy, retry" with ``Retry-After`` within 5 s (it used to hang
  for the whole lock), nothing is half-stored, and the service works again once the
  lock is gone.
- Full: the server's home (SQLite store, cache, logs) is on a real 24 MB tmpfs that a
  filler file fills to the last byte; for PostgreSQL the test database lives in a
  tablespace on such a tmpfs (PostgreSQL's WAL stays on its own disk). A submission
  answers 507 and says so, an abort still works, what was stored is all still there,
  and once the filler is removed submissions run again.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import os
import shutil
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
from api_helpers import Served, _serve
from apiclient import Api, Resp

QUICK = {"name": "quick", "works": [{"name": "a", "command": "echo ok"}]}
SLOW = {"name": "slow", "works": [{"name": "a", "command": "sleep 120"}]}
ANSWER_WITHIN_S = 5.0


def submit(api: Api, template: dict[str, Any], timeout: float = 30) -> Resp:
    return api.post("/requests", {"template": template}, timeout=timeout)


def timed(fn: Any, *args: Any, **kw: Any) -> tuple[Any, float]:
    """``fn``'s result (or the exception it raised: a client timeout, a request that hung)
    and how long it took."""
    t = time.monotonic()
    try:
        out: Any = fn(*args, **kw)
    except Exception as exc:  # a client timeout: the request hung
        out = exc
    return out, time.monotonic() - t


def wait_status(api: Api, wid: int, wanted: set[str], timeout: float = 60) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while True:
        r = api.get(f"/requests/{wid}")
        assert r.status == 200, r
        if r.json["status"] in wanted:
            return dict(r.json)
        assert time.monotonic() < deadline, f"run {wid} still {r.json['status']}, not {wanted}"
        time.sleep(0.2)


def wait_job_running(served: Served, wid: int, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while not served.handle.ctx.orch.job_counts(wid).get("running"):
        assert time.monotonic() < deadline, f"no job of run {wid} started"
        time.sleep(0.2)


def run_ids(api: Api) -> list[int]:
    r = api.get("/requests")
    assert r.status == 200, r
    return sorted(int(x["id"]) for x in r.json["requests"])


# ---------------------------------------------------------------- locked database


@contextlib.contextmanager
def locked_by_another_process(db_url: str) -> Iterator[None]:
    """The store locked by another process (SQLite) or connection (PostgreSQL) meanwhile."""
    if db_url.startswith("sqlite"):
        path = db_url.split("///", 1)[1]
        code = (
            "import sqlite3, sys, time\n"
            "c = sqlite3.connect(sys.argv[1], isolation_level=None, timeout=30)\n"
            "c.execute('BEGIN EXCLUSIVE')\n"
            "print('locked', flush=True)\n"
            "time.sleep(120)\n"
        )
        holder = subprocess.Popen([sys.executable, "-c", code, path], stdout=subprocess.PIPE)
        try:
            assert holder.stdout is not None and holder.stdout.readline().strip() == b"locked"
            yield
        finally:
            holder.kill()
            holder.wait()
        return
    import psycopg

    conn = psycopg.connect(db_url.replace("postgresql+psycopg://", "postgresql://"))
    try:
        conn.execute("LOCK TABLE workflows, works, jobs IN ACCESS EXCLUSIVE MODE")
        yield
    finally:
        conn.rollback()
        conn.close()


def test_locked_database_answers_503_within_5s(served_db: Served, db_url: str) -> None:
    alice = served_db.alice
    r = submit(alice, QUICK)
    assert r.status == 201, r
    before = r.json["id"]
    wait_status(alice, before, {"finished"})
    requests = [
        ("list runs", alice.get, ("/requests",)),
        ("read a run", alice.get, (f"/requests/{before}",)),
        ("submit", alice.post, ("/requests", {"template": QUICK})),
        ("abort", alice.post, (f"/requests/{before}/abort", {})),
    ]
    with locked_by_another_process(db_url), ThreadPoolExecutor(len(requests) * 2) as pool:
        # each request twice, all at once: none waits for another's lock wait either
        futures = [
            (name, pool.submit(timed, fn, *args, timeout=20)) for name, fn, args in requests * 2
        ]
        answers = [(name, *f.result()) for name, f in futures]
    for name, resp, took in answers:
        assert isinstance(resp, Resp), f"{name}: no answer ({resp!r}) after {took:.1f} s"
        assert took < ANSWER_WITHIN_S, f"{name}: answered after {took:.1f} s"
        if name.startswith(("read", "list")) and db_url.startswith("sqlite"):
            # WAL: a GET reads the last commit, without the write lock
            assert resp.status == 200, f"{name}: {resp!r}"
            continue
        assert resp.status == 503, f"{name}: {resp!r}"
        assert "database busy" in resp.json["error"], resp
        assert int(resp.headers["Retry-After"]) > 0
    # the lock gone, the service works again; the submissions made meanwhile stored nothing
    assert run_ids(alice) == [before]
    r = submit(alice, QUICK)
    assert r.status == 201, r
    assert wait_status(alice, r.json["id"], {"finished"})["status"] == "finished"
    assert run_ids(alice) == [before, r.json["id"]]


def test_client_waits_out_a_busy_database(served_db: Served, db_url: str) -> None:
    """The Python client tries a 503 "database busy" again after its Retry-After: calls
    made while another process holds the lock for 4 s succeed once it is gone, and a
    submission retried so is stored once."""
    from idds_jupyter.client import Client

    client = Client(served_db.handle.url, served_db.alice.token)
    try:
        wid = client.submit(QUICK)
        assert client.wait_workflow(wid, timeout=60) == "finished"
        with ThreadPoolExecutor(2) as pool:
            with locked_by_another_process(db_url):
                read = pool.submit(timed, client.status, wid)
                sub = pool.submit(timed, client.submit, QUICK)
                time.sleep(4)
            (status, read_s), (new, sub_s) = read.result(), sub.result()
        assert isinstance(status, dict) and status["status"] == "finished", status
        assert isinstance(new, int), new
        assert sub_s >= 3.5, "the lock was not met: nothing was tested"
        # a read waits for the lock on PostgreSQL; on SQLite (WAL) it reads the last commit
        assert read_s >= 3.5 or db_url.startswith("sqlite")
        assert run_ids(served_db.alice) == [wid, new]  # stored once
        assert client.wait_workflow(new, timeout=60) == "finished"
    finally:
        client.shutdown()


# ---------------------------------------------------------------------- full disk


@pytest.fixture
def small_fs() -> Iterator[Path]:
    """A real 24 MB tmpfs (mounting needs root; skipped where mounts are refused), in a
    directory PostgreSQL's account can reach (pytest's own are root's alone)."""
    mnt = Path(tempfile.mkdtemp(prefix="idds-small-fs-"))
    mnt.chmod(0o755)
    res = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=24m,mode=0755", "tmpfs", str(mnt)],
        capture_output=True,
        text=True,
    )
    if res.returncode != 0:
        mnt.rmdir()
        pytest.fail(
            f"the disk-full test needs a real tmpfs and cannot mount one here: {res.stderr.strip()}"
        )
    try:
        yield mnt
    finally:
        subprocess.run(["umount", "-l", str(mnt)], check=False)
        with contextlib.suppress(OSError):
            mnt.rmdir()


def fill(fs: Path) -> Path:
    """Fill ``fs`` to the last byte with one file (unbuffered writes); returns it."""
    filler = fs / "filler"
    fd = os.open(filler, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        for block in (2**20, 2**12, 1):
            try:
                while True:
                    os.write(fd, b"\0" * block)
            except OSError as exc:
                assert exc.errno == errno.ENOSPC, exc
    finally:
        os.close(fd)
    assert os.statvfs(fs).f_bavail == 0
    return filler


def test_sqlite_disk_full_tmpfs_507_abort_works_nothing_lost(
    small_fs: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("IDDS_DISK_RESERVE_MB", "2")
    home = small_fs / "home"
    db = home / "idds.db"
    served = _serve(home, f"sqlite:///{db}")
    try:
        alice = served.alice
        r = submit(alice, QUICK)
        assert r.status == 201, r
        done = r.json["id"]
        assert wait_status(alice, done, {"finished"})["status"] == "finished"
        r = submit(alice, SLOW)
        assert r.status == 201, r
        running = r.json["id"]
        wait_job_running(served, running)
        stored = alice.get(f"/requests/{done}").json
        # every later write must grow the WAL: none reuses room the WAL already had
        import sqlite3

        with contextlib.closing(sqlite3.connect(db, timeout=30)) as c:
            c.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        filler = fill(small_fs)

        r = submit(alice, QUICK)
        assert r.status == 507, r
        assert "insufficient storage" in r.json["error"] and "disk" in r.json["error"], r
        blob = os.urandom(256 * 2**10)  # an upload to the cache: ENOSPC writing its file
        r = alice.call("PUT", f"/cache/{hashlib.sha256(blob).hexdigest()}", raw=blob)
        assert r.status == 507, r
        assert "insufficient storage" in r.json["error"], r
        assert not [p for p in (home / "cache").rglob("*") if p.is_file()]  # no partial file left
        r = alice.post(f"/requests/{running}/abort", {})
        assert r.status == 200, r
        assert r.json["changed"] is True
        assert wait_status(alice, running, {"aborted", "cancelled"})["status"] in (
            "aborted",
            "cancelled",
        )
        r = submit(alice, QUICK)  # the reserve went to the abort: refused at once, still 507
        assert r.status == 507, r
        # nothing stored was lost
        assert run_ids(alice) == [done, running]
        assert alice.get(f"/requests/{done}").json == stored

        filler.unlink()  # space returns: the service recovers by itself
        r = submit(alice, QUICK)
        assert r.status == 201, r
        assert wait_status(alice, r.json["id"], {"finished"})["status"] == "finished"
        assert run_ids(alice) == [done, running, r.json["id"]]
        assert (db.parent / "idds.db-reserve").stat().st_size == 2 * 2**20  # in place again
    finally:
        served.handle.stop()


def test_postgresql_disk_full_tablespace_on_tmpfs_507_nothing_lost(
    small_fs: Path, postgres: Any, tmp_path: Path
) -> None:
    import psycopg

    ts_dir = small_fs / "pg"
    ts_dir.mkdir()
    shutil.chown(ts_dir, "postgres", "postgres")
    name = f"full_{uuid.uuid4().hex[:8]}"
    admin_url = postgres.url.replace("postgresql+psycopg://", "postgresql://")
    with psycopg.connect(admin_url, autocommit=True) as conn:
        conn.execute(f"CREATE TABLESPACE {name} LOCATION '{ts_dir}'")
        conn.execute(f"CREATE DATABASE {name} TABLESPACE {name}")
    served = _serve(tmp_path / "home", postgres.url.rsplit("/", 1)[0] + f"/{name}")
    try:
        alice = served.alice
        r = submit(alice, QUICK)
        assert r.status == 201, r
        done = r.json["id"]
        assert wait_status(alice, done, {"finished"})["status"] == "finished"
        r = submit(alice, SLOW)
        assert r.status == 201, r
        running = r.json["id"]
        wait_job_running(served, running)
        stored = alice.get(f"/requests/{done}").json
        filler = fill(small_fs)

        # thousands of job rows: new pages for the tables, none left on the disk
        big = {
            "name": "big",
            "works": [
                {"name": "a", "command": "echo {i}", "kwargs_list": [{"i": i} for i in range(5000)]}
            ],
        }
        r = submit(alice, big)
        assert r.status == 507, r
        assert "insufficient storage" in r.json["error"], r
        assert run_ids(alice) == [done, running]
        assert alice.get(f"/requests/{done}").json == stored
        # no reserve on PostgreSQL (its disk is the server's): the abort's few row versions
        # fit in the pages the tables already have
        r = alice.post(f"/requests/{running}/abort", {})
        assert r.status == 200, r
        assert wait_status(alice, running, {"aborted", "cancelled"})["status"] in (
            "aborted",
            "cancelled",
        )

        filler.unlink()  # space returns: submissions are stored and run again
        r = submit(alice, QUICK)
        assert r.status == 201, r
        assert wait_status(alice, r.json["id"], {"finished"})["status"] == "finished"
        assert alice.get(f"/requests/{done}").json == stored
    finally:
        served.handle.stop()
        with psycopg.connect(admin_url, autocommit=True) as conn:
            conn.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
            conn.execute(f"DROP TABLESPACE IF EXISTS {name}")
        os.sync()
