"""The ``@workflow`` decorator and :class:`Run`, a workflow run seen from Python.

::

    @workflow                       # or @workflow(name=..., where="local" | "server")
    def optimise(n_rounds=10):
        best = None
        for i in range(n_rounds):
            ys = evaluate.map(propose(i))   # @work calls add works to this run
            ...
        return best

    run = optimise.submit(n_rounds=5)   # Run: id, status, result(), wait(), abort(), ...
    run.result()
    optimise(n_rounds=5)                # submit + result

``where="local"`` (the default): the body runs in a background thread of this
process; the workflow is submitted *open* (``POST requests`` with
``"open": true``), each ``@work`` call in the body appends a Work
(``POST requests/{id}/works``), and when the body returns it is closed
(``POST requests/{id}/close``) with its result (JSON and/or a pickled blob) or
its error. The run then finishes when its works are done.

``where="server"``: the body and its arguments are uploaded as blobs and
``POST requests {"faat": {"body": sha, "args": sha, "name": ..., "sandbox"?: sha}}``
asks the service to run the body itself (see :mod:`idds_jupyter.faat.runner`).

:func:`get_run` and :func:`runs` reattach to runs from any process.
"""

from __future__ import annotations

import contextlib
import functools
import itertools
import threading
import time
import traceback as tb
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any

from idds_jupyter.faat import serialize
from idds_jupyter.faat.context import _CURRENT
from idds_jupyter.faat.remote_error import RemoteError

if TYPE_CHECKING:
    from idds_jupyter.client import Client

__all__ = ["workflow", "WorkflowFunction", "Run", "get_run", "runs"]

_WHERE = ("local", "server")


def _default_client(client: Client | None) -> Client:
    if client is not None:
        return client
    from idds_jupyter.client import get_client

    return get_client()


def _one_line(exc: BaseException) -> str:
    msg = " ".join(str(exc).split())
    return f"{type(exc).__name__}: {msg}" if msg else type(exc).__name__


