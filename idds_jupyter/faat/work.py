"""The ``@work`` decorator: a Python function that runs as the jobs of a Work.

::

    @work                      # or @work(name=..., backend=..., cores=..., memory_mb=...,
    def square(x):             #          retries=..., timeout_s=..., env=..., cache=True)
        return x * x

    square(3)                  # 9: blocks (one job)
    square.submit(3)           # JobFuture
    square.map(range(1000))    # [0, 1, 4, ...]: one Work, one job per item, in order
    square.map(kwargs_list=[{"x": 1}, {"x": 2}])
    square.map_async(range(10))  # [JobFuture, ...]
    square.local(3)            # the plain function, here

Inside a running ``@workflow`` body every call adds a Work to that run;
outside any workflow a call runs as a one-Work workflow of its own. The
function and all the calls of one submit/map travel as two content-addressed
blobs (see :mod:`idds_jupyter.faat.serialize`); a single call whose arguments are
plain JSON (:func:`~idds_jupyter.faat.serialize.json_call`) passes them as the job's
keyword arguments instead, with no blob of its own.
"""

from __future__ import annotations

import contextlib
import functools
import re
from collections.abc import Callable, Iterable, Mapping
from typing import TYPE_CHECKING, Any

from idds_jupyter.faat import serialize
from idds_jupyter.faat.context import current_run
from idds_jupyter.faat.future import JobFuture, decode_job
from idds_jupyter.faat.results import WorkSink, router

if TYPE_CHECKING:
    from idds_jupyter.client import Client

__all__ = ["work", "WorkFunction"]

Call = tuple[tuple[Any, ...], dict[str, Any]]


def _safe_name(name: str) -> str:
    name = re.sub(r"\W+", "_", name).strip("_") or "work"
    return name if not name[0].isdigit() else f"w_{name}"


