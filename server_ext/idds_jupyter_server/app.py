"""``IddsExtension``: hosts the API and the orchestration core inside a Jupyter server.

The agents run in a child process the extension supervises (``agents =
process``, the default: :mod:`idds_jupyter_server.supervisor`), in threads of
the server process (``thread``), or elsewhere (``none``); either way nothing
heavy runs on the server's event loop — request handlers hand database work to
an executor. With a child and the default in-process bus, the server hosts a
ZeroMQ broker on loopback and both sides use it. Kernels started by this server
find it through ``IDDS_URL``/``IDDS_TOKEN`` (set in the server's environment,
which kernels inherit) and a connection file in the Jupyter runtime dir.
"""

from __future__ import annotations

import getpass
import json
import os
from pathlib import Path
from typing import Any

from jupyter_core.paths import jupyter_runtime_dir
from jupyter_server.extension.application import ExtensionApp
from traitlets import List, Unicode

from idds_jupyter.config import Config
from idds_jupyter.extras import needs_extras
from idds_jupyter_server.settings import config_traits, env_of, overrides
from idds_jupyter_server.supervisor import AgentsSupervisor


class IddsExtension(ExtensionApp):
    name = "idds_jupyter_server"
    description = "idds-jupyter: workflows of distributed tasks, hosted by the Jupyter server"
    load_other_extensions = True

    # every setting of the core (idds_jupyter.config.Config) as a traitlet of the same name:
    # c.IddsExtension.slurm_partition = "short" (docs/configuration.md)
    locals().update(config_traits())

    # only the extension's own
    admin_users = List(
        Unicode(),
        default_value=[],
        config=True,
        help="Jupyter users who see and control every user's runs",
    )

    runner: Any = None
    child: AgentsSupervisor | None = None
    broker: Any = None  # the ZeroMQ broker between this server and the agents' child
    ctx: Any = None
    connection_file: Path | None = None

    def _config(self) -> Config:
        """The settings: Config's defaults, the YAML file, the environment, then the traitlets."""
        return Config.load(None, **overrides(self))

    @property
    def server(self) -> Any:
        assert self.serverapp is not None
        return self.serverapp

    def initialize_settings(self) -> None:
        # a missing optional package (a PostgreSQL URL without psycopg, the dask backend
        # without Dask) fails the extension's loading with the extra to install
        with needs_extras("the idds-jupyter server extension"):
            self._start_core()

    def _start_core(self) -> None:
        if self._use_shared_service():  # a hub's single-user server: client mode
            return
        from idds_jupyter.agents.runner import Runner
        from idds_jupyter.api import make_context
        from idds_jupyter.auth import TokenAuthenticator
        from idds_jupyter.bus import make_bus
        from idds_jupyter.core import Orchestrator
        from idds_jupyter.store.engine import make_engine
        from idds_jupyter_server.auth import JupyterAuthenticator

        cfg = self._config()
        engine = make_engine(cfg.db_url)
        if cfg.agents == "process" and cfg.bus == "local":
            # two processes: events must cross, through a broker this server hosts
            from idds_jupyter.bus import ZmqBroker

            self.broker = ZmqBroker("tcp://127.0.0.1:*", "tcp://127.0.0.1:*").start()
            pub = self.broker.pub_endpoint.rsplit(":", 1)[1]
            sub = self.broker.sub_endpoint.rsplit(":", 1)[1]
            cfg.bus = f"zmq://127.0.0.1:{pub}:{sub}"
        bus = make_bus(cfg.bus, engine=engine)
        if cfg.agents == "thread":
            self.runner = Runner(cfg, engine=engine, bus=bus).start()  # migrates the schema
        else:
            from idds_jupyter.store.migrate import upgrade

            upgrade(engine)
            if cfg.agents == "process":
                # the child reads the same settings: the traitlets given, through its environment
                env = {
                    **os.environ,
                    **env_of(overrides(self)),
                    "IDDS_DB_URL": cfg.db_url,
                    "IDDS_BUS": cfg.bus,
                    "IDDS_HOME": str(cfg.home),
                }
                self.child = AgentsSupervisor(env).start()
        orch = Orchestrator(
            cfg,
            engine=engine,
            bus=bus,
            migrate=False,
            dispatch=self.runner.dispatch if self.runner is not None else None,
        )
        fallback = TokenAuthenticator(engine)
        auth = JupyterAuthenticator(
            self.server.identity_provider,
            self.server.web_app.settings.get("authorizer"),
            fallback,
            admins=set(self.admin_users),
            owner=getpass.getuser(),
        )
        self.ctx = make_context(cfg, orch=orch, bus=bus, auth=auth)
        fallback.executor = self.ctx.executor
        self.log.info(
            "idds-jupyter: core on %s, agents %s%s",
            cfg.db_url,
            cfg.agents,
            f" (pid {self.child.pid}, bus {cfg.bus})" if self.child is not None else "",
        )

    shared: Any = None  # client_mode.SharedService: a hub's shared service, no core here

    def _use_shared_service(self) -> bool:
        """In a JupyterHub single-user server with the hub's iDDS service there: no core of
        our own; kernels get the service's URL and this server's hub token (client_mode)."""
        from idds_jupyter_server import client_mode

        if not client_mode.in_hub_server():
            return False
        self.shared = client_mode.find_shared_service(self._config())
        if self.shared is None:
            return False
        client_mode.publish(self.shared)
        self.log.info(
            "idds-jupyter: client mode, using the hub's shared service at %s", self.shared.url
        )
        return True

    def initialize_handlers(self) -> None:
        """The routes, through the extension's ``handlers`` (the server prepends its base_url)."""
        if self.shared is not None:  # client mode: the API is the shared service's, forwarded
            from idds_jupyter_server.forward import forward_handlers

            self.handlers.extend(forward_handlers(self.shared, "/"))
            return
        if self.ctx is None:  # the core did not start (the extension failed loading)
            return
        from idds_jupyter_server.handlers import jupyter_handlers

        self.handlers.extend(jupyter_handlers(self.ctx))
        self._publish_connection()

    def _publish_connection(self) -> None:
        """Let kernels of this server find it without the user typing a URL or a token."""
        url = self.server.connection_url
        self.ctx.self_url = url
        if not self.ctx.config.server_url:  # batch jobs with transfer "http" reach us here
            self.ctx.config.server_url = url
        token = self.server.identity_provider.token or self._mint_token()
        os.environ["IDDS_URL"] = url
        os.environ["IDDS_TOKEN"] = token
        runtime = Path(jupyter_runtime_dir())
        runtime.mkdir(parents=True, exist_ok=True)
        self.connection_file = runtime / f"idds-server-{os.getpid()}.json"
        fd = os.open(self.connection_file, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as f:
            json.dump({"url": url, "token": token, "pid": os.getpid(), "kind": "jupyter"}, f)

    def _mint_token(self) -> str:
        """A server without a Jupyter token (password, hub): kernels get an idds token."""
        from idds_jupyter.store.tokens import create_token

        _row, token = create_token(
            self.ctx.orch.engine, user=getpass.getuser(), name="jupyter-kernels"
        )
        return token

    async def stop_extension(self) -> None:
        if self.ctx is not None:
            self.ctx.close()
        if self.runner is not None:
            self.runner.stop()
        if self.child is not None:
            self.child.stop()
        if self.broker is not None:
            self.broker.stop()
        if self.connection_file is not None:
            self.connection_file.unlink(missing_ok=True)
