"""Carrier: the agents that move jobs between the store and the backends.

Submitter (claims released jobs, sends them), Receiver (records results),
Trigger (releases children), Finisher (ends works), Poller (heart-beats,
reclaims, cancels) and Conductor (outbound notifications). Submitter, Receiver
and Poller share the backends and the set of jobs this Carrier holds.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from typing import Any

from idds_jupyter.agents.agent import Context
from idds_jupyter.backends import Backend, make_backend


@dataclass
class CarrierState:
    """The backends this Carrier serves and the jobs it holds in them."""

    backends: dict[str, Backend]
    in_flight: dict[int, tuple[int, str]] = field(default_factory=dict)  # job -> (attempt, backend)
    lock: threading.Lock = field(default_factory=threading.Lock)
    room: threading.Event = field(default_factory=threading.Event)  # capacity freed
    work_specs: dict[int, dict[str, Any]] = field(default_factory=dict)  # immutable once created

    def count(self, backend: str) -> int:
        with self.lock:
            return sum(1 for _, b in self.in_flight.values() if b == backend)

    def close(self) -> None:
        for b in self.backends.values():
            b.close()


def open_backends(ctx: Context) -> CarrierState:
    cfg = ctx.config
    backends: dict[str, Backend] = {}
    for name in cfg.backends:
        opts: dict[str, Any] = {}
        if name == "local":
            opts = {"log_dir": str(cfg.log_dir)}
            if cfg.workers:
                opts["workers"] = cfg.workers
        elif name == "dask":
            opts = {"address": cfg.dask_address}
        # --- batch-system backends (idds_jupyter.backends.batch; docs/backends.md) ---
        elif name in ("slurm", "htcondor", "panda"):
            opts = {"shared_dir": str(cfg.batch_dir), "log_dir": str(cfg.log_dir),
                    "poll_interval": cfg.batch_poll_interval}
            if name == "slurm":
                opts.update(partition=cfg.slurm_partition, account=cfg.slurm_account)
            elif name == "htcondor":
                opts.update(schedd=cfg.condor_schedd, token=cfg.condor_token)
            else:
                opts.update(url=cfg.panda_url, url_ssl=cfg.panda_url_ssl, queue=cfg.panda_queue,
                            cloud=cfg.panda_cloud, token=cfg.panda_token, vo=cfg.panda_vo)
        # --- end batch-system backends ---
        backends[name] = make_backend(name, **opts)
    return CarrierState(backends=backends)


def carrier_agents(ctx: Context, state: CarrierState) -> list[Any]:
    from idds_jupyter.agents.carrier.conductor import Conductor
    from idds_jupyter.agents.carrier.poller import Poller
    from idds_jupyter.agents.carrier.receiver import Receiver
    from idds_jupyter.agents.carrier.submitter import Submitter

    agents: list[Any] = [Submitter(ctx, state), Poller(ctx, state), Conductor(ctx)]
    agents += [Receiver(ctx, state, name) for name in state.backends]
    return agents
