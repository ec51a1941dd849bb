"""Database engines: SQLite (the embedded default) and PostgreSQL, one code path.

SQLite runs in WAL mode with ``BEGIN IMMEDIATE`` transactions: every agent
transaction that will write takes the write lock up front, so two processes
never deadlock upgrading a read lock, and a conditional ``UPDATE`` sees the
rows it read. PostgreSQL uses ``FOR UPDATE SKIP LOCKED`` for the same claims.
"""

from __future__ import annotations

import os
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


def default_url() -> str:
    """The SQLite file in the user's Jupyter data dir, unless ``IDDS_DB_URL`` says otherwise."""
    if os.environ.get("IDDS_DB_URL"):
        return os.environ["IDDS_DB_URL"]
    home = default_home()
    home.mkdir(parents=True, exist_ok=True)
    return f"sqlite:///{home / 'idds.db'}"


def is_sqlite(engine: Engine) -> bool:
    return engine.dialect.name == "sqlite"


def make_engine(url: str | None = None, **kwargs: Any) -> Engine:
    """Create an engine with the settings the agents rely on."""
    url = url or default_url()
    if url.startswith("postgresql://"):
        url = "postgresql+psycopg://" + url[len("postgresql://") :]
    if url.startswith("sqlite"):
        path = url.split("///", 1)[-1]
        if path and path != ":memory:":
            Path(path).parent.mkdir(parents=True, exist_ok=True)
        engine = create_engine(
            url,
            connect_args={"timeout": 60, "check_same_thread": False},
            poolclass=NullPool if kwargs.pop("nullpool", False) else None,
            **kwargs,
        )

        @event.listens_for(engine, "connect")
        def _on_connect(dbapi_conn: Any, _rec: Any) -> None:
            # Let SQLAlchemy, not pysqlite, emit BEGIN (see the module docstring).
            dbapi_conn.isolation_level = None
            cur = dbapi_conn.cursor()
            cur.execute("PRAGMA journal_mode=WAL")
            cur.execute("PRAGMA synchronous=NORMAL")
            cur.execute("PRAGMA busy_timeout=60000")
            cur.execute("PRAGMA foreign_keys=OFF")
            cur.close()

        @event.listens_for(engine, "begin")
        def _on_begin(conn: Any) -> None:
            conn.exec_driver_sql("BEGIN IMMEDIATE")

        return engine
    kwargs.setdefault("pool_pre_ping", True)
    kwargs.setdefault("pool_size", 10)
    return create_engine(url, **kwargs)
