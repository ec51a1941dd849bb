"""The trials of an HPO study in one request: ``GET /monitor/{id}/trials``.

A study of 10,000 trials is hundreds of works (or one work of 10,000 jobs); the
views used to read every work's results, one request each. This reads the ended
jobs of the whole run at once, compact (columns once, one array per trial), and
incrementally: ``since`` is the ``cursor`` of the previous answer, so a live
view asks only for what ended after it.

The cursor is a keyset on ``(finished_at, job id)``. A page that caught up hands
back a cursor held a few seconds behind the newest row (``SETTLE_S``), so a job
whose result was committed late, with an earlier ``finished_at``, is still read:
a client keys trials by ``(work, idx)`` and keeps the last copy.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any

from sqlalchemy import and_, or_, select
from sqlalchemy.engine import Engine, Row

from idds_jupyter.api.base import ApiError, ApiHandler
from idds_jupyter.model.space import parse_trial_work
from idds_jupyter.store import monitor
from idds_jupyter.store.tables import jobs, workflows, works

__all__ = ["TrialsHandler", "trials_page", "parse_cursor", "COLUMNS", "SETTLE_S"]

#: how far behind the newest row a caught-up cursor is held (late commits are read again)
SETTLE_S = 2.0
#: the fields of each row of ``trials``, in order
COLUMNS = ("work", "idx", "trial", "segment", "status", "value", "params", "job_id", "finished_at")
_ENDED = ("finished", "failed", "cancelled")
_VALUE_KEYS = ("objective", "value", "loss")


def parse_cursor(raw: str | None) -> tuple[float, int] | None:
    """``"<finished_at>:<job id>"`` as given by a previous page (None: from the start)."""
    if raw is None or raw == "":
        return None
    t, sep, jid = raw.partition(":")
    try:
        out = (float(t), int(jid) if sep else 0)
    except ValueError:
        raise ApiError(
            400, f"query argument 'since' must be a cursor '<time>:<job id>', got {raw!r}"
        ) from None
    if out[0] != out[0] or out[1] < 0:  # NaN
        raise ApiError(400, f"query argument 'since' is not a valid cursor: {raw!r}")
    return out


def _value(result: Any) -> float | None:
    if isinstance(result, int | float) and not isinstance(result, bool):
        return float(result)
    if isinstance(result, dict):
        for k in _VALUE_KEYS:
            v = result.get(k)
            if isinstance(v, int | float) and not isinstance(v, bool):
                return float(v)
    return None


def trials_page(
    engine: Engine,
    workflow_id: int,
    since: tuple[float, int] | None = None,
    limit: int = monitor.MAX_PAGE,
    work: str | None = None,
) -> dict[str, Any] | None:
    """The ended jobs of a run (of one work when given) after ``since``; None: no such run."""
    with engine.connect() as conn:
        run = conn.execute(
            select(workflows.c.name, workflows.c.status).where(workflows.c.id == workflow_id)
        ).first()
        if run is None:
            return None
        q = works.c.workflow_id == workflow_id
        if work is not None:
            q = and_(q, works.c.name == work)
        names = {
            r.id: r.name
            for r in conn.execute(
                select(works.c.id, works.c.name).where(q, works.c.kind != "workflow")
            )
        }
        rows: Sequence[Row[Any, Any, Any, Any, Any, Any, Any]] = []
        if names:
            cond = [
                jobs.c.workflow_id == workflow_id,
                jobs.c.status.in_(_ENDED),
                jobs.c.finished_at.is_not(None),
            ]
            if work is not None:
                cond.append(jobs.c.work_id.in_(list(names)))
            if since is not None:
                cond.append(
                    or_(
                        jobs.c.finished_at > since[0],
                        and_(jobs.c.finished_at == since[0], jobs.c.id > since[1]),
                    )
                )
            rows = conn.execute(
                select(
                    jobs.c.id,
                    jobs.c.work_id,
                    jobs.c.idx,
                    jobs.c.status,
                    jobs.c.result,
                    jobs.c.kwargs,
                    jobs.c.finished_at,
                )
                .where(*cond)
                .order_by(jobs.c.finished_at, jobs.c.id)
                .limit(limit)
            ).all()
    keys: dict[str, int] = {}
    out = []
    parsed_names = {wid: parse_trial_work(n) for wid, n in names.items()}
    for r in rows:
        name = names.get(r.work_id)
        if name is None:  # a job of a sub-workflow's work: not a trial of this run
            continue
        result = r.result
        params = result.get("params") if isinstance(result, dict) else None
        if not isinstance(params, dict):  # a failed trial: the parameters it was given
            params = (r.kwargs or {}).get("params") if isinstance(r.kwargs, dict) else None
        cols: list[Any] = []
        for k, v in (params or {}).items():
            i = keys.setdefault(str(k), len(keys))
            cols += [None] * (i + 1 - len(cols))
            cols[i] = v
        parsed = parsed_names.get(r.work_id)
        out.append(
            [
                name,
                int(r.idx),
                None if parsed is None else parsed[1] + int(r.idx),
                None if parsed is None else parsed[0],
                r.status,
                _value(result) if r.status == "finished" else None,
                cols,
                int(r.id),
                float(r.finished_at),
            ]
        )
    more = len(rows) >= limit
    if rows:
        last_t, last_id = float(rows[-1].finished_at), int(rows[-1].id)
    else:
        last_t, last_id = since if since is not None else (0.0, 0)
    if not more:  # caught up: read the last seconds again next time (late commits)
        held = time.time() - SETTLE_S
        if last_t > held:
            last_t, last_id = held, 0
    return {
        "workflow_id": workflow_id,
        "name": run.name,
        "status": run.status,
        "columns": list(COLUMNS),
        "params": list(keys),
        "trials": out,
        "cursor": f"{last_t!r}:{last_id}",
        "more": more,
    }


class TrialsHandler(ApiHandler):
    """Every ended trial (job) of a run in one compact page, and what ended since a cursor."""

    async def get(self, wid: str) -> None:
        await self.check_owner(int(wid))
        since = parse_cursor(self.get_query_argument("since", None))
        limit = self.int_arg("limit", monitor.MAX_PAGE, 1, monitor.MAX_PAGE)
        work = self.get_query_argument("work", None) or None
        out = await self.run(
            trials_page, self.ctx.orch.engine, int(wid), since=since, limit=limit, work=work
        )
        if out is None:
            raise ApiError(404, f"no workflow with id {wid}")
        self.send(out)
