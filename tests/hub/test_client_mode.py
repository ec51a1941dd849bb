"""Client mode's decisions without a hub: when a single-user server uses the shared service
and at which URL (the end-to-end behaviour is in test_hub_service.py)."""

from __future__ import annotations

import socket

from idds_jupyter_server.client_mode import find_shared_service, hub_origin, service_base_url

from idds_jupyter.auth.hub import hub_service_address, in_hub_service
from idds_jupyter.config import Config

HUB_SERVER = {
    "JUPYTERHUB_API_TOKEN": "t0k",
    "JUPYTERHUB_USER": "alice",
    "JUPYTERHUB_SERVICE_PREFIX": "/user/alice/",
}


def test_the_service_url_on_the_hubs_public_address() -> None:
    cfg = Config()
    assert cfg.service_url == "/services/idds/"
    env = {**HUB_SERVER, "JUPYTERHUB_PUBLIC_HUB_URL": "https://hub.example.org/hub/"}
    assert hub_origin(env) == "https://hub.example.org"
    assert service_base_url(cfg, env) == "https://hub.example.org/services/idds/"
    env = {**HUB_SERVER, "JUPYTERHUB_PUBLIC_URL": "http://127.0.0.1:8000/user/alice/"}
    assert service_base_url(cfg, env) == "http://127.0.0.1:8000/services/idds/"
    # no public URL: JupyterHub's default proxy address
    assert service_base_url(cfg, HUB_SERVER) == "http://127.0.0.1:8000/services/idds/"
    # a full URL is used as is (Kubernetes: the proxy's service name)
    cfg = Config(service_url="http://proxy-public/services/idds")
    assert service_base_url(cfg, env) == "http://proxy-public/services/idds/"


def test_when_a_server_is_a_client() -> None:
    on, off, auto = Config(hub_client="on"), Config(hub_client="off"), Config()
    assert find_shared_service(on, {}) is None  # not in a hub: embedded, whatever the setting
    assert find_shared_service(off, HUB_SERVER) is None
    found = find_shared_service(on, HUB_SERVER)  # "on": trusted without asking
    assert found is not None and found.token == "t0k" and found.user == "alice"
    # "auto" asks the service; nobody answering means an embedded core
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    closed = Config(service_url=f"http://127.0.0.1:{port}/services/idds/")
    assert find_shared_service(closed, HUB_SERVER, timeout=2) is None
    assert auto.hub_client == "auto"


def test_a_hub_service_finds_its_address_in_the_environment() -> None:
    env = {
        "JUPYTERHUB_API_TOKEN": "s",
        "JUPYTERHUB_SERVICE_PREFIX": "/services/idds/",
        "JUPYTERHUB_SERVICE_URL": "http://127.0.0.1:10101",
    }
    assert in_hub_service(env)
    assert hub_service_address(env) == ("127.0.0.1", 10101, "/services/idds/")
    assert not in_hub_service({"JUPYTERHUB_API_TOKEN": "s"})
    assert hub_service_address({}) is None
