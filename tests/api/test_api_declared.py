"""Works declared with more jobs, and jobs added to them over REST (a client-steered study's
trials): ``POST requests/{id}/works {"declared"}`` and ``POST requests/{id}/works/{name}/jobs``."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from api_helpers import Served
from apiclient import TERMINAL, Api
from waiting import wait_for

from idds_jupyter.api.server import start_server
from idds_jupyter.config import Config

STR = {"name": "t", "function": "builtins:str"}


def _open_run(api: Api) -> int:
    r = api.post("/requests", {"template": {"name": "declared", "works": []}, "open": True})
    assert r.status == 201, r
    return int(r.json["id"])


def _results(api: Api, wid: int, work: str = "t") -> list[dict[str, Any]]:
    r = api.get(f"/requests/{wid}/works/{work}/results")
    assert r.status == 200, r
    return list(r.json["results"])


def _finished(api: Api, wid: int, n: int) -> list[dict[str, Any]]:
    def done() -> bool:
        rows = _results(api, wid)
        return len(rows) == n and all(j["status"] == "finished" for j in rows)

    wait_for(done, 30, 0.1, message=f"{n} jobs of work t finished")
    return _results(api, wid)


def test_jobs_added_to_a_declared_work_run_and_the_work_ends_with_its_run(
    served_db: Served,
) -> None:
    alice = served_db.alice
    wid = _open_run(alice)
    first = [{"object": "a0"}, {"object": "a1"}]
    r = alice.post(
        f"/requests/{wid}/works",
        {"works": [{**STR, "kwargs_list": first}], "declared": {"t": 6}},
    )
    assert r.status == 201 and r.json["names"] == ["t"], r
    _finished(alice, wid, 2)
    # its two jobs ended, four more are declared: the work and its run go on
    st = alice.get(f"/requests/{wid}").json
    assert st["status"] not in TERMINAL and st["works"][0]["status"] == "running", st
    for start, items in ((2, ["b2", "b3"]), (4, ["c4"])):
        r = alice.post(
            f"/requests/{wid}/works/t/jobs",
            {"start": start, "kwargs_list": [{"object": o} for o in items]},
        )
        assert r.status == 201 and r.json == {"start": start, "count": len(items)}, r
    rows = _finished(alice, wid, 5)
    assert [(j["idx"], j["result"]) for j in rows] == [
        (0, "a0"),
        (1, "a1"),
        (2, "b2"),
        (3, "b3"),
        (4, "c4"),
    ]
    # closing the run settles the work with the jobs it got (5 of the 6 declared)
    assert alice.post(f"/requests/{wid}/close", {"result": "done"}).status == 200
    st = alice.wait(wid)
    assert st["status"] == "finished", st
    assert (
        alice.post(f"/requests/{wid}/works/t/jobs", {"start": 5, "kwargs_list": [{}]}).status == 409
    )


def test_bad_declared_and_added_jobs_are_named_and_change_nothing(served: Served) -> None:
    alice, bob = served.alice, served.bob
    wid = _open_run(alice)
    for declared, words in (
        ({"nope": 3}, "'nope' is not a work of this request"),
        ({"t": 0}, "field 'declared'"),
        ({"t": "3"}, "field 'declared'"),
        ([3], "field 'declared'"),
    ):
        r = alice.post(
            f"/requests/{wid}/works",
            {"works": [{**STR, "kwargs_list": [{}]}], "declared": declared},
        )
        assert r.status == 400 and words in r.json["error"], (declared, r)
    r = alice.post(
        f"/requests/{wid}/works",
        {"works": [{**STR, "kwargs_list": [{}]}], "declared": {"t": 10**9}},
    )
    assert r.status == 413 and r.json["setting"] == "max_jobs_per_work", r
    assert alice.get(f"/requests/{wid}").json["works"] == []  # nothing was added
    r = alice.post(
        f"/requests/{wid}/works",
        {"works": [{**STR, "kwargs_list": [{"object": "x"}]}], "declared": {"t": 3}},
    )
    assert r.status == 201, r
    jobs = f"/requests/{wid}/works/t/jobs"
    for body, words in (
        ({"start": -1, "kwargs_list": [{}]}, "field 'start'"),
        ({"start": "1", "kwargs_list": [{}]}, "field 'start'"),
        ({"start": 1, "kwargs_list": []}, "field 'kwargs_list'"),
        ({"start": 1, "kwargs_list": [1]}, "field 'kwargs_list'"),
        ({"start": 1}, "field 'kwargs_list'"),
    ):
        r = alice.post(jobs, body)
        assert r.status == 400 and words in r.json["error"], (body, r)
    r = alice.post(jobs, {"start": 10**9, "kwargs_list": [{}]})
    assert r.status == 413 and r.json["setting"] == "max_jobs_per_work", r
    r = alice.post(f"/requests/{wid}/works/nope/jobs", {"start": 1, "kwargs_list": [{}]})
    assert r.status == 404 and "no work named 'nope'" in r.json["error"], r
    r = bob.post(jobs, {"start": 1, "kwargs_list": [{"object": "bob"}]})
    assert r.status == 404, r  # another user's run is not there
    _finished(alice, wid, 1)
    r = alice.post(jobs, {"start": 0, "kwargs_list": [{"object": "again"}]})
    assert r.status == 409 and "index 0..0 already" in r.json["error"], r
    assert [(j["idx"], j["result"]) for j in _finished(alice, wid, 1)] == [(0, "x")]
    # a work aborted alone takes no more jobs; its run goes on
    assert alice.post(f"/requests/{wid}/abort", {"work": "t"}).status == 200
    wait_for(
        lambda: (
            alice.get(f"/requests/{wid}").json["works"][0]["status"] in TERMINAL | {"cancelled"}
        ),
        30,
        0.1,
        message="work t aborted",
    )
    r = alice.post(jobs, {"start": 1, "kwargs_list": [{}]})
    assert r.status == 409 and "not running" in r.json["error"], r
    assert alice.get(f"/requests/{wid}").json["status"] not in TERMINAL
    alice.post(f"/requests/{wid}/close", {})


def test_declared_jobs_are_charged_to_the_quota_when_declared(tmp_path: Path, db_url: str) -> None:
    """A work declared with 5 jobs holds 5 of the user's ``max_active_jobs_per_user`` from
    the start; the jobs added to it later, within the count, need no quota; beyond it, none
    is taken (409)."""
    cfg = Config.load(
        None,
        home=tmp_path / "home",
        db_url=db_url,
        workers=2,
        poll_interval=0.3,
        max_active_jobs_per_user=5,
    )
    handle = start_server(cfg, "127.0.0.1", 0, "/")
    try:
        admin = Api(handle.url, handle.token)
        r = admin.post("/auth/tokens", {"name": "test", "user": "dave"})
        assert r.status == 201, r
        dave = Api(handle.url, r.json["token"])
        wid = _open_run(dave)
        sleep = {"name": "s", "function": "idds_jupyter.worker.job:sleep"}
        r = dave.post(
            f"/requests/{wid}/works",
            {"works": [{**sleep, "kwargs_list": [{"seconds": 30}]}], "declared": {"s": 6}},
        )
        assert r.status == 429 and r.json["setting"] == "max_active_jobs_per_user", r
        r = dave.post(
            f"/requests/{wid}/works",
            {"works": [{**sleep, "kwargs_list": [{"seconds": 30}]}], "declared": {"s": 5}},
        )
        assert r.status == 201, r
        r = dave.post("/requests", {"template": {"name": "t", "works": [{**STR, "n_jobs": 1}]}})
        assert r.status == 429 and r.json["active"] == 5, r  # the 4 to come are counted
        jobs = f"/requests/{wid}/works/s/jobs"
        r = dave.post(jobs, {"start": 1, "kwargs_list": [{"seconds": 30}] * 4})
        assert r.status == 201, r
        r = dave.post(jobs, {"start": 5, "kwargs_list": [{"seconds": 0}]})
        assert r.status == 409 and "5 jobs declared" in r.json["error"], r
        st = dave.get(f"/requests/{wid}").json
        assert st["works"][0]["n_jobs"] == 5, st
        assert dave.post(f"/requests/{wid}/abort").status == 200
        dave.wait(wid, timeout=60)
    finally:
        handle.stop()
