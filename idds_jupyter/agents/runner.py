"""The agent runner: every role in one process, or some roles per process, several copies safely.

``Runner(config).start()`` is what ``idds-jupyter serve``/``agents`` and the
embedded mode use. Each runner registers itself (owner id, pid, heartbeat) so
the locks it takes carry an owner that others can tell is alive.
"""

from __future__ import annotations

import importlib.util
import logging
import os
import socket
import threading
import uuid
from collections.abc import Iterable
from typing import Any

from sqlalchemy import delete

from idds_jupyter.agents.agent import Agent, Context
from idds_jupyter.agents.carrier import CarrierState, carrier_agents, open_backends
from idds_jupyter.agents.carrier.finisher import Finisher
from idds_jupyter.agents.clerk import Clerk
from idds_jupyter.agents.transformer import Transformer
from idds_jupyter.bus import make_bus
from idds_jupyter.config import AGENT_ROLES, Config
from idds_jupyter.model.space import HPO_INSTALL_HINT
from idds_jupyter.store.engine import make_engine, private_dir
from idds_jupyter.store.jobs import release_owned
from idds_jupyter.store.migrate import upgrade
from idds_jupyter.store.sql import db_now
from idds_jupyter.store.tables import agents

log = logging.getLogger("idds_jupyter.agents")

ROLES = AGENT_ROLES


