"""The data carousel against a real Rucio: datasets, staging rules and replica states.

A work's ``input_dataset: rucio://SCOPE:NAME`` names a Rucio dataset. A
:class:`RucioSource` (``rucio-clients``, the ``rucio`` extra) does for it what iDDS
does for the carousel:

1. lists the dataset's files from Rucio and registers them in the catalog, under the
   dataset name ``rucio://SCOPE:NAME``; each catalog file is named by its **PFN at the
   destination** (``file`` of the job that processes it, so processing code opens the
   real file) and keeps its DID, size and Rucio state in its metadata;
2. creates, or adopts when one already exists for the same account and expression, a
   replication rule of the dataset to ``rse_expression`` (``lifetime``, ``activity``,
   ``notify``), as a carousel asks Rucio to stage from tape;
3. learns which files are on disk in two ways, as iDDS does: Rucio's messages over
   STOMP (``transfer-done`` from Hermes: the fast path, :class:`StompListener`) and,
   every ``poll_interval`` seconds, the rule's replica locks (the lazy fallback, so a
   lost message only delays a job). A file whose lock is OK is marked available, which
   releases the job bound to it;
4. reports the per-file staging state to the catalog (``queued``, ``staging``,
   ``stuck``; the run view's per-file state): a file whose lock stays STUCK for longer
   than ``stuck_after`` seconds fails its job, with the Rucio state in the error. Rucio
   keeps retrying it by its own terms; once its replica is AVAILABLE the file is marked
   available again and ``retry`` of the run processes it.

An unreachable Rucio (a restart, a network cut) is logged and polled again; nothing is
lost, since Rucio's locks are the truth and the catalog only ever moves files forward.

Outbound, :class:`StompNotifier` sends run and work events over the same kind of broker
(as iDDS's Conductor does), for other services to follow the carousel.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import quote

from idds_jupyter.data.stomp import StompListener, StompNotifier, hermes_message

log = logging.getLogger("idds_jupyter.data.rucio")

__all__ = [
    "SCHEME",
    "CatalogSink",
    "RestSink",
    "RucioSettings",
    "RucioSource",
    "RucioWatcher",
    "check_settings",
    "StompListener",
    "StompNotifier",
    "hermes_message",
    "is_rucio",
    "parse_rucio",
    "pfn_path",
    "process_pfn",
    "rucio_client",
]

SCHEME = "rucio://"
INSTALL_HINT = "pip install 'idds-jupyter[rucio]'"


def is_rucio(uri: object) -> bool:
    """Whether ``uri`` names a Rucio dataset (``rucio://SCOPE:NAME``)."""
    return isinstance(uri, str) and uri.startswith(SCHEME)


def parse_rucio(uri: str) -> tuple[str, str]:
    """``rucio://SCOPE:NAME`` -> ``(SCOPE, NAME)``; a clear ``ValueError`` otherwise."""
    if not is_rucio(uri):
        raise ValueError(f"not a Rucio dataset {uri!r}: expected rucio://SCOPE:NAME")
    scope, sep, name = uri[len(SCHEME) :].partition(":")
    if not sep or not scope or not name or "/" in scope:
        raise ValueError(f"bad Rucio dataset {uri!r}: expected rucio://SCOPE:NAME")
    return scope, name


def pfn_path(pfn: str) -> str:
    """The local path of a ``file://`` PFN (``file://localhost/data/x`` -> ``/data/x``);
    any other string is returned as it is."""
    if pfn.startswith("file://"):
        rest = pfn[len("file://") :]
        return "/" + rest.split("/", 1)[1] if not rest.startswith("/") else rest
    return pfn


@dataclass
class RucioSettings:
    """Where Rucio is and how to stage: the ``rucio_*`` settings of the configuration.

    ``host``/``auth_host`` empty: the rucio client's own configuration (``RUCIO_CONFIG``,
    ``/opt/rucio/etc/rucio.cfg``). ``auth_type``: ``userpass``, ``x509`` (``client_cert``,
    ``client_key`` or ``x509_proxy``), ``oidc`` (an existing ``auth_token_file``) or
    ``token`` (the same file).
    """

    host: str = ""
    auth_host: str = ""
    auth_type: str = "userpass"
    account: str | None = None
    vo: str | None = None
    username: str | None = None
    password: str | None = None
    client_cert: str | None = None
    client_key: str | None = None
    x509_proxy: str | None = None
    auth_token_file: str | None = None
    ca_cert: str | bool | None = None
    # the staging rule
    rse_expression: str = "DISK"
    lifetime: int | None = 7 * 86400
    activity: str | None = "Staging"
    grouping: str = "DATASET"
    source_replica_expression: str | None = None
    scheme: str = "file"  # the protocol of the PFNs given to jobs
    # how we learn of staged files
    poll_interval: float = 10.0
    stuck_after: float = 3600.0
    stomp_brokers: tuple[str, ...] = ()  # host:port
    stomp_destination: str = "/topic/rucio.events"
    stomp_user: str | None = None
    stomp_password: str | None = None
    stomp_vhost: str | None = None

    @classmethod
    def from_config(cls, config: Any, **overrides: Any) -> RucioSettings:
        """From the core's :class:`~idds_jupyter.config.Config` (its ``rucio_*`` fields)."""
        kw: dict[str, Any] = {}
        for f in cls.__dataclass_fields__:
            v = getattr(config, f"rucio_{f}", None)
            if v is not None and v != "":
                kw[f] = tuple(v) if f == "stomp_brokers" else v
        kw.update(overrides)
        return cls(**kw)


def check_settings(settings: RucioSettings) -> None:
    """Refuse credentials that cannot work, naming the configuration setting, before Rucio's
    client turns them into a less telling error."""

    def need_file(value: str | None, setting: str, what: str) -> None:
        if not value:
            raise ValueError(f"{setting} is not set: rucio_auth_type {t!r} needs {what}")
        if not os.path.isfile(value):
            raise ValueError(f"{setting}: {what} {value!r} does not exist")

    t = settings.auth_type
    if t == "x509":
        need_file(settings.client_cert, "rucio_client_cert", "an x509 certificate file")
        need_file(settings.client_key, "rucio_client_key", "an x509 key file")
    elif t == "x509_proxy":
        proxy = settings.x509_proxy or os.environ.get("X509_USER_PROXY")
        need_file(proxy, "rucio_x509_proxy", "an x509 proxy file (or X509_USER_PROXY)")
    elif t in ("oidc", "token"):
        need_file(settings.auth_token_file, "rucio_auth_token_file", "a file holding the token")
        with open(str(settings.auth_token_file)) as fh:
            if not fh.read().strip():
                raise ValueError(f"rucio_auth_token_file: {settings.auth_token_file!r} is empty")
    elif t not in ("userpass",):
        raise ValueError(
            f"rucio_auth_type {t!r} is not one of userpass, x509, x509_proxy, oidc, token"
        )


def rucio_client(settings: RucioSettings) -> Any:
    """A ``rucio.client.Client`` for these settings (checked by :func:`check_settings`).

    ``oidc``/``token``: the token file is handed to Rucio's client by the WLCG bearer-token
    discovery it implements (``BEARER_TOKEN_FILE`` in this process's environment; jobs never
    inherit it, see :mod:`idds_jupyter.worker.env`)."""
    check_settings(settings)
    os.environ.setdefault("RUCIO_CLIENT_MODE", "1")  # never the server's code paths
    try:
        from rucio.client import Client
    except ImportError as exc:  # pragma: no cover - the extra is missing
        raise ModuleNotFoundError(
            f"the Rucio data source needs rucio-clients: {INSTALL_HINT}"
        ) from exc
    creds: dict[str, Any] = {}
    if settings.auth_type == "userpass":
        creds = {"username": settings.username, "password": settings.password}
    elif settings.auth_type == "x509":
        creds = {"client_cert": settings.client_cert, "client_key": settings.client_key}
    elif settings.auth_type == "x509_proxy":
        creds = {"client_proxy": settings.x509_proxy}
    kw: dict[str, Any] = {
        "auth_type": "oidc" if settings.auth_type == "token" else settings.auth_type,
        "account": settings.account,
        "logger": logging.getLogger("idds_jupyter.data.rucio.client"),
    }
    if settings.host:
        kw["rucio_host"] = settings.host
        kw["auth_host"] = settings.auth_host or settings.host
    if settings.vo:
        kw["vo"] = settings.vo
    if settings.ca_cert is not None:
        kw["ca_cert"] = settings.ca_cert
    if any(v is not None for v in creds.values()):
        kw["creds"] = creds
    if settings.auth_token_file and settings.auth_type in ("oidc", "token"):
        os.environ["BEARER_TOKEN_FILE"] = os.path.abspath(settings.auth_token_file)
    return Client(**{k: v for k, v in kw.items() if v is not None})


class RestSink:
    """The catalog of an iDDS service through its REST API (a :class:`~idds_jupyter.client.Client`):
    a data source run in a notebook or a script."""

    def __init__(self, client: Any) -> None:
        self.client = client

    @staticmethod
    def _path(name: str, suffix: str) -> str:
        return f"catalog/datasets/{quote(name, safe='')}/{suffix}"

    def add_dataset(self, name: str, rows: list[dict[str, Any]], meta: dict[str, Any]) -> None:
        self.client.request(
            "POST", "catalog/datasets", json_body={"name": name, "files": rows, "meta": meta}
        )

    def mark_available(self, name: str, names: list[str]) -> int:
        res = self.client.request("POST", self._path(name, "available"), json_body={"files": names})
        return int(res.json().get("released", 0))

    def set_staging(self, name: str, names: list[str], state: str, error: str | None) -> int:
        body: dict[str, Any] = {"files": names, "state": state}
        if error:
            body["error"] = error[:4000]
        res = self.client.request("POST", self._path(name, "staging"), json_body=body)
        return int(res.json().get("failed_jobs", 0))


class CatalogSink:
    """The catalog of one owner inside the service (:class:`RucioWatcher`): the store directly,
    and the bus for the events that wake the agents."""

    def __init__(self, catalog: Any, publish: Callable[[list[Any]], None]) -> None:
        self.catalog, self.publish = catalog, publish

    def add_dataset(self, name: str, rows: list[dict[str, Any]], meta: dict[str, Any]) -> None:
        self.catalog.add_dataset(name, rows, meta)

    def mark_available(self, name: str, names: list[str]) -> int:
        from idds_jupyter.bus.event import JOBS_READY, make_event

        released = int(self.catalog.mark_available(name, names))
        if released:
            self.publish([make_event(JOBS_READY)])
        return released

    def set_staging(self, name: str, names: list[str], state: str, error: str | None) -> int:
        from idds_jupyter.bus.event import outcome_events

        out = self.catalog.set_staging(name, names, state, error)
        if out.failed:
            self.publish(
                outcome_events(out.terminal_works, out.dirty_workflows, out.ended_workflows)
            )
        return int(out.failed)


@dataclass
class _File:
    did: str
    pfn: str
    size: int | None
    state: str = "queued"  # queued | staging | available | stuck | failed
    stuck_since: float | None = None
    available_at: float | None = None


@dataclass
class PollResult:
    """What one poll of the rule's locks found and did."""

    available: list[str] = field(default_factory=list)  # DIDs newly available
    released: int = 0
    failed_jobs: int = 0
    states: dict[str, int] = field(default_factory=dict)  # lock state -> files


class RucioSource:
    """One Rucio dataset feeding the catalog of an iDDS service (through its REST client).

    ``start()`` registers the files, makes sure a staging rule exists and runs the
    poll loop (and the STOMP listener, when brokers are configured) in a background
    thread; ``stop()`` ends it. :meth:`poll` is one round of the lazy fallback, usable
    on its own.
    """

    def __init__(
        self,
        client: Any,
        dataset: str,
        settings: RucioSettings | None = None,
        rucio: Any = None,
        until_done: bool = False,
    ) -> None:
        """``client``: an iDDS :class:`~idds_jupyter.client.Client` (or a sink:
        :class:`RestSink`, :class:`CatalogSink`); ``until_done``: the loop ends once every
        file is available."""
        self.sink: Any = client if isinstance(client, RestSink | CatalogSink) else RestSink(client)
        self.until_done = until_done
        self.uri = dataset
        self.scope, self.name = parse_rucio(dataset)
        self.settings = settings or RucioSettings()
        self._rucio = rucio
        self.rule_id: str | None = None
        self.files: dict[str, _File] = {}  # DID -> file
        self._by_pfn: dict[str, str] = {}
        self.dest_rses: set[str] = set()
        self.messages = 0
        self.polls = 0
        self.available_via: dict[str, int] = {}  # "message" | "poll" -> files learnt of so
        self.last_error: str | None = None
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._wake = threading.Event()
        self._thread: threading.Thread | None = None
        self.listener: StompListener | None = None

    # ------------------------------------------------------------------ setup
    @property
    def rucio(self) -> Any:
        if self._rucio is None:
            self._rucio = rucio_client(self.settings)
        return self._rucio

    def register(self) -> int:
        """List the dataset's files in Rucio and register them in the catalog (their PFNs at
        the destination as names); returns how many files. Idempotent."""
        s = self.settings
        listed = list(self.rucio.list_files(self.scope, self.name))
        if not listed:
            raise LookupError(f"Rucio dataset {self.scope}:{self.name} has no files")
        self.dest_rses = {r["rse"] for r in self.rucio.list_rses(s.rse_expression)}
        if not self.dest_rses:
            raise LookupError(f"rse_expression {s.rse_expression!r} matches no RSE in Rucio")
        dest = sorted(self.dest_rses)[0]
        dids = [f"{f['scope']}:{f['name']}" for f in listed]
        pfns: dict[str, str] = {}
        for i in range(0, len(dids), 500):
            pfns.update(
                self.rucio.lfns2pfns(dest, dids[i : i + 500], operation="read", scheme=s.scheme)
            )
        with self._lock:
            for f, did in zip(listed, dids, strict=True):
                if did not in self.files:
                    self.files[did] = _File(did=did, pfn=pfns[did], size=f.get("bytes"))
                    self._by_pfn[pfns[did]] = did
        rows = [
            {"name": self.files[d].pfn, "size": self.files[d].size, "meta": {"did": d, "rse": dest}}
            for d in dids
        ]
        self.sink.add_dataset(
            self.uri,
            rows,
            {
                "source": "rucio",
                "scope": self.scope,
                "name": self.name,
                "rse_expression": s.rse_expression,
            },
        )
        return len(rows)

    def ensure_rule(self) -> str:
        """The staging rule: adopted when the account already has one of the dataset to the
        same expression, else created; returns its id."""
        s = self.settings
        account = self.rucio.account
        for rule in self.rucio.list_did_rules(self.scope, self.name):
            if rule.get("rse_expression") == s.rse_expression and rule.get("account") == account:
                self.rule_id = str(rule["id"])
                log.info("adopted rule %s of %s:%s", self.rule_id, self.scope, self.name)
                return self.rule_id
        kw: dict[str, Any] = {
            "lifetime": s.lifetime,
            "activity": s.activity,
            "grouping": s.grouping,
            "notify": "Y",
            "source_replica_expression": s.source_replica_expression,
        }
        ids = self.rucio.add_replication_rule(
            [{"scope": self.scope, "name": self.name}],
            1,
            s.rse_expression,
            **{k: v for k, v in kw.items() if v is not None},
        )
        self.rule_id = str(ids[0])
        log.info(
            "created rule %s of %s:%s to %s", self.rule_id, self.scope, self.name, s.rse_expression
        )
        return self.rule_id

    # ------------------------------------------------------------------ learning of files
    def _mark_available(self, dids: Sequence[str], via: str = "poll") -> int:
        """Catalog: these files are on disk (their jobs may go)."""
        # claimed under the lock: a message and a poll learning of one file at once mark it once
        with self._lock:
            fresh = [d for d in dids if d in self.files and self.files[d].state != "available"]
            before = {d: self.files[d].state for d in fresh}
            for d in fresh:
                self.files[d].state = "available"
            pfns = [self.files[d].pfn for d in fresh]
        if not fresh:
            return 0
        try:
            released = self.sink.mark_available(self.uri, pfns)
        except BaseException:
            with self._lock:
                for d, state in before.items():
                    self.files[d].state = state
            raise
        t = time.time()
        with self._lock:
            self.available_via[via] = self.available_via.get(via, 0) + len(fresh)
            for d in fresh:
                self.files[d].available_at = t
        return int(released)

    def _set_state(self, dids: Sequence[str], state: str, error: str | None = None) -> int:
        with self._lock:  # a file a message made available meanwhile stays available
            dids = [d for d in dids if self.files[d].state != "available"]
            for d in dids:
                self.files[d].state = state
        if not dids:
            return 0
        return int(self.sink.set_staging(self.uri, [self.files[d].pfn for d in dids], state, error))

    def on_message(self, event_type: str, payload: Mapping[str, Any]) -> None:
        """A Rucio message (Hermes): ``transfer-done`` to a destination RSE marks its file
        available at once; rule and lock messages wake the poll loop."""
        self.messages += 1
        if event_type in ("transfer-done", "transfer_done"):
            did = f"{payload.get('scope')}:{payload.get('name')}"
            rse = payload.get("dst-rse")
            if did in self.files and (rse is None or rse in self.dest_rses):
                self._mark_available([did], via="message")
        elif event_type in (
            "rule_ok",
            "rule_progress",
            "transfer-failed",
            "transfer-submission_failed",
        ) and payload.get("rule_id") in (None, self.rule_id):
            self._wake.set()

    def poll(self) -> PollResult:
        """The lazy fallback: read the rule's locks; OK files become available, REPLICATING
        ones staging, STUCK ones stuck (failed, with their jobs, past ``stuck_after``)."""
        assert self.rule_id is not None, "ensure_rule() first"
        out = PollResult()
        now = time.time()
        ok, staging, stuck = [], [], []
        for lock in self.rucio.list_replica_locks(self.rule_id):
            did = f"{lock['scope']}:{lock['name']}"
            state = str(lock.get("state"))
            out.states[state] = out.states.get(state, 0) + 1
            f = self.files.get(did)
            if f is None:
                continue
            if state == "OK":
                ok.append(did)
            elif state == "STUCK":
                stuck.append(did)
            elif state == "REPLICATING" and f.state == "queued":
                staging.append(did)
        self.polls += 1
        out.released = self._mark_available(ok)
        out.available = ok
        self._set_state(staging, "staging")
        with self._lock:
            newly_stuck = [d for d in stuck if self.files[d].state in ("queued", "staging")]
            for d in stuck:
                if self.files[d].stuck_since is None:
                    self.files[d].stuck_since = now
            too_long = [
                d
                for d in stuck
                if self.files[d].state != "failed"
                and now - (self.files[d].stuck_since or now) >= self.settings.stuck_after
            ]
        self._set_state(newly_stuck, "stuck")
        if too_long:
            err = self._stuck_error(too_long)
            out.failed_jobs = self._set_state(too_long, "failed", err)
        for d in ok:
            self.files[d].stuck_since = None
        return out

    def _stuck_error(self, dids: Sequence[str]) -> str:
        detail = ""
        try:
            rule = self.rucio.get_replication_rule(self.rule_id)
            detail = (
                f"; rule {self.rule_id} is {rule.get('state')}"
                f" ({rule.get('error') or 'no error text'}), locks OK/REPLICATING/STUCK "
                f"{rule.get('locks_ok_cnt')}/{rule.get('locks_replicating_cnt')}/"
                f"{rule.get('locks_stuck_cnt')}"
            )
        except Exception as exc:
            detail = f"; rule {self.rule_id}: {exc}"
        shown = ", ".join(dids[:5]) + (f" and {len(dids) - 5} more" if len(dids) > 5 else "")
        return (
            f"Rucio replica lock STUCK at {'/'.join(sorted(self.dest_rses))} for more than "
            f"{self.settings.stuck_after:g} s: {shown}{detail}"
        )

    # ------------------------------------------------------------------ the loop
    def start(self) -> RucioSource:
        """Register, ensure the rule, then poll (and listen) in a background thread."""
        self.register()
        self.ensure_rule()
        s = self.settings
        if s.stomp_brokers:
            self.listener = StompListener(
                s.stomp_brokers,
                s.stomp_destination,
                self.on_message,
                s.stomp_user,
                s.stomp_password,
                s.stomp_vhost,
            )
            self.listener.ensure()
        self._thread = threading.Thread(
            target=self._run, name=f"idds-rucio-{self.name}", daemon=True
        )
        self._thread.start()
        return self

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                if self.listener is not None:
                    self.listener.ensure()
                self.poll()
                self.last_error = None
            except Exception as exc:  # Rucio or the service unreachable: try again later
                self.last_error = f"{type(exc).__name__}: {exc}"
                log.warning("polling rule %s of %s: %s", self.rule_id, self.uri, self.last_error)
            if self.until_done and self.done():
                break
            self._wake.wait(self.settings.poll_interval)
            self._wake.clear()

    def done(self) -> bool:
        """Every file available."""
        with self._lock:
            return all(f.state == "available" for f in self.files.values())

    def wake(self) -> None:
        """Poll now (instead of at the next period)."""
        self._wake.set()

    def stop(self, timeout: float = 10.0) -> None:
        self._stop.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout)
        if self.listener is not None:
            self.listener.close()

    def states(self) -> dict[str, str]:
        """Per file (its DID): queued, staging, available, stuck or failed."""
        with self._lock:
            return {d: f.state for d, f in self.files.items()}

    def pfn(self, did: str) -> str:
        return self.files[did].pfn


