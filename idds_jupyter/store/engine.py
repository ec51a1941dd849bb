"""Database engines: SQLite (the embedded default) and PostgreSQL, one code path.

SQLite runs in WAL mode with ``BEGIN IMMEDIATE`` transactions: every agent
transaction that will write takes the write lock up front, so two processes
never deadlock upgrading a read lock, and a conditional ``UPDATE`` sees the
rows it read. PostgreSQL uses ``FOR UPDATE SKIP LOCKED`` for the same claims.
"""

from __future__ import annotations

import contextlib
import os
import sqlite3
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from sqlalchemy import create_engine, event
from sqlalchemy.engine import Engine
from sqlalchemy.pool import NullPool


def default_home() -> Path:
    """Where the embedded store, cache and logs live (``IDDS_HOME`` overrides)."""
    if os.environ.get("IDDS_HOME"):
        return Path(os.environ["IDDS_HOME"])
    try:
        from jupyter_core.paths import jupyter_data_dir

        return Path(jupyter_data_dir()) / "idds"
    except ImportError:  # jupyter_core is optional for the headless core
        base = os.environ.get("XDG_DATA_HOME") or os.path.expanduser("~/.local/share")
        return Path(base) / "jupyter" / "idds"


def private_dir(path: str | os.PathLike[str], mode: int = 0o700, force: bool = True) -> Path:
    """Create ``path`` (and its parents) with ``mode`` (default 0700: the service's state
    is its own); ``force``: also give an existing one that mode when this process owns it.
    Returns it."""
    p = Path(path)
    existed = p.is_dir()
    p.mkdir(parents=True, exist_ok=True, mode=mode)
    if not existed:
        os.chmod(p, mode)  # mkdir's mode is masked by the umask
    elif force:
        st = p.stat()
        if st.st_uid == os.geteuid() and (st.st_mode & 0o7777) != mode:
            os.chmod(p, mode)
    return p


def private_file(path: str | os.PathLike[str]) -> None:
    """Create ``path`` empty with mode 0600 if absent (an SQLite database, whose WAL and
    shared-memory files SQLite then creates with the same mode); make it 0600 if ours."""
    try:
        os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600))
    except FileExistsError:
        st = os.stat(path)
        if st.st_uid == os.geteuid() and st.st_mode & 0o077:
            os.chmod(path, st.st_mode & 0o7700)


def default_url() -> str:
    """The SQLite file in the user's Jupyter data dir, unless ``IDDS_DB_URL`` says otherwise."""
    if os.environ.get("IDDS_DB_URL"):
        return os.environ["IDDS_DB_URL"]
    home = private_dir(default_home(), force=False)
    return f"sqlite:///{home / 'idds.db'}"


class _WriteGate:
    """One writer at a time among this process's SQLite connections, queued in Python.

    SQLite makes a blocked ``BEGIN IMMEDIATE`` sleep in steps of 1, 2, 5, 10, 25...
    ms before it retries, so threads of one process (API, agents) that take turns
    on the write lock would each lose milliseconds per transaction. Waiting here
    instead hands the lock over the moment the holder commits. Other processes
    still meet SQLite's own lock and busy timeout.
    """

    def __init__(self) -> None:
        self._lock = threading.RLock()
        self._held: set[int] = set()

    def enter(self, conn: Any, timeout: float = -1) -> None:
        """Wait for the write turn; ``timeout`` (s, -1: no limit) over: "database is locked"."""
        if not self._lock.acquire(timeout=timeout):
            raise sqlite3.OperationalError(
                f"database is locked (this process's write turn not free after {timeout:g} s)"
            )
        self._held.add(_raw_id(conn))

    def leave(self, conn: Any) -> None:
        key = _raw_id(conn)
        if key in self._held:
            self._held.discard(key)
            self._lock.release()


_reading = threading.local()


@contextlib.contextmanager
def reading() -> Iterator[None]:
    """The transactions this thread begins in the block only read (an API's GET): on
    SQLite they begin deferred, so in WAL mode they neither wait for nor take the write
    lock that another process's agents hold for whole batches (a read behind it waited
    for SQLite's busy retries, up to the API's lock wait). A write in the block still
    works, taking the lock when it comes, or fails "database is locked" (a 503)."""
    before = getattr(_reading, "on", False)
    _reading.on = True
    try:
        yield
    finally:
        _reading.on = before


# One gate per database file in this process: the API's engine and the agents' engine
# on one file queue for the same write lock.
_gates: dict[str, _WriteGate] = {}
_gates_lock = threading.Lock()


def _gate_for(path: str) -> _WriteGate:
    if not path or path == ":memory:" or path.startswith("file:"):
        return _WriteGate()
    key = os.path.realpath(path)
    with _gates_lock:
        return _gates.setdefault(key, _WriteGate())


def _raw_id(conn: Any) -> int:
    """The DBAPI connection under a pool proxy (SQLAlchemy passes either)."""
    return id(getattr(conn, "dbapi_connection", None) or conn)