class Run:
    """One workflow run: its id, live status, result and control."""

    def __init__(
        self,
        client: Client,
        workflow_id: int,
        name: str | None = None,
        info: dict[str, Any] | None = None,
    ) -> None:
        self.client = client
        self.id = int(workflow_id)
        self.name = name if name is not None else (info or {}).get("name")
        self.info_snapshot = info
        self._names = itertools.count()
        self._names_lock = threading.Lock()
        # set when the body runs in this process
        self._local = False
        self._body_done = threading.Event()
        self._value: Any = None
        self._error: BaseException | None = None
        self._thread: threading.Thread | None = None

    def __repr__(self) -> str:
        status = (self.info_snapshot or {}).get("status", "?")
        return f"<Run {self.id} {self.name or ''} {status}>".replace("  ", " ")

    # --------------------------------------------------------- naming of works
    def next_work_name(self, base: str) -> str:
        """A new work name in this run: ``base`` with a sequence number."""
        with self._names_lock:
            return f"{base}_{next(self._names)}"

    @contextlib.contextmanager
    def active(self) -> Iterator[Run]:
        """Make ``@work`` calls in this block (e.g. in a thread of the body) add to this run."""
        token = _CURRENT.set(self)
        try:
            yield self
        finally:
            _CURRENT.reset(token)

    # ---------------------------------------------------------------- inspect
    def info(self) -> dict[str, Any]:
        """The service's view of the run (``GET requests/{id}``)."""
        self.info_snapshot = self.client.status(self.id)
        return self.info_snapshot

    @property
    def status(self) -> str:
        """The run's status (``running``, ``finished``, ``failed``, ...)."""
        return str(self.info()["status"])

    @property
    def works(self) -> list[dict[str, Any]]:
        """The run's works with their statuses and job counts."""
        return list(self.info().get("works") or [])

    @property
    def jobs(self) -> dict[str, int]:
        """Job counts by status over all works."""
        out: dict[str, int] = {}
        for w in self.works:
            for status, n in (w.get("jobs") or {}).items():
                out[status] = out.get(status, 0) + int(n)
        return out

    def monitor(self) -> dict[str, Any]:
        """The run's summary: status, job counts by status, timings."""
        return self.client.monitor(self.id)

    # ---------------------------------------------------------------- control
    def abort(self) -> dict[str, Any]:
        """Abort the run: its running jobs are cancelled; it cannot be resumed."""
        return self.client.abort(self.id)

    def retry_failed(self) -> dict[str, Any]:
        """Run the failed jobs of the run again."""
        return self.client.retry(self.id)

    # ------------------------------------------------------------- provenance
    def provenance(self, work: str | None = None, job: int | None = None) -> dict[str, Any]:
        """What produced a result: one job's record and lineage, or the whole run's.

        One job's (``work`` and ``job``): code, input and result digests, environment,
        attempts, times, the upstream jobs and values that fed it, the job a cached
        result came from; with no arguments, the whole run's.
        """
        if work is None:
            return self.client.provenance(self.id)
        return self.client.provenance(self.id, work, int(job or 0))

    def write_crate(self, path: str) -> str:
        """Write this run's provenance as an RO-Crate zip at ``path`` (returned).

        The client side of ``idds-jupyter provenance ID -o``; needs the ``provenance`` extra.
        """
        from idds_jupyter.export.provenance import write_crate

        info = self.info()
        run = {
            k: info.get(k) for k in ("id", "name", "status", "owner", "created_at", "finished_at")
        }
        run["id"] = self.id
        run["template"] = self.client.dag(self.id)  # the run's graph: works and their edges
        return write_crate(run, self.client.provenance(self.id), path)

    def rerun(self, failed_only: bool = True) -> Run:
        """A new run of this run's template with every work memoized.

        Jobs whose code and inputs are unchanged take their results (*cached*); the
        failed ones (and, with ``failed_only=False``, the changed ones) and everything
        downstream run again.
        """
        new = self.client.rerun(self.id, failed=failed_only, changed=not failed_only)
        return Run(self.client, new, self.name)

    # ---------------------------------------------------------------- waiting
    def wait(self, timeout: float | None = None) -> str:
        """Block until the body (if it runs here) and the workflow ended; returns the status."""
        deadline = None if timeout is None else time.monotonic() + timeout
        if self._local and not self._body_done.wait(timeout):
            raise TimeoutError(f"the body of run {self.id} is still running after {timeout} s")
        left = None if deadline is None else max(0.0, deadline - time.monotonic())
        return self.client.wait_workflow(self.id, left)

    def result(self, timeout: float | None = None) -> Any:
        """The body's return value (re-raising its exception) once the run ended."""
        status = self.wait(timeout)
        if self._local:
            if self._error is not None:
                raise self._error
            if status == "aborted":
                raise RemoteError(f"workflow {self.id} was aborted", workflow_id=self.id)
            return self._value
        info = self.info()
        body = {
            **info,
            **(info.get("body") or {}),
        }  # what close() recorded: result, blob, traceback
        if info.get("error"):
            raise RemoteError(
                str(info["error"]), traceback=body.get("traceback"), workflow_id=self.id
            )
        if status == "aborted":
            raise RemoteError(f"workflow {self.id} was aborted", workflow_id=self.id)
        sha = body.get("result_blob")
        if sha:
            return serialize.loads(self.client.cache_get(sha))
        return body.get("result")

    # ------------------------------------------------------------- local body
    def _start_body(
        self, fn: Callable[..., Any], args: tuple[Any, ...], kwargs: dict[str, Any]
    ) -> None:
        self._local = True
        self._thread = threading.Thread(
            target=self._run_body, args=(fn, args, kwargs), name=f"idds-run-{self.id}", daemon=True
        )
        self._thread.start()

    def _run_body(
        self, fn: Callable[..., Any], args: tuple[Any, ...], kwargs: dict[str, Any]
    ) -> None:
        token = _CURRENT.set(self)
        try:
            try:
                value = fn(*args, **kwargs)
            except BaseException as exc:
                self._error = exc
                with contextlib.suppress(Exception):
                    self.client.close(
                        self.id, error=_one_line(exc), traceback="".join(tb.format_exception(exc))
                    )
                return
            self._value = value
            try:
                close_with_result(self.client, self.id, value)
            except Exception as exc:
                self._error = exc
        finally:
            _CURRENT.reset(token)
            self._body_done.set()


