"""/metrics and the aggregate monitor under the Jupyter server extension: Jupyter's own
authentication guards them, and they count the runs of the server's user."""

from __future__ import annotations

import time
from pathlib import Path

from jupyter_helpers import JupyterServer
from prometheus_client.parser import text_string_to_metric_families

RUN = {
    "template": {
        "name": "jupyter-metrics",
        "works": [{"name": "ok", "command": "echo {x}", "kwargs_list": [{"x": 1}, {"x": 2}]}],
    }
}


def _finished(text: str) -> float:
    return sum(
        s.value
        for fam in text_string_to_metric_families(text)
        for s in fam.samples
        if s.name == "idds_jobs" and s.labels.get("state") == "finished"
    )


def test_metrics_under_the_extension(tmp_path: Path) -> None:
    # every scrape reads the store (the traitlet of the metrics_cache_s setting)
    server = JupyterServer(
        tmp_path, base_url="/user/alice/", args=("--IddsExtension.metrics_cache_s=0",)
    )
    try:
        assert server.api("GET", "metrics", token=False).status_code == 403
        assert server.api("GET", "monitor", token=False).status_code == 403
        r = server.api("POST", "requests", json=RUN)
        assert r.status_code == 201, r.text
        wid = r.json()["id"]
        deadline = time.monotonic() + 60
        while server.api("GET", f"requests/{wid}").json()["status"] != "finished":
            assert time.monotonic() < deadline, "the run did not finish"
            time.sleep(0.2)
        m = server.api("GET", "metrics")
        assert m.status_code == 200 and m.headers["Content-Type"].startswith("text/plain")
        assert _finished(m.text) == 2, m.text
        agg = server.api("GET", "monitor", params={"hours": 1}).json()
        assert sum(sum(v) for v in agg["series"]["finished"].values()) == 2
    finally:
        server.stop()
