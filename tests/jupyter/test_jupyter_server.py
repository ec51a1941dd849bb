"""The Jupyter integration: a real jupyter server with the extension, kernels from the installed spec."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from jupyter_helpers import JupyterServer, run_cell

TEMPLATE = """\
%%idds template --submit --param threshold=2
name: kernel-template
parameters: {threshold: 10}
works:
  - name: gen
    function: idds_jupyter.worker.job:echo
    kwargs_list: [{x: 1}, {x: 2}, {x: 3}]
  - name: big
    function: idds_jupyter.worker.job:echo
    parameters: {branch: big}
  - name: small
    function: idds_jupyter.worker.job:echo
    parameters: {branch: small}
conditions:
  - {name: pick, expr: "len(gen.result) > threshold", "true": [big], "false": [small]}
"""


@pytest.fixture(scope="module")
def jupyter(tmp_path_factory: pytest.TempPathFactory) -> Iterator[JupyterServer]:
    server = JupyterServer(tmp_path_factory.mktemp("jupyter"), base_url="/user/alice/")
    try:
        yield server
    finally:
        server.stop()


def test_idds_kernel_runs_work_and_template_cells(jupyter: JupyterServer) -> None:
    _kid, kc = jupyter.start_kernel("idds")  # the installed "Python 3 (iDDS)" kernelspec
    try:
        assert run_cell(kc, "data = [1, 2, 3, 4]\nscale = 10")["status"] == "ok"
        res = run_cell(kc, "%%idds work --name total\ntotal = sum(data) * scale\nunused_local = 1")
        assert res["status"] == "ok", res
        res = run_cell(kc, "print(total, unused_local)")
        assert res["stdout"].split() == ["100", "1"]
        res = run_cell(kc, "%%idds work --map data --name squares --out sq\nsq = data * data")
        assert res["status"] == "ok", res
        assert run_cell(kc, "print(sq)")["stdout"].strip() == "[1, 4, 9, 16]"

        res = run_cell(kc, TEMPLATE)
        assert res["status"] == "ok", res
        assert any(
            "application/vnd.jupyter.widget-view+json" in d for d in res["data"]
        )  # live widget
        res = run_cell(
            kc,
            "run = _\nprint(run.wait(timeout=60))\n"
            "print(sorted((w['name'], w['status']) for w in run.works))",
        )
        lines = res["stdout"].splitlines()
        assert lines[0] == "finished", res
        assert lines[1] == str(
            sorted([("big", "finished"), ("gen", "finished"), ("small", "skipped")])
        )

        bad = run_cell(
            kc, "%%idds template\nname: bad\nworks:\n  - name: a\n    command: echo {nope}\n"
        )
        assert bad["status"] == "error"
        assert (
            "line 4" in bad["error"]
            and "field 'command'" in bad["error"]
            and "nope" in bad["error"]
        )
        assert "Traceback" not in bad["error"]
        unknown = run_cell(kc, "%idds status 987654")
        assert unknown["status"] == "error" and "no workflow with id 987654" in unknown["error"]
    finally:
        kc.stop_channels()


def test_base_url_token_and_load_ext(jupyter: JupyterServer) -> None:
    assert jupyter.api("GET", "auth/whoami").status_code == 200
    assert jupyter.api("GET", "auth/whoami", token=False).status_code == 403
    assert jupyter.api("GET", "requests", token=False).status_code == 403
    assert jupyter.api("GET", "ping", token=False).status_code == 200
    _kid, kc = jupyter.start_kernel(
        "python3"
    )  # a plain kernel: %load_ext finds the server by itself
    try:
        res = run_cell(
            kc,
            "%load_ext idds_jupyter\nfrom idds_jupyter import get_client\n"
            "c = get_client()\nprint(c.url)\nprint(c.whoami()['user'])",
        )
        assert res["status"] == "ok", res
        url, _user = res["stdout"].split()
        assert url.rstrip("/") == jupyter.url.rstrip("/")
        res = run_cell(
            kc, "from idds_jupyter import work\n@work\ndef f(x):\n    return x + 1\nprint(f(41))"
        )
        assert res["stdout"].strip() == "42", res
    finally:
        kc.stop_channels()


def test_restarted_server_picks_up_unfinished_runs(tmp_path: Path) -> None:
    first = JupyterServer(tmp_path, base_url="/")
    try:
        wid = first.api(
            "POST",
            "requests",
            json={
                "yaml": (
                    "name: slow\nworks:\n  - {name: a, function: 'idds_jupyter.worker.job:sleep', "
                    "kwargs_list: [{seconds: 3}, {seconds: 3}]}\n"
                    "  - {name: b, function: 'idds_jupyter.worker.job:noop', depends_on: [a]}\n"
                )
            },
        ).json()["id"]
    finally:
        first.stop()  # while its jobs run
    second = JupyterServer(tmp_path, base_url="/")
    try:
        import time

        deadline = time.monotonic() + 90
        status = None
        while time.monotonic() < deadline:
            status = second.api("GET", f"requests/{wid}").json()["status"]
            if status in ("finished", "failed", "subfinished"):
                break
            time.sleep(0.5)
        assert status == "finished"
    finally:
        second.stop()
