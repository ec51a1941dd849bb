"""Every shared object has an owner (issue 19, item 2): each attack as it was seen on main,
against a real running server, on SQLite and PostgreSQL; each must fail now.

- catalog datasets: another user read a dataset, added a file ``f2; touch X`` to it and
  marked it available, and the owner's next job ran it;
- cache blobs: user B read user A's blob by its digest; ``/cache`` stats were global; a
  job's result blob was anyone's;
- a job planted a symlink (or a hard link) in the cache directory and ``GET /cache/{sha}``
  served the job-token key through it.
"""

from __future__ import annotations

import hashlib
import os
import textwrap
from pathlib import Path
from typing import Any

import pytest
from api_helpers import Served
from apiclient import Api
from waiting import wait_for

pytestmark = pytest.mark.timeout(300)


def _wait_dataset_job(api: Api, wid: int, timeout: float = 60) -> dict[str, Any]:
    def scanned() -> dict[str, Any] | None:
        st = api.get(f"/requests/{wid}").json
        works = {w["name"]: w for w in st.get("works", [])}
        return st if works.get("scan", {}).get("n_jobs") else None

    return wait_for(scanned, timeout, 0.2, message="the dataset's scan work has jobs")


def test_catalog_dataset_of_another_user_is_not_there(served_db: Served, tmp_path: Path) -> None:
    alice, bob, admin = served_db.alice, served_db.bob, served_db.admin
    marker = tmp_path / "X"
    r = alice.post("/catalog/datasets", {"name": "raw", "files": ["f1"]})
    assert r.status == 201, r
    wid = alice.post(
        "/requests",
        {
            "template": {
                "name": "scan-raw",
                "works": [
                    {"name": "scan", "command": "echo scanning {file}", "input_dataset": "raw"}
                ],
            }
        },
    ).json["id"]
    _wait_dataset_job(alice, wid)  # one job, waiting for f1 to be staged

    # the attack: bob reads alice's dataset, adds "f2; touch X" to it, marks it available
    missing = bob.get("/catalog/datasets/nosuch")
    assert missing.status == 404
    seen = bob.get("/catalog/datasets/raw")
    assert seen.status == 404, seen
    assert seen.json["error"] == missing.json["error"].replace("nosuch", "raw")  # nothing leaks
    assert bob.get("/catalog/datasets").json["datasets"] == []
    assert bob.post("/catalog/datasets/raw/available", {"files": None}).status == 404
    evil = f"f2; touch {marker}"
    r = bob.post("/catalog/datasets", {"name": "raw", "files": [evil]})
    assert r.status == 201, r  # bob's own dataset "raw": names are per owner
    assert bob.post("/catalog/datasets/raw/available", {"files": None}).json["released"] == 0
    assert [f["name"] for f in bob.get("/catalog/datasets/raw").json["files"]] == [evil]

    # alice's dataset and run are untouched: one file, still waiting
    mine = alice.get("/catalog/datasets/raw").json["files"]
    assert [(f["name"], f["status"]) for f in mine] == [("f1", "new")]
    assert [d["name"] for d in alice.get("/catalog/datasets").json["datasets"]] == ["raw"]
    r = alice.post("/catalog/datasets/raw/available", {"files": None})
    assert r.status == 200 and r.json["released"] == 1, r
    st = alice.wait(wid)
    assert st["status"] == "finished", st
    assert [w["n_jobs"] for w in st["works"]] == [1]
    assert not marker.exists()

    # an admin sees both, and names the owner to act on one
    owners = {(d["owner"], d["name"]) for d in admin.get("/catalog/datasets").json["datasets"]}
    assert {("alice", "raw"), ("bob", "raw")} <= owners
    r = admin.get("/catalog/datasets/raw?owner=bob")
    assert r.status == 200 and [f["name"] for f in r.json["files"]] == [evil]


def _put(api: Api, data: bytes) -> str:
    sha = hashlib.sha256(data).hexdigest()
    r = api.call("PUT", f"/cache/{sha}", raw=data)
    assert r.status == 201, r
    return sha


def test_cache_blob_of_another_user_is_not_there(served_db: Served) -> None:
    alice, bob, admin = served_db.alice, served_db.bob, served_db.admin
    data = os.urandom(5000)
    sha = _put(alice, data)
    nosuch = hashlib.sha256(b"never uploaded").hexdigest()

    # the attack: bob reads alice's blob by its digest, and learns the cache's totals
    for method in ("GET", "HEAD"):
        r = bob.call(method, f"/cache/{sha}")
        assert r.status == 404, (method, r)
    assert bob.get(f"/cache/{sha}").json["error"] == f"no blob {sha}"
    assert bob.get(f"/cache/{nosuch}").json["error"] == f"no blob {nosuch}"
    assert bob.get("/cache").json["count"] == 0 and bob.get("/cache").json["bytes"] == 0
    stats = alice.get("/cache").json
    assert stats["count"] == 1 and stats["bytes"] == 5000 and stats["scope"] == "owner"
    assert alice.get(f"/cache/{sha}").body == data
    assert admin.get(f"/cache/{sha}").body == data  # admins read every blob
    assert admin.get("/cache").json["scope"] == "all"
    assert admin.get("/cache?owner=alice").json["count"] == 1

    # a submission naming alice's blob as bob's payload (a job would read it for him): refused
    # exactly as a blob that is not there
    for digest in (sha, nosuch):
        r = bob.post(
            "/requests",
            {
                "template": {
                    "name": "steal",
                    "works": [{"name": "w", "payload": {"function": digest}}],
                }
            },
        )
        assert r.status == 400 and f"blob {digest} is not in the cache" in r.json["error"], r
    r = bob.post("/requests", {"faat": {"body": sha, "args": sha, "name": "steal"}})
    assert r.status == 400 and "not in the cache" in r.json["error"], r

    # the same content uploaded by bob: his grant too, one file on disk
    assert bob.call("PUT", f"/cache/{sha}", raw=data).json["created"] is False
    assert bob.get(f"/cache/{sha}").body == data and alice.get(f"/cache/{sha}").body == data
    assert bob.get("/cache").json["count"] == 1
    cache_dir = Path(served_db.handle.ctx.cache.root)
    assert [p.name for p in cache_dir.rglob(sha)] == [sha]


