"""The future of one remote job: a ``concurrent.futures.Future``, also awaitable.

A :class:`JobFuture` is resolved by the push channel when its job's result is
pushed (see :mod:`idds_jupyter.faat.results`): the value comes inline (small
values, base64 of the pickle) or is downloaded from the cache by its digest,
and is unpickled here, in the client — never on the server.
"""

from __future__ import annotations

import asyncio
import base64
import concurrent.futures
from collections.abc import Generator
from typing import TYPE_CHECKING, Any

from idds_jupyter.faat.remote_error import error_from_job

if TYPE_CHECKING:
    from idds_jupyter.client import Client

__all__ = ["JobFuture", "decode_value", "decode_job"]

_decoder: concurrent.futures.ThreadPoolExecutor | None = None


def _pool() -> concurrent.futures.ThreadPoolExecutor:
    global _decoder
    if _decoder is None:
        _decoder = concurrent.futures.ThreadPoolExecutor(4, thread_name_prefix="idds-fetch")
    return _decoder


def decode_value(client: Client, job: dict[str, Any]) -> Any:
    """The return value of a finished job: inline pickle, cached blob, or the JSON result."""
    import cloudpickle

    inline = job.get("inline")
    if inline:
        return cloudpickle.loads(base64.b64decode(inline))
    sha = job.get("blob")
    if sha:
        return cloudpickle.loads(client.cache_get(sha))
    return job.get("result")


def decode_job(
    client: Client, job: dict[str, Any], workflow_id: int | None = None, work: str | None = None
) -> tuple[bool, Any]:
    """``(True, value)`` for a finished job, ``(False, exception)`` otherwise."""
    if job.get("status") == "finished":
        try:
            return True, decode_value(client, job)
        except Exception as exc:
            return False, _undecodable(exc, job, workflow_id, work)
    return False, error_from_job(job, client.cache_get, workflow_id=workflow_id, work=work)


def _undecodable(
    exc: Exception, job: dict[str, Any], workflow_id: int | None, work: str | None
) -> BaseException:
    from idds_jupyter.faat.remote_error import RemoteError

    err = RemoteError(
        f"the result of the job could not be loaded here: {type(exc).__name__}: {exc}",
        job_id=job.get("job_id"),
        log_path=job.get("log_path"),
        workflow_id=workflow_id,
        work=work,
        idx=job.get("idx"),
    )
    err.__cause__ = exc
    return err


class JobFuture(concurrent.futures.Future[Any]):
    """The result of one call of a ``@work`` function (a job of a work of a workflow)."""

    def __init__(
        self, client: Client, workflow_id: int | None = None, work: str | None = None, idx: int = 0
    ) -> None:
        super().__init__()
        self.client = client
        self.workflow_id = workflow_id
        self.work = work
        self.idx = idx
        self.job_id: int | None = None
        self.log_path: str | None = None
        self.attempt: int | None = None

    def __repr__(self) -> str:
        state = "done" if self.done() else "pending"
        return f"<JobFuture {self.work}[{self.idx}] of workflow {self.workflow_id} {state}>"

    def __await__(self) -> Generator[Any, None, Any]:
        return asyncio.wrap_future(self).__await__()

    # called by the result router (push thread) -----------------------------------
    def _resolve(self, job: dict[str, Any]) -> None:
        if self.done():
            return
        self.job_id = job.get("job_id")
        self.log_path = job.get("log_path")
        self.attempt = job.get("attempt")
        needs_fetch = (
            job.get("status") == "finished" and not job.get("inline") and job.get("blob")
        ) or (
            job.get("status") != "finished"
            and not job.get("error_inline")
            and job.get("error_blob")
        )
        if needs_fetch:  # never block the push thread on a download
            _pool().submit(self._finish, job)
        else:
            self._finish(job)

    def _finish(self, job: dict[str, Any]) -> None:
        ok, value = decode_job(self.client, job, self.workflow_id, self.work)
        if self.done():
            return
        try:
            if ok:
                self.set_result(value)
            else:
                self.set_exception(value)
        except concurrent.futures.InvalidStateError:
            pass
