"""Executed notebooks through the REST API of a real server: submitted as a user, kept, read
back and downloaded by their owner only."""

from __future__ import annotations

import json
import sys
from collections.abc import Iterator
from pathlib import Path

import nbs
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "api"))

from api_helpers import Served, _serve  # noqa: E402

from idds_jupyter.export import export_template  # noqa: E402


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    tmp = tmp_path_factory.mktemp("export-api")
    s = _serve(tmp / "home", f"sqlite:///{tmp / 'idds.db'}")
    try:
        yield s
    finally:
        s.handle.stop()


def _job_ids(api, wid: int, work: str) -> list[int]:
    r = api.get(f"/monitor/{wid}/works/{work}/jobs")
    assert r.status == 200, r
    return [j["id"] for j in r.json["jobs"]]


def test_executed_notebooks_are_served_to_their_owner(served: Served, tmp_path: Path) -> None:
    path = nbs.branches(tmp_path)
    tmpl = export_template(str(path), "notebook", sweep=[{"seed": 1}, {"seed": 2}])
    r = served.alice.post("/requests", {"template": tmpl, "params": {"n": 5}})
    assert r.status == 201, r
    wid = r.json["id"]
    assert served.alice.wait(wid, timeout=120)["status"] == "finished"
    ids = _job_ids(served.alice, wid, "branches")
    assert len(ids) == 2
    for jid, seed in zip(ids, (1, 2), strict=True):
        r = served.alice.get(f"/logs/{jid}/notebook")
        assert r.status == 200, r
        assert r.headers["Content-Type"] == "application/x-ipynb+json"
        nb = json.loads(r.body)
        injected = [
            c for c in nb["cells"] if "injected-parameters" in c["metadata"].get("tags", [])
        ]
        lines = "".join(injected[0]["source"]).splitlines()
        assert lines[0] == "# Parameters"
        assert sorted(lines[1:]) == ['label = "run"', "n = 5", f"seed = {seed}"]
        assert all(c.get("execution_count") for c in nb["cells"] if c["cell_type"] == "code")
        assert all("__IDDS_EXPORT_VALUES__" not in json.dumps(c) for c in nb["cells"])
        r = served.alice.get(f"/logs/{jid}/notebook?download=1")
        assert r.status == 200
        assert r.headers["Content-Disposition"] == f'attachment; filename="job-{jid}.1.ipynb"'
        # another user's notebook does not exist for bob; no token: 401
        assert served.bob.get(f"/logs/{jid}/notebook").status == 404
        assert served.anon.get(f"/logs/{jid}/notebook").status == 401
        assert served.admin.get(f"/logs/{jid}/notebook").status == 200


def test_a_failed_cell_is_in_the_served_notebook(served: Served, tmp_path: Path) -> None:
    tmpl = export_template(str(nbs.failing(tmp_path)), "notebook")
    r = served.alice.post("/requests", {"template": tmpl})
    assert r.status == 201, r
    st = served.alice.wait(r.json["id"], timeout=120)
    assert st["status"] == "failed"
    [jid] = _job_ids(served.alice, r.json["id"], "failing")
    nb = served.alice.get(f"/logs/{jid}/notebook").json
    errors = [
        (i + 1, o)
        for i, c in enumerate(nb["cells"])
        for o in c.get("outputs", [])
        if o["output_type"] == "error"
    ]
    assert [(i, o["ename"]) for i, o in errors] == [(3, "ZeroDivisionError")]


def test_jobs_without_an_executed_notebook(served: Served, tmp_path: Path) -> None:
    r = served.alice.post(
        "/requests", {"template": {"name": "plain", "works": [{"name": "a", "command": "echo hi"}]}}
    )
    wid = r.json["id"]
    served.alice.wait(wid)
    [jid] = _job_ids(served.alice, wid, "a")
    r = served.alice.get(f"/logs/{jid}/notebook")
    assert r.status == 404 and "has no executed notebook" in r.json["error"]
    assert served.alice.get("/logs/999999/notebook").status == 404


def test_a_notebooks_content_is_exported_and_submitted(served: Served, tmp_path: Path) -> None:
    """What the JupyterLab commands send: the notebook's JSON, a mode, parameters, a sweep."""
    content = json.loads(nbs.branches(tmp_path).read_text())
    r = served.alice.post(
        "/notebooks/export", {"notebook": content, "name": "branches.ipynb", "mode": "cells"}
    )
    assert r.status == 200, r
    assert r.json["parameters"] == {"n": 4, "seed": 1, "label": "run"}  # the form's fields
    assert [w["name"] for w in r.json["template"]["works"]] == ["evens", "odds", "join"]
    assert "idds_source: |" in r.json["yaml"]
    r = served.alice.post(
        "/notebooks/submit",
        {
            "notebook": content,
            "name": "branches.ipynb",
            "mode": "notebook",
            "params": {"n": 6},
            "sweep": {"seed": [1, 2]},
        },
    )
    assert r.status == 201, r
    assert r.json["works"] == 1
    wid = r.json["id"]
    assert served.alice.wait(wid, timeout=120)["status"] == "finished"
    res = served.alice.get(f"/requests/{wid}/works/branches/results").json["results"]
    want = [
        nbs.reference(tmp_path / "branches.ipynb", ["total", "tag", "pair"], {"n": 6, "seed": s})[0]
        for s in (1, 2)
    ]
    assert [j["result"]["values"] for j in res] == want
    assert served.bob.get(f"/requests/{wid}").status == 404


@pytest.mark.parametrize(
    "body, status, message",
    [
        ({"notebook": [], "name": "a.ipynb"}, 400, "field 'notebook' must be a notebook"),
        (
            {"notebook": {"cells": []}, "name": "../x.ipynb"},
            400,
            "field 'name' must be a plain file name",
        ),
        (
            {"notebook": {"cells": []}, "mode": "dag"},
            400,
            "field 'mode' must be 'notebook' or 'cells'",
        ),
        (
            {"notebook": {"cells": []}, "sweep": {"a": list(range(1000)), "b": list(range(1000))}},
            413,
            "the sweep makes 1000000 jobs, over max_jobs_per_submission (100000)",
        ),
        (
            {
                "notebook": {
                    "cells": [
                        {
                            "cell_type": "code",
                            "source": "x = !ls",
                            "metadata": {},
                            "outputs": [],
                            "execution_count": None,
                        }
                    ],
                    "metadata": {},
                    "nbformat": 4,
                    "nbformat_minor": 5,
                },
                "mode": "cells",
            },
            400,
            "notebook.ipynb: cell 1, line 1: 'x = !ls'",
        ),
    ],
)
def test_bad_notebook_requests_are_named(
    served: Served, body: dict, status: int, message: str
) -> None:
    r = served.alice.post("/notebooks/export", body)
    assert r.status == status, r
    assert message in r.json["error"]
    assert served.anon.post("/notebooks/submit", body).status == 401
