"""Schemathesis over ``idds_jupyter/api/openapi.yaml`` against a live server, with a valid
user token: no 5xx, and every answer conforms to the document (status code, content type,
body schema, headers). CI: 10 examples per operation; ``IDDS_SOAK=1``: 200.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import schemathesis
from chaos_helpers import size
from hypothesis import HealthCheck, settings
from schemathesis import checks

from idds_jupyter.api.server import ServerHandle, start_server
from idds_jupyter.client import Client
from idds_jupyter.config import Config

SPEC = Path(__file__).resolve().parents[2] / "idds_jupyter" / "api" / "openapi.yaml"
schema = schemathesis.openapi.from_path(SPEC)

pytestmark = pytest.mark.timeout(size(300, 3600))


@pytest.fixture(scope="module")
def live(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[ServerHandle, str]]:
    tmp = tmp_path_factory.mktemp("schema")
    cfg = Config.load(
        None, home=tmp / "home", db_url=f"sqlite:///{tmp / 'idds.db'}", workers=2, poll_interval=0.5
    )
    handle = start_server(cfg, "127.0.0.1", 0, "/")
    admin = Client(handle.url, handle.token)
    token = admin._json("POST", "auth/tokens", {"name": "schemathesis", "user": "alice"})["token"]
    admin.shutdown()
    try:
        yield handle, token
    finally:
        handle.stop()


@schema.exclude(path="/stream").parametrize()
@settings(
    max_examples=size(10, 200),
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=list(HealthCheck),
)
def test_api_conforms_to_openapi_and_never_answers_5xx(
    case: Any, live: tuple[ServerHandle, str]
) -> None:
    handle, token = live
    base = handle.url.rstrip("/") + "/idds/api/v1"
    headers = dict(case.headers or {})
    headers.setdefault("Authorization", f"Bearer {token}")
    # Left out: a 405 to an undeclared method (TRACE) carries no ``Allow`` header (RFC 9110
    # wants one); reported, not a conformance failure of the document's operations. And the
    # rejection of "invalid" cases: this test gives every case the token, so a case made
    # without its Authorization header is a valid request here, and unknown query arguments
    # are ignored by design (as Jupyter's own API does); bodies and declared arguments of
    # the wrong type are still checked by the 4xx/5xx and schema checks.
    case.call_and_validate(
        base_url=base,
        headers=headers,
        timeout=30,
        excluded_checks=[checks.unsupported_method, checks.negative_data_rejection],
    )
