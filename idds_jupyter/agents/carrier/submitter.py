"""Submitter: claims released jobs (conditional update, owner + expiry) and sends them in batches."""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any

from sqlalchemy import select

from idds_jupyter.agents.agent import Agent, Context
from idds_jupyter.agents.carrier import CarrierState, Held
from idds_jupyter.bus import event as ev
from idds_jupyter.model import render_job
from idds_jupyter.model.errors import ExpressionError, TemplateError
from idds_jupyter.store.cache import blob_file
from idds_jupyter.store.fairshare import claim_fair, users_with_ready_jobs
from idds_jupyter.store.jobs import Claim, claim_ready
from idds_jupyter.store.provenance import cached_results
from idds_jupyter.store.sql import among
from idds_jupyter.store.tables import files, workflows, works
from idds_jupyter.store.workflows import NewWork, spec_instance


class Submitter(Agent):
    role = "submitter"
    wakes_on = (ev.JOBS_READY, ev.CONTROL)

    def __init__(self, ctx: Context, state: CarrierState) -> None:
        super().__init__(ctx)
        self.state = state
        self._log_dir = str(ctx.config.log_dir)  # in every job spec: not rebuilt for each
        self._cache_dir = str(ctx.config.cache_dir)
        self._turn = 0  # claim rounds: who gets fair share's odd slot rotates
        self._first_checked: dict[str, float] = {}  # backend -> monotonic time

    def wait(self, timeout: float) -> None:
        # Woken by an event, or by the Receiver freeing room in a backend.
        if self.state.room.wait(0):
            self.state.room.clear()
            return
        super().wait(min(timeout, 0.05) if self._full() else timeout)
        self.state.room.clear()

    def _full(self) -> bool:
        return any(self.state.count(n) >= b.capacity for n, b in self.state.backends.items())

    def step(self) -> bool:
        busy = False
        for name in self.state.backends:
            limit = self._room(name)
            if limit <= 0:
                self._first_jobs(name)
                continue
            with self.ctx.engine.begin() as conn:
                claimed = self._claim(conn, name, limit)
            self.send(claimed)
            busy = busy or len(claimed.get(name, ())) == limit
        return busy

    def room(self) -> Claim:
        """What a new submission may take for this Carrier as it writes its jobs.

        The submitting thread then hands them to the backend (:meth:`send`) as soon as
        it commits: a function call skips a claim, a transaction and a thread wake-up
        on its way to a worker. Whatever does not fit is left for :meth:`step`.
        """
        return Claim(
            self.ctx.owner,
            self.ctx.config.lock_ttl,
            {name: self._room(name) for name in self.state.backends},
        )

    def claimed(
        self, conn: Any, claim: Claim, new_works: Sequence[NewWork] = ()
    ) -> dict[str, list[dict[str, Any]]]:
        """The specs of the jobs ``claim`` took, by backend; ``new_works``: the works the
        submission just created (their specs need no read)."""
        for w in new_works:
            self._remember_spec(w.id, w.name, w.kind, w.spec, w.independent, w.owner)
        by_backend: dict[str, list[dict[str, Any]]] = {}
        for job in claim.jobs:
            by_backend.setdefault(job["backend"], []).append(job)
        return {name: self._specs(conn, rows) for name, rows in by_backend.items()}

    def ahead(self, claim: Claim) -> dict[str, list[dict[str, Any]]] | None:
        """The specs of jobs ``claim`` took under reserved ids, before their rows are
        written: from the work specs remembered only (None when one must be read)."""
        by_backend: dict[str, list[dict[str, Any]]] = {}
        for job in claim.jobs:
            work = self.state.work_specs.get(job["work_id"])
            if work is None or job["file_id"] is not None:
                return None
            by_backend.setdefault(job["backend"], []).append(
                job_spec(job, work, None, self._log_dir, self._cache_dir)
            )
        return by_backend

    def send(self, claimed: dict[str, list[dict[str, Any]]], unwritten: bool = False) -> None:
        """Hand committed claims to their backends (after the claiming transaction).

        ``unwritten``: their rows are being written now (:meth:`ahead`); the Receivers
        hold their results until :meth:`written`.
        """
        for name, specs in claimed.items():
            if not specs:
                continue
            known = self.state.work_specs
            with self.state.lock:
                for s in specs:
                    work = known.get(s["work_id"]) or {}
                    self.state.in_flight[s["job_id"]] = Held(
                        s["attempt"],
                        name,
                        {
                            k: s[k]
                            for k in ("job_id", "work_id", "workflow_id", "work", "idx", "attempt")
                        },
                        bool(work.get(_ALONE)),
                    )
                    if unwritten:
                        self.state.unwritten.add(s["job_id"])
            cached = [s.pop(CACHED) for s in specs if CACHED in s]
            if cached:  # recorded by the Receiver like any result, never run
                done = {c["job_id"] for c in cached}
                specs = [s for s in specs if s["job_id"] not in done]
                self.state.backends[name]._queue.push(cached)
            if specs:
                self.state.backends[name].submit(specs)

    def written(self, job_ids: Sequence[int], ok: bool = True) -> None:
        """The rows of jobs sent ahead are committed; or, not ``ok``, they never will be:
        the jobs are withdrawn from their backends (their results find no row)."""
        withdrawn: dict[str, list[int]] = {}
        with self.state.written:
            self.state.unwritten.difference_update(job_ids)
            self.state.written.notify_all()
            if not ok:
                for j in job_ids:
                    held = self.state.in_flight.pop(j, None)
                    if held is not None:
                        withdrawn.setdefault(held.backend, []).append(j)
        for name, ids in withdrawn.items():
            self.state.backends[name].cancel(ids)
        if not ok:
            self.state.room.set()

    def hurry(self) -> None:
        """Record the successes told early now, not by ``TOLD_WITHIN_S``: a run was closed
        and ends with their record (an HPO study's last trials, a body's last calls)."""
        self.state.hurried += 1
        for b in self.state.backends.values():
            b.wake()

    def _first_jobs(self, name: str) -> None:
        """Fair share on a full backend: a user with released jobs and none in flight
        (bob's 10 jobs behind alice's DAG) has some claimed now, beyond the backend's
        capacity, rather than when alice's in-flight jobs make room (checked at most
        every ``FIRST_JOBS_EVERY_S``)."""
        t = time.monotonic()
        if t - self._first_checked.get(name, 0.0) < FIRST_JOBS_EVERY_S:
            return
        self._first_checked[name] = t
        with self.ctx.engine.begin() as conn:
            users = users_with_ready_jobs(conn, [name])
            if len(users) < 2:
                return
            known = self.state.work_specs
            with self.state.lock:
                busy = {
                    (known.get(h.note["work_id"]) or {}).get(_OWNER)
                    for h in self.state.in_flight.values()
                    if h.backend == name
                }
            waiting = [u for u in users if u not in busy]
            if not waiting:
                return
            share = max(1, self.state.backends[name].capacity // len(users))
            claimed = [
                row
                for u in waiting
                for row in claim_ready(
                    conn,
                    self.ctx.owner,
                    [name],
                    min(share, self.ctx.config.batch),
                    self.ctx.config.lock_ttl,
                    users=[u],
                )
            ]
            specs = {name: self._specs(conn, claimed)} if claimed else {}
        self.send(specs)

    def _room(self, name: str) -> int:
        room = self.state.backends[name].capacity - self.state.count(name)
        return min(room, self.ctx.config.batch)

    def _claim(self, conn: Any, name: str, limit: int) -> dict[str, list[dict[str, Any]]]:
        self._turn += 1
        claimed = claim_fair(
            conn, self.ctx.owner, [name], limit, self.ctx.config.lock_ttl, self._turn
        )
        return {name: self._specs(conn, claimed)} if claimed else {}

    def _specs(self, conn: Any, claimed: list[dict[str, Any]]) -> list[dict[str, Any]]:
        # held here, not looked up again: storing the ones read may evict others
        specs = {w: self.state.work_specs.get(w) for w in {r["work_id"] for r in claimed}}
        need = sorted(w for w, s in specs.items() if s is None)
        if need:
            for w in conn.execute(_WORK_SPECS, {"ids": need}):
                specs[w.id] = self._remember_spec(
                    w.id,
                    w.name,
                    w.kind,
                    w.spec or {},
                    bool((w.meta or {}).get("independent")),
                    w.owner,
                )
        file_ids = [r["file_id"] for r in claimed if r["file_id"] is not None]
        rows = (
            conn.execute(
                select(files.c.id, files.c.name, files.c.meta).where(files.c.id.in_(file_ids))
            ).all()
            if file_ids
            else []
        )
        names = {r.id: r.name for r in rows}
        metas = {r.id: r.meta for r in rows}
        out = [
            job_spec(
                r,
                specs[r["work_id"]] or {},
                names.get(r["file_id"]),
                self._log_dir,
                self._cache_dir,
                metas.get(r["file_id"]),
            )
            for r in claimed
        ]
        # memoized works: a job whose code and inputs match a succeeded one takes its result
        hits = cached_results(
            conn, claimed, specs, {w: (s or {}).get(_OWNER) for w, s in specs.items()}
        )
        for spec in out:
            if spec["job_id"] in hits:
                spec[CACHED] = hits[spec["job_id"]]
        return out

    def _remember_spec(
        self,
        work_id: int,
        name: str,
        kind: str,
        spec: dict[str, Any],
        independent: bool,
        owner: str | None,
    ) -> dict[str, Any]:
        out = {
            **spec,
            "kind": kind,
            "name": name,
            "instance": spec_instance(spec, name),
            _ALONE: independent,
            _OWNER: owner,
        }
        self.state.work_specs[work_id] = out
        return out


_WORK_SPECS = (
    select(
        works.c.id, works.c.name, works.c.spec, works.c.kind, workflows.c.meta, workflows.c.owner
    )
    .join(workflows, workflows.c.id == works.c.workflow_id)
    .where(among(works.c.id))
)
# In a remembered work spec: its run's works are independent (the Receiver may hold the
# record of a success longer: no other job waits for it). Never sent to a worker.
_ALONE = "_alone"
# In a remembered work spec: the run's owner; a job spec's "owner" (a local worker process
# runs the jobs of one owner only, and under isolation as that owner's account).
_OWNER = "_owner"
FIRST_JOBS_EVERY_S = 0.2
# In a job spec: the result a memoized job takes instead of running (see store.provenance).
CACHED = "_cached"


def job_spec(
    job: dict[str, Any],
    work: dict[str, Any],
    file: str | None,
    log_dir: str,
    cache_dir: str,
    file_meta: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """One job of a work, rendered: its kwargs, its command with per-job placeholders filled.

    A file registered from Rucio (its catalog meta holds ``did`` and ``rse``) is named in
    ``input_file`` too, so that an http worker can download it with its own credentials."""
    try:
        rendered = render_job(work["instance"], job.get("kwargs"), job["idx"], file)
    except (ExpressionError, TemplateError) as exc:  # e.g. a value in a refused shell context
        rendered = {
            "command": None,
            "function": work.get("function"),
            "kwargs": {},
            "render_error": f"cannot render job {job['idx']}: {exc}",
        }
    kwargs = rendered["kwargs"]
    if file is not None:
        kwargs["file"] = file
    spec = {
        "job_id": job["id"],
        "attempt": job["attempt"],
        "work_id": job["work_id"],
        "workflow_id": job["workflow_id"],
        "work": work.get("name"),
        "idx": job["idx"],
        "kind": work.get("kind"),
        "function": rendered["function"],
        "command": rendered["command"],
        "render_error": rendered.get("render_error"),
        "kwargs": kwargs if work.get("kind") == "function" else {},
        "env": work.get("env") or {},
        "timeout_s": work.get("timeout_s"),
        "resources": work.get("resources") or {},
        "log_dir": f"{log_dir}/{job['workflow_id']}",
        "cwd": work.get("cwd"),
        "owner": work.get(_OWNER),
    }
    if file is not None and isinstance(file_meta, dict) and file_meta.get("did"):
        spec["input_file"] = {"pfn": file, "did": file_meta["did"], "rse": file_meta.get("rse")}
    payload = work.get("payload")
    if payload:  # Function-as-a-Task: blobs in the cache; the value comes back pickled there too
        spec["payload"] = {
            "sha256": payload["function"],
            "path": blob_file(cache_dir, payload["function"]),
        }
        if payload.get("sandbox"):
            spec["payload"]["sandbox"] = {
                "sha256": payload["sandbox"],
                "path": blob_file(cache_dir, payload["sandbox"]),
            }
        if payload.get("calls"):
            spec["call"] = {
                "sha256": payload["calls"],
                "index": job["idx"],
                "path": blob_file(cache_dir, payload["calls"]),
            }
        spec["result_dir"] = cache_dir
    return spec
