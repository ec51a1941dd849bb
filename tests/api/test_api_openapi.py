"""The OpenAPI document and the application's route table agree, both ways."""

from __future__ import annotations

from typing import Any, cast

import yaml
from api_helpers import Served
from test_api_auth import implemented_methods

from idds_jupyter.api import make_app, openapi_path
from idds_jupyter.api.handlers import openapi_text


def test_openapi_matches_routes(served: Served) -> None:
    doc = yaml.safe_load(openapi_text())
    assert doc["openapi"].startswith("3.")
    assert doc["components"]["securitySchemes"]["bearer"]["scheme"] == "bearer"
    documented = {
        path: {m.upper() for m in ops if m in ("get", "put", "post", "delete", "head", "patch")}
        for path, ops in doc["paths"].items()
    }
    app = make_app(served.handle.ctx)
    routed: dict[str, set[str]] = {}
    for rule in app.wildcard_router.rules:
        path = openapi_path(cast(Any, rule.matcher).regex.pattern)
        assert path is not None
        methods = {("GET" if m == "WEBSOCKET" else m) for m in implemented_methods(rule.target)}
        routed[path] = methods
    assert set(routed) == set(documented), set(routed) ^ set(documented)
    for path, methods in routed.items():
        assert methods == documented[path], (path, methods, documented[path])
    # only ping is documented without security
    public = [
        p
        for p, ops in doc["paths"].items()
        for m, op in ops.items()
        if isinstance(op, dict) and op.get("security") == []
    ]
    assert public == ["/ping"]


def test_openapi_is_served_with_auth(served: Served) -> None:
    assert served.anon.get("/openapi.yaml").status == 401
    r = served.alice.get("/openapi.yaml")
    assert r.status == 200 and r.headers["Content-Type"].startswith("application/yaml")
    assert "paths" in yaml.safe_load(r.body)
