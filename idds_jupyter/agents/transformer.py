"""Transformer: a new work becomes jobs; readiness (dependencies, input files); backend choice.

Jobs whose parents are all done and whose file is available are released at
creation; the others wait with a pending counter the Trigger (:mod:`idds_jupyter.store.trigger`)
brings to zero.
"""

from __future__ import annotations

from sqlalchemy import select

from idds_jupyter.agents.agent import Agent
from idds_jupyter.agents.carrier.finisher import terminal_events
from idds_jupyter.bus import event as ev
from idds_jupyter.bus.event import make_event
from idds_jupyter.store.jobs import Outcome, finish_works
from idds_jupyter.store.tables import workflows
from idds_jupyter.store.works import NotYet, choose_backend, claim_new_works, expand_work


class Transformer(Agent):
    role = "transformer"
    wakes_on = (ev.WORK_NEW, ev.CONTROL)

    def step(self) -> bool:
        """Expand new works one transaction each, so the first work's jobs start at once."""
        out = Outcome()
        done = 0
        for _ in range(100):
            with self.ctx.engine.begin() as conn:
                rows = claim_new_works(conn, limit=1)
                if not rows:
                    break
                row = rows[0]
                wf_backend = conn.execute(
                    select(workflows.c.backend).where(workflows.c.id == row.workflow_id)
                ).scalar()
                backend = choose_backend(
                    row.spec or {},
                    wf_backend,
                    self.ctx.config.backend,
                    self.ctx.config.policy,
                    conn,
                )
                try:
                    expand_work(conn, row, backend, out)
                except NotYet:
                    break  # a job-level parent is still being expanded by another agent
                finish_works(conn, [row.id], out)
                done += 1
            self._publish(out)
            out = Outcome()
        return done == 100

    def _publish(self, out: Outcome) -> None:
        events = [make_event(ev.JOBS_READY)] if out.released else []
        self.ctx.publish(events + terminal_events(out))