class WorkFunction:
    """A function decorated with ``@work``."""

    def __init__(
        self,
        fn: Callable[..., Any],
        *,
        name: str | None = None,
        backend: str | None = None,
        cores: int | None = None,
        memory_mb: int | None = None,
        retries: int = 0,
        timeout_s: float | None = None,
        env: Mapping[str, str] | None = None,
        client: Client | None = None,
        cache: bool | str = False,
        input_dataset: str | None = None,
    ) -> None:
        if not callable(fn):
            raise TypeError(f"@work decorates a function, got {type(fn).__name__}")
        functools.update_wrapper(self, fn)
        self.fn = fn
        self.name = _safe_name(str(name or getattr(fn, "__name__", None) or "work"))
        self.backend = backend
        self.cores = cores
        self.memory_mb = memory_mb
        self.retries = int(retries or 0)
        self.timeout_s = timeout_s
        self.env = {str(k): str(v) for k, v in (env or {}).items()}
        self.client = client
        # memoization: a call whose function and arguments match an earlier success of
        # this owner (or of the named shared namespace) takes its result (off by default)
        self.cache = cache
        # data-aware: one job per file of this dataset (a catalog name or rucio://SCOPE:NAME)
        self.input_dataset = input_dataset

    def __repr__(self) -> str:
        return f"<work {self.name} of {getattr(self.fn, '__qualname__', self.fn)!r}>"

    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        state["client"] = None  # a client (sessions, threads) never travels
        return state

    def __get__(self, obj: Any, objtype: Any = None) -> Any:
        if obj is None:
            return self
        return functools.partial(self.__call__, obj)

    # ------------------------------------------------------------------ API
    def local(self, *args: Any, **kwargs: Any) -> Any:
        """Call the plain function here."""
        return self.fn(*args, **kwargs)

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        """Run one job remotely and return its value (re-raising its exception).

        With an ``input_dataset``: one job per file (:meth:`over_dataset`).
        """
        if self.input_dataset is not None and not args:
            return self.over_dataset(**kwargs)
        client, sink, _ = self._launch([(args, kwargs)], with_futures=False, single=True)
        return self._collect(client, sink, None)[0]

    def submit(self, *args: Any, **kwargs: Any) -> JobFuture:
        """Run one job remotely; returns its future at once."""
        _, _, futures = self._launch([(args, kwargs)], with_futures=True, single=True)
        assert futures is not None
        return futures[0]

    def map(
        self,
        *iterables: Iterable[Any],
        kwargs_list: Iterable[Mapping[str, Any]] | None = None,
        timeout: float | None = None,
    ) -> list[Any]:
        """Call the function on every item (``zip`` of the iterables, or every kwargs dict).

        One Work with one job per item; returns the values in order, or raises the
        error of the first failed job (in item order) once all jobs ended.
        """
        calls = _calls(iterables, kwargs_list)
        if not calls:
            return []
        client, sink, _ = self._launch(calls, with_futures=False)
        return self._collect(client, sink, timeout)

    def map_async(
        self, *iterables: Iterable[Any], kwargs_list: Iterable[Mapping[str, Any]] | None = None
    ) -> list[JobFuture]:
        """Like :meth:`map` but returns one future per item at once."""
        calls = _calls(iterables, kwargs_list)
        if not calls:
            return []
        _, _, futures = self._launch(calls, with_futures=True)
        assert futures is not None
        return futures

    def over_dataset(
        self, dataset: str | None = None, timeout: float | None = None, **kwargs: Any
    ) -> list[Any]:
        """One job per file of ``dataset`` (default: the decorator's ``input_dataset``).

        Each job calls the function with ``file=`` its file (for ``rucio://SCOPE:NAME``, the
        file's PFN once Rucio staged it) and ``kwargs``, as soon as that file is available.
        Returns the values in file order, or raises the first failed job's error.
        """
        ds = dataset or self.input_dataset
        if not ds:
            raise TypeError(
                f"{self.name}: over_dataset() needs a dataset (or @work(input_dataset=...))"
            )
        client = self._client()
        inline: dict[str, bytes] = {}
        payload = serialize.bound_payload(client, self.fn, kwargs, defer=inline)
        name = f"{self.name}_0"
        d = self.work_dict(name, payload, 0)
        del d["n_jobs"]
        d["input_dataset"] = ds
        wf_id = client.submit({"name": self.name, "works": [d]}, blobs=inline)
        client.wait_workflow(wf_id, timeout)
        values: list[Any] = []
        for job in client.work_results(wf_id, name):
            ok, value = decode_job(client, job, wf_id, name)
            if not ok:
                raise value
            values.append(value)
        return values

    # ------------------------------------------------------------- internals
    def work_dict(self, name: str, payload: dict[str, str], n: int) -> dict[str, Any]:
        """The Work template of ``n`` jobs of this function."""
        d: dict[str, Any] = {"name": name, "payload": payload, "n_jobs": n}
        if self.retries:
            d["retries"] = self.retries
        if self.timeout_s is not None:
            d["timeout_s"] = self.timeout_s
        if self.env:
            d["env"] = dict(self.env)
        if self.cache:
            d["cache"] = self.cache
        if self.backend:
            d["backend"] = self.backend
        resources: dict[str, Any] = {}
        if self.cores is not None:
            resources["cores"] = self.cores
        if self.memory_mb is not None:
            resources["memory_mb"] = self.memory_mb
        if resources:
            d["resources"] = resources
        return d

    def _client(self) -> Client:
        run = current_run()
        if run is not None:
            return run.client
        if self.client is not None:
            return self.client
        from idds_jupyter.client import get_client

        return get_client()

    def _launch(
        self, calls: list[Call], with_futures: bool, single: bool = False
    ) -> tuple[Client, WorkSink, list[JobFuture] | None]:
        run = current_run()
        client = self._client()
        results = router(client)
        inline: dict[str, bytes] = {}
        n = len(calls)
        # a call (not a map) with plain arguments: the job's JSON keyword arguments, no blob
        plain = serialize.json_call(self.fn, *calls[0]) if single else None
        payload = serialize.payload(client, self.fn, calls if plain is None else None, defer=inline)

        def work_dict(name: str) -> dict[str, Any]:
            d = self.work_dict(name, payload, n)
            if plain is not None:
                del d["n_jobs"]
                d["kwargs_list"] = [plain]
            return d

        futures = [JobFuture(client, None, None, i) for i in range(n)] if with_futures else None
        if run is not None:
            name = run.next_work_name(self.name)
            sink = WorkSink(run.id, name, n, self.retries, futures)
            _name_futures(futures, run.id, name)
            results.register(sink)
            try:
                client.add_works(run.id, [work_dict(name)], blobs=inline)
            except BaseException:
                results.unregister(sink)
                raise
        else:
            name = f"{self.name}_0"
            template = {"name": self.name, "works": [work_dict(name)]}
            wf_id = client.submit(template, blobs=inline)
            sink = WorkSink(wf_id, name, n, self.retries, futures)
            _name_futures(futures, wf_id, name)
            results.register(sink)
        return client, sink, futures

    def _collect(self, client: Client, sink: WorkSink, timeout: float | None) -> list[Any]:
        try:
            sink.wait(timeout)
        except KeyboardInterrupt:
            if current_run() is None:  # a workflow of its own: nobody else wants it
                with contextlib.suppress(Exception):
                    client.abort(sink.workflow_id)
            raise
        values: list[Any] = []
        first_error: BaseException | None = None
        for job in sink.slots:
            assert job is not None
            ok, value = decode_job(client, job, sink.workflow_id, sink.work)
            if not ok:
                first_error = value
                break
            values.append(value)
        if first_error is not None:
            raise first_error
        return values


