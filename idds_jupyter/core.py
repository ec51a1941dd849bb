"""The orchestrator's Python face over the store: submit, inspect, control, wait.

The CLI uses it directly on the embedded store; the REST service exposes the
same operations. Nothing here runs jobs: the agents do (``idds_jupyter.agents``).
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any, Protocol

from sqlalchemy import func, select

from idds_jupyter.bus import Bus, NullBus
from idds_jupyter.bus import event as ev
from idds_jupyter.bus.event import ended_events, make_event, outcome_events
from idds_jupyter.config import Config
from idds_jupyter.model import Workflow, WorkflowStatus
from idds_jupyter.model.expression import set_limits
from idds_jupyter.model.limits import RUNTIME
from idds_jupyter.store import control, space
from idds_jupyter.store.cache import record_blobs
from idds_jupyter.store.catalog import Catalog
from idds_jupyter.store.engine import make_engine
from idds_jupyter.store.jobs import Claim, Outcome, reserve_job_ids
from idds_jupyter.store.migrate import upgrade
from idds_jupyter.store.monitor import job_counts_by_work
from idds_jupyter.store.tables import jobs, workflows, works
from idds_jupyter.store.workflows import Applied, NewWork, plan_workflow, submit_planned
from idds_jupyter.store.workflows import add_works as store_add_works
from idds_jupyter.store.workflows import close as store_close
from idds_jupyter.store.works import (
    append_jobs,
    declare_jobs,
    expand_workflow,
    settle_declared,
    taken_job,
)

TERMINAL = {
    s.value
    for s in (
        WorkflowStatus.FINISHED,
        WorkflowStatus.SUBFINISHED,
        WorkflowStatus.FAILED,
        WorkflowStatus.ABORTED,
    )
}


# job ids an Orchestrator reserves at a time for add_jobs (unused ones are left as gaps)
RESERVE_JOB_IDS = 64


class UnknownRun(LookupError):
    pass


class Dispatch(Protocol):
    """Takes a submission's released jobs as its transaction writes them, sends them after
    commit.

    An agent runner in the same process provides it (its Submitter); without one,
    released jobs wait for a Submitter's next claim as usual.
    """

    def room(self) -> Claim: ...

    def claimed(
        self, conn: Any, claim: Claim, new_works: Sequence[NewWork] = ()
    ) -> dict[str, list[dict[str, Any]]]: ...

    def ahead(self, claim: Claim) -> dict[str, list[dict[str, Any]]] | None: ...

    def send(self, claimed: dict[str, list[dict[str, Any]]], unwritten: bool = False) -> None: ...

    def written(self, job_ids: Sequence[int], ok: bool = True) -> None: ...

    def hurry(self) -> None: ...


class Orchestrator:
    def __init__(
        self,
        config: Config | None = None,
        engine: Any = None,
        bus: Bus | None = None,
        migrate: bool = True,
        dispatch: Dispatch | None = None,
    ) -> None:
        self.config = config or Config.load()
        # the expression budget of this process's conditions (docs/operations.md, "Limits")
        set_limits(
            self.config.expression_max_steps,
            self.config.expression_max_size,
            self.config.expression_max_depth,
        )
        RUNTIME.max_jobs_per_work = int(
            self.config.max_jobs_per_work
        )  # sweeps resolved at run time
        self.engine = engine or make_engine(self.config.db_url)
        self.bus = bus or NullBus()
        self.dispatch = dispatch
        # add_jobs: job ids reserved, and the works jobs were added to (work id, backend)
        self._job_ids: list[int] = []
        self._appended: dict[tuple[int, str], tuple[int, str]] = {}
        self._ids_lock = threading.Lock()
        if migrate:
            upgrade(self.engine)
        self.catalog = Catalog(self.engine)
        # SQLite: the space that lets an abort write on a full disk (store/space.py)
        self.reserve = space.reserve_for(self.engine, self.config.disk_reserve_mb)

    # -------------------------------------------------------------- submit
    def submit(
        self,
        workflow: Workflow | Mapping[str, Any] | str,
        params: Mapping[str, Any] | None = None,
        owner: str = "local",
        backend: str | None = None,
        cwd: str | None = None,
        open: bool = False,
        blobs: Sequence[tuple[str, int]] = (),
    ) -> int:
        """Validate and store a workflow; returns its id. Nothing is stored if it is invalid.

        Command jobs run in ``cwd``, by default the directory this is called from.
        ``blobs`` are cache files (sha256, size) written for it, recorded with it.
        """
        wf = load_workflow(workflow, semantic=False)  # submit_planned validates it with params
        if self.reserve is not None:  # a full disk: StorageFull now, not a half-written run
            self.reserve.check()
        with self.engine.begin() as conn:
            first = submit_planned(
                conn, wf, params, owner=owner, backend=backend, cwd=cwd or os.getcwd(), open=open
            )
            wid = first.workflow_id
            record_blobs(conn, blobs, kind="payload", owner=owner)
            applied, out, claimed = self._plan_now(conn, wid, backend, first)
        self._send(claimed)
        # "open": a body will grow it (a @workflow, an HPO study the Steerer may drive)
        self.bus.publish(
            [
                make_event(ev.WORKFLOW_NEW, str(wid), open=open),
                *self._plan_events(wid, applied, out, claimed),
            ]
        )
        return wid

    def add_works(
        self,
        workflow_id: int,
        works_: list[dict[str, Any]],
        blobs: Sequence[tuple[str, int]] = (),
        owner: str | None = None,
        declared: dict[str, int] | None = None,
    ) -> list[str]:
        """Append works to a running workflow (Function-as-a-Task bodies grow their run).

        Planned in the same transaction, as a submission is: a ``@work`` call
        inside a workflow body reaches a worker with no Clerk round. ``declared``: works
        that will have more jobs than they are given now (see :meth:`add_jobs`).
        """
        with self.engine.begin() as conn:
            grown = store_add_works(conn, workflow_id, works_)
            record_blobs(conn, blobs, kind="payload", owner=owner)
            applied, out, claimed = self._plan_now(conn, workflow_id, grown.backend, grown.applied)
            if declared:
                declare_jobs(conn, workflow_id, declared)
        self._send(claimed)
        # No WORKFLOW_DIRTY: the run was planned here, and a caller waiting on it (a
        # FaaT body's results) would only look it up again for nothing.
        self.bus.publish(self._plan_events(workflow_id, applied, out, claimed))
        return grown.names

    def add_jobs(
        self,
        workflow_id: int,
        work: str,
        start: int,
        kwargs_list: list[dict[str, Any]],
        within_declared: bool = False,
    ) -> None:
        """Jobs ``start``, … of a work declared bigger (an HPO study's next trials): one
        insert, claimed and sent as the transaction commits. Raises
        :class:`~idds_jupyter.store.works.WorkEnded` when the work or its run has ended.

        Once jobs were added to a work here, the next ones go to their worker first,
        under ids reserved ahead, and their rows (written claimed) follow: a trial's
        transaction is off the path from the last trial's end to the next one's start.
        Should the write fail (the work ended meanwhile), the jobs sent are withdrawn.
        ``within_declared``: jobs beyond the work's declared count are refused
        (:class:`~idds_jupyter.store.works.BeyondDeclared`).
        """
        ahead = self._send_ahead(workflow_id, work, start, kwargs_list)
        if ahead is not None:
            assert self.dispatch is not None
            ids, claim = ahead
            try:
                with self.engine.begin() as conn:
                    append_jobs(
                        conn, workflow_id, work, start, kwargs_list, claim, ids, within_declared
                    )
                    more = self._more_job_ids(conn)
            except BaseException:
                self.dispatch.written(ids, ok=False)
                raise
            self.dispatch.written(ids)
            self._keep_job_ids(more)
            return
        more = []
        with self.engine.begin() as conn:
            taking = self.dispatch.room() if self.dispatch is not None else None
            released = append_jobs(
                conn, workflow_id, work, start, kwargs_list, taking, None, within_declared
            )
            claimed = (
                self.dispatch.claimed(conn, taking)
                if self.dispatch is not None and taking is not None and taking.jobs
                else {}
            )
            if claimed:
                more = self._more_job_ids(conn)
        self._keep_job_ids(more)
        if taking is not None and taking.jobs:
            if len(self._appended) >= 1024:
                self._appended.clear()
            first = taking.jobs[0]
            self._appended[(workflow_id, work)] = (first["work_id"], first["backend"])
        self._send(claimed)
        if released > sum(len(v) for v in claimed.values()):
            self.bus.publish([make_event(ev.JOBS_READY)])

    def _send_ahead(
        self, workflow_id: int, work: str, start: int, kwargs_list: list[dict[str, Any]]
    ) -> tuple[list[int], Claim] | None:
        """Send jobs of a work jobs were added to before under reserved ids, all of them
        taken; None (nothing sent) when there are not enough ids, room or known specs."""
        target = self._appended.get((workflow_id, work))
        n = len(kwargs_list)
        if self.dispatch is None or target is None:
            return None
        work_id, backend = target
        claim = self.dispatch.room()
        if claim.room.get(backend, 0) < n:
            return None
        with self._ids_lock:
            if len(self._job_ids) < n:
                return None
            ids, self._job_ids = self._job_ids[:n], self._job_ids[n:]
        claim.jobs = [
            taken_job(j, workflow_id, work_id, start + i, kw, None, backend)
            for i, (j, kw) in enumerate(zip(ids, kwargs_list, strict=True))
        ]
        specs = self.dispatch.ahead(claim)
        if specs is None:  # the ids go back unused
            with self._ids_lock:
                self._job_ids[:0] = ids
            return None
        self.dispatch.send(specs, unwritten=True)
        return ids, claim

    def _more_job_ids(self, conn: Any) -> list[int]:
        """Ids to keep at hand for the next jobs :meth:`add_jobs` sends ahead, when few are
        left; kept once ``conn``'s transaction commits (on SQLite the reservation is in it)."""
        with self._ids_lock:
            short = len(self._job_ids) < RESERVE_JOB_IDS // 2
        return reserve_job_ids(conn, RESERVE_JOB_IDS) if short else []

    def _keep_job_ids(self, ids: list[int]) -> None:
        if ids:
            with self._ids_lock:
                self._job_ids += ids

    def _plan_now(
        self, conn: Any, wid: int, backend: str | None, applied: Applied | None = None
    ) -> tuple[Applied, Outcome, dict[str, list[dict[str, Any]]]]:
        """Plan in the caller's transaction; one new work of jobs is expanded and claimed too.

        A run of one work (a function call, a map) needs no Clerk or Transformer
        round. Bigger DAGs are expanded work by work by the Transformer, so that
        their first jobs start before the last are written.
        """
        out = Outcome()
        claimed: dict[str, list[dict[str, Any]]] = {}
        if applied is None:
            applied = plan_workflow(conn, wid)
        if applied.new_job_works == 1:
            claim = self.dispatch.room() if self.dispatch is not None else None
            expand_workflow(
                conn,
                wid,
                backend,
                self.config.backend,
                out,
                self.config.policy,
                applied.new_works,
                claim,
            )
            if claim is not None and claim.jobs:
                assert self.dispatch is not None
                claimed = self.dispatch.claimed(conn, claim, applied.new_works)
        return applied, out, claimed

    def _send(self, claimed: dict[str, list[dict[str, Any]]]) -> None:
        if claimed and self.dispatch is not None:
            self.dispatch.send(claimed)

    @staticmethod
    def _plan_events(
        wid: int, applied: Any, out: Outcome, claimed: dict[str, list[dict[str, Any]]]
    ) -> list[Any]:
        events = []
        if applied.new_job_works > 1:
            events.append(make_event(ev.WORK_NEW, str(wid)))
        if out.released > sum(len(v) for v in claimed.values()):
            events.append(make_event(ev.JOBS_READY))
        ended = [*out.ended_workflows, *([(wid, applied.status)] if applied.status else [])]
        return events + outcome_events(out.terminal_works, out.dirty_workflows, ended)

    def close(
        self,
        workflow_id: int,
        result: Any = None,
        result_blob: str | None = None,
        error: str | None = None,
        traceback: str | None = None,
    ) -> str:
        """End an open workflow's body; returns the workflow's status."""
        settled = Outcome()
        with self.engine.begin() as conn:
            settle_declared(conn, workflow_id, settled)  # jobs declared that never came
            status, ended = store_close(conn, workflow_id, result, result_blob, error, traceback)
        if not ended and self.dispatch is not None:
            self.dispatch.hurry()  # its last results may be told and not yet recorded
        # ended: its end says it all; else views, the Clerk and a Steerer learn it closed,
        # and that it goes on (its status): a caller waiting for its end need not look
        self.bus.publish(
            [
                *outcome_events(settled.terminal_works, set(), []),
                *(
                    ended_events([(workflow_id, status)])
                    if ended
                    else [make_event(ev.WORKFLOW_DIRTY, str(workflow_id), status=status)]
                ),
            ]
        )
        return status

    def owner(self, workflow_id: int) -> str | None:
        with self.engine.begin() as conn:
            return conn.execute(
                select(workflows.c.owner).where(workflows.c.id == workflow_id)
            ).scalar()

    def work_results(
        self, workflow_id: int, work: str, offset: int = 0, limit: int | None = None
    ) -> list[dict[str, Any]]:
        """Per job of one work instance, in job order: status, JSON result, blob digests, error."""
        stmt = (
            select(
                jobs.c.idx,
                jobs.c.id,
                jobs.c.status,
                jobs.c.result,
                jobs.c.blob,
                jobs.c.inline,
                jobs.c.error,
                jobs.c.log_path,
                jobs.c.attempt,
            )
            .where(
                jobs.c.work_id.in_(
                    select(works.c.id).where(
                        works.c.workflow_id == workflow_id, works.c.name == work
                    )
                )
            )
            .order_by(jobs.c.idx)
            .offset(offset)
        )
        if limit is not None:
            stmt = stmt.limit(limit)
        with self.engine.begin() as conn:
            if (
                conn.execute(
                    select(works.c.id).where(
                        works.c.workflow_id == workflow_id, works.c.name == work
                    )
                ).first()
                is None
            ):
                raise UnknownRun(f"workflow {workflow_id} has no work named {work!r}")
            rows = conn.execute(stmt).mappings().all()
        out = []
        for r in rows:
            failed = r["status"] == "failed"
            error = r["error"] or None
            first, _, rest = (error or "").partition("\n")
            out.append(
                {
                    "idx": r["idx"],
                    "job_id": r["id"],
                    "status": r["status"],
                    "result": r["result"],
                    "blob": None if failed else r["blob"],
                    "error_blob": r["blob"] if failed else None,
                    "inline": None if failed else r["inline"],
                    "error_inline": r["inline"] if failed else None,
                    "error": first or None,
                    "traceback": rest or None,
                    "exc_type": first.split(":", 1)[0] if failed and ":" in first else None,
                    "log_path": r["log_path"],
                    "attempt": r["attempt"],
                }
            )
        return out

    # ------------------------------------------------------------- inspect
    def status(self, workflow_id: int, with_works: bool = True) -> dict[str, Any]:
        """The run, and (``with_works``) each work with its job counts: O(works), which a
        waiter that only wants the run's state and result does not pay."""
        with self.engine.begin() as conn:
            row = (
                conn.execute(select(workflows).where(workflows.c.id == workflow_id))
                .mappings()
                .first()
            )
            if row is None:
                raise UnknownRun(f"no workflow with id {workflow_id}")
            ws, by_work = self._works_of(conn, workflow_id) if with_works else ([], {})
        meta = row["meta"] or {}
        body = {k: meta.get(k) for k in ("open", "result", "result_blob", "traceback") if k in meta}
        out = {
            "body": body,
            "id": row["id"],
            "name": row["name"],
            "owner": row["owner"],
            "status": row["status"],
            "params": row["params"],
            "error": row["error"],
            "created_at": row["created_at"],
            "finished_at": row["finished_at"],
            "conditions": meta.get("conditions", {}),
            "loops": meta.get("loops", {}),
            "loop_info": meta.get("loop_info", {}),
        }
        if with_works:
            out["works"] = [{**dict(w), "jobs": by_work.get(w["id"], {})} for w in ws]
        return out

    @staticmethod
    def _works_of(conn: Any, workflow_id: int) -> tuple[list[Any], dict[int, dict[str, int]]]:
        ws = (
            conn.execute(
                select(
                    works.c.id,
                    works.c.name,
                    works.c.kind,
                    works.c.status,
                    works.c.n_jobs,
                    works.c.n_finished,
                    works.c.n_failed,
                    works.c.n_cancelled,
                    works.c.iteration,
                    works.c.loop,
                    works.c.reason,
                )
                .where(works.c.workflow_id == workflow_id)
                .order_by(works.c.id)
            )
            .mappings()
            .all()
        )
        return list(ws), job_counts_by_work(conn, workflow_id)

    def runs(self, owner: str | None = None, limit: int = 100) -> list[dict[str, Any]]:
        stmt = (
            select(
                workflows.c.id,
                workflows.c.name,
                workflows.c.owner,
                workflows.c.status,
                workflows.c.created_at,
                workflows.c.finished_at,
            )
            .order_by(workflows.c.id.desc())
            .limit(limit)
        )
        if owner is not None:
            stmt = stmt.where(workflows.c.owner == owner)
        with self.engine.begin() as conn:
            return [dict(r) for r in conn.execute(stmt).mappings()]

    def job_counts(self, workflow_id: int) -> dict[str, int]:
        with self.engine.begin() as conn:
            return dict(
                conn.execute(
                    select(jobs.c.status, func.count())
                    .where(jobs.c.workflow_id == workflow_id)
                    .group_by(jobs.c.status)
                ).all()
            )

    def jobs(self, workflow_id: int, work: str | None = None) -> list[dict[str, Any]]:
        stmt = (
            select(
                jobs.c.id,
                jobs.c.work_id,
                jobs.c.idx,
                jobs.c.status,
                jobs.c.attempt,
                jobs.c.result,
                jobs.c.error,
                jobs.c.wall_s,
                jobs.c.log_path,
            )
            .where(jobs.c.workflow_id == workflow_id)
            .order_by(jobs.c.work_id, jobs.c.idx)
        )
        if work is not None:
            stmt = stmt.where(
                jobs.c.work_id.in_(
                    select(works.c.id).where(
                        works.c.workflow_id == workflow_id, works.c.name == work
                    )
                )
            )
        with self.engine.begin() as conn:
            return [dict(r) for r in conn.execute(stmt).mappings()]

    # ------------------------------------------------------------- control
    def _control(
        self, op: Callable[..., control.ControlResult], workflow_id: int, work: str | None
    ) -> control.ControlResult:
        try:
            with self.engine.begin() as conn:
                res = op(conn, workflow_id, work)
        except Exception as exc:
            # a full disk: give its reserve back (SQLite) and write the abort there
            path = space.sqlite_path(self.engine)
            if path is None or not space.is_disk_full(exc) or not space.release(path):
                raise
            with self.engine.begin() as conn:
                res = op(conn, workflow_id, work)
        events = [
            make_event(ev.CONTROL, str(workflow_id)),
            make_event(ev.WORKFLOW_DIRTY, str(workflow_id)),
        ]
        if res.cancel_jobs:
            events.append(make_event(ev.JOBS_CANCEL, str(workflow_id)))
        events.append(make_event(ev.JOBS_READY))
        self.bus.publish(events)
        return res

    def abort(self, workflow_id: int, work: str | None = None) -> control.ControlResult:
        return self._control(control.abort, workflow_id, work)

    def suspend(self, workflow_id: int, work: str | None = None) -> control.ControlResult:
        return self._control(control.suspend, workflow_id, work)

    def resume(self, workflow_id: int, work: str | None = None) -> control.ControlResult:
        return self._control(control.resume, workflow_id, work)

    def retry(self, workflow_id: int, work: str | None = None) -> control.ControlResult:
        return self._control(control.retry_failed, workflow_id, work)

    # ---------------------------------------------------------------- wait
    def wait(
        self,
        workflow_id: int,
        timeout: float | None = None,
        progress: Callable[[dict[str, int]], None] | None = None,
        interval: float = 0.25,
    ) -> str:
        """Block until the workflow is terminal; returns its status."""
        deadline = None if timeout is None else time.monotonic() + timeout
        sub = self.bus.subscribe([ev.WORKFLOW_TERMINAL, ev.WORK_TERMINAL])
        try:
            while True:
                with self.engine.begin() as conn:
                    status = conn.execute(
                        select(workflows.c.status).where(workflows.c.id == workflow_id)
                    ).scalar()
                if status is None:
                    raise UnknownRun(f"no workflow with id {workflow_id}")
                if progress is not None:
                    progress(self.job_counts(workflow_id))
                if status in TERMINAL:
                    return str(status)
                if deadline is not None and time.monotonic() > deadline:
                    raise TimeoutError(f"workflow {workflow_id} still {status} after {timeout}s")
                sub.get(timeout=interval)
        finally:
            sub.close()


def load_workflow(src: Workflow | Mapping[str, Any] | str, semantic: bool = True) -> Workflow:
    """A Workflow from an object, a dict, YAML/JSON text, or a path to a .yaml/.json file.

    ``semantic=False``: a dict is only checked against the schema (the store checks the
    rest when it is submitted, with the run's parameters).
    """
    if isinstance(src, Workflow):
        return src
    if isinstance(src, Mapping):
        return Workflow.from_dict(dict(src), semantic=semantic)
    text = src
    if "\n" not in src and src.rsplit(".", 1)[-1].lower() in ("yaml", "yml", "json"):
        from pathlib import Path

        text = Path(src).read_text()
        if src.lower().endswith(".json"):
            return Workflow.from_json(text)
    return Workflow.from_yaml(text)
