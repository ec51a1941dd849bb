"""Shared by the API tests: a demo template and a served API with three users' clients."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from apiclient import Api

from idds_jupyter.api.server import ServerHandle, start_server
from idds_jupyter.config import Config

DEMO_YAML = """
name: api-demo
parameters: {greeting: hello}
works:
  - name: a
    command: "echo '{greeting} {x}'"
    kwargs_list: [{x: 1}, {x: 2}, {x: 3}]
  - name: b
    command: echo done
    depends_on: [a]
"""


@dataclass
class Served:
    handle: ServerHandle
    admin: Api
    alice: Api
    bob: Api
    anon: Api


def _serve(home: Path, db_url: str) -> Served:
    cfg = Config.load(None, home=home, db_url=db_url, workers=2, poll_interval=0.3)
    handle = start_server(cfg, "127.0.0.1", 0, "/")
    admin = Api(handle.url, handle.token)
    users = {}
    for name in ("alice", "bob"):
        r = admin.post("/auth/tokens", {"name": "test", "user": name})
        assert r.status == 201, r
        users[name] = Api(handle.url, r.json["token"])
    return Served(handle, admin, users["alice"], users["bob"], Api(handle.url, None))
