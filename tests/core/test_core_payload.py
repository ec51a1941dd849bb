"""Pickled functions as works (the engine side of Function-as-a-Task), and open workflows."""

from __future__ import annotations

import base64
from pathlib import Path

import cloudpickle
import pytest
from helpers import config, wait_for

from idds_jupyter.agents.runner import Runner
from idds_jupyter.bus import event as ev
from idds_jupyter.core import Orchestrator
from idds_jupyter.model import TemplateError
from idds_jupyter.store.cache import Cache


def square(x: int, offset: int = 0) -> int:
    return x * x + offset


def explode(x: int) -> None:
    raise KeyError(f"no key {x}")


def test_payload_work_values_come_back_pickled(tmp_path: Path, db_url: str) -> None:
    cfg = config(tmp_path, db_url)
    with Runner(cfg) as runner:
        orch = Orchestrator(cfg, engine=runner.engine, bus=runner.bus)
        cache = Cache(cfg.cache_dir, runner.engine)
        fn, _ = cache.put(cloudpickle.dumps(square))
        calls, _ = cache.put(cloudpickle.dumps([((i,), {"offset": 1}) for i in range(20)]))
        bad, _ = cache.put(cloudpickle.dumps(explode))
        sub = runner.bus.subscribe([ev.JOB_RESULT])
        wid = orch.submit(
            {
                "name": "faat",
                "works": [
                    {"name": "sq", "payload": {"function": fn, "calls": calls}, "n_jobs": 20},
                    {"name": "boom", "payload": {"function": bad, "calls": calls}, "n_jobs": 1},
                ],
            }
        )
        assert orch.wait(wid, timeout=60) == "subfinished"
        results = orch.work_results(wid, "sq")
        # small values are kept with their jobs (opaque base64 pickles), not as cache files
        assert all(r["blob"] is None for r in results)
        assert [cloudpickle.loads(base64.b64decode(r["inline"])) for r in results] == [
            i * i + 1 for i in range(20)
        ]
        assert [r["result"] for r in results] == [i * i + 1 for i in range(20)]
        [failure] = orch.work_results(wid, "boom")
        exc = cloudpickle.loads(base64.b64decode(failure["error_inline"]))
        assert isinstance(
            exc, TypeError
        )  # explode(0, offset=1): the call's kwargs reach the function
        assert "offset" in failure["traceback"]
        # results were pushed as they ended, with small values inline
        notes = [j for e in sub.get(timeout=1) for j in e.payload["jobs"]]
        sq = sorted((n for n in notes if n["work"] == "sq"), key=lambda n: n["idx"])
        assert [cloudpickle.loads(base64.b64decode(n["inline"])) for n in sq] == [
            i * i + 1 for i in range(20)
        ]
        # each job told once: successes before their record, the failure after it
        assert len({n["job_id"] for n in notes}) == len(notes) == 21
        assert [(n["work"], n["status"], n["exc_type"]) for n in notes if n["work"] == "boom"] == [
            ("boom", "failed", "TypeError")
        ]
        assert cache.stats()["count"] == 3  # function, calls, failing function: values stay inline

        big, _ = cache.put(cloudpickle.dumps(lambda n: b"x" * n))
        wid2 = orch.submit(
            {
                "name": "big",
                "works": [
                    {"name": "b", "payload": {"function": big}, "kwargs_list": [{"n": 100_000}]}
                ],
            }
        )
        assert orch.wait(wid2, timeout=60) == "finished"
        [r] = orch.work_results(wid2, "b")
        assert r["inline"] is None and cloudpickle.loads(cache.get(r["blob"])) == b"x" * 100_000


def test_open_workflow_grows_and_ends_when_closed(tmp_path: Path, db_url: str) -> None:
    cfg = config(tmp_path, db_url)
    echo = "idds_jupyter.worker.job:echo"
    with Runner(cfg) as runner:
        orch = Orchestrator(cfg, engine=runner.engine, bus=runner.bus)
        wid = orch.submit({"name": "body", "works": []}, open=True)
        assert orch.add_works(
            wid, [{"name": "first", "function": echo, "parameters": {"x": 1}}]
        ) == ["first"]
        wait_for(
            lambda: (
                orch.status(wid)["works"] and orch.status(wid)["works"][0]["status"] == "finished"
            )
        )
        assert orch.status(wid)["status"] == "running"  # still open: the body may add more
        orch.add_works(
            wid,
            [
                {
                    "name": "second",
                    "function": echo,
                    "depends_on": ["first"],
                    "parameters": {"y": "{first.result.x + 1}"},
                }
            ],
        )
        with pytest.raises(TemplateError, match="first"):
            orch.add_works(wid, [{"name": "first", "function": echo}])  # duplicate name
        wait_for(
            lambda: (
                len(orch.status(wid)["works"]) == 2
                and orch.status(wid)["works"][1]["status"] == "finished"
            )
        )
        assert orch.close(wid, result={"best": 2}) in ("running", "finished")
        assert orch.wait(wid, timeout=30) == "finished"
        st = orch.status(wid)
        assert st["body"]["result"] == {"best": 2}
        assert orch.work_results(wid, "second")[0]["result"] == {"y": 2}

        failing = orch.submit({"name": "body2", "works": []}, open=True)
        orch.close(failing, error="ValueError: bad point", traceback="Traceback ...")
        assert orch.wait(failing, timeout=30) == "failed"
        assert orch.status(failing)["error"] == "ValueError: bad point"
