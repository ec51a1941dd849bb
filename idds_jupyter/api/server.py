"""The standalone server: agents and the REST API in one process sharing one bus.

:func:`start_server` runs the IOLoop in a background thread (tests, benchmarks,
``idds-jupyter serve``) and returns a :class:`ServerHandle`. It issues (or
reuses) an admin token for the local OS user and can write a Jupyter-style
connection file ``idds-<port>.json`` in the Jupyter runtime dir.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import errno
import getpass
import json
import logging
import os
import socket
import tempfile
import threading
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tornado.httpserver import HTTPServer
from tornado.ioloop import IOLoop
from tornado.netutil import bind_sockets

from idds_jupyter.config import Config

log = logging.getLogger("idds_jupyter.api")

SERVE_TOKEN_NAME = "serve"


def runtime_dir() -> Path:
    try:
        from jupyter_core.paths import jupyter_runtime_dir

        return Path(jupyter_runtime_dir())
    except ImportError:  # pragma: no cover
        return Path(
            os.environ.get("JUPYTER_RUNTIME_DIR") or "~/.local/share/jupyter/runtime"
        ).expanduser()


def local_user() -> str:
    try:
        return getpass.getuser()
    except Exception:  # pragma: no cover - no passwd entry in some containers
        return str(os.getuid())


def _write_private(path: Path, text: str) -> None:
    """Owner-only, and whole or not at all: clients find connection files by name and may
    read one the moment it appears, so it is written aside and renamed into place."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".tmp-")  # mode 0600
    try:
        with os.fdopen(fd, "w") as f:
            f.write(text)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def serve_token(engine: Any, home: Path, user: str) -> str:
    """The admin token of ``user`` for this home: reused while valid, else issued anew.

    The plaintext is kept in ``<home>/serve-token`` (mode 0600): the store holds
    only digests, so this file is what lets a restarted server reuse its token.
    """
    from idds_jupyter.store import tokens

    path = Path(home) / "serve-token"
    try:
        token = path.read_text().strip()
        row = tokens.verify_token(engine, token) if token else None
        if row is not None and row["admin"] and row["user"] == user:
            return token
    except OSError:
        pass
    _, token = tokens.create_token(engine, user, SERVE_TOKEN_NAME, admin=True)
    _write_private(path, token + "\n")
    return token


@dataclass
class ServerHandle:
    url: str
    token: str
    port: int
    user: str
    connection_file: Path | None = None
    ctx: Any = None  # the ApiContext (orch, cache, bus, ...) for in-process users
    _stop: Any = None
    _stopped: bool = field(default=False, repr=False)

    def stop(self) -> None:
        if self._stopped:
            return
        self._stopped = True
        if self._stop is not None:
            self._stop()

    def __enter__(self) -> ServerHandle:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.stop()


def _bind(ip: str, port: int, retries: int) -> list[socket.socket]:
    for i in range(retries + 1):
        try:
            return bind_sockets(port + i if port else 0, ip)
        except OSError as exc:
            if exc.errno != errno.EADDRINUSE or i == retries or port == 0:
                raise
            log.info("port %d is in use, trying %d", port + i, port + i + 1)
    raise AssertionError("unreachable")


