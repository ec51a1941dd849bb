"""@workflow through a real server: an AID2E-style loop, the monitor view, reattaching."""

from __future__ import annotations

from typing import Any

import pytest
from faat_helpers import main_namespace

from idds_jupyter import RemoteError, get_run, runs, work, workflow
from idds_jupyter.client import Client

pytestmark = pytest.mark.timeout(300)

AID2E = """
    import math

    def evaluate(x, y):
        # the "detector simulation": a smooth objective with its maximum 1.0 at (0.3, -0.2)
        return math.exp(-((x - 0.3) ** 2 + (y + 0.2) ** 2))

    def propose(centre, step, n):
        cx, cy = centre
        return [(cx + step * math.cos(2 * math.pi * k / n), cy + step * math.sin(2 * math.pi * k / n))
                for k in range(n)] + [centre]

    def optimise(threshold=0.99, n=6, max_rounds=30):
        centre, step, history = (-1.0, 1.0), 0.8, []
        for rnd in range(max_rounds):
            points = propose(centre, step, n)
            scores = EVALUATE.map([p[0] for p in points], [p[1] for p in points])
            best = max(range(len(points)), key=lambda i: scores[i])
            history.append(scores[best])
            if scores[best] >= threshold:
                return {"rounds": rnd + 1, "best": list(points[best]), "score": scores[best],
                        "history": history}
            if points[best] == centre:
                step /= 2
            centre = points[best]
        return {"rounds": max_rounds, "best": list(centre), "score": history[-1],
                "history": history}
"""


def test_aid2e_loop_runs_to_the_end(client: Client) -> None:
    ns = main_namespace(AID2E)
    ns["EVALUATE"] = work(ns["evaluate"], name="evaluate")
    optimise = workflow(ns["optimise"], name="aid2e")
    run = optimise.submit(threshold=0.99)
    out = run.result(timeout=240)
    assert out["score"] >= 0.99
    assert run.status == "finished"
    rounds = out["rounds"]
    # every round added one work of 7 jobs, all finished
    works = run.works
    assert [w["name"] for w in works] == [f"evaluate_{i}" for i in range(rounds)]
    assert run.jobs == {"finished": 7 * rounds}
    mon = client.monitor(run.id)
    assert mon["status"] == "finished"
    assert len(mon["works"]) == rounds
    # reattach from a new process: same result, from the service
    assert get_run(run.id).result() == out
    assert run.id in [r.id for r in runs()]


def test_reattach_in_subprocess(client: Client, run_script: Any) -> None:
    ns = main_namespace("""
        def add(a, b):
            return a + b

        def body(n):
            return {"total": sum(ADD.map(range(n), range(n))), "tuple": (1, 2)}
    """)
    ns["ADD"] = work(ns["add"])
    run = workflow(ns["body"], name="summer").submit(n=10)
    expected = {"total": 90, "tuple": (1, 2)}
    assert run.result(timeout=120) == expected
    out = run_script(f"""
        import idds_jupyter
        run = idds_jupyter.get_run({run.id})
        print(run.status)
        print(repr(run.result(timeout=60)))
        print(len(run.works), run.jobs)
    """)
    lines = out.strip().splitlines()
    assert lines[0] == "finished"
    assert eval(lines[1]) == expected  # the pickled result: the tuple stays a tuple
    assert lines[2] == "1 {'finished': 10}"


def test_body_error_fails_the_run_and_reaches_the_user(client: Client, run_script: Any) -> None:
    ns = main_namespace("""
        def broken(x):
            ONE(x)
            raise KeyError(f"missing {x}")
    """)
    ns["ONE"] = work(main_namespace("def one(x):\n    return 1\n")["one"])
    run = workflow(ns["broken"]).submit(x="k")
    with pytest.raises(KeyError, match="missing k"):
        run.result(timeout=120)
    assert run.status == "failed"
    with pytest.raises(RemoteError, match="missing k") as info:
        get_run(run.id).result()
    assert "in broken" in (info.value.traceback or "")


def test_failed_work_inside_workflow_is_catchable(client: Client) -> None:
    ns = main_namespace("""
        def flaky(x):
            if x % 2:
                raise ArithmeticError(f"odd {x}")
            return x

        def tolerant():
            good = []
            for x in range(4):
                try:
                    good.append(FLAKY(x))
                except ArithmeticError:
                    pass
            return good
    """)
    ns["FLAKY"] = work(ns["flaky"])
    run = workflow(ns["tolerant"]).submit()
    assert run.result(timeout=120) == [0, 2]
    assert len(run.works) == 4


def test_retries_hold_the_failed_attempt(client: Client, tmp_path: Any) -> None:
    marker = tmp_path / "attempted"
    ns = main_namespace(f"""
        import os

        def once_flaky(x):
            if not os.path.exists({str(marker)!r}):
                open({str(marker)!r}, "w").close()
                raise RuntimeError("first attempt fails")
            return x * 2
    """)
    assert work(ns["once_flaky"], retries=1)(21) == 42


def test_abort_a_run(client: Client) -> None:
    ns = main_namespace("""
        import time

        def slow(x):
            time.sleep(60)
            return x

        def body():
            return SLOW(1)
    """)
    ns["SLOW"] = work(ns["slow"])
    run = workflow(ns["body"]).submit()
    import time

    deadline = time.monotonic() + 60
    while not run.works and time.monotonic() < deadline:
        time.sleep(0.1)  # test-only: wait until the body added its work
    run.abort()
    assert run.wait(timeout=60) == "aborted"
    with pytest.raises(Exception, match="(?i)abort|cancel"):
        run.result(timeout=60)
