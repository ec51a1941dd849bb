"""The shared deployment in a real browser: Chromium (``/usr/bin/chromium``) on the real hub
of conftest.py, driven by ``hub_browser.cjs`` with playwright-core from
``labextension/ui-tests`` (what ``make test`` installs for the UI tests).

alice logs in on the hub's login page, opens JupyterLab with the Workflows sidebar and runs
a notebook with a ``@work`` cell and a ``%%idds template`` cell: both runs appear in the
sidebar while it is open and finish. bob logs in: his sidebar shows none of alice's runs, and
alice's server and run (its REST paths through either server and the service) answer his
browser 403 or 404. Screenshots of both sidebars are written to
``labextension/ui-tests/test-results/screenshots/hub-alice.png`` and ``hub-bob.png``.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest
import requests
from hub_helpers import PASSWORD, REPO, Hub

UI = REPO / "labextension" / "ui-tests"
SHOTS = UI / "test-results" / "screenshots"
CHROMIUM = os.environ.get("CHROMIUM", "/usr/bin/chromium")
NOTEBOOK = "hub-browser.ipynb"

CELLS = [
    """from idds_jupyter import work

@work
def hub_square(x):
    return x * x

print("work-value", hub_square(7))""",
    "%load_ext idds_jupyter",
    """%%idds template --submit
name: hub-browser-template
works:
  - name: gen
    function: idds_jupyter.worker.job:echo
    kwargs_list: [{x: 1}, {x: 2}]""",
    """run = _
print("template-run", run.id, run.wait(timeout=60))""",
]


def _notebook() -> dict[str, object]:
    return {
        "nbformat": 4,
        "nbformat_minor": 5,
        "metadata": {
            "kernelspec": {"name": "python3", "display_name": "Python 3", "language": "python"}
        },
        "cells": [
            {
                "cell_type": "code",
                "id": f"c{i}",
                "source": src,
                "metadata": {},
                "outputs": [],
                "execution_count": None,
            }
            for i, src in enumerate(CELLS)
        ],
    }


def test_alice_and_bob_in_chromium(hub: Hub) -> None:
    node = shutil.which("node")
    assert node, "node is not installed (the browser test needs Node.js)"
    if not (UI / "node_modules" / "playwright-core").exists():
        pytest.fail("labextension/ui-tests/node_modules missing; `make ui-deps` installs it")
    assert Path(CHROMIUM).exists(), "Chromium missing (apt-get install chromium)"
    # alice's notebook, written to her server's contents (her server started by the hub)
    hub.start_server("alice")
    # bob's server spawns while alice works (he logs in later): the test waits less
    r = hub.api("POST", "users/bob/server")
    assert r.status_code in (201, 202, 400), r.text  # 400: already running
    token = hub.user_token("alice")
    r = requests.put(
        f"{hub.url}/user/alice/api/contents/{NOTEBOOK}",
        json={"type": "notebook", "format": "json", "content": _notebook()},
        headers={"Authorization": f"token {token}"},
        timeout=30,
    )
    assert r.status_code in (200, 201), r.text
    SHOTS.mkdir(parents=True, exist_ok=True)
    proc = subprocess.run(
        [node, str(Path(__file__).with_name("hub_browser.cjs"))],
        capture_output=True,
        text=True,
        timeout=240,
        env=dict(
            os.environ,
            NODE_PATH=str(UI / "node_modules"),
            HUB_URL=hub.url,
            HUB_PASSWORD=PASSWORD,
            NOTEBOOK=NOTEBOOK,
            SHOTS=str(SHOTS),
            CHROMIUM=CHROMIUM,
        ),
    )
    lines = [x for x in proc.stdout.splitlines() if x.startswith("RESULT ")]
    assert proc.returncode == 0 and lines, (
        f"the browser script failed:\n{proc.stdout}\n{proc.stderr}"
    )
    seen = json.loads(lines[-1][len("RESULT ") :])
    print(json.dumps(seen, indent=1))

    # alice: the cells' outputs, and her two new runs finished in her sidebar
    text = "\n".join(seen["outputs"])
    assert "work-value 49" in text, text
    before = set(seen["alice_before"])
    new = [run for run in seen["alice_runs"] if run["id"] not in before]
    assert len(new) == 2 and {run["status"] for run in new} == {"finished"}, new
    assert "hub-browser-template" in {run["name"] for run in new}, new
    template_id = next(run["id"] for run in new if run["name"] == "hub-browser-template")
    assert f"template-run {template_id} finished" in text, text
    # the service agrees: they are alice's
    for run in new:
        info = requests.get(
            f"{hub.service_url}idds/api/v1/requests/{run['id']}",
            headers={"Authorization": f"token {token}"},
            timeout=30,
        )
        assert info.status_code == 200 and info.json()["owner"] == "alice", info.text

    # bob: none of alice's runs in his sidebar; her pages and run refused to his browser
    alice_ids = {run["id"] for run in seen["alice_runs"]}
    assert not alice_ids & {run["id"] for run in seen["bob_runs"]}, seen["bob_runs"]
    assert seen["bob_service_page"] == 200
    for path, status in seen["bob_status"].items():
        assert status in (403, 404), (path, status)
    for name in ("hub-alice.png", "hub-bob.png"):
        assert (SHOTS / name).stat().st_size > 1000
