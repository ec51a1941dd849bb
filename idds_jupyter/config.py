"""Configuration of the core: a YAML file, then environment variables, then arguments.

Each setting is one field of :class:`Config` (declared with :func:`setting`: default and
help). It can be given as a key of the YAML file (``--config FILE`` or ``IDDS_CONFIG``),
as the environment variable ``IDDS_<NAME>`` (``IDDS_SLURM_PARTITION``), or, in a Jupyter
server, as the traitlet ``c.IddsExtension.<name>``; later ones win. The reference,
docs/configuration.md, is generated from the fields:
``python -m idds_jupyter_server.reference --markdown``.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import MISSING, Field, dataclass, field, fields, replace
from pathlib import Path
from typing import Any

import yaml

from idds_jupyter.model.policy import BackendPolicy
from idds_jupyter.store.engine import default_home, default_url

#: the agent roles a runner may take (``idds-jupyter serve|agents --only ROLE``)
AGENT_ROLES = ("clerk", "transformer", "carrier", "steerer")


def setting(
    default: Any = MISSING,
    help: str = "",
    *,
    factory: Callable[[], Any] | None = None,
    env: str | None = None,
    choices: tuple[str, ...] | None = None,
    secret: bool = False,
) -> Any:
    """A :class:`Config` field with what documents it (help, environment variable, choices),
    so that YAML, the environment, the extension's traitlets and docs/configuration.md share
    one definition. ``secret``: never shown back (``GET /config``) but as set or not."""
    meta = {"help": help, "env": env, "choices": choices, "secret": secret}
    if factory is not None:
        return field(default_factory=factory, metadata=meta)
    return field(default=default, metadata=meta)


@dataclass
class Config:
    """Every setting of the core, one definition each: a field with its default and its help.

    The same setting is a YAML key (``--config``/``IDDS_CONFIG``), an environment variable
    (``IDDS_<NAME>``), and a traitlet of the Jupyter server extension
    (``c.IddsExtension.<name>``); docs/configuration.md is generated from these fields.
    """

    home: Path = setting(
        factory=default_home,
        help="Directory of the embedded store, cache and logs (default: "
        "idds in the Jupyter data dir)",
    )
    db_url: str = setting("", "Database URL (SQLAlchemy); empty: SQLite idds.db in home")
    bus: str = setting("local", "Event bus: local, none, db, zmq://HOST:PUB:SUB")
    backend: str = setting("local", "The default backend of works that name none")
    backends: tuple[str, ...] = setting(
        ("local",),
        "The backends this Carrier serves (the "
        "default backend and those of backend_policy are added)",
    )
    workers: int = setting(0, "Local worker processes; 0 = one per core")
    dask_address: str | None = setting(
        None, "Dask scheduler address (dask backend); none: a LocalCluster"
    )
    lock_ttl: float = setting(60.0, "Seconds before a silent owner's jobs are reclaimed")
    poll_interval: float = setting(2.0, "Seconds between fallback polls when no event arrives")
    settle: float = setting(
        0.02,
        "Seconds the Clerk and the Conductor wait after a wake-up, so "
        "that what ends together is handled in one transaction",
    )
    backend_policy: tuple[dict[str, Any], ...] = setting(
        (),
        "Rules choosing the backend of works that name none (a list; env: YAML or JSON "
        "text); docs/backends.md",
    )
    batch: int = setting(1000, "Jobs per claim and per result transaction")
    notify_urls: tuple[str, ...] = setting((), "URLs notified of run events")
    notify_kinds: tuple[str, ...] = setting(
        ("workflow.terminal",),
        "Outbound messages sent to notify_urls: workflow.terminal (a run ended), "
        "work.terminal (a work ended), files.processed (jobs of dataset files ended)",
    )
    # batch-system backends (slurm, htcondor, panda): see docs/backends.md
    shared_dir: str | None = setting(
        None,
        "Directory seen by every execute node at the same "
        "path (batch backends); default: home/batch",
    )
    slurm_partition: str | None = setting(None, "Slurm partition of the jobs (sbatch --partition)")
    slurm_account: str | None = setting(None, "Slurm account of the jobs (sbatch --account)")
    condor_schedd: str | None = setting(
        None, "host:port of the HTCondor schedd (default: the local one)"
    )
    condor_token: str | None = setting(
        None, "IDTOKEN file (or token text) for the schedd", secret=True
    )
    panda_url: str | None = setting(None, "PanDA server base URL (PANDA_URL / PANDA_URL_SSL)")
    panda_queue: str | None = setting(None, "computingSite / PanDA queue of the jobs")
    panda_url_ssl: str | None = setting(None, "PANDA_URL_SSL when it differs from panda_url")
    panda_cloud: str | None = setting(None, "Cloud of the PanDA jobs")
    panda_token: str | None = setting(
        None, "OIDC id token (text or file) for PanDA (PANDA_AUTH_ID_TOKEN)", secret=True
    )
    panda_vo: str | None = setting(None, "Auth VO of the PanDA token (PANDA_AUTH_VO), the jobs' VO")
    batch_poll_interval: float = setting(1.0, "Seconds between scheduler polls (batch backends)")
    batch_submit_interval: float | None = setting(
        None,
        "Least seconds between two submissions while jobs already wait in the scheduler "
        "(none: the backend's own default)",
    )
    transfer: str = setting(
        "shared",
        "How batch jobs get their blobs and send back results: "
        "shared (the cache by path, a shared filesystem) or http (this "
        "service's API, with a per-job token)",
        choices=("shared", "http"),
    )
    server_url: str | None = setting(
        None, "URL jobs reach the API at (transfer http); default: the server's own"
    )
    job_token_ttl: float = setting(86400.0, "Lifetime (s) of a job token, plus the job's walltime")
    # storage faults (docs/security.md)
    api_lock_wait: float = setting(
        3.0,
        "Seconds an API request waits for a database lock "
        "another process holds before answering 503 with Retry-After "
        "(the agents wait 60 s)",
    )
    disk_reserve_mb: float = setting(
        32.0,
        "MB an SQLite store keeps beside it (idds.db-reserve) for "
        "aborts on a full disk; while it is used up, submissions "
        "answer 507; 0: none",
    )
    # Jobs and the service (docs/security.md, "Isolation levels")
    isolation: str = setting(
        "none",
        "What jobs run as: none (the service's account: a "
        "single-user laptop), account (job_account, which cannot read the "
        "service's state), uid (each owner's OS account, user_map)",
        choices=("none", "account", "uid"),
    )
    job_account: str = setting("idds-job", "OS account of the jobs (isolation account)")
    user_map: dict[str, str] = setting(
        factory=dict,
        help="iDDS user -> OS account (isolation "
        "uid; default: the same name); env: alice=os_alice,bob=b",
    )
    env_allow: tuple[str, ...] = setting(
        (), "More variables of the service's environment that jobs see"
    )
    pool_idle_s: float = setting(
        60.0, "Seconds a local worker bound to an owner may stay idle before it is ended"
    )
    jobs_dir: str | None = setting(
        None, "Per-account job areas under isolation; default: home/jobs"
    )
    sudo_worker: str | None = setting(
        None,
        "Isolation without root: the worker command a sudoers rule lets the "
        "service run as the job accounts; default: idds-jupyter-worker beside "
        "the interpreter",
    )
    allow_origin: str = setting(
        "",
        "Standalone server: another origin whose pages may open the "
        "live stream (*: any); the extension uses Jupyter's settings",
    )
    allow_origin_pat: str = setting("", "Standalone server: a regex of such origins")
    # Shared JupyterHub deployment (docs/deploy-jupyterhub.md)
    service_url: str = setting(
        "/services/idds/",
        "The shared service's URL as the kernels of a "
        "hub's single-user servers reach it: a path on the hub's public "
        "URL, or a full URL",
    )
    hub_admin_groups: tuple[str, ...] = setting((), "Hub groups whose members are iDDS admins")
    hub_client: str = setting(
        "auto",
        "In a hub's single-user server: auto (use the shared "
        "service when it answers), on (always), off (an embedded core)",
        choices=("auto", "on", "off"),
    )
    agents: str = setting(
        "process",
        "Jupyter server extension: where the core's agents run. process: a child process "
        "the extension supervises (restarted if it dies, stopped with the server), so the "
        "server's interpreter stays responsive; thread: threads of the server's own "
        "interpreter; none: not at all (another process serves the same database)",
        choices=("process", "thread", "none"),
    )
    # OIDC access tokens (JWT) of clients outside the hub (docs/deploy-jupyterhub.md, "OIDC")
    oidc_issuer: str = setting(
        "",
        "OIDC issuer whose access tokens (JWT) the service accepts "
        "('': none); its keys from the issuer's discovery document",
    )
    oidc_audience: str = setting("", "The audience (aud) an OIDC access token must name")
    oidc_jwks_url: str = setting(
        "", "The issuer's JWKS URL (default: jwks_uri of its .well-known/openid-configuration)"
    )
    oidc_username_claim: str = setting("preferred_username", "The OIDC claim naming the user")
    oidc_groups_claim: str = setting("groups", "The OIDC claim listing the user's groups")
    oidc_admin_groups: tuple[str, ...] = setting((), "OIDC groups whose members are iDDS admins")
    # Limits on what one request may cost (docs/operations.md, "Limits"); each refusal is a
    # 4xx naming the setting. Cache uploads have their own limit (the cache's).
    max_body_size: int = setting(8 * 2**20, "Bytes of a JSON request body")
    max_json_depth: int = setting(64, "Nesting of a JSON body or a YAML template")
    max_template_nodes: int = setting(1_000_000, "Values of a YAML template, aliases expanded")
    max_yaml_aliases: int = setting(100, "Alias uses (*name) in a YAML template")
    max_jobs_per_work: int = setting(
        50_000, "Jobs one work may declare (n_jobs, kwargs_list, .map)"
    )
    max_jobs_per_submission: int = setting(
        100_000, "Jobs of a submission (and of a run grown by add_works)"
    )
    max_active_jobs_per_user: int = setting(
        200_000, "Quota: unfinished jobs of a user's unfinished runs (admins exempt; 0: none)"
    )
    max_submissions_per_minute: int = setting(
        600, "Quota: POST /requests per user, sliding window (admins exempt; 0: none)"
    )
    group_quotas: tuple[str, ...] = setting(
        (),
        "Per-group quotas and limits, 'GROUP:SETTING=N' (max_active_jobs_per_user, "
        "max_submissions_per_minute, max_jobs_per_submission, max_jobs_per_work; 0: none); "
        "a member of several groups gets the most generous",
    )
    expression_max_steps: int = setting(
        10_000_000, "Evaluation steps of one expression (conditions, loop until)"
    )
    expression_max_size: int = setting(
        1_000_000, "Size of any value an expression builds (characters + elements, deep)"
    )
    expression_max_depth: int = setting(100, "Parse nesting of an expression")
    # The data carousel against Rucio (docs/usecases.md, "Data carousel with Rucio"): works
    # with input_dataset rucio://SCOPE:NAME are staged by the service when rucio_host is set
    rucio_host: str = setting("", "Rucio server URL ('': the service stages no rucio:// dataset)")
    rucio_auth_host: str = setting("", "Rucio auth server URL (default: rucio_host)")
    rucio_auth_type: str = setting(
        "userpass",
        "How the service authenticates to Rucio",
        choices=("userpass", "x509", "x509_proxy", "oidc", "token"),
    )
    rucio_account: str = setting("", "Rucio account of the staging rules")
    rucio_vo: str = setting("", "Rucio VO (multi-VO servers; '': the default)")
    rucio_username: str = setting("", "Rucio userpass identity")
    rucio_password: str = setting("", "Rucio userpass password", secret=True)
    rucio_client_cert: str = setting("", "x509 certificate file (auth_type x509)")
    rucio_client_key: str = setting("", "x509 key file (auth_type x509)")
    rucio_x509_proxy: str = setting("", "x509 proxy file (auth_type x509_proxy)")
    rucio_auth_token_file: str = setting(
        "", "File holding an OIDC/Rucio token (auth_type oidc, token)", secret=True
    )
    rucio_rse_expression: str = setting("DISK", "RSE expression the staging rule copies to")
    rucio_lifetime: int = setting(7 * 86400, "Lifetime (s) of the staging rule")
    rucio_activity: str = setting("Staging", "Activity of the staging rule")
    rucio_poll_interval: float = setting(
        10.0, "Seconds between polls of a rule's locks (the fallback of the STOMP messages)"
    )
    rucio_stuck_after: float = setting(
        3600.0, "Seconds a file's lock may stay STUCK before its job fails with the Rucio state"
    )
    rucio_stomp_brokers: tuple[str, ...] = setting(
        (), "host:port of the STOMP brokers Rucio's Hermes sends to (none: polling only)"
    )
    rucio_stomp_destination: str = setting(
        "/topic/rucio.events", "Topic or queue of Rucio's messages"
    )
    rucio_stomp_vhost: str = setting("", "STOMP virtual host ('': the broker's host name)")
    # metrics (docs/metrics.md)
    metrics_port: int = setting(
        0,
        "Port of a separate Prometheus /metrics endpoint, without authentication "
        "(0: none; the API's authenticated GET /idds/api/v1/metrics is always there)",
    )
    metrics_addr: str = setting(
        "127.0.0.1", "Address the metrics_port endpoint listens on (loopback by default)"
    )
    metrics_cache_s: float = setting(
        5.0,
        "Seconds a scrape's reading of the store is reused: scrapes more frequent "
        "than this cost the database nothing",
    )

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
            cfg.db_url = (
                f"sqlite:///{Path(cfg.home) / 'idds.db'}"
                if (path or "home" in env or "home" in overrides)
                else default_url()
            )
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


@dataclass(frozen=True)
class Setting:
    """What documents one :class:`Config` field, for the traitlets and the reference."""

    name: str  # the field, the YAML key and the traitlet's name
    env: str  # its environment variable
    kind: str  # str, int, float, bool, path, list[str], list[dict] or dict
    optional: bool  # None is a value (unset: the code's own default)
    default: Any  # the default value; MISSING when computed at run time (see help)
    help: str
    choices: tuple[str, ...] | None
    secret: bool


_KINDS = {"str": "str", "int": "int", "float": "float", "bool": "bool", "Path": "path"}


def _describe(f: Field[Any]) -> Setting:
    t = str(f.type).replace(" ", "")
    optional = t.endswith("|None")
    base = t.removesuffix("|None")
    if base in _KINDS:
        kind = _KINDS[base]
    elif base.startswith("tuple[str"):
        kind = "list[str]"
    elif base.startswith("tuple[dict"):
        kind = "list[dict]"
    elif base.startswith("dict["):
        kind = "dict"
    else:
        raise TypeError(
            f"Config.{f.name}: a setting's type must be str, int, float, bool, Path, "
            f"tuple[str, ...], tuple[dict, ...] or dict (optional or not), got {f.type}"
        )
    if f.default is not MISSING:
        default = f.default
    elif f.default_factory in (dict, list, tuple):
        default = f.default_factory()
    else:
        default = MISSING
    meta = f.metadata
    return Setting(
        name=f.name,
        env=meta.get("env") or f"IDDS_{f.name.upper()}",
        kind=kind,
        optional=optional,
        default=default,
        help=meta.get("help", ""),
        choices=meta.get("choices"),
        secret=bool(meta.get("secret")),
    )


def settings() -> list[Setting]:
    """Every setting of :class:`Config`, in declaration order."""
    return [_describe(f) for f in fields(Config)]


#: field -> its environment variable (``IDDS_<NAME>`` unless the field names another)
_ENV = {s.name: s.env for s in settings()}
_SETTINGS = {s.name: s for s in settings()}


def _by_type(name: str, value: Any) -> Any:
    """A value read from YAML or the environment, as its setting's type says."""
    s = _SETTINGS.get(name)
    if s is None:
        return value
    if isinstance(value, str):
        if s.kind == "int":
            value = int(value)
        elif s.kind == "float":
            value = float(value)
        elif s.kind == "bool":
            value = value.strip().lower() in ("1", "true", "yes", "on")
        elif s.kind == "path":
            value = Path(value)
        elif s.kind == "list[str]":
            value = tuple(v for v in value.split(",") if v)
        elif s.kind in ("list[dict]", "dict"):
            value = yaml.safe_load(value)  # YAML or JSON text
    if s.kind.startswith("list[") and isinstance(value, list | tuple):
        value = tuple(value)
    if s.choices and isinstance(value, str) and value.lower() in s.choices:
        value = value.lower()
    if s.choices and value not in s.choices and not (s.optional and value is None):
        raise ValueError(f"{name} must be one of {', '.join(s.choices)}, got {value!r}")
    return value


