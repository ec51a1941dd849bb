"""Finisher: a work whose jobs are all terminal gets its final status; the Clerk is told.

The Receiver finishes works in the transaction that records their last result;
this agent is the polling fallback that finds any work left running with every
job done (after a crash, a control action, or a lost event).
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import select

from idds_jupyter.agents.agent import Agent
from idds_jupyter.bus import event as ev
from idds_jupyter.bus.event import outcome_events
from idds_jupyter.model.status import WorkStatus
from idds_jupyter.store.jobs import Outcome, finish_works
from idds_jupyter.store.tables import works


def terminal_events(out: Outcome) -> list[Any]:
    return outcome_events(out.terminal_works, out.dirty_workflows, out.ended_workflows)


class Finisher(Agent):
    role = "finisher"
    wakes_on = (ev.CONTROL,)

    def step(self) -> bool:
        out = Outcome()
        n_done = works.c.n_finished + works.c.n_failed + works.c.n_cancelled
        with self.ctx.engine.begin() as conn:
            ids = [
                r[0]
                for r in conn.execute(
                    select(works.c.id)
                    .where(
                        works.c.status == WorkStatus.RUNNING.value,
                        works.c.kind.in_(("function", "command")),
                        n_done >= works.c.n_jobs,
                    )
                    .limit(500)
                )
            ]
            if ids:
                finish_works(conn, ids, out)
        self.ctx.publish(terminal_events(out))
        return False
