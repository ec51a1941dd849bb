"""The iDDS service as an *external* JupyterHub service: its entry has a ``url`` and an
``api_token`` and no command, and the service is started outside the hub (here by the
test, as a systemd unit or another host would) with the variables a managed service gets
(docs/deploy-jupyterhub.md, "An external service"). Tokens and the browser's OAuth flow
reach it through the hub's proxy as they do a managed one."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import requests
from hub_helpers import Hub, wait_for


@pytest.fixture(scope="module")
def external_hub(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Hub]:
    h = Hub(tmp_path_factory.mktemp("hub-external"), external=True)
    try:
        yield h
    finally:
        h.stop()


def _api(hub: Hub, token: str, method: str, path: str, **kw: object) -> requests.Response:
    return requests.request(
        method,
        hub.service_url + "idds/api/v1/" + path,
        headers={"Authorization": f"token {token}"},
        timeout=30,
        **kw,  # type: ignore[arg-type]
    )


def test_an_external_service_serves_hub_users(external_hub: Hub) -> None:
    hub = external_hub
    assert hub.service_proc is not None and hub.service_proc.poll() is None
    assert hub.service_pid() == hub.service_proc.pid  # the test's process, not the hub's
    for name in ("alice", "bob"):
        assert hub.api("POST", f"users/{name}").status_code in (201, 409)
    alice = hub.user_token("alice")
    who = _api(hub, alice, "GET", "auth/whoami")
    assert who.status_code == 200, who.text
    assert who.json()["user"] == "alice" and who.json()["admin"] is False
    template = {
        "name": "external",
        "works": [
            {"name": "echo", "function": "idds_jupyter.worker.job:echo", "kwargs_list": [{"x": 7}]}
        ],
    }
    r = _api(hub, alice, "POST", "requests", json={"template": template})
    assert r.status_code in (200, 201), r.text
    run_id = int(r.json()["id"])
    wait_for(
        lambda: _api(hub, alice, "GET", f"requests/{run_id}").json()["status"] == "finished",
        60,
        "the run to finish",
    )
    # bob's token reaches the service, and not alice's run
    bob = hub.user_token("bob")
    assert _api(hub, bob, "GET", f"requests/{run_id}").status_code == 404
    assert _api(hub, "not-a-token", "GET", "requests").status_code == 401


def test_the_browser_signs_in_to_the_external_service(external_hub: Hub) -> None:
    hub = external_hub
    assert hub.api("POST", "users/alice").status_code in (201, 409)
    s = hub.login("alice")
    page = s.get(hub.service_url, timeout=60)  # -> hub authorize -> oauth_callback -> page
    assert page.status_code == 200, page.text[:500]
    assert "Signed in as <b>alice</b>" in page.text
    assert any("/hub/api/oauth2/authorize" in h.url for h in page.history)
