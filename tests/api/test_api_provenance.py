"""Provenance over REST and memoized @workflow re-submission, against a real server
(SQLite and the real PostgreSQL): a notebook-style edit of one @work function."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import pytest

sys.path.insert(0, str(Path(__file__).parents[1] / "faat"))

from api_helpers import Served  # noqa: E402
from faat_helpers import main_namespace  # noqa: E402

from idds_jupyter import work, workflow  # noqa: E402
from idds_jupyter.client import Client, set_client  # noqa: E402

pytestmark = pytest.mark.timeout(300)
N = 100

CELL = """
    def first(i):
        return i

    def middle(x):
        return x * FACTOR

    def last(y):
        return y + 1

    def pipeline(n):
        a = FIRST.map(range(n))
        b = MIDDLE.map(a)
        return LAST.map(b)
"""


def notebook(factor: int) -> Any:
    """The cell run as in a notebook (functions of ``__main__``); ``factor`` is the edit."""
    ns = main_namespace(CELL.replace("FACTOR", str(factor)))
    for name in ("first", "middle", "last"):
        ns[name.upper()] = work(ns[name], name=name, cache=True)
    return workflow(ns["pipeline"], name="pipeline")


def summary(client: Client, wid: int) -> dict[str, dict[str, int]]:
    return client.provenance(wid)["works"]


def test_resubmitting_an_edited_workflow_runs_only_what_changed(served_db: Served) -> None:
    client = Client(served_db.handle.url, served_db.alice.token)
    old = set_client(client)
    try:
        run1 = notebook(2).submit(N)
        assert run1.result(timeout=240) == [2 * i + 1 for i in range(N)]
        assert summary(client, run1.id) == {
            "first_0": {"ran": N, "cached": 0, "failed": 0},
            "middle_1": {"ran": N, "cached": 0, "failed": 0},
            "last_2": {"ran": N, "cached": 0, "failed": 0},
        }
        # one job's lineage over REST: digests, environment, no upstream links (FaaT
        # values flow through the body: they are in the call's arguments)
        one = run1.provenance("middle_1", 7)
        assert one["status"] == "finished" and one["attempts"] == 1 and not one["cached"]
        assert one["environment"]["python"] == ".".join(map(str, sys.version_info[:3]))
        assert one["result"] == 14

        run2 = notebook(3).submit(N)  # the middle function edited in the notebook
        assert run2.result(timeout=240) == [3 * i + 1 for i in range(N)]
        assert summary(client, run2.id) == {
            "first_0": {"ran": 0, "cached": N, "failed": 0},
            "middle_1": {"ran": N, "cached": 0, "failed": 0},
            "last_2": {"ran": N, "cached": 0, "failed": 0},
        }
        cached = run2.provenance("first_0", 3)
        assert cached["cached"] and cached["cached_source"]["workflow_id"] == run1.id

        # another owner never takes alice's results
        bob = Client(served_db.handle.url, served_db.bob.token)
        set_client(bob)
        run3 = notebook(3).submit(N)
        assert run3.result(timeout=240) == [3 * i + 1 for i in range(N)]
        assert {w: c["cached"] for w, c in summary(bob, run3.id).items()} == {
            "first_0": 0,
            "middle_1": 0,
            "last_2": 0,
        }
        # nor reads her provenance
        r = served_db.bob.get(f"/monitor/{run1.id}/provenance")
        assert r.status == 404
        bob.shutdown()
    finally:
        set_client(old)
        client.shutdown()


def test_rerun_over_rest(served_db: Served) -> None:
    """POST requests/{id}/rerun: a new run, all cached when nothing changed or failed."""
    tmpl = {
        "name": "t",
        "works": [
            {
                "name": "a",
                "function": "idds_jupyter.worker.job:echo",
                "n_jobs": 5,
                "parameters": {"i": "{job_index}"},
            },
            {
                "name": "b",
                "function": "idds_jupyter.worker.job:echo",
                "n_jobs": 5,
                "parameters": {"i": "{job_index}", "k": 1},
                "job_deps": [{"work": "a", "pattern": "one_to_one"}],
            },
        ],
    }
    r = served_db.alice.post("/requests", {"template": tmpl})
    assert r.status == 201
    wid = r.json["id"]
    client = Client(served_db.handle.url, served_db.alice.token)
    try:
        assert client.wait_workflow(wid, 120) == "finished"
        new = client.rerun(wid, failed=True)
        assert client.wait_workflow(new, 120) == "finished"
        assert client.provenance(new)["works"] == {
            "a": {"ran": 0, "cached": 5, "failed": 0},
            "b": {"ran": 0, "cached": 5, "failed": 0},
        }
        # every monitor view shows them as cached
        mon = served_db.alice.get(f"/monitor/{new}").json
        assert [w["provenance"] for w in mon["works"]] == [{"ran": 0, "cached": 5, "failed": 0}] * 2
        nodes = served_db.alice.get(f"/monitor/{new}/dag").json["nodes"]
        assert {n["name"]: n["provenance"]["cached"] for n in nodes} == {"a": 5, "b": 5}
        page = served_db.alice.get(f"/monitor/{new}/works/b/jobs").json
        assert [j["cached"] for j in page["jobs"]] == [True] * 5
        first = served_db.alice.get(f"/monitor/{wid}/works/b/jobs").json
        assert [j["cached"] for j in first["jobs"]] == [False] * 5
        job = client.provenance(new, "b", 2)
        assert [(u["work"], u["idx"]) for u in job["upstream"]] == [("a", 2)]
        assert job["cached"] and job["result"] == {"i": 2, "k": 1}
        assert served_db.bob.post(f"/requests/{wid}/rerun", {}).status == 404
        assert served_db.alice.post(f"/requests/{wid}/rerun", {"failed": "yes"}).status == 400
        assert served_db.alice.get(f"/monitor/{wid}/works/b/jobs/99/provenance").status == 404
    finally:
        client.shutdown()


def test_a_named_namespace_is_shared_and_owner_scope_is_not(served_db: Served) -> None:
    """``cache: "team"``: bob takes the results alice's jobs produced in that namespace;
    ``cache: true`` (each owner's own) he does not."""

    def tmpl(cache: Any) -> dict[str, Any]:
        return {
            "name": "ns",
            "works": [
                {
                    "name": "a",
                    "function": "idds_jupyter.worker.job:echo",
                    "n_jobs": 4,
                    "parameters": {"i": "{job_index}"},
                    "cache": cache,
                }
            ],
        }

    admin = Client(served_db.handle.url, served_db.admin.token)
    try:

        def run_as(api: Any, cache: Any) -> dict[str, int]:
            r = api.post("/requests", {"template": tmpl(cache)})
            assert r.status == 201, r
            assert admin.wait_workflow(r.json["id"], 120) == "finished"
            return dict(admin.provenance(r.json["id"])["works"]["a"])

        assert run_as(served_db.alice, "team") == {"ran": 4, "cached": 0, "failed": 0}
        assert run_as(served_db.bob, "team") == {"ran": 0, "cached": 4, "failed": 0}
        assert run_as(served_db.alice, True) == {"ran": 4, "cached": 0, "failed": 0}
        assert run_as(served_db.bob, True) == {"ran": 4, "cached": 0, "failed": 0}
        assert run_as(served_db.bob, True) == {"ran": 0, "cached": 4, "failed": 0}
    finally:
        admin.shutdown()