def close_with_result(client: Client, workflow_id: int, value: Any) -> None:
    """Close an open workflow with the body's value: JSON when it is, and always a pickle."""
    kw: dict[str, Any] = {}
    if value is not None:
        if serialize.jsonable(value):
            kw["result"] = value
        try:
            kw["result_blob"] = serialize.upload(client, serialize.dumps(value))
        except Exception:
            if "result" not in kw:
                kw["result"] = repr(value)
    client.close(workflow_id, **kw)


class WorkflowFunction:
    """A function decorated with ``@workflow``."""

    def __init__(
        self,
        fn: Callable[..., Any],
        *,
        name: str | None = None,
        where: str = "local",
        client: Client | None = None,
    ) -> None:
        if where not in _WHERE:
            raise ValueError(f"@workflow: where must be one of {', '.join(_WHERE)}, got {where!r}")
        functools.update_wrapper(self, fn)
        self.fn = fn
        self.name = name or getattr(fn, "__name__", "workflow")
        self.where = where
        self.client = client

    def __repr__(self) -> str:
        return f"<workflow {self.name} ({self.where})>"

    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        state["client"] = None
        return state

    def local(self, *args: Any, **kwargs: Any) -> Any:
        """Call the plain function (its ``@work`` calls still run remotely)."""
        return self.fn(*args, **kwargs)

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        """Run the workflow and wait for its result (``submit(...).result()``)."""
        return self.submit(*args, **kwargs).result()

    def submit(self, *args: Any, **params: Any) -> Run:
        """Start a run; returns at once with its :class:`Run`."""
        client = _default_client(self.client)
        if self.where == "server":
            return self._submit_server(client, args, params)
        from idds_jupyter.faat.results import router

        router(client)  # the push channel is up before anything can end
        wf_id = client.submit(
            {"name": self.name, "works": []}, serialize.json_params(params), open=True
        )
        run = Run(client, wf_id, self.name)
        run._start_body(self.fn, args, params)
        return run

    def _submit_server(self, client: Client, args: tuple[Any, ...], params: dict[str, Any]) -> Run:
        body = serialize.upload(client, serialize.pack_function(self.fn))
        argblob = serialize.upload(client, serialize.dumps((args, params)))
        faat: dict[str, Any] = {"body": body, "args": argblob, "name": self.name}
        box = serialize.sandbox()
        if box is not None:
            faat["sandbox"] = client.upload(*box)
        req = {"faat": faat, "params": serialize.json_params(params)}
        wf_id = int(client.request("POST", "requests", json_body=req).json()["id"])
        return Run(client, wf_id, self.name)


def workflow(
    fn: Callable[..., Any] | None = None,
    /,
    *,
    name: str | None = None,
    where: str = "local",
    client: Client | None = None,
) -> Any:
    """Decorate a function whose body is a workflow (bare ``@workflow`` or ``@workflow(...)``)."""

    def wrap(f: Callable[..., Any]) -> WorkflowFunction:
        return WorkflowFunction(f, name=name, where=where, client=client)

    if fn is not None:
        return wrap(fn)
    return wrap


def get_run(workflow_id: int, client: Client | None = None) -> Run:
    """Reattach to a run by id (from any process); raises IddsError if there is none."""
    client = _default_client(client)
    info = client.status(int(workflow_id))
    return Run(client, int(workflow_id), info.get("name"), info)


def runs(limit: int = 100, client: Client | None = None) -> list[Run]:
    """The latest runs, newest first."""
    client = _default_client(client)
    return [Run(client, int(r["id"]), r.get("name"), r) for r in client.runs(limit)]
