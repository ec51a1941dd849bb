"""Runs through the API: submit YAML, watch it finish, monitor it; owners are isolated."""

from __future__ import annotations

import pytest
from api_helpers import DEMO_YAML, Served
from apiclient import TERMINAL, Api
from waiting import wait_for


def _submit(api: Api, **extra: object) -> int:
    r = api.post("/requests", {"yaml": DEMO_YAML, **extra})
    assert r.status == 201, r
    return int(r.json["id"])


def test_submit_yaml_runs_and_monitor_shows_it(served_db: Served) -> None:
    api = served_db.alice
    wid = _submit(api, params={"greeting": "hi"})
    st = api.wait(wid)
    assert st["status"] == "finished" and st["owner"] == "alice"
    assert {w["name"]: w["jobs"] for w in st["works"]} == {
        "a": {"finished": 3},
        "b": {"finished": 1},
    }
    assert wid in [r["id"] for r in api.get("/requests").json["requests"]]
    assert api.get("/requests?status=finished&name=api-demo").json["requests"][0]["id"] == wid
    assert api.get("/requests?status=failed").json["requests"] == []

    mon = api.get(f"/monitor/{wid}").json
    assert mon["status"] == "finished" and mon["jobs"] == {"finished": 4}
    assert {w["name"]: w["jobs"] for w in mon["works"]}["a"] == {"finished": 3}
    m = mon["metrics"]
    assert m["finished"] == 4 and m["failure_rate"] == 0.0
    assert m["throughput"] and m["throughput"] > 0
    assert 0 <= m["latency_p50"] <= m["latency_p95"]

    dag = api.get(f"/monitor/{wid}/dag").json
    assert {n["name"] for n in dag["nodes"]} == {"a", "b"}
    assert {"source": "a", "target": "b", "kind": "dep"} in dag["edges"]
    assert {n["name"]: n["jobs"] for n in dag["nodes"]}["a"] == {"finished": 3}

    jobs = api.get(f"/monitor/{wid}/works/a/jobs?limit=2").json
    assert jobs["total"] == 3 and [j["idx"] for j in jobs["jobs"]] == [0, 1]
    assert all(j["status"] == "finished" and j["log"] for j in jobs["jobs"])
    assert api.get(f"/monitor/{wid}/works/a/jobs?offset=2").json["jobs"][0]["idx"] == 2
    assert api.get(f"/monitor/{wid}/works/nope/jobs").status == 404

    res = api.get(f"/requests/{wid}/works/a/results").json["results"]
    assert [r["idx"] for r in res] == [0, 1, 2] and all(r["status"] == "finished" for r in res)

    # logs: tail and byte range; the path comes from the store
    jid = jobs["jobs"][0]["id"]
    tail = api.get(f"/logs/{jid}?tail=1")
    assert tail.status == 200 and tail.headers["Content-Type"].startswith("text/plain")
    full = api.get(f"/logs/{jid}")
    assert b"hi 1" in full.body
    assert full.body.endswith(tail.body)
    part = api.get(f"/logs/{jid}?offset=1&length=3")
    assert part.body == full.body[1:4]
    assert int(full.headers["X-Log-Size"]) == len(full.body)
    assert api.get("/logs/999999").status == 404

    msgs = api.get("/messages").json["messages"]
    assert any(m["workflow_id"] == wid and m["kind"] == "workflow.terminal" for m in msgs)
    last = max(m["id"] for m in msgs)
    assert api.get(f"/messages?since={last}").json["messages"] == []


