"""@work through a real server: values, map order, errors, dedup of blobs, futures."""

from __future__ import annotations

import asyncio
import concurrent.futures
import sys
from pathlib import Path
from typing import Any

import pytest
from faat_helpers import main_namespace

from idds_jupyter import RemoteError, work
from idds_jupyter.client import Client

pytestmark = pytest.mark.timeout(300)


def test_main_function_runs_and_returns(client: Client) -> None:
    ns = main_namespace("""
        OFFSET = 10

        def square(x, plus=0):
            return x * x + plus + OFFSET
    """)
    square = work(ns["square"])
    assert square(3) == 19
    assert square(3, plus=1) == 20
    assert square.local(2) == 14
    # a non-JSON value comes back as the same Python object (unpickled in the client)
    ns2 = main_namespace("""
        def pair(x):
            return (x, {x}, b"bytes")
    """)
    assert work(ns2["pair"])(5) == (5, {5}, b"bytes")


def test_map_thousand_in_order(client: Client) -> None:
    ns = main_namespace("""
        def inc(x):
            return x + 1
    """)
    inc = work(ns["inc"])
    out = inc.map(range(1000))
    assert out == list(range(1, 1001))
    assert work(ns["inc"]).map(kwargs_list=[{"x": i} for i in range(5)]) == [1, 2, 3, 4, 5]
    assert inc.map([]) == []


def test_exception_picklable_reraised_with_remote_traceback(client: Client) -> None:
    ns = main_namespace("""
        def check(x):
            if x > 2:
                raise ValueError(f"too big: {x}")
            return x
    """)
    check = work(ns["check"])
    with pytest.raises(ValueError, match="too big: 5") as info:
        check(5)
    exc = info.value
    notes = "\n".join(getattr(exc, "__notes__", []))
    assert "Remote traceback" in notes and "too big: 5" in notes
    assert 'raise ValueError(f"too big: {x}")' in notes or "in check" in notes
    cause = exc.__cause__
    assert isinstance(cause, RemoteError)
    assert cause.job_id is not None
    assert "in check" in (cause.traceback or "")
    # map: all jobs end, the first failing item (in order) is raised
    with pytest.raises(ValueError, match="too big: 3"):
        check.map(range(6))


def test_exception_not_picklable_is_remote_error(client: Client) -> None:
    ns = main_namespace("""
        import threading

        class Unpicklable(Exception):
            def __init__(self, msg):
                super().__init__(msg)
                self.lock = threading.Lock()

        def bad(x):
            print("about to fail", x)
            raise Unpicklable(f"cannot pickle me {x}")
    """)
    bad = work(ns["bad"])
    with pytest.raises(RemoteError) as info:
        bad(7)
    err = info.value
    assert "cannot pickle me 7" in str(err)
    assert err.exc_type and "Unpicklable" in err.exc_type
    assert err.job_id is not None
    assert err.traceback and "in bad" in err.traceback
    assert err.log_path, "the job printed, so it has a log"
    assert f"job {err.job_id}" in str(err)


def test_resubmit_adds_no_blob(client: Client) -> None:
    ns = main_namespace("""
        def triple(x):
            return 3 * x
    """)
    triple = work(ns["triple"])
    items = list(range(50))
    assert triple.map(items) == [3 * i for i in items]
    before = client.cache_stats()["count"]
    fresh = Client(client.url, client.token)  # even a new client (HEAD/PUT, no duplicate)
    try:
        assert work(ns["triple"], client=fresh).map(items) == [3 * i for i in items]
    finally:
        fresh.shutdown()
    assert triple.map(items) == [3 * i for i in items]
    assert client.cache_stats()["count"] == before


def test_submit_futures_wait_and_await(client: Client) -> None:
    ns = main_namespace("""
        def cube(x):
            return x ** 3
    """)
    cube = work(ns["cube"])
    futs = [cube.submit(i) for i in range(5)]
    done, not_done = concurrent.futures.wait(futs, timeout=120)
    assert not not_done
    assert [f.result() for f in futs] == [0, 1, 8, 27, 64]
    assert all(f.job_id is not None for f in futs)

    async def gather() -> list[Any]:
        return list(await asyncio.gather(*cube.map_async(range(4)), cube.submit(10)))

    assert asyncio.run(gather()) == [0, 1, 8, 27, 1000]

    async def one() -> Any:
        return await cube.submit(2)

    assert asyncio.run(one()) == 8


