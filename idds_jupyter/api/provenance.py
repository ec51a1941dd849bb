"""REST handlers of provenance (monitor group): a run's record and one job's lineage.

``GET monitor/{id}/provenance`` — a page of the run's recorded jobs (code, input and
result digests, environment, attempts, times, cached or run) and the per-work counts;
``GET monitor/{id}/works/{name}/jobs/{idx}/provenance`` — one job, with the upstream
jobs and values that fed it and the job a cached result was taken from.
Owner-scoped like every monitor route; the database work runs off the event loop.
"""

from __future__ import annotations

from typing import Any

from idds_jupyter.api.base import ApiError, ApiHandler
from idds_jupyter.store import monitor
from idds_jupyter.store import provenance as prov

__all__ = ["JobProvenanceHandler", "RerunHandler", "RunProvenanceHandler"]


def _run_page(engine: Any, wid: int, offset: int, limit: int) -> dict[str, Any]:
    with engine.connect() as conn:
        return prov.run_provenance(conn, wid, offset, limit)


def _job(engine: Any, wid: int, work: str, idx: int) -> dict[str, Any] | None:
    with engine.connect() as conn:
        return prov.job_provenance(conn, wid, work, idx)


class RunProvenanceHandler(ApiHandler):
    async def get(self, wid: str) -> None:
        await self.check_owner(int(wid))
        out = await self.run(
            _run_page,
            self.ctx.orch.engine,
            int(wid),
            self.int_arg("offset", 0),
            self.int_arg("limit", 1000, 1, monitor.MAX_PAGE),
        )
        self.send(out)


class JobProvenanceHandler(ApiHandler):
    async def get(self, wid: str, name: str, idx: str) -> None:
        await self.check_owner(int(wid))
        out = await self.run(_job, self.ctx.orch.engine, int(wid), name, int(idx))
        if out is None:
            raise ApiError(
                404,
                f"no provenance recorded for job {idx} of work {name!r} "
                f"of workflow {wid} (not ended yet?)",
            )
        self.send(out)


def _rerun_request(engine: Any, wid: int) -> dict[str, Any] | None:
    with engine.connect() as conn:
        return prov.rerun_request(conn, wid)


class RerunHandler(ApiHandler):
    """``POST requests/{id}/rerun`` ``{"failed": true}`` or ``{"changed": true}``: a new run of
    the same template with every work memoizing: the jobs whose code and inputs did not change
    take their results, the failed (and changed) ones and their downstream run. Returns its id."""

    async def post(self, wid: str) -> None:
        from idds_jupyter.api import limits
        from idds_jupyter.model.errors import TemplateError

        await self.check_owner(int(wid))
        body = self.json_body(required=False) or {}
        for key in ("failed", "changed"):
            if not isinstance(body.get(key, False), bool):
                raise ApiError(400, f"field {key!r} must be true or false")
        req = await self.run(_rerun_request, self.ctx.orch.engine, int(wid))
        if req is None:
            raise ApiError(404, f"no workflow with id {wid}")
        tmpl = req["template"]
        quota = limits.quota(
            self, limits.check_jobs(self.ctx.config, tmpl.get("works"), user=self.user)
        )

        def submit() -> int:
            quota()
            return int(
                self.ctx.orch.submit(
                    tmpl,
                    req["params"],
                    owner=self.user.name,
                    backend=req["backend"],
                    cwd=req["cwd"],
                )
            )

        try:
            new = await self.run(submit)
        except TemplateError as exc:
            raise ApiError(400, f"cannot re-run workflow {wid}: {exc}") from None
        self.ctx.remember_owner(new, self.user.name)
        self.send({"id": new, "rerun_of": int(wid)}, 201)
