"""Configuration of the core: a YAML file, then environment variables, then arguments.

``IDDS_DB_URL``, ``IDDS_BUS``, ``IDDS_BACKEND``, ``IDDS_HOME``, ``IDDS_WORKERS``,
``IDDS_DASK_ADDRESS``, ``IDDS_CONFIG`` (the file) and, for the batch backends,
``IDDS_SHARED_DIR``, ``IDDS_SLURM_PARTITION``, ``IDDS_SLURM_ACCOUNT``,
``IDDS_CONDOR_SCHEDD``, ``IDDS_CONDOR_TOKEN``, ``IDDS_PANDA_URL``,
``IDDS_PANDA_URL_SSL``, ``IDDS_PANDA_QUEUE``, ``IDDS_PANDA_CLOUD``,
``IDDS_PANDA_TOKEN``, ``IDDS_PANDA_VO`` are read; ``IDDS_TRANSFER``
(``shared`` | ``http``: how batch jobs get their inputs and return their
results), ``IDDS_SERVER_URL`` (the URL jobs reach this service's API at, for
``http``) and ``IDDS_JOB_TOKEN_TTL`` too.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any

import yaml

from idds_jupyter.model.policy import BackendPolicy
from idds_jupyter.store.engine import default_home, default_url

#: the agent roles a runner may take (``idds-jupyter serve|agents --only ROLE``)
AGENT_ROLES = ("clerk", "transformer", "carrier", "steerer")

_ENV = {
    "db_url": "IDDS_DB_URL",
    "bus": "IDDS_BUS",
    "backend": "IDDS_BACKEND",
    "workers": "IDDS_WORKERS",
    "dask_address": "IDDS_DASK_ADDRESS",
    "lock_ttl": "IDDS_LOCK_TTL",
    "poll_interval": "IDDS_POLL_INTERVAL",
    "settle": "IDDS_SETTLE",
    "backend_policy": "IDDS_BACKEND_POLICY",
    # batch-system backends
    "shared_dir": "IDDS_SHARED_DIR",
    "slurm_partition": "IDDS_SLURM_PARTITION",
    "slurm_account": "IDDS_SLURM_ACCOUNT",
    "condor_schedd": "IDDS_CONDOR_SCHEDD",
    "condor_token": "IDDS_CONDOR_TOKEN",
    "panda_url": "IDDS_PANDA_URL",
    "panda_queue": "IDDS_PANDA_QUEUE",
    "panda_url_ssl": "IDDS_PANDA_URL_SSL",
    "panda_cloud": "IDDS_PANDA_CLOUD",
    "panda_token": "IDDS_PANDA_TOKEN",
    "panda_vo": "IDDS_PANDA_VO",
    # how batch jobs get their blobs and send back results (docs/backends.md)
    "transfer": "IDDS_TRANSFER",
    "server_url": "IDDS_SERVER_URL",
    "job_token_ttl": "IDDS_JOB_TOKEN_TTL",
    "api_lock_wait": "IDDS_API_LOCK_WAIT",
    "disk_reserve_mb": "IDDS_DISK_RESERVE_MB",
    # browsers of other origins allowed to open the live stream (docs/security.md)
    "allow_origin": "IDDS_ALLOW_ORIGIN",
    "allow_origin_pat": "IDDS_ALLOW_ORIGIN_PAT",
    "batch_submit_interval": "IDDS_BATCH_SUBMIT_INTERVAL",
    # the shared JupyterHub deployment (docs/deploy-jupyterhub.md)
    "service_url": "IDDS_SERVICE_URL",
    "hub_admin_groups": "IDDS_HUB_ADMIN_GROUPS",
    "hub_client": "IDDS_HUB_CLIENT",
    # what jobs run as and see (docs/security.md, "Isolation levels")
    "isolation": "IDDS_ISOLATION",
    "job_account": "IDDS_JOB_ACCOUNT",
    "user_map": "IDDS_USER_MAP",
    "env_allow": "IDDS_ENV_ALLOW",
    "pool_idle_s": "IDDS_POOL_IDLE_S",
    "jobs_dir": "IDDS_JOBS_DIR",
    # limits on what one request may cost (docs/operations.md, "Limits")
    "max_body_size": "IDDS_MAX_BODY_SIZE",
    "max_json_depth": "IDDS_MAX_JSON_DEPTH",
    "max_template_nodes": "IDDS_MAX_TEMPLATE_NODES",
    "max_yaml_aliases": "IDDS_MAX_YAML_ALIASES",
    "max_jobs_per_work": "IDDS_MAX_JOBS_PER_WORK",
    "max_jobs_per_submission": "IDDS_MAX_JOBS_PER_SUBMISSION",
    "max_active_jobs_per_user": "IDDS_MAX_ACTIVE_JOBS_PER_USER",
    "max_submissions_per_minute": "IDDS_MAX_SUBMISSIONS_PER_MINUTE",
    "expression_max_steps": "IDDS_EXPRESSION_MAX_STEPS",
    "expression_max_size": "IDDS_EXPRESSION_MAX_SIZE",
    "expression_max_depth": "IDDS_EXPRESSION_MAX_DEPTH",
}


@dataclass
class Config:
    home: Path = field(default_factory=default_home)
    db_url: str = ""
    bus: str = "local"  # local | none | db | zmq://host:pub:sub
    backend: str = "local"  # the default backend of works that name none
    backends: tuple[str, ...] = ("local",)  # the backends this Carrier serves
    workers: int = 0  # local worker processes; 0 = one per core
    dask_address: str | None = None
    lock_ttl: float = 60.0  # seconds before a silent owner's jobs are reclaimed
    poll_interval: float = 2.0  # fallback polling when no event arrives
    # the Clerk and the Conductor wait this long after a wake-up, so that what ends
    # together is handled in one transaction, not one each (and not in a call's way)
    settle: float = 0.02
    # rules choosing the backend of works that name none (idds_jupyter.model.policy)
    backend_policy: tuple[dict[str, Any], ...] = ()
    batch: int = 1000  # jobs per claim / per result transaction
    notify_urls: tuple[str, ...] = ()
    # batch-system backends (slurm, htcondor, panda): see docs/backends.md
    shared_dir: str | None = None  # seen by every execute node at the same path; default home/batch
    slurm_partition: str | None = None
    slurm_account: str | None = None
    condor_schedd: str | None = None  # "host:port" of the schedd (default: the local one)
    condor_token: str | None = None  # IDTOKEN file (or token text) for the schedd
    panda_url: str | None = None  # PanDA server base URL (PANDA_URL / PANDA_URL_SSL)
    panda_queue: str | None = None  # computingSite / PanDA queue of the jobs
    panda_url_ssl: str | None = None  # PANDA_URL_SSL when it differs from panda_url
    panda_cloud: str | None = None  # cloud of the jobs
    panda_token: str | None = None  # OIDC id token (text or file) -> PANDA_AUTH_ID_TOKEN
    panda_vo: str | None = None  # auth VO of the token (PANDA_AUTH_VO), the jobs' VO
    batch_poll_interval: float = 1.0  # seconds between scheduler polls
    # least seconds between two submissions while jobs already wait in the scheduler
    # (None: the backend's own default; see docs/backends.md)
    batch_submit_interval: float | None = None
    # "shared": batch jobs read blobs from and write results into the cache by path (shared
    # filesystem); "http": they fetch them from this service's API with a per-job token
    transfer: str = "shared"
    server_url: str | None = None  # URL jobs reach the API at ("http"); default: the server's own
    job_token_ttl: float = 86400.0  # lifetime of a job token (plus the job's walltime)
    # storage faults (docs/security.md): an API request waits this long (s) for a database
    # lock another process holds, then answers 503 (the agents wait 60 s); an SQLite store
    # keeps this many MB beside it for aborts on a full disk (idds_jupyter.store.space)
    api_lock_wait: float = 2.0
    disk_reserve_mb: float = 32.0
    # Jobs and the service (docs/security.md): "none" (jobs run as the service's account: a
    # single-user laptop), "account" (as job_account, which cannot read the service's state),
    # "uid" (as the owner's OS account, user_map: iDDS user -> OS account, default same name)
    isolation: str = "none"
    job_account: str = "idds-job"
    user_map: dict[str, str] = field(default_factory=dict)
    env_allow: tuple[str, ...] = ()  # more variables of the service's environment jobs see
    pool_idle_s: float = 60.0  # a local worker bound to an owner and idle this long is ended
    jobs_dir: str | None = None  # per-account job areas under isolation; default home/jobs
    # Standalone server: a browser page of another origin may open the live stream only if
    # it is allow_origin ("*": any) or matches the regex allow_origin_pat (Jupyter's rule;
    # the server extension uses the Jupyter server's own settings). docs/security.md
    allow_origin: str = ""
    allow_origin_pat: str = ""
    # Shared JupyterHub deployment (docs/deploy-jupyterhub.md). The service's URL as the
    # kernels of a hub's single-user servers reach it: a path on the hub's public URL, or
    # a full URL. hub_client: "auto" (in a hub, use the shared service when it answers),
    # "on" (in a hub, always), "off" (always an embedded core).
    service_url: str = "/services/idds/"
    hub_admin_groups: tuple[str, ...] = ()  # hub groups whose members are iDDS admins
    hub_client: str = "auto"
    # Limits on what one request may cost (docs/operations.md, "Limits"); each refusal
    # is a 4xx naming the setting. Cache uploads have their own limit (the cache's).
    max_body_size: int = 8 * 2**20  # bytes of a JSON request body
    max_json_depth: int = 64  # nesting of a JSON body or a YAML template
    max_template_nodes: int = 1_000_000  # values of a YAML template, aliases expanded
    max_yaml_aliases: int = 100  # alias uses (*name) in a YAML template
    max_jobs_per_work: int = 50_000  # jobs one work may declare (n_jobs, kwargs_list, .map)
    max_jobs_per_submission: int = 100_000  # jobs of a submission (and of a run grown by add_works)
    # per-user quotas (admins are exempt; 0 = no quota): 429 naming the quota
    max_active_jobs_per_user: int = 200_000  # unfinished jobs of a user's unfinished runs
    max_submissions_per_minute: int = 600  # POST /requests per user, sliding window
    # the safe expression language (conditions, loop ``until``): evaluation steps, size of
    # any value it builds (characters + elements, deep), and parse nesting
    expression_max_steps: int = 10_000_000
    expression_max_size: int = 1_000_000
    expression_max_depth: int = 100

    @classmethod
    def load(cls, path: str | os.PathLike[str] | None = None, **overrides: Any) -> Config:
        cfg = cls()
        path = path or os.environ.get("IDDS_CONFIG")
        if path:
            data = yaml.safe_load(Path(path).read_text()) or {}
            known = {f.name for f in fields(cls)}
            unknown = set(data) - known
            if unknown:
                raise ValueError(f"config file {path}: unknown keys {sorted(unknown)}")
            cfg = replace(cfg, **_coerce(data))
        env = {k: os.environ[v] for k, v in _ENV.items() if os.environ.get(v)}
        if os.environ.get("IDDS_HOME"):
            env["home"] = os.environ["IDDS_HOME"]
        cfg = replace(cfg, **_coerce(env))
        cfg = replace(cfg, **_coerce({k: v for k, v in overrides.items() if v is not None}))
        if not cfg.db_url:
            cfg.db_url = (f"sqlite:///{Path(cfg.home) / 'idds.db'}"
                          if (path or "home" in env or "home" in overrides) else default_url())
        if cfg.backend not in cfg.backends:
            cfg.backends = (*cfg.backends, cfg.backend)
        for name in cfg.policy.backends:  # a backend a rule sends work to is served too
            if name not in cfg.backends:
                cfg.backends = (*cfg.backends, name)
        return cfg

    @property
    def policy(self) -> BackendPolicy:
        """The parsed ``backend_policy`` (ValueError naming the bad rule)."""
        cached = self.__dict__.get("_policy")
        if cached is None or cached[0] is not self.backend_policy:
            cached = (self.backend_policy, BackendPolicy(self.backend_policy))
            self.__dict__["_policy"] = cached
        return cached[1]

    @property
    def log_dir(self) -> Path:
        return Path(self.home) / "logs"

    @property
    def cache_dir(self) -> Path:
        return Path(self.home) / "cache"

    @property
    def batch_dir(self) -> Path:
        """Where batch backends put specs and results (``shared_dir`` or home/batch)."""
        return Path(self.shared_dir) if self.shared_dir else Path(self.home) / "batch"

    @property
    def result_inbox(self) -> Path:
        """Where the API drops results that jobs POSTed (``transfer: http``) for the backends."""
        return self.batch_dir / "inbox"


def _coerce(data: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in data.items():
        if k in ("workers", "batch") or k.startswith(("max_", "expression_max_")):
            out[k] = int(v)
        elif k in ("lock_ttl", "poll_interval", "batch_poll_interval", "job_token_ttl",
                   "api_lock_wait", "disk_reserve_mb",
                   "settle", "batch_submit_interval"):
            out[k] = float(v)
        elif k == "home":
            out[k] = Path(v)
        elif k == "backend_policy":
            rules = yaml.safe_load(v) if isinstance(v, str) else v  # env: YAML or JSON text
            if not isinstance(rules, list):
                raise ValueError(f"backend_policy must be a list of rules, got {rules!r}")
            out[k] = tuple(rules)
        elif k == "user_map":  # env: "alice=alice_os,bob=bob_os" (or YAML/JSON)
            if isinstance(v, str):
                v = (dict(p.split("=", 1) for p in v.split(",") if p) if "=" in v
                     else yaml.safe_load(v))
            if not isinstance(v, dict):
                raise ValueError(f"user_map must map iDDS users to OS accounts, got {v!r}")
            out[k] = {str(a): str(b) for a, b in v.items()}
        elif k == "isolation":
            if v not in ("none", "account", "uid"):
                raise ValueError(f"isolation must be none, account or uid, got {v!r}")
            out[k] = v
        elif k == "pool_idle_s":
            out[k] = float(v)
        elif k == "hub_admin_groups":  # env: "g1,g2"
            out[k] = tuple(g for g in v.split(",") if g) if isinstance(v, str) else tuple(v)
        elif k in ("backends", "notify_urls", "env_allow"):
            out[k] = tuple(v.split(",")) if isinstance(v, str) else tuple(v)
        else:
            out[k] = v
    return out