def test_working_directory_module_goes_in_sandbox(
    client: Client, tmp_path: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    pkg = tmp_path / "mylib"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("")
    (pkg / "helpers.py").write_text("def double(x):\n    return 2 * x\n")
    monkeypatch.chdir(tmp_path)
    monkeypatch.syspath_prepend(str(tmp_path))
    from mylib import helpers

    try:
        from idds_jupyter.faat import serialize

        names = [n for n, _ in serialize.user_modules()]
        assert "mylib.helpers" in names
        # the worker does not see tmp_path on its sys.path: it imports from the sandbox
        assert work(helpers.double)(21) == 42
    finally:
        for mod in ("mylib", "mylib.helpers"):
            sys.modules.pop(mod, None)


def test_calls_with_plain_arguments_add_no_blob_and_keep_every_value_as_given(
    client: Client,
) -> None:
    """A single call whose arguments are plain JSON passes them as the job's keyword
    arguments: after the function's blob, calls add nothing to the cache. Arguments JSON
    would change (a tuple, a set, NaN,
    a string with braces the server would substitute, a huge int) are pickled as before."""
    ns = main_namespace("""
        def echo(a, b=2, *, c=None):
            return (type(a).__name__, a, b, c)
    """)
    echo = work(ns["echo"])
    assert echo(1) == ("int", 1, 2, None)  # the function's blob, once
    before = client.cache_stats()["count"]
    assert echo(2.5e-7, b=[1, [None, "k"]], c="x") == ("float", 2.5e-7, [1, [None, "k"]], "x")
    assert echo.submit("y").result(60) == ("str", "y", 2, None)
    assert client.cache_stats()["count"] == before
    for value in ((1, 2), {1, 2}, float("nan"), 1e16, -0.0, "{x}", 2**60, b"raw", {"k": "v"}):
        out = echo(value)
        assert out[0] == type(value).__name__ and (out[1] == value or value != value), out
        assert str(out[1]) == str(value), out  # -0.0 stays -0.0
    assert client.cache_stats()["count"] > before  # those went pickled


def test_json_call_takes_only_arguments_json_gives_back_unchanged() -> None:
    from idds_jupyter.faat.serialize import MAX_JSON_CALL, json_call

    def f(a, b=1, *rest, c=2, **more):  # type: ignore[no-untyped-def]
        return a

    def g(a, /, b):  # type: ignore[no-untyped-def]
        return a

    assert json_call(f, (1,), {"c": [True, None, "s", 1.5]}) == {
        "a": 1,
        "c": [True, None, "s", 1.5],
    }
    assert json_call(f, (1, 2, 3), {}) is None  # *rest
    assert json_call(f, (1,), {"d": 4}) is None  # **more
    assert json_call(g, (1, 2), {}) is None  # positional-only
    assert json_call(f, (), {}) is None  # a call that fails fails remotely, as before
    assert json_call(f, ("x" * MAX_JSON_CALL,), {}) is None  # big: pickled into a blob
    assert json_call(f, ([1, [2.5, "s"]],), {}) == {"a": [1, [2.5, "s"]]}
    assert json_call(f, (1e-05,), {"c": 0.1}) == {"a": 1e-05, "c": 0.1}
    for bad in ((1,), float("inf"), 1e16, -0.0, -(2**53), "a}b", "a\x00", "\ud800", {"k": 1}):
        assert json_call(f, (bad,), {}) is None, bad
    assert json_call(len, ([1],), {}) is None  # positional-only builtin


def test_plain_arguments_come_back_the_same_through_postgresql(tmp_path: Path, pg_url: str) -> None:
    """JSONB keeps no key order, prints ``1e16`` as an integer and has no ``-0.0``: the
    arguments that travel as JSON are those it gives back unchanged."""
    from idds_jupyter.api.server import start_server
    from idds_jupyter.config import Config

    cfg = Config.load(None, home=tmp_path / "home", db_url=pg_url, workers=1, poll_interval=0.5)
    handle = start_server(cfg)
    pg = Client(handle.url, handle.token)
    try:
        ns = main_namespace("""
            def kind(a):
                return repr(a)
        """)
        kind = work(ns["kind"], client=pg)
        values = [
            2.5e-7,
            1e-05,
            2.0,
            2**52,
            -3,
            "é",
            [1, [0.1, None]],
            True,
            1e16,
            -0.0,
            {"b": 1, "a": 2},
        ]
        assert [kind(v) for v in values] == [repr(v) for v in values]
    finally:
        pg.shutdown()
        handle.stop()
