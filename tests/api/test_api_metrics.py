"""/metrics (Prometheus) and the aggregate monitor (/monitor): values move with a run,
credentials are required, and a user sees only their own runs."""

from __future__ import annotations

import socket
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
from api_helpers import Served
from apiclient import Api
from prometheus_client.parser import text_string_to_metric_families

from idds_jupyter.api.server import ServerHandle, start_server
from idds_jupyter.config import Config

RUN = """
name: metrics-demo
works:
  - name: ok
    command: "echo {x}"
    kwargs_list: [{x: 1}, {x: 2}, {x: 3}]
  - name: bad
    command: "exit 3"
    depends_on: [ok]
"""


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture(scope="module")
def svc(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[ServerHandle, int]]:
    tmp: Path = tmp_path_factory.mktemp("metrics")
    port = _free_port()
    cfg = Config.load(
        None,
        home=tmp / "home",
        db_url=f"sqlite:///{tmp / 'idds.db'}",
        workers=2,
        poll_interval=0.3,
        metrics_cache_s=0.0,  # every scrape reads the store: the test sees values move
        metrics_port=port,
    )
    handle = start_server(cfg, "127.0.0.1", 0, "/")
    try:
        yield handle, port
    finally:
        handle.stop()


def _users(handle: ServerHandle) -> dict[str, Api]:
    admin = Api(handle.url, handle.token)
    out = {"admin": admin, "anon": Api(handle.url, None)}
    for name in ("alice", "bob"):
        r = admin.post("/auth/tokens", {"name": "metrics", "user": name})
        assert r.status == 201, r
        out[name] = Api(handle.url, r.json["token"])
    return out


def samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """``{(sample name, sorted labels): value}`` of a Prometheus exposition."""
    return {
        (s.name, tuple(sorted(s.labels.items()))): float(s.value)
        for fam in text_string_to_metric_families(text)
        for s in fam.samples
    }


def value(text: str, name: str, **labels: str) -> float:
    """The sum of the samples named ``name`` whose labels include ``labels``."""
    return sum(
        v for (n, ls), v in samples(text).items() if n == name and set(labels.items()) <= set(ls)
    )


def test_metrics_move_during_a_run_and_need_credentials(svc: tuple[ServerHandle, int]) -> None:
    handle, port = svc
    u = _users(handle)
    # unauthenticated: refused, before anything is read
    r = u["anon"].get("/metrics")
    assert r.status == 401 and "authentication required" in r.json["error"]
    assert u["anon"].get("/monitor").status == 401
    assert u["admin"].get("/metrics", token="not-a-token").status == 401

    before = u["admin"].get("/metrics")
    assert before.status == 200 and before.headers["Content-Type"].startswith("text/plain")
    assert value(before.body.decode(), "idds_submissions_total", owner="alice") == 0

    r = u["alice"].post("/requests", {"yaml": RUN})
    assert r.status == 201, r
    wid = r.json["id"]
    during = u["admin"].get("/metrics").body.decode()
    assert value(during, "idds_submissions_total", owner="alice") == 1
    assert value(during, "idds_jobs", owner="alice") >= 1  # the run's jobs, whatever state
    st = u["alice"].wait(wid)
    assert st["status"] in ("failed", "subfinished"), st

    after = u["admin"].get("/metrics").body.decode()
    assert value(after, "idds_jobs", owner="alice", state="finished") == 3
    assert value(after, "idds_jobs", owner="alice", state="failed") == 1
    assert value(after, "idds_job_failures_total", backend="local") == 1
    assert value(after, "idds_job_releases_total", owner="alice") >= 4
    assert value(after, "idds_queue_depth", owner="alice") == 0
    assert value(after, "idds_job_wall_seconds_count", backend="local") == 4
    assert value(after, "idds_job_wall_seconds_bucket", backend="local", le="+Inf") == 4
    # this process's own: transactions and claims were timed
    assert value(after, "idds_db_transaction_seconds_count") > value(
        before.body.decode(), "idds_db_transaction_seconds_count"
    )
    assert value(after, "idds_claim_seconds_count") >= 1
    assert value(after, "idds_jobs_claimed_total") >= 1  # released jobs (bad), claimed
    assert "idds_bus_lag_seconds" in after

    # a user sees the store families of their own runs only, and none of the process's
    bob = u["bob"].get("/metrics").body.decode()
    assert value(bob, "idds_jobs", owner="alice") == 0
    assert 'owner="alice"' not in bob and "idds_db_transaction_seconds" not in bob
    mine = u["alice"].get("/metrics").body.decode()
    assert value(mine, "idds_jobs", owner="alice", state="finished") == 3

    # the configured port serves the admin view without a token (loopback)
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as resp:
        open_text = resp.read().decode()
    assert value(open_text, "idds_jobs", owner="alice", state="failed") == 1


