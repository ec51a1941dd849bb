"""The REST client and its push channel against a real server; server discovery."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any

import pytest
from faat_helpers import main_namespace

from idds_jupyter import work
from idds_jupyter.client import Client, IddsError, find_server
from idds_jupyter.faat import serialize

pytestmark = pytest.mark.timeout(300)


def test_find_server_from_env_and_connection_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("IDDS_URL", "http://h:1/")
    monkeypatch.setenv("IDDS_TOKEN", "t")
    assert find_server(str(tmp_path)) == ("http://h:1/", "t")
    monkeypatch.delenv("IDDS_URL")
    monkeypatch.delenv("IDDS_TOKEN")
    with pytest.raises(IddsError, match="no connection file"):
        find_server(str(tmp_path))
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    (tmp_path / "idds-1.json").write_text(
        json.dumps({"url": "http://dead/", "token": "x", "pid": dead.pid})
    )
    with pytest.raises(IddsError, match="1 stale"):
        find_server(str(tmp_path))
    (tmp_path / "idds-2.json").write_text(
        json.dumps({"url": "http://live/", "token": "y", "pid": os.getpid()})
    )
    assert find_server(str(tmp_path)) == ("http://live/", "y")


def test_rest_errors_are_one_line(client: Client) -> None:
    with pytest.raises(IddsError) as info:
        client.status(987654)
    assert info.value.status == 404 and "\n" not in str(info.value)
    with pytest.raises(IddsError) as info2:
        client.submit({"name": "bad", "works": [{"name": "w"}]})
    assert info2.value.status == 400
    bad = Client(client.url, "not-a-token")
    with pytest.raises(IddsError) as info3:
        bad.runs()
    assert info3.value.status in (401, 403)


def test_cache_roundtrip_and_upload_once(client: Client) -> None:
    data = os.urandom(200_000)
    sha = serialize.digest(data)
    assert not client.cache_has(sha)
    assert client.upload(data) == sha
    assert client.cache_has(sha)
    assert client.cache_get(sha) == data
    count = client.cache_stats()["count"]
    other = Client(client.url, client.token)
    try:
        assert other.upload(data) == sha  # HEAD says it is there: no second PUT
        assert sha in other.uploaded
    finally:
        other.shutdown()
    assert client.cache_stats()["count"] == count


def test_push_channel_reconnects_and_resyncs(client: Client) -> None:
    ns = main_namespace("""
        def ident(x):
            return x
    """)
    ident = work(ns["ident"])
    assert ident(1) == 1
    push = client.push
    before = push.reconnects
    loop, conn = push._loop, push._conn
    assert loop is not None and conn is not None
    loop.call_soon_threadsafe(conn.close)
    assert ident.map(range(20)) == list(range(20))
    assert push.connected.wait(10)
    assert push.reconnects == before + 1


def test_server_side_body_runner(client: Client, server: Any, tmp_path: Path) -> None:
    """The runner the service starts for where="server": runs the body, closes the run."""
    ns = main_namespace("""
        def body(n, scale=1):
            return sum(SQ.map(range(n))) * scale
    """)
    ns["SQ"] = work(main_namespace("def sq(x):\n    return x * x\n")["sq"])
    wf_id = client.submit({"name": "server-body", "works": []}, {"n": 4}, open=True)
    body = serialize.upload(client, serialize.pack_function(ns["body"]))
    args = serialize.upload(client, serialize.dumps(((4,), {"scale": 10})))
    env = {**os.environ, "IDDS_URL": server.url, "IDDS_TOKEN": server.token}
    proc = subprocess.run(
        [sys.executable, "-m", "idds_jupyter.faat.runner", str(wf_id), body, args],
        env=env,
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    from idds_jupyter import get_run

    run = get_run(wf_id)
    assert run.result(timeout=60) == 140
    assert [w["name"] for w in run.works] == ["sq_0"]


def test_a_work_end_finalizes_the_sink_whose_push_was_lost(client: Client) -> None:
    """The fallback when a job's pushed result never arrives: the work's end (the server's
    own ``work.terminal`` message, which names the work) has the sink fetch the results."""
    from idds_jupyter.faat.results import WorkSink, router

    results = router(client)
    got: list[dict[str, Any]] = []
    ended = threading.Event()

    def listen(msg: dict[str, Any]) -> None:
        if msg.get("type") == "work.terminal":
            got.append(msg)
            ended.set()

    stop = client.on_message(listen)
    try:
        wid = client.submit({"name": "body", "works": []}, open=True)
        client.add_works(
            wid,
            [
                {
                    "name": "w_0",
                    "function": "idds_jupyter.worker.job:sleep",
                    "parameters": {"seconds": 0},
                }
            ],
        )
        assert ended.wait(30)
    finally:
        stop()
        client.close(wid)
    msg = next(m for m in got if m.get("workflow_id") == wid)
    sink = WorkSink(wid, "w_0", 1)  # waiting, its job.result lost: nothing offered to it
    sink.router = results
    with results._lock:
        results._sinks[sink.key] = sink
    results.on_message(msg)
    rows = sink.wait(10)
    assert [(r["idx"], r["status"]) for r in rows] == [(0, "finished")]