def is_sqlite(engine: Engine) -> bool:
    return engine.dialect.name == "sqlite"


def make_engine(url: str | None = None, lock_wait: float | None = None, **kwargs: Any) -> Engine:
    """Create an engine with the settings the agents rely on.

    ``lock_wait`` (seconds): how long a statement may wait for a lock another
    connection holds before it fails with "database is locked" (SQLite: this process's
    write turn, then the busy timeout) or ``LockNotAvailable`` (PostgreSQL's
    ``lock_timeout``). The API's engine sets it low so that a request answers 503 soon
    instead of hanging (:mod:`idds_jupyter.api.faults`); the agents wait 60 s (SQLite)
    or as long as PostgreSQL lets them.
    """
    url = url or default_url()
    if url.startswith("postgresql://"):
        url = "postgresql+psycopg://" + url[len("postgresql://") :]
    if url.startswith("sqlite"):
        path = url.split("///", 1)[-1]
        if path and path != ":memory:" and not path.startswith("file:"):
            Path(path).parent.mkdir(parents=True, exist_ok=True)
            private_file(path)  # 0600, and so its WAL
        wait = 60.0 if lock_wait is None else float(lock_wait)
        nullpool = kwargs.pop("nullpool", False)
        if lock_wait is not None and not nullpool and path and path != ":memory:":
            kwargs.setdefault("pool_timeout", wait)  # every connection busy: as good as locked
        engine = create_engine(
            url,
            connect_args={"timeout": wait, "check_same_thread": False},
            poolclass=NullPool if nullpool else None,
            **kwargs,
        )

        @event.listens_for(engine, "connect")
        def _on_connect(dbapi_conn: Any, _rec: Any) -> None:
            # Let SQLAlchemy, not pysqlite, emit BEGIN (see the module docstring).
            dbapi_conn.isolation_level = None
            cur = dbapi_conn.cursor()
            cur.execute("PRAGMA journal_mode=WAL")
            cur.execute("PRAGMA synchronous=NORMAL")
            cur.execute(f"PRAGMA busy_timeout={int(wait * 1000)}")
            cur.execute("PRAGMA foreign_keys=OFF")
            cur.close()

        gate = _gate_for(path)
        turn = -1.0 if lock_wait is None else wait  # the API's wait is bounded here too
        dialect = engine.dialect
        commit, rollback = dialect.do_commit, dialect.do_rollback

        # In the dialect's own begin, not an engine "begin" listener: with a listener on
        # the engine, every statement runs SQLAlchemy's event dispatch first.
        def _do_begin(dbapi_conn: Any) -> None:
            if getattr(_reading, "on", False):  # reading(): no write turn, no write lock
                getattr(dbapi_conn, "dbapi_connection", dbapi_conn).execute("BEGIN")
                return
            if turn < 0:
                gate.enter(dbapi_conn)
                try:
                    getattr(dbapi_conn, "dbapi_connection", dbapi_conn).execute("BEGIN IMMEDIATE")
                except BaseException:
                    gate.leave(dbapi_conn)
                    raise
                return
            _bounded_begin(dbapi_conn)

        def _bounded_begin(dbapi_conn: Any) -> None:
            """The write turn, then SQLite's lock, in ``lock_wait`` s in all: the time
            spent waiting for the turn is taken off the busy timeout of this BEGIN."""
            t0 = time.monotonic()
            gate.enter(dbapi_conn, turn)
            raw = getattr(dbapi_conn, "dbapi_connection", dbapi_conn)
            try:
                spent = time.monotonic() - t0
                if spent < 0.05:
                    raw.execute("BEGIN IMMEDIATE")
                    return
                raw.execute(f"PRAGMA busy_timeout={max(1, int((wait - spent) * 1000))}")
                try:
                    raw.execute("BEGIN IMMEDIATE")
                finally:
                    raw.execute(f"PRAGMA busy_timeout={int(wait * 1000)}")
            except BaseException:
                gate.leave(dbapi_conn)
                raise

        def _do_commit(dbapi_conn: Any) -> None:
            try:
                commit(dbapi_conn)
            finally:
                gate.leave(dbapi_conn)

        def _do_rollback(dbapi_conn: Any) -> None:
            try:
                rollback(dbapi_conn)
            finally:
                gate.leave(dbapi_conn)

        dialect.do_begin = _do_begin  # type: ignore[method-assign,assignment]
        dialect.do_commit = _do_commit  # type: ignore[method-assign,assignment]
        dialect.do_rollback = _do_rollback  # type: ignore[method-assign,assignment]

        return engine
    kwargs.setdefault("pool_pre_ping", True)
    kwargs.setdefault("pool_size", 10)
    if lock_wait is not None:
        args = dict(kwargs.pop("connect_args", {}))
        args["options"] = (
            args.get("options", "") + f" -c lock_timeout={int(lock_wait * 1000)}"
        ).strip()
        kwargs["connect_args"] = args
        kwargs.setdefault("pool_timeout", lock_wait)  # every connection busy: as good as locked
    return create_engine(url, **kwargs)