class Runner:
    def __init__(
        self,
        config: Config | None = None,
        roles: Iterable[str] = ROLES,
        engine: Any = None,
        bus: Any = None,
        tune_gc: bool = False,
    ) -> None:
        """``tune_gc``: the runner owns its process (``idds-jupyter serve``/``agents``/``run``)
        and may tune the garbage collector for it (:func:`tune_gc`). Hosted in someone
        else's process (the Jupyter server extension, a kernel) it leaves the interpreter's
        settings alone."""
        self.tune_gc = tune_gc
        self.config = config or Config.load()
        self.roles = tuple(roles)
        unknown = set(self.roles) - set(ROLES)
        if unknown:
            raise ValueError(f"unknown agent role(s) {sorted(unknown)}; choose from {list(ROLES)}")
        self._own_engine = engine is None
        self.engine = engine or make_engine(self.config.db_url)
        self._own_bus = bus is None
        self.bus = bus or make_bus(self.config.bus, engine=self.engine)
        self.owner = f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
        self.ctx = Context(engine=self.engine, bus=self.bus, config=self.config, owner=self.owner)
        self.agents: list[Agent] = []
        self.carrier: CarrierState | None = None
        self.rucio: Any = None  # the RucioWatcher (data/rucio.py) when rucio_host is set

    def start(self) -> Runner:
        # Importing jsonschema (and its format checkers) takes seconds: do it now, in
        # the background, not in the first submission.
        threading.Thread(
            target=_warm_up, args=(self.tune_gc,), name="idds-warm-up", daemon=True
        ).start()
        if "steerer" in self.roles and not self._steerer_available():
            self.roles = tuple(r for r in self.roles if r != "steerer")
        upgrade(self.engine)
        # the service's state: 0700 directories (home 0711 under isolation: jobs enter it to
        # reach their areas, and find nothing they may read on the way; docs/security.md).
        # Batch jobs with transfer "shared" read the batch directory and the cache by path,
        # possibly as another account: then the home keeps the modes the umask (or the
        # operator) gave it; transfer "http" closes it.
        cfg = self.config
        if cfg.transfer == "shared" and {"slurm", "htcondor", "panda"} & set(cfg.backends):
            cfg.log_dir.mkdir(parents=True, exist_ok=True)
        else:
            private_dir(cfg.home, 0o700 if cfg.isolation == "none" else 0o711)
            private_dir(cfg.log_dir)
            private_dir(cfg.cache_dir)
        with self.engine.begin() as conn:
            conn.execute(
                agents.insert().values(
                    id=self.owner,
                    roles=",".join(self.roles),
                    host=socket.gethostname(),
                    pid=os.getpid(),
                    started_at=db_now(),
                    heartbeat=db_now(),
                )
            )
        if "clerk" in self.roles:
            self.agents.append(Clerk(self.ctx))
        if "transformer" in self.roles:
            self.agents.append(Transformer(self.ctx))
        if "carrier" in self.roles:
            self.carrier = open_backends(self.ctx)
            self.agents += carrier_agents(self.ctx, self.carrier)
            self.agents.append(Finisher(self.ctx))
        if "steerer" in self.roles:
            from idds_jupyter.agents.steerer import Steerer  # imports Optuna: only when asked for

            self.agents.append(Steerer(self.ctx, dispatch=self.dispatch))
        for a in self.agents:
            a.start()
        if cfg.rucio_host and "transformer" in self.roles:  # rucio:// input datasets
            from idds_jupyter.data.rucio import RucioSettings, RucioWatcher

            self.rucio = RucioWatcher(
                self.engine, self.ctx.publish, RucioSettings.from_config(cfg), stop=self.ctx.stop
            ).start()
        log.info("agents %s started as %s", ",".join(self.roles), self.owner)
        return self

    def _steerer_available(self) -> bool:
        """Optuna is the ``hpo`` extra: without it the default roles go on without the
        Steerer (a base install runs every other workflow); asked for by name, it is an error."""
        if importlib.util.find_spec("optuna") is not None:
            return True
        if set(self.roles) != set(ROLES):
            raise ModuleNotFoundError(f"the steerer role needs Optuna: {HPO_INSTALL_HINT}")
        log.warning(
            "steerer role not started: Optuna is not installed (%s); "
            "studies steered by the server wait until a runner with it starts",
            HPO_INSTALL_HINT,
        )
        return False

    @property
    def dispatch(self) -> Any:
        """This runner's Submitter, for submissions made in this process to claim
        their first jobs in their own transaction (``Orchestrator.dispatch``)."""
        from idds_jupyter.agents.carrier.submitter import Submitter

        return next((a for a in self.agents if isinstance(a, Submitter)), None)

    def stop(self, timeout: float = 10.0) -> None:
        self.ctx.stop.set()
        for a in self.agents:
            a.wake.set()
        if self.carrier is not None:
            for b in self.carrier.backends.values():
                b.wake()
        for a in self.agents:
            a.join(timeout)
        if self.rucio is not None:
            self.rucio.stop(timeout)
        if self.carrier is not None:
            self.carrier.close()
        try:
            with self.engine.begin() as conn:
                release_owned(conn, self.owner)
                conn.execute(delete(agents).where(agents.c.id == self.owner))
        except Exception:  # the database may already be gone at interpreter exit
            log.debug("could not unregister %s", self.owner, exc_info=True)
        if self._own_bus:
            self.bus.close()
        if self._own_engine:
            # its pooled connections go now, not when the engine is collected: a process
            # (a test session) that starts many runners would otherwise fill PostgreSQL's
            # connection slots. Whoever still holds the engine gets a new connection.
            self.engine.dispose()

    def wait(self) -> None:
        """Block until stopped (signal handlers call :meth:`stop`)."""
        while not self.ctx.stop.wait(1.0):
            pass

    def __enter__(self) -> Runner:
        return self.start()

    def __exit__(self, *exc: Any) -> None:
        self.stop()


def _warm_up(gc_tuning: bool = False) -> None:
    """Import the validators (a first submission would wait for them); then, in a process
    the runner owns, :func:`tune_gc`."""
    from idds_jupyter.model import Workflow

    Workflow.from_dict({"name": "warm-up", "works": []})
    if gc_tuning:
        tune_gc()


def tune_gc() -> None:
    """Leave the service's startup heap out of the collector, and collect less often.

    Only for a process the service owns (the CLI's ``serve``, ``agents`` and ``run``):
    these are interpreter-wide settings, never changed inside a host's process (the
    Jupyter server, a kernel).

    A full collection walks every object and stops every agent and request while it
    runs; the startup heap is frozen out of it, and the young generation is collected
    less often because a transaction makes and frees hundreds of objects (the measured
    pauses are in docs/operations.md).
    """
    import gc

    gc.collect()
    gc.freeze()
    gc.set_threshold(7000, 20, 20)


def run_forever(runner: Runner) -> None:
    import signal

    def _stop(*_: Any) -> None:
        threading.Thread(target=runner.stop, daemon=True).start()

    signal.signal(signal.SIGTERM, _stop)
    signal.signal(signal.SIGINT, _stop)
    runner.start()
    runner.wait()