def test_monitor_aggregate_is_per_owner(svc: tuple[ServerHandle, int]) -> None:
    handle, _port = svc
    u = _users(handle)
    r = u["bob"].post("/requests", {"yaml": RUN})
    assert r.status == 201, r
    u["bob"].wait(r.json["id"])

    mine = u["bob"].get("/monitor?hours=1&bucket=60")
    assert mine.status == 200, mine
    m = mine.json
    assert m["owner"] == "bob" and set(m["by_owner"]) == {"bob"}
    assert len(m["times"]) == 60
    assert sum(m["series"]["finished"]["local"]) == 3
    assert sum(m["series"]["failed"]["local"]) == 1
    assert sum(m["series"]["submitted"]["local"]) == 4
    assert m["series"]["queue_depth"]["bob"][-1] == 0  # all ran
    # the depth at the end of each of 1800 buckets of 10 ms: the jobs waited before running
    fine = u["bob"].get("/monitor?hours=0.005&bucket=0.01").json
    assert len(fine["times"]) == 1800
    assert max(fine["series"]["queue_depth"]["bob"]) >= 1
    # bob cannot read alice's, an admin reads all or one owner's
    r = u["bob"].get("/monitor?owner=alice")
    assert r.status == 403 and "only admins" in r.json["error"]
    everyone = u["admin"].get("/monitor?hours=1").json
    assert {"alice", "bob"} <= set(everyone["by_owner"])
    assert set(u["admin"].get("/monitor?owner=alice").json["by_owner"]) <= {"alice"}
    # bad input: a clear 400 naming what is wrong
    r = u["bob"].get("/monitor?hours=1&bucket=0.5")
    assert r.status == 400 and "more than 2000" in r.json["error"]
    r = u["bob"].get("/monitor?hours=abc")
    assert r.status == 400 and "'hours' must be a number" in r.json["error"]
    # a denormal bucket (found by schemathesis at soak size: an OverflowError, a 500)
    r = u["bob"].get("/monitor?hours=6&bucket=5e-324")
    assert r.status == 400 and "too many buckets, more than 2000" in r.json["error"], r


def test_metrics_and_monitor_on_each_database(served_db: Served) -> None:
    """The grouped queries (time buckets: floor on PostgreSQL, a cast on SQLite) agree."""
    r = served_db.alice.post("/requests", {"yaml": RUN})
    assert r.status == 201, r
    served_db.alice.wait(r.json["id"])
    text = served_db.admin.get("/metrics").body.decode()
    assert value(text, "idds_jobs", owner="alice", state="finished") == 3
    assert value(text, "idds_job_wall_seconds_count", backend="local") == 4
    m = served_db.alice.get("/monitor?hours=1&bucket=60").json
    assert sum(m["series"]["finished"]["local"]) == 3
    assert sum(m["series"]["failed"]["local"]) == 1
    assert m["series"]["queue_depth"]["alice"][-1] == 0