def test_other_users_runs_are_invisible(served: Served) -> None:
    alice, bob, admin = served.alice, served.bob, served.admin
    wid = _submit(alice)
    alice.wait(wid)
    jid = alice.get(f"/monitor/{wid}/works/a/jobs").json["jobs"][0]["id"]
    assert wid not in [r["id"] for r in bob.get("/requests").json["requests"]]
    assert wid in [r["id"] for r in admin.get("/requests").json["requests"]]
    assert [r["id"] for r in admin.get("/requests?owner=bob").json["requests"]] == []
    gets = [
        f"/requests/{wid}",
        f"/monitor/{wid}",
        f"/monitor/{wid}/dag",
        f"/monitor/{wid}/works/a/jobs",
        f"/requests/{wid}/works/a/results",
        f"/logs/{jid}",
    ]
    for path in gets:
        r = bob.get(path)
        assert r.status == 404, (path, r)
        assert "no workflow with id" in r.json["error"] or "no job with id" in r.json["error"]
        assert admin.get(path).status == 200, path
    posts = [
        (f"/requests/{wid}/abort", {}),
        (f"/requests/{wid}/retry", {}),
        (f"/requests/{wid}/suspend", {}),
        (f"/requests/{wid}/resume", {"work": "a"}),
        (f"/requests/{wid}/works", {"works": [{"name": "z", "command": "true"}]}),
        (f"/requests/{wid}/close", {"result": 1}),
        ("/messages", {"workflow_id": wid, "action": "abort"}),
    ]
    for path, body in posts:
        r = bob.post(path, body)
        assert r.status == 404 and r.json["error"] == f"no workflow with id {wid}", (path, r)
    assert not any(m["workflow_id"] == wid for m in bob.get("/messages").json["messages"])
    # the admin may control it; a finished run does not change
    r = admin.post(f"/requests/{wid}/retry", {})
    assert r.status == 200 and r.json["changed"] is False
    assert alice.get(f"/requests/{wid}").json["status"] == "finished"
    assert alice.post(f"/requests/{wid}/abort", {"work": "nope"}).status == 404
    assert alice.get("/requests/987654").json["error"] == "no workflow with id 987654"


def test_control_and_control_messages(served: Served) -> None:
    alice = served.alice
    slow = {
        "name": "slow",
        "works": [
            {"name": "s", "command": "sleep 30", "kwargs_list": [{"i": i} for i in range(3)]}
        ],
    }
    r = alice.post("/requests", {"template": slow})
    assert r.status == 201, r
    wid = r.json["id"]
    r = alice.post("/messages", {"workflow_id": wid, "action": "suspend"})
    assert r.status == 200 and r.json["action"] == "suspend", r
    assert alice.post("/messages", {"workflow_id": wid, "action": "explode"}).status == 400
    r = alice.post(f"/requests/{wid}/abort")
    assert r.status == 200 and r.json["changed"] is True
    assert alice.post(f"/requests/{wid}/abort").json["changed"] is False
    st = alice.wait(wid, timeout=30)
    assert st["status"] == "aborted"


def test_open_workflow_add_works_and_close(served: Served) -> None:
    alice = served.alice
    r = alice.post(
        "/requests",
        {
            "template": {"name": "grow", "works": [{"name": "first", "command": "echo 1"}]},
            "open": True,
        },
    )
    assert r.status == 201, r
    wid = r.json["id"]
    r = alice.post(f"/requests/{wid}/works", {"works": [{"name": "second", "command": "echo 2"}]})
    assert r.status == 201 and r.json["names"] == ["second"], r
    r = alice.post(f"/requests/{wid}/works", {"works": [{"name": "bad", "command": "x {nope}"}]})
    assert r.status == 400 and "field" in r.json, r

    def second_finished() -> bool:
        r = alice.get(f"/requests/{wid}/works/second/results")
        # the work exists before its jobs do: wait for its one job to finish
        return r.status == 200 and [j["status"] for j in r.json["results"]] == ["finished"]

    wait_for(second_finished, 30, 0.2, message="the added work's job finished")
    assert alice.get(f"/requests/{wid}").json["status"] not in TERMINAL  # open: waits for close
    r = alice.post(f"/requests/{wid}/close", {"result": {"ok": True}})
    assert r.status == 200, r
    assert alice.wait(wid)["status"] == "finished"


@pytest.mark.parametrize("files", [["f1", "f2", {"name": "f3", "size": 10}]])
def test_catalog(served: Served, files: list[object]) -> None:
    alice = served.alice
    r = alice.post("/catalog/datasets", {"name": "data/raw", "files": files})
    assert r.status == 201 and r.json["files"] == 3, r
    got = alice.get("/catalog/datasets/data%2Fraw").json
    assert [f["name"] for f in got["files"]] == ["f1", "f2", "f3"]
    assert {f["status"] for f in got["files"]} == {"new"}
    r = alice.post("/catalog/datasets/data%2Fraw/available", {"files": ["f1"]})
    assert r.status == 200 and r.json["released"] == 0
    r = alice.post("/catalog/datasets/data%2Fraw/available", {"files": None})
    assert r.status == 200
    assert {f["status"] for f in alice.get("/catalog/datasets/data%2Fraw").json["files"]} == {
        "available"
    }
    assert alice.get("/catalog/datasets/nope").status == 404
    assert alice.post("/catalog/datasets/nope/available", {}).status == 404
    assert alice.post("/catalog/datasets", {"name": "x", "files": [3]}).status == 400
