"""What one request may cost: jobs per work and per submission, per-user quotas.

Checked before the work is done, each refusal a 4xx naming its setting
(``idds_jupyter.config.Config``; docs/operations.md, "Limits"):

* ``max_jobs_per_work`` / ``max_jobs_per_submission`` (413): the jobs a template's
  works declare (``n_jobs``, ``kwargs_list`` items, a ``.map``'s calls), counted from
  the request before anything is built; a run grown by ``add_works`` counts what it
  has already. Sweeps resolved at run time are counted when they are planned.
* ``max_submissions_per_minute`` (429): a sliding window per user, in memory.
* ``max_active_jobs_per_user`` (429): the unfinished jobs of the user's unfinished
  runs (one indexed aggregate over works), plus the new ones.

Admins are exempt from the per-user quotas. ``group_quotas`` give the members of a
group (the hub's groups, or the OIDC token's) other values of these four settings; a
member of several such groups gets the most generous (0, none, above all).
"""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from sqlalchemy import func, select
from sqlalchemy.engine import Engine

from idds_jupyter.api.base import ApiError
from idds_jupyter.auth import User
from idds_jupyter.config import parse_group_quota
from idds_jupyter.model.limits import count_jobs
from idds_jupyter.store.tables import workflows, works

if TYPE_CHECKING:
    from idds_jupyter.api.base import ApiHandler
    from idds_jupyter.config import Config

__all__ = ["SubmissionWindow", "active_jobs", "check_jobs", "limit_for", "quota", "run_jobs"]

_OPEN_RUNS = ("new", "running", "suspended")
_OPEN_WORKS = ("new", "running", "suspended")


def limit_for(config: Config, user: User | None, setting: str) -> tuple[int, str]:
    """``user``'s value of limit ``setting`` and where it comes from (``"SETTING"``, or
    ``"SETTING for group 'G'"`` when one of the user's groups sets it)."""
    base = int(getattr(config, setting))
    found: list[tuple[int, str]] = []
    if user is not None and user.groups:
        for entry in config.group_quotas:
            group, name, n = parse_group_quota(entry)
            if name == setting and group in user.groups:
                found.append((n, group))
    if not found:
        return base, setting
    n, group = max(found, key=lambda f: (f[0] == 0, f[0]))  # 0 (none) is the most generous
    return n, f"{setting} for group {group!r}"


def check_jobs(config: Config, new_works: Any, existing: int = 0, user: User | None = None) -> int:
    """413 when a work declares more than ``max_jobs_per_work`` jobs, or the works (plus
    ``existing`` jobs of the run) more than ``max_jobs_per_submission`` (``user``'s
    values); the new jobs."""
    per_work, work_src = limit_for(config, user, "max_jobs_per_work")
    per_run, run_src = limit_for(config, user, "max_jobs_per_submission")
    counts = count_jobs(new_works)
    for name, n in counts.items():
        if per_work and n > per_work:
            raise ApiError(
                413,
                f"work {name!r} declares {n} jobs, over the limit of {per_work} jobs "
                f"per work ({work_src})",
                work=name,
                limit=per_work,
                setting="max_jobs_per_work",
            )
    total = sum(counts.values())
    if per_run and existing + total > per_run:
        grown = f" (the run has {existing} already)" if existing else ""
        raise ApiError(
            413,
            f"the submission declares {existing + total} jobs{grown}, over the limit of "
            f"{per_run} jobs per submission ({run_src})",
            limit=per_run,
            setting="max_jobs_per_submission",
        )
    return total


def run_jobs(engine: Engine, workflow_id: int) -> int:
    """Jobs the works of a run hold now."""
    with engine.connect() as conn:
        n = conn.execute(
            select(func.coalesce(func.sum(works.c.n_jobs), 0)).where(
                works.c.workflow_id == workflow_id
            )
        ).scalar()
    return int(n or 0)


def active_jobs(engine: Engine, owner: str) -> int:
    """Unfinished jobs of ``owner``'s unfinished runs (works' counters: no scan of jobs)."""
    left = works.c.n_jobs - works.c.n_finished - works.c.n_failed - works.c.n_cancelled
    q = (
        select(func.coalesce(func.sum(left), 0))
        .select_from(works.join(workflows, workflows.c.id == works.c.workflow_id))
        .where(
            workflows.c.status.in_(_OPEN_RUNS),
            workflows.c.owner == owner,
            works.c.status.in_(_OPEN_WORKS),
        )
    )
    with engine.connect() as conn:
        n = conn.execute(q).scalar()
    return max(int(n or 0), 0)


class SubmissionWindow:
    """Submissions per user in the last minute (a sliding window, in memory)."""

    def __init__(self, period: float = 60.0) -> None:
        self.period = period
        self._times: dict[str, deque[float]] = {}
        self._lock = threading.Lock()

    def admit(self, user: str, limit: int, now: float | None = None) -> float | None:
        """Count a submission of ``user``; None if admitted, else seconds until one would be."""
        now = time.monotonic() if now is None else now
        with self._lock:
            times = self._times.setdefault(user, deque())
            while times and times[0] <= now - self.period:
                times.popleft()
            if len(times) >= limit:
                return max(times[0] + self.period - now, 0.0)
            times.append(now)
            if len(self._times) > 100_000:  # forget idle users
                for u in [u for u, t in self._times.items() if not t]:
                    del self._times[u]
            return None


def quota(handler: ApiHandler, new_jobs: int, submission: bool = True) -> Callable[[], None]:
    """429 now if the caller is over ``max_submissions_per_minute`` (``submission``); a
    check for the executor that refuses (429) when the caller's active jobs plus
    ``new_jobs`` are over ``max_active_jobs_per_user``. Admins have no quota."""
    user = handler.user
    cfg = handler.ctx.config
    if user.admin:
        return _nothing
    per_min, min_src = limit_for(cfg, user, "max_submissions_per_minute")
    if submission and per_min > 0:
        wait = handler.ctx.submissions.admit(user.name, per_min)
        if wait is not None:
            raise ApiError(
                429,
                f"user {user.name!r} made {per_min} submissions in the last minute, the "
                f"quota ({min_src}); retry in {wait:.0f} s",
                limit=per_min,
                setting="max_submissions_per_minute",
                retry_after=round(wait, 1),
            )
    most, most_src = limit_for(cfg, user, "max_active_jobs_per_user")
    if most <= 0:
        return _nothing
    engine = handler.ctx.orch.engine

    def check() -> None:
        have = active_jobs(engine, user.name)
        if have + new_jobs > most:
            raise ApiError(
                429,
                f"user {user.name!r} has {have} unfinished jobs; {new_jobs} more would be "
                f"over the quota of {most} ({most_src})",
                limit=most,
                setting="max_active_jobs_per_user",
                active=have,
            )

    return check


def _nothing() -> None:
    return None
