"""Metrics: the Prometheus exposition of the service (``GET /idds/api/v1/metrics``).

Two kinds of families, both cheap on the hot path of a 100,000-job DAG:

- read from the store when scraped (a custom collector, four grouped queries, their
  reading reused for ``metrics_cache_s``): jobs by owner, backend and state, releases,
  submissions, failures and queue depth, job wall-time histograms per backend. They
  count every process's work (agents in threads, a child process or other hosts);
  the agents keep no counter and take no lock for them;
- measured in this process: database transaction time and claim-statement time
  (SQLAlchemy engine events, one histogram observation per transaction or claimed
  batch, not per job), and the bus lag (a probe event every few seconds, started by
  the first scrape).

Admins see every owner; any other user sees the store families of their own runs
only. ``metrics_port`` also serves the admin view without authentication on
``metrics_addr`` (loopback by default), for a Prometheus that holds no token.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.exposition import CONTENT_TYPE_LATEST, generate_latest
from sqlalchemy import event
from sqlalchemy.engine import Engine

from idds_jupyter.api.base import ApiError, ApiHandler
from idds_jupyter.bus.event import Event
from idds_jupyter.store import monitor
from idds_jupyter.store.jobs import FAILED, READY, SUBMITTED

if TYPE_CHECKING:
    from idds_jupyter.bus import Bus
    from idds_jupyter.config import Config

#: the store states that count as queued: released and waiting to be claimed or to start
QUEUED = (READY, SUBMITTED)
#: the event type of the bus-lag probe (no agent subscribes to it; the live stream
#: drops it: its key names no run)
PROBE = "metrics.probe"
PROBE_INTERVAL_S = 5.0

_FAST = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 10.0)
TX_SECONDS = Histogram(
    "idds_db_transaction_seconds",
    "Database transaction time (begin to commit or rollback) in this process",
    buckets=_FAST,
    registry=None,
)
CLAIM_SECONDS = Histogram(
    "idds_claim_seconds",
    "Time of one claim of released jobs (the Submitter's locking select) in this process",
    buckets=_FAST,
    registry=None,
)
CLAIMED = Counter("idds_jobs_claimed", "Jobs claimed by Submitters in this process", registry=None)
BUS_LAG = Gauge(
    "idds_bus_lag_seconds",
    "Seconds from publishing a probe event on the bus to receiving it (last probe)",
    registry=None,
)

_instrumented = False
_instrument_lock = threading.Lock()


def instrument() -> None:
    """Time every transaction and every claim of this process's engines (once)."""
    global _instrumented
    with _instrument_lock:
        if _instrumented:
            return
        from idds_jupyter.store import jobs as store_jobs
        from idds_jupyter.store.jobs import _MARK_SUBMITTED

        # the Submitter's claim statements (plain and per-user fair-share variants)
        claims = tuple(
            stmt
            for name in ("_CLAIM", "_CLAIM_OF")
            if (locked := getattr(store_jobs, name, None)) is not None
            for stmt in (locked.plain, locked.pg)
        )

        def begin(conn: Any) -> None:
            conn.info["idds_tx_t0"] = time.perf_counter()

        def end(conn: Any) -> None:
            t0 = conn.info.pop("idds_tx_t0", None)
            if t0 is not None:
                TX_SECONDS.observe(time.perf_counter() - t0)

        def before(conn: Any, cursor: Any, stmt: Any, params: Any, ctx: Any, many: Any) -> None:
            compiled = getattr(ctx, "compiled", None)
            if compiled is not None and compiled.statement in claims:
                conn.info["idds_claim_t0"] = time.perf_counter()

        def after(conn: Any, cursor: Any, stmt: Any, params: Any, ctx: Any, many: Any) -> None:
            t0 = conn.info.pop("idds_claim_t0", None)
            if t0 is not None:
                CLAIM_SECONDS.observe(time.perf_counter() - t0)
                return
            compiled = getattr(ctx, "compiled", None)
            if compiled is not None and compiled.statement is _MARK_SUBMITTED:
                n = cursor.rowcount  # the claimed jobs marked submitted (an UPDATE's count)
                if n and n > 0:
                    CLAIMED.inc(n)

        event.listen(Engine, "begin", begin)
        event.listen(Engine, "commit", end)
        event.listen(Engine, "rollback", end)
        event.listen(Engine, "before_cursor_execute", before)
        event.listen(Engine, "after_cursor_execute", after)
        _instrumented = True


