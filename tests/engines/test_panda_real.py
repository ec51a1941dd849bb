"""Opt-in: the panda backend against a REAL PanDA server (the other PanDA tests use the stand-in).

Set, for a server and a queue whose worker nodes see a shared directory:

    IDDS_TEST_PANDA_URL         e.g. https://pandaserver.example.org:25443/server/panda
    IDDS_TEST_PANDA_QUEUE       the PanDA queue (computingSite) to run on
    IDDS_TEST_PANDA_SHARED_DIR  a directory this host and the queue's worker nodes see
                                at the same path (specs and results travel through it)
    IDDS_TEST_PANDA_TOKEN       optional: OIDC id token (text or file), with
    IDDS_TEST_PANDA_VO          its VO (PANDA_AUTH_VO); without them panda-client's own
                                setup applies (PANDA_AUTH*, X509_USER_PROXY)
    IDDS_TEST_PANDA_PYTHON      optional: the Python on the worker nodes that can
                                ``import idds_jupyter`` (default: this interpreter)
    IDDS_TEST_PANDA_TIMEOUT     optional: seconds to wait for the jobs (default 3600)

Without the first three the test is skipped, saying which variables are missing.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from idds_jupyter.agents.runner import Runner
from idds_jupyter.config import Config
from idds_jupyter.core import Orchestrator
from idds_jupyter.model import Work, Workflow

REQUIRED = ("IDDS_TEST_PANDA_URL", "IDDS_TEST_PANDA_QUEUE", "IDDS_TEST_PANDA_SHARED_DIR")
_missing = [v for v in REQUIRED if not os.environ.get(v)]
TIMEOUT = float(os.environ.get("IDDS_TEST_PANDA_TIMEOUT") or 3600)

pytestmark = [
    pytest.mark.skipif(
        bool(_missing),
        reason="no real PanDA server configured: set "
        + ", ".join(_missing)
        + " (see tests/engines/test_panda_real.py)",
    ),
    pytest.mark.timeout(TIMEOUT + 120),
]


def test_real_panda_server_runs_jobs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    env = os.environ
    opts = {
        "panda_url": env["IDDS_TEST_PANDA_URL"],
        "panda_queue": env["IDDS_TEST_PANDA_QUEUE"],
        "shared_dir": env["IDDS_TEST_PANDA_SHARED_DIR"],
        "panda_token": env.get("IDDS_TEST_PANDA_TOKEN"),
        "panda_vo": env.get("IDDS_TEST_PANDA_VO"),
    }
    for key, value in opts.items():  # the Carrier's panda backend reads its configuration
        if value:
            monkeypatch.setenv(f"IDDS_{key.upper()}", value)
    c = Config.load(
        None,
        home=tmp_path / "home",
        db_url=f"sqlite:///{tmp_path / 'idds.db'}",
        backend="panda",
        poll_interval=2.0,
        batch_poll_interval=10.0,
        **{k: v for k, v in opts.items() if v},
    )
    if env.get("IDDS_TEST_PANDA_PYTHON"):
        from idds_jupyter.backends import base
        from idds_jupyter.backends.panda import PandaBackend

        python = env["IDDS_TEST_PANDA_PYTHON"]
        monkeypatch.setitem(base._FACTORIES, "panda", lambda **o: PandaBackend(python=python, **o))
    with Runner(c) as runner:
        orch = Orchestrator(c, engine=runner.engine, bus=runner.bus)
        wid = orch.submit(
            Workflow(
                name="panda-real",
                works=[
                    Work(
                        name="echo",
                        function="idds_jupyter.worker.job:echo",
                        kwargs_list=[{"i": i} for i in range(3)],
                    ),
                    Work(
                        name="after",
                        function="idds_jupyter.worker.job:echo",
                        depends_on=["echo"],
                        parameters={"got": "{echo.result}"},
                    ),
                ],
            )
        )
        status = orch.wait(wid, timeout=TIMEOUT)
        backend = runner.carrier.backends["panda"]
        assert status == "finished", (orch.status(wid), backend.last_error, backend.last_output)
    assert sorted(j["result"]["i"] for j in orch.jobs(wid, "echo")) == [0, 1, 2]
