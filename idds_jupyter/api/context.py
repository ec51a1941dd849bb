"""What the API handlers share: the orchestrator, cache, bus, authenticator and executor."""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from idds_jupyter.api.limits import SubmissionWindow
from idds_jupyter.auth import Authenticator
from idds_jupyter.bus import Bus
from idds_jupyter.config import Config
from idds_jupyter.core import Orchestrator
from idds_jupyter.store.cache import Cache

if TYPE_CHECKING:
    from idds_jupyter.api.metrics import Metrics
    from idds_jupyter.api.stream import EventBridge
    from idds_jupyter.store.job_tokens import JobTokens


@dataclass
class ApiContext:
    orch: Orchestrator
    cache: Cache
    bus: Bus
    auth: Authenticator
    executor: ThreadPoolExecutor
    config: Config
    # Workflow owners never change: cached for the live stream's filters.
    owner_cache: dict[int, str] = field(default_factory=dict)
    bridge: EventBridge | None = None
    # This service's own URL, for processes it starts (server-side workflow bodies).
    self_url: str | None = None
    # submissions per user in the last minute (the max_submissions_per_minute quota)
    submissions: SubmissionWindow = field(default_factory=SubmissionWindow)
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _job_tokens: JobTokens | None = None
    _engine: Any = None  # the API's own engine (make_context), disposed by close()
    _metrics: Metrics | None = None

    def metrics(self) -> Metrics:
        """The service's Prometheus metrics (made at the first scrape, or with
        ``metrics_port`` when the context is)."""
        with self._lock:
            if self._metrics is None:
                from idds_jupyter.api.metrics import Metrics

                self._metrics = Metrics(self.orch.engine, self.bus, self.config)
            return self._metrics

    def job_tokens(self) -> JobTokens:
        """The checker of per-job tokens (reads or creates the secret once: blocking)."""
        with self._lock:
            if self._job_tokens is None:
                from idds_jupyter.store.job_tokens import JobTokens

                self._job_tokens = JobTokens.for_home(self.config.home, self.config.job_token_ttl)
            return self._job_tokens

    def remember_owner(self, workflow_id: int, owner: str) -> None:
        with self._lock:
            if len(self.owner_cache) > 100_000:
                self.owner_cache.clear()
            self.owner_cache[int(workflow_id)] = owner

    def close(self) -> None:
        """Stop the live-stream bridge and the metrics (the caller owns orch, bus and
        executor)."""
        if self._metrics is not None:
            self._metrics.close()
            self._metrics = None
        if self.bridge is not None:
            self.bridge.stop()
            self.bridge = None
        if self._engine is not None:
            self._engine.dispose()


def make_context(
    config: Config,
    orch: Orchestrator | None = None,
    bus: Bus | None = None,
    auth: Authenticator | None = None,
    cache: Cache | None = None,
    executor: ThreadPoolExecutor | None = None,
    **kw: Any,
) -> ApiContext:
    """An ApiContext with defaults: a store on ``config.db_url``, token auth, a 16-thread executor.

    The requests use an engine of their own on the store (``orch``'s database when one
    is given: an orchestrator on it, with ``orch``'s bus and dispatch), whose lock waits
    end after ``config.api_lock_wait`` s: a database another process holds locked
    answers 503 soon instead of hanging every request (api/faults.py). The agents keep
    their engine and its long waits.
    """
    from idds_jupyter.auth import TokenAuthenticator
    from idds_jupyter.bus import make_bus
    from idds_jupyter.store.engine import make_engine

    url = config.db_url if orch is None else orch.engine.url.render_as_string(hide_password=False)
    engine = make_engine(url, lock_wait=config.api_lock_wait)
    if orch is None:
        bus = bus or make_bus(config.bus, engine=engine)
        orch = Orchestrator(config, engine=engine, bus=bus)
    else:
        orch = Orchestrator(
            orch.config, engine=engine, bus=bus or orch.bus, migrate=False, dispatch=orch.dispatch
        )
    bus = bus or orch.bus
    cache = (
        Cache(cache.root, engine, cache.limit)
        if cache is not None
        else Cache(config.cache_dir, engine)
    )
    executor = executor or ThreadPoolExecutor(16, thread_name_prefix="idds-api")
    ctx = ApiContext(
        orch=orch,
        cache=cache,
        bus=bus,
        auth=auth or TokenAuthenticator(orch.engine, executor),
        executor=executor,
        config=config,
        _engine=engine,
        **kw,
    )
    from idds_jupyter.api.metrics import instrument

    instrument()  # transactions and claims are timed from the start, scraped or not
    if config.metrics_port:  # the unauthenticated endpoint listens from the start
        ctx.metrics()
    return ctx


__all__ = ["ApiContext", "make_context"]