def _name_futures(futures: list[JobFuture] | None, wf_id: int, name: str) -> None:
    if futures:
        for f in futures:
            f.workflow_id = wf_id
            f.work = name


def _calls(
    iterables: tuple[Iterable[Any], ...], kwargs_list: Iterable[Mapping[str, Any]] | None
) -> list[Call]:
    if kwargs_list is not None:
        if iterables:
            raise TypeError("map() takes either iterables or kwargs_list, not both")
        return [((), dict(kw)) for kw in kwargs_list]
    if not iterables:
        raise TypeError("map() needs an iterable (or kwargs_list=[...])")
    return [(tuple(args), {}) for args in zip(*iterables, strict=False)]


def work(
    fn: Callable[..., Any] | None = None,
    /,
    *,
    name: str | None = None,
    backend: str | None = None,
    cores: int | None = None,
    memory_mb: int | None = None,
    retries: int = 0,
    timeout_s: float | None = None,
    env: Mapping[str, str] | None = None,
    client: Client | None = None,
    cache: bool | str = False,
    input_dataset: str | None = None,
) -> Any:
    """Decorate a function to run as a Work (bare ``@work`` or ``@work(...)``).

    ``input_dataset`` (a catalog dataset, or ``rucio://SCOPE:NAME``): a call runs one job
    per file, each as soon as its file is available (:meth:`WorkFunction.over_dataset`).

    ``cache=True`` memoizes its jobs: a call whose code (the function with its closures
    and globals) and arguments match a succeeded job of the same owner is not run but
    takes that result (shown as *cached*); ``cache="name"`` shares a namespace. Off by
    default: a function with side effects should run each time.
    """

    def wrap(f: Callable[..., Any]) -> WorkFunction:
        return WorkFunction(
            f,
            name=name,
            backend=backend,
            cores=cores,
            memory_mb=memory_mb,
            retries=retries,
            timeout_s=timeout_s,
            env=env,
            client=client,
            cache=cache,
            input_dataset=input_dataset,
        )

    if fn is not None:
        return wrap(fn)
    return wrap
