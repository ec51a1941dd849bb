"""Client mode: a hub's single-user server uses the hub's shared iDDS service.

Inside a JupyterHub single-user server (``JUPYTERHUB_API_TOKEN``,
``JUPYTERHUB_USER`` and ``JUPYTERHUB_SERVICE_PREFIX`` in the environment) the
extension starts no core of its own when the shared service is there
(``Config.hub_client``: ``auto`` asks it once, ``on`` trusts it, ``off`` never).
It then points its kernels at the service — ``IDDS_URL`` = the hub's public URL
+ ``Config.service_url`` (default ``/services/idds/``), ``IDDS_TOKEN`` = the
server's own hub API token, which the hub config grants
``access:services!service=idds`` — so ``from idds_jupyter import work`` in a
notebook reaches the shared service with nothing typed.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping
from dataclasses import dataclass
from urllib.parse import urlparse

from idds_jupyter.config import Config

log = logging.getLogger("idds_jupyter_server.client_mode")

HUB_SERVER_ENV = ("JUPYTERHUB_API_TOKEN", "JUPYTERHUB_USER", "JUPYTERHUB_SERVICE_PREFIX")

#: where a hub's proxy listens when the hub names no public URL (JupyterHub's default bind_url)
DEFAULT_HUB_ORIGIN = "http://127.0.0.1:8000"


@dataclass(frozen=True)
class SharedService:
    url: str  # base URL of the service, ending in "/" (the API is url + "idds/api/v1/")
    token: str  # the single-user server's hub API token
    user: str  # the hub user this server belongs to


def in_hub_server(environ: Mapping[str, str] | None = None) -> bool:
    env = os.environ if environ is None else environ
    return all(env.get(k) for k in HUB_SERVER_ENV)


def hub_origin(environ: Mapping[str, str] | None = None) -> str:
    """``scheme://host:port`` of the hub's proxy as this server's processes reach it:
    from ``JUPYTERHUB_PUBLIC_HUB_URL``/``JUPYTERHUB_PUBLIC_URL`` (set when the hub has a
    ``public_url``), else JupyterHub's default ``http://127.0.0.1:8000``."""
    env = os.environ if environ is None else environ
    for var in ("JUPYTERHUB_PUBLIC_HUB_URL", "JUPYTERHUB_PUBLIC_URL"):
        u = urlparse(env.get(var) or "")
        if u.scheme and u.netloc:
            return f"{u.scheme}://{u.netloc}"
    return DEFAULT_HUB_ORIGIN


def service_base_url(cfg: Config, environ: Mapping[str, str] | None = None) -> str:
    """The shared service's base URL: ``service_url`` when it is a full URL, else that
    path on the hub's origin."""
    url = cfg.service_url or "/services/idds/"
    if not urlparse(url).scheme:
        url = hub_origin(environ) + "/" + url.strip("/")
    return url.rstrip("/") + "/"


def find_shared_service(
    cfg: Config, environ: Mapping[str, str] | None = None, timeout: float = 5.0
) -> SharedService | None:
    """The hub's shared service this server should use, or None (embedded core)."""
    env = os.environ if environ is None else environ
    mode = (cfg.hub_client or "auto").lower()
    if mode == "off" or not in_hub_server(env):
        return None
    found = SharedService(
        service_base_url(cfg, env), env["JUPYTERHUB_API_TOKEN"], env["JUPYTERHUB_USER"]
    )
    if mode == "on":
        return found
    import requests

    whoami = found.url + "idds/api/v1/auth/whoami"
    try:
        r = requests.get(
            whoami, headers={"Authorization": f"Bearer {found.token}"}, timeout=timeout
        )
    except requests.RequestException as exc:
        log.warning(
            "idds-jupyter: no shared iDDS service at %s (%s): running an embedded core",
            found.url,
            exc,
        )
        return None
    if r.status_code != 200:
        log.warning(
            "idds-jupyter: the shared iDDS service at %s answered %s to this server's hub "
            "token (%s): running an embedded core",
            found.url,
            r.status_code,
            r.text[:200],
        )
        return None
    return found


def publish(service: SharedService) -> None:
    """Kernels of this server (they inherit its environment) reach the shared service."""
    os.environ["IDDS_URL"] = service.url
    os.environ["IDDS_TOKEN"] = service.token


__all__ = [
    "SharedService",
    "find_shared_service",
    "hub_origin",
    "in_hub_server",
    "publish",
    "service_base_url",
]