class RucioWatcher:
    """Inside the service (the agent runner starts it when ``rucio_host`` is set): every
    work waiting on a ``rucio://`` dataset that its owner's catalog does not hold yet gets a
    :class:`RucioSource` acting on that owner's catalog, so a template (or a FaaT work) that
    names ``input_dataset: rucio://SCOPE:NAME`` is staged with nothing else to do. A
    dataset registered by a data source of the user's own (a notebook) is left to it."""

    def __init__(
        self,
        engine: Any,
        publish: Callable[[list[Any]], None],
        settings: RucioSettings,
        stop: threading.Event | None = None,
        scan_interval: float = 1.0,
    ) -> None:
        self.engine, self.publish, self.settings = engine, publish, settings
        self.stop_event = stop or threading.Event()
        self.scan_interval = scan_interval
        self.sources: dict[tuple[str, str], RucioSource] = {}
        self.last_error: str | None = None
        self._thread = threading.Thread(target=self._run, name="idds-rucio-watcher", daemon=True)

    def start(self) -> RucioWatcher:
        self._thread.start()
        return self

    def stop(self, timeout: float = 10.0) -> None:
        self.stop_event.set()
        self._thread.join(timeout)
        for src in self.sources.values():
            src.stop(timeout)

    def waiting(self) -> set[tuple[str, str]]:
        """(owner, rucio://…) of new works whose dataset the owner's catalog lacks."""
        from sqlalchemy import String, cast, select

        from idds_jupyter.store.catalog import Catalog
        from idds_jupyter.store.tables import workflows, works

        with self.engine.connect() as conn:
            rows = conn.execute(
                select(works.c.spec, workflows.c.owner)
                .join(workflows, workflows.c.id == works.c.workflow_id)
                .where(works.c.status == "new", cast(works.c.spec, String).like("%rucio://%"))
            ).all()
        out = set()
        for spec, owner in rows:
            uri = (spec or {}).get("input_dataset")
            if not is_rucio(uri):
                continue
            key = (str(owner), str(uri))
            if key not in self.sources and not Catalog(self.engine, owner=key[0]).exists(key[1]):
                out.add(key)
        return out

    def _run(self) -> None:
        from idds_jupyter.store.catalog import Catalog

        while not self.stop_event.is_set():
            try:
                for owner, uri in sorted(self.waiting()):
                    sink = CatalogSink(Catalog(self.engine, owner=owner), self.publish)
                    src = RucioSource(sink, uri, self.settings, until_done=True)
                    src.start()  # registers: the work's jobs are created at once
                    self.sources[(owner, uri)] = src
                    log.info("staging %s for %s (rule %s)", uri, owner, src.rule_id)
                self.last_error = None
            except Exception as exc:  # Rucio unreachable, a bad name: try again
                self.last_error = f"{type(exc).__name__}: {exc}"
                log.warning("rucio watcher: %s", self.last_error)
            self.stop_event.wait(self.scan_interval)


def process_pfn(file: str, seconds: float = 0.0, **_: Any) -> dict[str, Any]:
    """The demo processing of one staged file (runs on workers): reads it at its PFN."""
    path = pfn_path(file)
    with open(path, "rb") as fh:
        data = fh.read()
    if seconds:
        time.sleep(float(seconds))
    return {"path": path, "bytes": len(data), "head": data[:64].decode("utf-8", "replace")}