class BusProbe:
    """Publishes a probe event every ``interval`` s and records how late it arrives."""

    def __init__(self, bus: Bus, interval: float = PROBE_INTERVAL_S) -> None:
        self.bus = bus
        self.interval = interval
        self._stop = threading.Event()
        self._sub = bus.subscribe([PROBE])
        self._thread = threading.Thread(target=self._run, name="idds-metrics-probe", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            sent = time.time()
            try:
                self.bus.publish([Event(PROBE, key="probe", payload={"t": sent})])
                deadline = time.monotonic() + self.interval
                while not self._stop.is_set() and time.monotonic() < deadline:
                    got = self._sub.get(timeout=max(deadline - time.monotonic(), 0.01))
                    for e in got:
                        t = e.payload.get("t")
                        if isinstance(t, int | float):
                            BUS_LAG.set(max(time.time() - float(t), 0.0))
            except Exception:  # a broken bus shows as a stale lag, never a dead server
                self._stop.wait(self.interval)

    def stop(self) -> None:
        self._stop.set()
        self._sub.close()
        self._thread.join(timeout=2)


class StoreCollector:
    """The store families, read at scrape time (``owner``: that owner's runs only)."""

    def __init__(self, metrics: Metrics, owner: str | None) -> None:
        self.metrics = metrics
        self.owner = owner

    def collect(self) -> Iterator[Metric]:
        t0 = time.perf_counter()
        snap = self.metrics.snapshot(self.owner)
        yield from families(snap)
        g = GaugeMetricFamily(
            "idds_metrics_store_read_seconds", "Time the last store reading of a scrape took"
        )
        g.add_metric([], snap.get("_read_s", time.perf_counter() - t0))
        yield g


def families(snap: dict[str, Any]) -> Iterator[Metric]:
    """The Prometheus families of one :func:`~idds_jupyter.store.monitor.metrics_snapshot`."""
    jobs = GaugeMetricFamily(
        "idds_jobs", "Jobs by owner, backend and state", labels=["owner", "backend", "state"]
    )
    releases = CounterMetricFamily(
        "idds_job_releases",
        "Job releases (dependencies met, or retries) by owner and backend",
        labels=["owner", "backend"],
    )
    failures = CounterMetricFamily(
        "idds_job_failures", "Jobs ended failed, by backend", labels=["backend"]
    )
    queue = GaugeMetricFamily(
        "idds_queue_depth",
        "Jobs released and not yet running (ready or submitted), by owner and backend",
        labels=["owner", "backend"],
    )
    rel: dict[tuple[str, str], int] = {}
    fail: dict[str, int] = {}
    depth: dict[tuple[str, str], int] = {}
    for (owner, backend, state), (n, r) in sorted(snap["jobs"].items()):
        jobs.add_metric([owner, backend, state], n)
        rel[(owner, backend)] = rel.get((owner, backend), 0) + r
        if state == FAILED:
            fail[backend] = fail.get(backend, 0) + n
        if state in QUEUED:
            depth[(owner, backend)] = depth.get((owner, backend), 0) + n
        else:
            depth.setdefault((owner, backend), 0)
    for (owner, backend), r in sorted(rel.items()):
        releases.add_metric([owner, backend], r)
    for (owner, backend), n in sorted(depth.items()):
        queue.add_metric([owner, backend], n)
    for backend in sorted({b for (_o, b, _s) in snap["jobs"]}):
        failures.add_metric([backend], fail.get(backend, 0))
    subs = CounterMetricFamily(
        "idds_submissions", "Runs submitted, by owner and backend", labels=["owner", "backend"]
    )
    for (owner, backend), n in sorted(snap["submissions"].items()):
        subs.add_metric([owner, backend], n)
    wall = HistogramMetricFamily(
        "idds_job_wall_seconds", "Wall time of ended jobs, by backend", labels=["backend"]
    )
    for backend, (cumulative, count, total) in sorted(snap["wall"].items()):
        buckets = [
            (_le(b), float(c)) for b, c in zip(monitor.WALL_BUCKETS, cumulative, strict=True)
        ]
        buckets.append(("+Inf", float(count)))
        wall.add_metric([backend], buckets, total)
    yield from (jobs, releases, failures, queue, subs, wall)


def _le(bound: float) -> str:
    return repr(float(bound))


class Metrics:
    """One service's metrics: the store reading (cached), the bus probe, the port endpoint."""

    def __init__(self, engine: Engine, bus: Bus, config: Config) -> None:
        self.engine = engine
        self.bus = bus
        self.cache_s = float(config.metrics_cache_s)
        self.default_backend = str(config.backend)
        self._lock = threading.Lock()
        self._cache: dict[str | None, tuple[float, dict[str, Any]]] = {}
        self._probe: BusProbe | None = None
        self._port_server: Any = None
        instrument()
        if config.metrics_port:
            self.serve_port(config.metrics_addr, int(config.metrics_port))

    def snapshot(self, owner: str | None) -> dict[str, Any]:
        """The store's reading for ``owner`` (None: all), reused for ``metrics_cache_s``."""
        with self._lock:
            hit = self._cache.get(owner)
            if hit is not None and time.monotonic() - hit[0] < self.cache_s:
                return hit[1]
        t0 = time.perf_counter()
        snap = monitor.metrics_snapshot(self.engine, owner, self.default_backend)
        snap["_read_s"] = time.perf_counter() - t0
        with self._lock:
            if len(self._cache) > 1000:
                self._cache.clear()
            self._cache[owner] = (time.monotonic(), snap)
        return snap

    def registry(self, owner: str | None, admin: bool) -> CollectorRegistry:
        """The families a caller may read: an admin all, a user their runs' store families."""
        self.start_probe()
        reg = CollectorRegistry(auto_describe=False)
        reg.register(StoreCollector(self, None if admin else owner))
        if admin:
            for c in (TX_SECONDS, CLAIM_SECONDS, CLAIMED, BUS_LAG):
                reg.register(c)
        return reg

    def exposition(self, owner: str | None, admin: bool) -> bytes:
        """The Prometheus text format (blocking: reads the store)."""
        return generate_latest(self.registry(owner, admin))

    def start_probe(self) -> None:
        with self._lock:
            if self._probe is None:
                self._probe = BusProbe(self.bus)

    def serve_port(self, addr: str, port: int) -> None:
        """The admin view on ``addr:port`` with no authentication (``metrics_port``)."""
        from prometheus_client import start_http_server

        class _Admin:
            def collect(inner) -> Iterator[Metric]:  # noqa: N805 - closes over self
                for c in (
                    StoreCollector(self, None),
                    TX_SECONDS,
                    CLAIM_SECONDS,
                    CLAIMED,
                    BUS_LAG,
                ):
                    yield from c.collect()

        reg = CollectorRegistry(auto_describe=False)
        reg.register(_Admin())
        self.start_probe()
        server, _thread = start_http_server(port, addr, registry=reg)
        self._port_server = server

    @property
    def port(self) -> int | None:
        """The port of the ``metrics_port`` endpoint (the one bound, when 0 was asked)."""
        s = self._port_server
        return None if s is None else int(s.server_address[1])

    def close(self) -> None:
        if self._probe is not None:
            self._probe.stop()
            self._probe = None
        if self._port_server is not None:
            self._port_server.shutdown()
            self._port_server.server_close()
            self._port_server = None


class MetricsHandler(ApiHandler):
    """``GET /metrics``: Prometheus text; admins see every owner, users their own runs."""

    async def get(self) -> None:
        m = self.ctx.metrics()
        body = await self.run(m.exposition, self.user.name, self.user.admin)
        self.set_header("Content-Type", CONTENT_TYPE_LATEST)
        self.finish(body)


class MonitorAggregateHandler(ApiHandler):
    """``GET /monitor``: job counts and time series per backend and owner (the aggregate
    monitor). A user sees their own runs; an admin everyone's, or one ``owner``'s."""

    async def get(self) -> None:
        asked = self.get_query_argument("owner", None) or None
        if self.user.admin:
            owner = asked
        elif asked not in (None, self.user.name):
            raise ApiError(403, "only admins see other users' runs (query argument 'owner')")
        else:
            owner = self.user.name
        hours = self.float_arg("hours", 6.0, 24.0 * 31)
        bucket = self.float_arg("bucket", max(hours * 3600 / 120, 1.0), hours * 3600)
        try:
            out = await self.run(
                monitor.aggregate,
                self.ctx.orch.engine,
                owner,
                hours=hours,
                bucket_s=bucket,
                default_backend=str(self.ctx.config.backend),
            )
        except ValueError as exc:
            raise ApiError(400, str(exc), limit=monitor.MAX_BUCKETS) from None
        self.send(out)

    def float_arg(self, name: str, default: float, maximum: float) -> float:
        raw = self.get_query_argument(name, None)
        if raw is None or raw == "":
            return default
        try:
            v = float(raw)
        except ValueError:
            raise ApiError(400, f"query argument {name!r} must be a number, got {raw!r}") from None
        if not (0 < v <= maximum):
            raise ApiError(400, f"query argument {name!r} must be > 0 and <= {maximum}, got {v}")
        return v


__all__ = [
    "Metrics",
    "MetricsHandler",
    "MonitorAggregateHandler",
    "families",
    "instrument",
]
