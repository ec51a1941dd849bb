"""A tiny HTTP client for the API tests (stdlib only)."""

from __future__ import annotations

import json
import time
import urllib.error
import urllib.request
from collections.abc import Iterable
from typing import Any

TERMINAL = {"finished", "subfinished", "failed", "aborted"}


class Resp:
    def __init__(self, status: int, headers: Any, body: bytes) -> None:
        self.status = status
        self.headers = headers
        self.body = body

    @property
    def json(self) -> Any:
        return json.loads(self.body)

    def __repr__(self) -> str:
        return f"<{self.status} {self.body[:300]!r}>"


class Api:
    def __init__(self, url: str, token: str | None) -> None:
        self.base = url.rstrip("/") + "/idds/api/v1"
        self.token = token

    def call(
        self,
        method: str,
        path: str,
        body: Any = None,
        raw: bytes | Iterable[bytes] | None = None,
        headers: dict[str, str] | None = None,
        token: str | None = "default",
        timeout: float = 30,
    ) -> Resp:
        hdrs = dict(headers or {})
        tok = self.token if token == "default" else token
        if tok:
            hdrs["Authorization"] = f"Bearer {tok}"
        data: Any = raw
        if body is not None:
            data = json.dumps(body).encode()
            hdrs.setdefault("Content-Type", "application/json")
        req = urllib.request.Request(self.base + path, data=data, method=method, headers=hdrs)
        try:
            with urllib.request.urlopen(req, timeout=timeout) as r:
                return Resp(r.status, r.headers, r.read())
        except urllib.error.HTTPError as e:
            return Resp(e.code, e.headers, e.read())

    def get(self, path: str, **kw: Any) -> Resp:
        return self.call("GET", path, **kw)

    def post(self, path: str, body: Any = None, **kw: Any) -> Resp:
        return self.call("POST", path, body=body, **kw)

    def wait(self, wid: int, timeout: float = 60) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while True:
            r = self.get(f"/requests/{wid}")
            assert r.status == 200, r
            st = r.json
            if st["status"] in TERMINAL:
                return st
            if time.monotonic() > deadline:
                raise TimeoutError(f"workflow {wid} still {st['status']}")
            time.sleep(0.2)
