"""GET /monitor/{id}/trials: every ended trial of a study in one compact page, then what
ended since a cursor (SQLite and the real PostgreSQL)."""

from __future__ import annotations

import time
from typing import Any

import pytest
from api_helpers import Served
from sqlalchemy import insert

from idds_jupyter.api.trials import SETTLE_S
from idds_jupyter.store.tables import jobs, works


def _study_run(s: Served) -> int:
    r = s.alice.post("/requests", {"template": {"name": "study", "works": []}, "open": True})
    assert r.status == 201, r
    return int(r.json["id"])


def _trial_work(s: Served, wid: int, name: str, rows: list[dict[str, Any]]) -> None:
    """A trial work and its ended jobs, written to the store as the Steerer's would be."""
    now = time.time()
    with s.handle.ctx.orch.engine.begin() as conn:
        work_id = conn.execute(
            insert(works).values(
                workflow_id=wid,
                name=name,
                template_name="trial",
                kind="function",
                status="running",
                spec={},
                created_at=now,
                updated_at=now,
            )
        ).inserted_primary_key[0]
        conn.execute(
            insert(jobs),
            [
                {
                    "workflow_id": wid,
                    "work_id": work_id,
                    "created_at": now,
                    "idx": r["idx"],
                    "status": r["status"],
                    "kwargs": {"params": r.get("params", {})},
                    "result": r.get("result"),
                    "error": r.get("error"),
                    "finished_at": r.get("finished_at"),
                }
                for r in rows
            ],
        )


def _done(idx: int, x: float, finished_at: float) -> dict[str, Any]:
    return {
        "idx": idx,
        "status": "finished",
        "result": {"objective": x * x, "params": {"x": x}, "trial": idx},
        "params": {"x": x},
        "finished_at": finished_at,
    }


def _rows(page: dict[str, Any]) -> dict[tuple[str, int], dict[str, Any]]:
    out = {}
    for row in page["trials"]:
        t = dict(zip(page["columns"], row, strict=True))
        t["params"] = dict(zip(page["params"], t["params"], strict=False))
        out[(t["work"], t["idx"])] = t
    return out


def test_trials_in_one_page_then_incremental(served_db: Served) -> None:
    s = served_db
    wid = _study_run(s)
    t0 = time.time() - 600  # ended long ago: a caught-up cursor is not held back for them
    _trial_work(
        s,
        wid,
        "trial_0_9",
        [_done(i, i / 10, t0 + i) for i in range(6)]
        + [
            {
                "idx": 6,
                "status": "failed",
                "error": "boom",
                "params": {"x": 0.6},
                "finished_at": t0 + 6,
            },
            {"idx": 7, "status": "running", "params": {"x": 0.7}},
        ],
    )
    r = s.alice.get(f"/monitor/{wid}/trials")
    assert r.status == 200, r
    page = r.json
    assert page["status"] == "running" and page["more"] is False
    rows = _rows(page)
    # ended jobs only, each once, in the order they ended; a failed one with its parameters
    assert [t["trial"] for t in rows.values()] == list(range(7))
    assert rows[("trial_0_9", 3)]["value"] == 0.09 and rows[("trial_0_9", 3)]["params"] == {
        "x": 0.3
    }
    assert rows[("trial_0_9", 6)]["status"] == "failed"
    assert rows[("trial_0_9", 6)]["value"] is None
    assert rows[("trial_0_9", 6)]["params"] == {"x": 0.6}

    # nothing ended since: an empty page; then the next trial, alone
    r = s.alice.get(f"/monitor/{wid}/trials?since={page['cursor']}")
    assert r.status == 200 and r.json["trials"] == []
    _trial_work(s, wid, "trial_10_19", [_done(0, 1.0, t0 + 100)])
    r2 = s.alice.get(f"/monitor/{wid}/trials?since={r.json['cursor']}")
    assert list(_rows(r2.json)) == [("trial_10_19", 0)]
    assert _rows(r2.json)[("trial_10_19", 0)]["trial"] == 10

    # a trial just ended is read again while it may still be settling: never missed
    _trial_work(s, wid, "trial_20_29", [_done(0, 2.0, time.time())])
    r3 = s.alice.get(f"/monitor/{wid}/trials?since={r2.json['cursor']}")
    r4 = s.alice.get(f"/monitor/{wid}/trials?since={r3.json['cursor']}")
    assert list(_rows(r3.json)) == [("trial_20_29", 0)]
    assert float(r3.json["cursor"].split(":")[0]) <= time.time() - SETTLE_S + 0.5
    assert set(_rows(r4.json)) <= {("trial_20_29", 0)}


def test_trials_paged_by_keyset(served: Served) -> None:
    s = served
    wid = _study_run(s)
    t0 = time.time() - 600
    # several trials ending at the same instant: paging still reads each exactly once
    _trial_work(s, wid, "trial_0_9", [_done(i, i / 10, t0 + i // 3) for i in range(10)])
    seen: list[tuple[str, int]] = []
    cursor = ""
    for _ in range(10):
        r = s.alice.get(f"/monitor/{wid}/trials?limit=4&since={cursor}")
        assert r.status == 200, r
        seen += list(_rows(r.json))
        cursor = r.json["cursor"]
        if not r.json["more"]:
            break
    assert seen == [("trial_0_9", i) for i in range(10)]
    only = s.alice.get(f"/monitor/{wid}/trials?work=trial_0_9&limit=2").json
    assert len(only["trials"]) == 2 and only["more"] is True


def test_trials_bad_input_and_ownership(served: Served) -> None:
    s = served
    wid = _study_run(s)
    bad = s.alice.get(f"/monitor/{wid}/trials?since=yesterday")
    assert bad.status == 400 and "since" in bad.json["error"]
    assert s.alice.get(f"/monitor/{wid}/trials?limit=0").status == 400
    assert s.bob.get(f"/monitor/{wid}/trials").status == 404  # not bob's study
    assert s.alice.get("/monitor/999999/trials").status == 404
    assert s.anon.get(f"/monitor/{wid}/trials").status == 401


def test_hpo_widget_reads_trials_in_one_request_each_refresh(served: Served) -> None:
    from idds_jupyter.client import Client
    from idds_jupyter.kernel.widgets import HpoWidget

    s = served
    wid = _study_run(s)
    t0 = time.time() - 600
    _trial_work(s, wid, "trial_0_9", [_done(i, 1 - i / 10, t0 + i) for i in range(5)])
    client = Client(s.handle.url, s.alice.token)
    calls: list[str | None] = []
    trials = client.trials

    def counted(*a: Any, **kw: Any) -> dict[str, Any]:
        calls.append(kw.get("since"))
        return trials(*a, **kw)

    client.trials = counted  # type: ignore[method-assign]
    view = HpoWidget(client, wid)
    try:
        ys = [1.0, 0.81, 0.64, 0.49, 0.36]
        assert [t["objective"] for t in view.trials] == pytest.approx(ys)
        assert view.trials[2]["params"] == {"x": 0.8}
        assert list(view.scatter.data[1].y) == pytest.approx(ys)  # best so far
        _trial_work(s, wid, "trial_10_19", [_done(0, 0.5, t0 + 50)])
        view.refresh()
        assert len(view.trials) == 6 and view.trials[-1]["objective"] == pytest.approx(0.25)
        # one request per refresh, the second one from the first one's cursor
        assert len(calls) == 2 and calls[0] is None and calls[1] is not None
    finally:
        view.stop()
        client.shutdown()
