"""Clerk: turns a workflow into work instances, evaluates conditions, opens loop iterations.

It re-plans a workflow whenever the store marks it dirty (a work ended, a
control changed it); the plan is computed by the pure model and applied in the
same transaction as the row lock that claims the workflow.
"""

from __future__ import annotations

from typing import Any

from idds_jupyter.agents.agent import Agent
from idds_jupyter.bus import event as ev
from idds_jupyter.bus.event import ended_events, make_event
from idds_jupyter.store.workflows import Applied, plan_next


def planned_events(applied: Applied) -> list[Any]:
    """The events of an applied plan, to publish once its transaction commits (the plan
    wrote the outbound message of a workflow it ended)."""
    events = []
    if applied.new_job_works:
        events.append(make_event(ev.WORK_NEW, str(applied.workflow_id)))
    if applied.status is not None:
        events += ended_events([(applied.workflow_id, applied.status)])
    return events


class Clerk(Agent):
    role = "clerk"
    # Not WORKFLOW_NEW: a submission is planned in its own transaction, so a new
    # workflow is clean. Not WORK_TERMINAL: a work that ends marks its workflow dirty
    # and WORKFLOW_DIRTY says so, unless whoever ended it planned the workflow too.
    wakes_on = (ev.WORKFLOW_DIRTY, ev.CONTROL)

    def wait(self, timeout: float) -> None:
        super().wait(timeout)
        if self.ctx.config.settle > 0:  # let the rest of a burst of endings arrive
            self.ctx.stop.wait(self.ctx.config.settle)

    def step(self) -> bool:
        events = []
        planned = 0
        for _ in range(50):
            with self.ctx.engine.begin() as conn:
                applied = plan_next(conn, self.ctx.owner)
                if applied is None:
                    break
                planned += 1
                events += planned_events(applied)
        self.ctx.publish(events)
        return planned == 50
