"""Fair share: released jobs are claimed round-robin across the users who have some.

On a shared service one user's 100,000-job DAG would otherwise fill every claim (the
database hands out ready jobs oldest first) and another user's 10-job run would wait for
all of it. Each claim round splits its room equally between the users with released
jobs on the backend; room a user cannot fill goes to the others. With one such user
(a laptop, a bench) this is :func:`~idds_jupyter.store.jobs.claim_ready` plus one
indexed query.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from sqlalchemy import exists, select
from sqlalchemy.engine import Connection

from idds_jupyter.model.status import WorkStatus
from idds_jupyter.store.jobs import READY, claim_ready
from idds_jupyter.store.sql import among
from idds_jupyter.store.tables import jobs, workflows, works

__all__ = ["claim_fair", "split", "users_with_ready_jobs"]

_USERS_READY = (
    select(workflows.c.owner)
    .where(
        workflows.c.id.in_(
            select(works.c.workflow_id).where(
                works.c.status == WorkStatus.RUNNING.value,
                among(works.c.backend, "backends"),
                exists().where(jobs.c.work_id == works.c.id, jobs.c.status == READY),
            )
        )
    )
    .distinct()
)


def users_with_ready_jobs(conn: Connection, backends: Sequence[str]) -> list[str]:
    """The users whose running works on ``backends`` have released jobs, sorted."""
    return sorted(conn.execute(_USERS_READY, {"backends": list(backends)}).scalars())


def split(limit: int, users: Sequence[str], first: int = 0) -> dict[str, int]:
    """``limit`` slots shared equally by ``users``; the remainder goes round-robin from
    ``users[first % len(users)]`` so that no user is always the one left short."""
    n = len(users)
    base, extra = divmod(limit, n)
    return {u: base + (1 if (i - first) % n < extra else 0) for i, u in enumerate(users)}


def claim_fair(
    conn: Connection,
    owner: str,
    backends: Sequence[str],
    limit: int,
    ttl: float,
    turn: int = 0,
) -> list[dict[str, Any]]:
    """Up to ``limit`` released jobs, shared between their users (see the module);
    ``turn`` (a counter of the caller's rounds) rotates who gets an odd slot."""
    users = users_with_ready_jobs(conn, backends)
    if len(users) <= 1:
        return claim_ready(conn, owner, backends, limit, ttl)
    got: list[dict[str, Any]] = []
    while users and len(got) < limit:
        filled = []  # may have more: the room the others left is shared by these
        for user, n in split(limit - len(got), users, turn).items():
            if n > 0:
                rows = claim_ready(conn, owner, backends, n, ttl, users=[user])
                got += rows
                if len(rows) == n:
                    filled.append(user)
        users = filled if len(filled) < len(users) else []
    return got
