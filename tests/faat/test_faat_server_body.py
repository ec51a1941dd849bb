"""@workflow(where="server"): the body runs in a separate, resource-limited process next to the server."""

from __future__ import annotations

import os
from typing import Any

from faat_helpers import main_namespace

from idds_jupyter.client import Client


def test_server_side_body_runs_in_its_own_process(client: Client, server: Any) -> None:
    ns = main_namespace("""
        import os
        from idds_jupyter import work, workflow

        @work
        def cube(x):
            return x ** 3

        @workflow(where="server")
        def body(n):
            import resource
            values = cube.map(range(n))
            limit = resource.getrlimit(resource.RLIMIT_AS)[0]
            return {"total": sum(values), "pid": os.getpid(), "limited": limit > 0}
    """)
    run = ns["body"].submit(5)
    out = run.result(timeout=120)
    assert out["total"] == sum(x**3 for x in range(5))
    assert (
        out["pid"] != os.getpid()
    )  # not this process, and not the server's (the server is this process)
    assert out["limited"] is True
    assert run.status == "finished"
    assert any(w["name"].startswith("cube") for w in run.works)


def test_server_side_body_error_reaches_the_caller(client: Client, server: Any) -> None:
    ns = main_namespace("""
        from idds_jupyter import workflow

        @workflow(where="server")
        def broken():
            raise ValueError("bad proposal")
    """)
    run = ns["broken"].submit()
    try:
        run.result(timeout=120)
    except Exception as exc:  # the original type where it can be rebuilt
        assert "bad proposal" in str(exc)
    else:
        raise AssertionError("the body's error did not reach the caller")
    assert run.status == "failed"