def test_job_result_blob_is_its_run_owners(served_db: Served) -> None:
    """A value a job returns (stored as a blob) is its run owner's, not anyone's."""
    from idds_jupyter import work
    from idds_jupyter.client import Client, set_client

    alice, bob, admin = served_db.alice, served_db.bob, served_db.admin
    old = set_client(Client(served_db.handle.url, alice.token))
    try:
        ns: dict[str, Any] = {"__name__": "__main__"}  # a notebook cell's function
        exec(
            textwrap.dedent("""
            def big(n):
                return b"v" * n
        """),
            ns,
        )
        assert work(ns["big"])(200_000) == b"v" * 200_000  # over the inline size: a blob
    finally:
        set_client(old)
    runs = alice.get("/requests").json["requests"]
    wid = max(r["id"] for r in runs)
    results = alice.get(
        f"/requests/{wid}/works/{alice.get(f'/requests/{wid}').json['works'][0]['name']}/results"
    ).json["results"]
    blob = results[0]["blob"]
    assert blob, results
    assert alice.get(f"/cache/{blob}").status == 200
    assert admin.get(f"/cache/{blob}").status == 200
    assert bob.get(f"/cache/{blob}").status == 404
    assert bob.call("HEAD", f"/cache/{blob}").status == 404


def _run_command(api: Api, command: str) -> tuple[int, dict[str, Any]]:
    r = api.post(
        "/requests",
        {"template": {"name": "plant", "works": [{"name": "plant", "command": command}]}},
    )
    assert r.status == 201, r
    return r.json["id"], api.wait(r.json["id"])


def test_cache_serves_no_planted_link(served_db: Served) -> None:
    """A job links a blob's file to the job-token key: the cache never serves the key."""
    alice = served_db.alice
    ctx = served_db.handle.ctx
    ctx.job_tokens()  # the key exists, as it does once a batch job was sent
    key = Path(ctx.config.home) / "job-token.key"
    secret = key.read_bytes()
    data = os.urandom(3000)
    sha = _put(alice, data)
    path = Path(ctx.cache.root) / sha[:2] / sha

    for how in ("ln -sf", "ln -f"):  # a symlink, then a hard link (same inode as the key)
        _, st = _run_command(alice, f"{how} {key} {path}")
        assert st["status"] == "finished", st
        assert os.path.samefile(path, key)  # planted
        for method in ("GET", "HEAD"):
            r = alice.call(method, f"/cache/{sha}")
            assert r.status == 404, (how, method, r)
            assert secret not in r.body
        assert served_db.admin.get(f"/cache/{sha}").status == 404
        assert key.read_bytes() == secret  # the key itself is left alone
        # uploading the blob again replaces whatever was planted: served intact
        r = alice.call("PUT", f"/cache/{sha}", raw=data)
        assert r.status == 201, r
        assert alice.get(f"/cache/{sha}").body == data
        assert not path.is_symlink() and not os.path.samefile(path, key)

    # a fan-out directory replaced by a symlink to the home: never followed
    other = os.urandom(100)
    osha = _put(alice, other)
    fan = Path(ctx.cache.root) / osha[:2]
    _, st = _run_command(
        alice, f"rm -rf {fan} && ln -s {key.parent} {fan} && cp {key} {key.parent}/{osha}"
    )
    assert st["status"] == "finished", st
    r = alice.get(f"/cache/{osha}")
    assert r.status == 404 and secret not in r.body, r
    (key.parent / osha).unlink(missing_ok=True)


def test_messages_are_their_owners(served_db: Served) -> None:
    alice, bob = served_db.alice, served_db.bob
    wid, st = _run_command(alice, "true")
    assert st["status"] == "finished"
    wait_for(
        lambda: [m for m in alice.get("/messages").json["messages"] if m["workflow_id"] == wid],
        30,
        0.2,
        message="alice's run's messages",
    )
    assert not [m for m in bob.get("/messages").json["messages"] if m["workflow_id"] == wid]
    assert [m for m in served_db.admin.get("/messages").json["messages"] if m["workflow_id"] == wid]