def start_server(
    config: Config,
    ip: str = "127.0.0.1",
    port: int = 0,
    base_url: str = "/",
    agents: bool = True,
    roles: Any = None,
    connection_file: bool = False,
    port_retries: int = 0,
    user: str | None = None,
    auth: Any = None,
    tune_gc: bool = False,
) -> ServerHandle:
    """Start agents (a :class:`~idds_jupyter.agents.runner.Runner`) and the API in this process.

    The IOLoop runs in a background thread; ``port=0`` picks a free port. When the
    port is in use, the next ``port_retries`` ports are tried (as Jupyter does).
    Returns once the server accepts connections; ``handle.stop()`` stops all.
    Unless ``config.server_url`` says otherwise, batch jobs with ``transfer: http``
    reach the API at this server's own URL. ``auth``, if given, makes the authenticator
    from the default token one (e.g. :class:`idds_jupyter.auth.hub.HubAuthenticator`);
    its ``app_settings(home)`` and ``extra_handlers(base_url)``, if any, join the app.
    """
    from idds_jupyter.api import api_base, make_app, url_join
    from idds_jupyter.api.context import make_context
    from idds_jupyter.bus import make_bus
    from idds_jupyter.core import Orchestrator
    from idds_jupyter.store.cache import Cache
    from idds_jupyter.store.engine import make_engine

    user = user or local_user()
    # bound first: batch jobs with transfer "http" reach this server at its URL
    sockets = _bind(ip, port, port_retries)
    actual = sockets[0].getsockname()[1]
    host = f"[{ip}]" if ":" in ip else ip
    url = f"http://{host}:{actual}" + url_join(base_url or "/").rstrip("/") + "/"
    if not config.server_url:
        public = socket.getfqdn() if ip in ("", "0.0.0.0", "::") else host
        config = dataclasses.replace(config, server_url=url.replace(host, public, 1))
    engine = make_engine(config.db_url)
    bus = make_bus(config.bus, engine=engine)
    runner = None
    if agents:
        from idds_jupyter.agents.runner import ROLES, Runner

        runner = Runner(config, roles=roles or ROLES, engine=engine, bus=bus, tune_gc=tune_gc)
        runner.start()
    try:
        orch = Orchestrator(
            config, engine=engine, bus=bus, dispatch=runner.dispatch if runner is not None else None
        )
        executor = ThreadPoolExecutor(16, thread_name_prefix="idds-api")
        cache = Cache(config.cache_dir, engine)
        ctx = make_context(config, orch=orch, bus=bus, cache=cache, executor=executor)
        token = serve_token(engine, Path(config.home), user)
        if auth is not None:
            ctx.auth = auth(ctx.auth)
    except BaseException:
        if runner is not None:
            runner.stop()
        bus.close()
        for sock in sockets:
            sock.close()
        raise
    ctx.self_url = url
    started = threading.Event()
    state: dict[str, Any] = {}

    def run() -> None:
        asyncio.set_event_loop(asyncio.new_event_loop())
        loop = IOLoop.current()
        extra_settings = getattr(ctx.auth, "app_settings", None)
        app = make_app(ctx, base_url, **(extra_settings(config.home) if extra_settings else {}))
        extra_handlers = getattr(ctx.auth, "extra_handlers", None)
        if extra_handlers is not None:
            app.add_handlers(".*$", extra_handlers(base_url))
        server = HTTPServer(app, max_body_size=cache.limit + 2**20, idle_connection_timeout=3600)
        server.add_sockets(sockets)
        state.update(loop=loop, server=server)
        loop.add_callback(started.set)
        loop.start()
        # stopped: close what the loop owned
        loop.close(all_fds=False)

    thread = threading.Thread(target=run, name="idds-api-ioloop", daemon=True)
    thread.start()
    if not started.wait(30):
        raise RuntimeError("the API server did not start in 30 s")

    conn_path: Path | None = None
    if connection_file:
        conn_path = runtime_dir() / f"idds-{actual}.json"
        _write_private(
            conn_path,
            json.dumps(
                {
                    "url": url,
                    "token": token,
                    "pid": os.getpid(),
                    "user": user,
                    "api": url_join(api_base(base_url)) + "/",
                },
                indent=2,
            )
            + "\n",
        )

    def stop() -> None:
        loop: IOLoop = state["loop"]

        async def shutdown() -> None:
            state["server"].stop()
            ctx.close()
            with contextlib.suppress(Exception):
                await asyncio.wait_for(state["server"].close_all_connections(), 5)
            loop.stop()

        loop.add_callback(shutdown)
        thread.join(15)
        executor.shutdown(wait=False, cancel_futures=True)
        if runner is not None:
            runner.stop()
        bus.close()
        if conn_path is not None:
            conn_path.unlink(missing_ok=True)

    return ServerHandle(
        url=url, token=token, port=actual, user=user, connection_file=conn_path, ctx=ctx, _stop=stop
    )


__all__ = ["ServerHandle", "local_user", "runtime_dir", "serve_token", "start_server"]
