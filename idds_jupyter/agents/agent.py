"""The agent loop shared by every role: do a bulk step while there is work, else wait.

Agents keep no state that matters: everything they act on is claimed from the
store. An event only wakes an agent early; when none comes (lost, or the bus is
disabled) the agent polls the store every ``poll_interval`` seconds.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from sqlalchemy.engine import Engine

from idds_jupyter.backoff import Backoff
from idds_jupyter.bus import Bus, Coordinator, Event

if TYPE_CHECKING:
    from idds_jupyter.config import Config

log = logging.getLogger("idds_jupyter.agents")


@dataclass
class Context:
    """What every agent of one runner shares."""

    engine: Engine
    bus: Bus
    config: Config
    owner: str  # this runner's id: the lock owner of what it claims
    stop: threading.Event = field(default_factory=threading.Event)

    def publish(self, events: Sequence[Event]) -> None:
        if events:
            try:
                self.bus.publish(list(events))
            except Exception:  # events are hints: never let the bus stop an agent
                log.exception("publishing %d events failed", len(events))


class Agent(threading.Thread):
    """One role, one thread. Subclasses implement :meth:`step`."""

    role = "agent"
    wakes_on: tuple[str, ...] = ()

    def __init__(self, ctx: Context) -> None:
        super().__init__(name=f"idds-{self.role}", daemon=True)
        self.ctx = ctx
        self.wake = threading.Event()
        self.errors = 0
        self._coordinator: Coordinator | None = None

    def step(self) -> bool:
        """Do one bulk unit of work; return True if there may be more right away."""
        raise NotImplementedError

    def wait(self, timeout: float) -> None:
        if self._coordinator is not None:
            self._coordinator.get(timeout=timeout)
        else:
            self.wake.wait(timeout)
            self.wake.clear()

    def setup(self) -> None:
        if self.wakes_on:
            self._coordinator = Coordinator(self.ctx.bus.subscribe(self.wakes_on))

    def teardown(self) -> None:
        if self._coordinator is not None:
            self._coordinator.close()

    def run(self) -> None:
        self.setup()
        backoff = Backoff(0.1, maximum=5.0)
        try:
            while not self.ctx.stop.is_set():
                try:
                    busy = self.step()
                    backoff.reset()
                except Exception:
                    self.errors += 1
                    delay = backoff.next()
                    log.exception("%s step failed; retrying in %.1fs", self.role, delay)
                    self.ctx.stop.wait(delay)
                    continue
                if not busy:
                    self.wait(self.ctx.config.poll_interval)
        finally:
            self.teardown()
