"""Exported notebooks run unchanged on every engine (issue 21 item 4): the same values as
the notebook executed with nbclient (both modes on local and Slurm, one on each other).
The batch side has no Jupyter server: only the kernel's Python and the worker."""

from __future__ import annotations

import json
import sys
import urllib.request
from pathlib import Path
from typing import Any

import pytest
from engine_support import Engine, engine_config, http_config

from idds_jupyter.agents.runner import Runner
from idds_jupyter.core import Orchestrator
from idds_jupyter.export import export_template

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "export"))

import nbs  # noqa: E402

CASES = [
    (nbs.branches, ["total", "tag", "pair"], {"n": 6}, False),
    (nbs.mapped, ["total", "count", "first"], {"n": 4}, True),
    (nbs.magics, ["n_shapes", "result"], {}, False),
    (nbs.files, ["median", "largest"], {}, False),
]


_REFERENCE: dict[tuple[bytes, str], tuple[dict[str, Any], str | None]] = {}


def reference(
    path: Path, names: list[str], params: dict[str, Any], maps: bool
) -> tuple[dict[str, Any], str | None]:
    """The notebook executed with nbclient, once per notebook for all engines and modes
    (the notebooks and their data files are the same for each)."""
    key = (path.read_bytes(), json.dumps([names, params, maps], sort_keys=True))
    if key not in _REFERENCE:
        _REFERENCE[key] = nbs.reference(path, names, params, maps=maps)
    return _REFERENCE[key]


#: both modes on the local backend and Slurm (issue 21's round trip); one mode on each
#: other engine, alternating, which is enough to show an export runs there unchanged
#: (both modes on all five took about 3 minutes of `make test`)
ROUND_TRIPS = [
    ("local", "notebook"),
    ("local", "cells"),
    ("slurm", "notebook"),
    ("slurm", "cells"),
    ("htcondor", "notebook"),
    ("dask", "cells"),
    ("panda_standin", "cells"),
]


@pytest.mark.parametrize(("engine", "mode"), ROUND_TRIPS, indirect=["engine"])
def test_exported_notebooks_give_the_notebooks_values(engine: Engine, mode: str) -> None:
    d = engine.workdir / "nbs"
    d.mkdir(parents=True, exist_ok=True)
    cfg = engine_config(engine)
    with Runner(cfg) as runner:
        orch = Orchestrator(cfg, engine=runner.engine, bus=runner.bus)
        for make, names, params, maps in CASES:
            path = make(d)
            expected, error = reference(path, names, params, maps)
            assert error is None
            tmpl = export_template(str(path), mode)
            wid = orch.submit(tmpl, params)
            status = orch.wait(wid, timeout=300)
            assert status == "finished", (
                path.name,
                mode,
                [(j["idx"], j["status"], j["error"]) for j in orch.jobs(wid)],
            )
            last = tmpl["works"][-1]["name"]
            assert [j["result"]["values"] for j in orch.jobs(wid, last)] == [expected], path.name
        # a failing cell: the job fails with the cell's number and its traceback
        tmpl = export_template(str(nbs.failing(d)), mode)
        wid = orch.submit(tmpl)
        assert orch.wait(wid, timeout=300) in ("failed", "subfinished")
        [failed] = [j for j in orch.jobs(wid) if j["status"] == "failed"]
        assert "cell 3 failed: ZeroDivisionError: division by zero" in failed["error"]
        assert "y = x / 0" in failed["error"]


def test_batch_jobs_over_http_keep_their_executed_notebooks(batch_engine: Engine) -> None:
    """``transfer: http`` (no filesystem shared with the service; on HTCondor the job runs as
    the pool's own account and the service's home is closed to it): a whole-notebook job
    sends its executed notebook with its result and the service serves it beside the log."""
    from idds_jupyter.api.server import start_server

    engine = batch_engine
    d = engine.workdir / "nbs"
    d.mkdir(parents=True, exist_ok=True)
    c = http_config(engine)
    handle = start_server(c)
    try:
        orch = handle.ctx.orch
        path = nbs.branches(d)
        expected, _ = reference(path, ["total", "tag", "pair"], {"n": 6}, False)
        tmpl = export_template(str(path), "notebook")
        wid = orch.submit(tmpl, {"n": 6})
        assert orch.wait(wid, timeout=300) == "finished", orch.jobs(wid)
        [job] = orch.jobs(wid)
        assert job["result"]["values"] == expected
        assert job["result"]["notebook"] == f"job-{job['id']}.{job['attempt']}.ipynb"
        req = urllib.request.Request(
            f"{handle.url.rstrip('/')}/idds/api/v1/logs/{job['id']}/notebook",
            headers={"Authorization": f"token {handle.token}"},
        )
        with urllib.request.urlopen(req, timeout=30) as resp:
            nb = json.loads(resp.read())
        injected = [
            c for c in nb["cells"] if "injected-parameters" in c["metadata"].get("tags", [])
        ]
        assert "n = 6" in "".join(injected[0]["source"]).splitlines()
        assert all(c.get("execution_count") for c in nb["cells"] if c["cell_type"] == "code")
        # kept in the service's log directory, not anywhere the job could reach
        assert Path(job["log_path"]).with_suffix(".ipynb").is_file()
        assert Path(job["log_path"]).is_relative_to(c.log_dir)
    finally:
        handle.stop()
