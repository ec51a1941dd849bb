"""Data-aware command jobs whose file names are hostile: each name reaches the command as one
argument and nothing in it runs (SQLite and PostgreSQL)."""

from __future__ import annotations

import sys
from pathlib import Path

from helpers import config

from idds_jupyter.agents.runner import Runner
from idds_jupyter.core import Orchestrator
from idds_jupyter.model import Workflow

PRINT_ARG = "import json, sys; print(json.dumps(sys.argv[1:]))"


def test_hostile_file_names_are_one_quoted_argument(tmp_path: Path, db_url: str) -> None:
    marker = tmp_path / "PWNED"
    names = [f"f2; touch {marker}", f"'; touch {marker}; '", f"$(touch {marker})", "a b*"]
    cfg = config(tmp_path, db_url)
    with Runner(cfg) as runner:
        orch = Orchestrator(cfg, engine=runner.engine, bus=runner.bus)
        orch.catalog.add_dataset("tape:raw", names)
        wid = orch.submit(
            Workflow.from_dict(
                {
                    "name": "carousel",
                    "works": [
                        {
                            "name": "process",
                            "input_dataset": "tape:raw",
                            "command": f"{sys.executable} -c '{PRINT_ARG}' {{file}} \"in {{file}}\"",
                        }
                    ],
                }
            )
        )
        assert orch.catalog.mark_available("tape:raw") == len(names)
        assert orch.wait(wid, timeout=120) == "finished"
        results = [j["result"] for j in orch.jobs(wid, "process")]
    assert results == [[n, f"in {n}"] for n in names]
    assert not marker.exists()
