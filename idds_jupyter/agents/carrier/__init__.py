"""Carrier: the agents that move jobs between the store and the backends.

Submitter (claims released jobs, sends them), Receiver (records results),
Trigger (releases children: :mod:`idds_jupyter.store.trigger`, run in the
Receiver's transaction), Finisher (ends works), Poller (heart-beats, reclaims,
cancels) and Conductor (outbound notifications). Submitter, Receiver and Poller
share the backends and the set of jobs this Carrier holds.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Any, NamedTuple

from idds_jupyter.agents.agent import Context
from idds_jupyter.backends import Backend, make_backend
from idds_jupyter.backends.transfer import HttpTransfer
from idds_jupyter.config import Config
from idds_jupyter.extras import needs_extras


class WorkSpecs(OrderedDict[int, dict[str, Any]]):
    """Rendered work specs by work id, the most recently stored kept (a spec never
    changes once created; one evicted is read again from the store)."""

    def __init__(self, limit: int = 4096) -> None:
        super().__init__()
        self.limit = limit

    def __setitem__(self, key: int, value: dict[str, Any]) -> None:
        super().__setitem__(key, value)
        self.move_to_end(key)
        while len(self) > self.limit:
            self.popitem(last=False)


class Held(NamedTuple):
    """A job this Carrier sent to a backend: which attempt, where, and what its result's
    note names (job, work, workflow, idx), so a success can be announced before it is recorded.
    ``alone``: its run's works are independent, so its record releases no other job."""

    attempt: int
    backend: str
    note: dict[str, Any]
    alone: bool = False


@dataclass
class CarrierState:
    """The backends this Carrier serves and the jobs it holds in them."""

    backends: dict[str, Backend]
    in_flight: dict[int, Held] = field(default_factory=dict)  # by job id
    lock: threading.Lock = field(default_factory=threading.Lock)
    room: threading.Event = field(default_factory=threading.Event)  # capacity freed
    hurried: int = 0  # bumped to have the Receivers record what they hold now
    work_specs: WorkSpecs = field(default_factory=WorkSpecs)
    # jobs sent before their rows are written (Submitter.ahead): their results wait
    unwritten: set[int] = field(default_factory=set)

    def __post_init__(self) -> None:
        self.written = threading.Condition(self.lock)  # notified as unwritten shrinks

    def wait_written(self, job_ids: set[int], timeout: float = 10.0) -> bool:
        """Until none of ``job_ids`` is a job sent ahead of its row (a result recorded
        before its row is written would find nothing to record)."""
        with self.written:
            return self.written.wait_for(lambda: self.unwritten.isdisjoint(job_ids), timeout)

    def count(self, backend: str) -> int:
        with self.lock:
            return sum(1 for h in self.in_flight.values() if h.backend == backend)

    def close(self) -> None:
        for b in self.backends.values():
            b.close()


def http_transfer(cfg: Config) -> HttpTransfer:
    """What batch backends need for ``transfer: http``: job tokens, spec blobs, the inbox.

    The job-token secret is read (or created) at the first token minted, so a
    Carrier that never runs an ``http`` job never needs it.
    """
    from idds_jupyter.store.cache import blob_path, write_blob
    from idds_jupyter.store.job_tokens import JobTokens

    tokens: list[JobTokens] = []
    lock = threading.Lock()
    cache_dir = cfg.cache_dir

    def mint(job_id: int, attempt: int, spec_sha: str, ttl: float) -> str:
        with lock:
            if not tokens:
                tokens.append(JobTokens.for_home(cfg.home, cfg.job_token_ttl))
        return tokens[0].mint(job_id, attempt, spec_sha, ttl)

    def put_spec(data: bytes) -> str:
        return write_blob(cache_dir, data)[0]

    def drop_spec(sha: str) -> None:
        blob_path(cache_dir, sha).unlink(missing_ok=True)

    return HttpTransfer(
        server_url=lambda: cfg.server_url,
        mint=mint,
        put_spec=put_spec,
        drop_spec=drop_spec,
        inbox=str(cfg.result_inbox),
        token_ttl=cfg.job_token_ttl,
    )


def open_backends(ctx: Context) -> CarrierState:
    cfg = ctx.config
    backends: dict[str, Backend] = {}
    for name in cfg.backends:
        opts: dict[str, Any] = {}
        if name == "local":
            opts = {
                "log_dir": str(cfg.log_dir),
                "isolation": cfg.isolation,
                "job_account": cfg.job_account,
                "user_map": cfg.user_map,
                "env_allow": cfg.env_allow,
                "idle_s": cfg.pool_idle_s,
                "jobs_dir": cfg.jobs_dir or str(cfg.home / "jobs"),
                "sudo_worker": cfg.sudo_worker,
            }
            if cfg.workers:
                opts["workers"] = cfg.workers
        elif name == "dask":
            opts = {"address": cfg.dask_address}
        # --- batch-system backends (idds_jupyter.backends.batch; docs/backends.md) ---
        elif name in ("slurm", "htcondor", "panda"):
            opts = {
                "shared_dir": str(cfg.batch_dir),
                "log_dir": str(cfg.log_dir),
                "poll_interval": cfg.batch_poll_interval,
                "transfer": cfg.transfer,
                "http": http_transfer(cfg),
                "submit_interval": cfg.batch_submit_interval,
                "env_allow": cfg.env_allow,
            }
            if name == "slurm":
                opts.update(partition=cfg.slurm_partition, account=cfg.slurm_account)
            elif name == "htcondor":
                opts.update(schedd=cfg.condor_schedd, token=cfg.condor_token)
            else:
                opts.update(
                    url=cfg.panda_url,
                    url_ssl=cfg.panda_url_ssl,
                    queue=cfg.panda_queue,
                    cloud=cfg.panda_cloud,
                    token=cfg.panda_token,
                    vo=cfg.panda_vo,
                )
        # --- end batch-system backends ---
        with needs_extras(f"the {name} backend"):
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