def _coerce(data: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in data.items():
        if k in ("workers", "batch") or k.startswith(("max_", "expression_max_")):
            out[k] = int(v)
        elif k in (
            "lock_ttl",
            "poll_interval",
            "batch_poll_interval",
            "job_token_ttl",
            "api_lock_wait",
            "disk_reserve_mb",
            "settle",
            "batch_submit_interval",
        ):
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
                v = (
                    dict(p.split("=", 1) for p in v.split(",") if p)
                    if "=" in v
                    else yaml.safe_load(v)
                )
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
        elif k == "group_quotas":
            entries = tuple(v.split(",")) if isinstance(v, str) else tuple(v)
            out[k] = tuple(e for e in (str(x).strip() for x in entries) if e)
            for e in out[k]:
                parse_group_quota(e)
        elif k in ("backends", "notify_urls", "notify_kinds", "env_allow"):
            out[k] = tuple(v.split(",")) if isinstance(v, str) else tuple(v)
        else:
            out[k] = _by_type(k, v)
    return out


#: the settings a group quota may set (``group_quotas``)
GROUP_QUOTA_SETTINGS = (
    "max_active_jobs_per_user",
    "max_submissions_per_minute",
    "max_jobs_per_submission",
    "max_jobs_per_work",
)


def parse_group_quota(entry: str) -> tuple[str, str, int]:
    """``"GROUP:SETTING=N"`` as ``(group, setting, n)``; a clear error naming the entry."""
    group, sep, rest = entry.partition(":")
    setting_name, eq, value = rest.partition("=")
    group, setting_name = group.strip().strip("/"), setting_name.strip()
    if not (sep and eq and group):
        raise ValueError(f"group_quotas entry {entry!r} is not 'GROUP:SETTING=N'")
    if setting_name not in GROUP_QUOTA_SETTINGS:
        raise ValueError(
            f"group_quotas entry {entry!r}: {setting_name!r} is not one of "
            f"{', '.join(GROUP_QUOTA_SETTINGS)}"
        )
    try:
        n = int(value)
    except ValueError:
        raise ValueError(
            f"group_quotas entry {entry!r}: {value.strip()!r} is not a whole number"
        ) from None
    if n < 0:
        raise ValueError(f"group_quotas entry {entry!r}: the limit must be 0 (none) or more")
    return group, setting_name, n
