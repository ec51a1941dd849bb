"""The service as a JupyterHub service: callers are hub users.

``idds-jupyter serve`` started by a hub (``c.JupyterHub.services``) finds
``JUPYTERHUB_API_TOKEN``, ``JUPYTERHUB_SERVICE_PREFIX`` and friends in its
environment; :class:`HubAuthenticator` then identifies callers with
:class:`jupyterhub.services.auth.HubOAuth`:

- kernels and scripts send a hub API token (``Authorization: token T`` or
  ``Bearer T``; a single-user server's ``JUPYTERHUB_API_TOKEN`` or a token made
  on the hub's token page) — it must carry the scope
  ``access:services!service=<name>``;
- browsers go through the hub's OAuth flow (``<prefix>`` redirects to the hub,
  ``<prefix>oauth_callback`` sets the cookie); cookie-authenticated writes need
  the XSRF token, as the hub's own pages do;
- the service's own bearer tokens (``idds-jupyter token create``) keep working.

Identity is the hub user's name; admins are the hub's admins and the members of
``Config.hub_admin_groups``. Nothing here blocks the IOLoop: the hub is asked
with async HTTP and its answers are cached (``cache_max_age``).
"""

from __future__ import annotations

import html
import logging
import os
import time
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

import tornado.web

from idds_jupyter.auth import Authenticator, User, request_token

if TYPE_CHECKING:
    from tornado.web import RequestHandler

log = logging.getLogger("idds_jupyter.auth.hub")

SAFE_METHODS = ("GET", "HEAD", "OPTIONS")

#: what in the environment says "a hub started this process"
HUB_ENV = ("JUPYTERHUB_API_TOKEN", "JUPYTERHUB_SERVICE_PREFIX")


def in_hub_service(environ: Mapping[str, str] | None = None) -> bool:
    """True when this process runs as a JupyterHub service (or single-user server)."""
    env = os.environ if environ is None else environ
    return all(env.get(k) for k in HUB_ENV)


def hub_service_address(environ: Mapping[str, str] | None = None) -> tuple[str, int, str] | None:
    """``(ip, port, prefix)`` the hub expects this service at, from ``JUPYTERHUB_SERVICE_URL``
    and ``JUPYTERHUB_SERVICE_PREFIX``; None outside a hub."""
    from urllib.parse import urlparse

    env = os.environ if environ is None else environ
    if not in_hub_service(env):
        return None
    prefix = env["JUPYTERHUB_SERVICE_PREFIX"]
    url = env.get("JUPYTERHUB_SERVICE_URL", "")
    if not url:
        return ("127.0.0.1", 0, prefix)
    u = urlparse(url)
    return (u.hostname or "127.0.0.1", int(u.port or (443 if u.scheme == "https" else 80)), prefix)


def cookie_secret(home: str | os.PathLike[str] | None) -> bytes:
    """``IDDS_COOKIE_SECRET``, else a secret kept in ``<home>/hub-cookie-secret``
    (made once, owner-only), else (no home) a fresh one."""
    from pathlib import Path

    env = os.environ.get("IDDS_COOKIE_SECRET")
    if env:
        return env.encode()
    if home is None:
        return os.urandom(32)
    path = Path(home) / "hub-cookie-secret"
    try:
        return bytes.fromhex(path.read_text().strip())
    except (OSError, ValueError):
        pass
    path.parent.mkdir(parents=True, exist_ok=True)
    secret = os.urandom(32)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(secret.hex() + "\n")
    return secret


class HubAuthenticator(Authenticator):
    """Hub users (tokens and OAuth cookie); a token is first offered to ``fallback`` (the
    service's own tokens, OIDC access tokens)."""

    def __init__(
        self,
        fallback: Authenticator | None = None,
        admin_groups: set[str] | frozenset[str] = frozenset(),
        cache_max_age: float = 60.0,
        hub_auth: Any = None,
    ) -> None:
        if hub_auth is None:
            from jupyterhub.services.auth import HubOAuth

            hub_auth = HubOAuth(cache_max_age=int(cache_max_age))
        self.hub = hub_auth
        self.fallback = fallback
        self.admin_groups = set(admin_groups)
        self.cache_max_age = cache_max_age
        # user name -> (is a hub admin, hub groups, until (monotonic))
        self._admins: dict[str, tuple[bool, frozenset[str], float]] = {}

    # ------------------------------------------------------------------ identify
    @property
    def recheck_s(self) -> float:  # type: ignore[override]
        return self.fallback.recheck_s if self.fallback is not None else 5.0

    @property
    def prefix(self) -> str:
        return str(self.hub.base_url)

    def _required(self) -> set[str]:
        return set(self.hub.access_scopes or ())

    def _allowed(self, model: dict[str, Any]) -> bool:
        """The token (or cookie) may reach this service: it carries the access scope."""
        from jupyterhub.services.auth import check_scopes

        required = self._required()
        return not required or bool(check_scopes(required, set(model.get("scopes") or ())))

    async def _hub_user(self, name: str) -> tuple[bool, frozenset[str]]:
        """Whether ``name`` is a hub admin, and their hub groups, asked of the hub (``GET
        users/NAME`` with the service's token: its role needs ``read:users``; a
        kernel's token may not show them); cached like the hub's own answers."""
        hit = self._admins.get(name)
        now = time.monotonic()
        if hit is not None and hit[2] > now:
            return hit[0], hit[1]
        from urllib.parse import quote

        from tornado.httpclient import AsyncHTTPClient, HTTPClientError

        url = f"{self.hub.api_url.rstrip('/')}/users/{quote(name, safe='')}"
        admin, groups = False, frozenset[str]()
        try:
            resp = await AsyncHTTPClient().fetch(
                url, headers={"Authorization": f"token {self.hub.api_token}"}, request_timeout=10
            )
            import json

            model = json.loads(resp.body)
            admin = bool(model.get("admin"))
            groups = frozenset(str(g) for g in model.get("groups") or ())
        except HTTPClientError as exc:  # 403/404: the service may not read users; not an admin
            log.debug("hub lookup of %s: %s", name, exc)
        except OSError as exc:
            log.warning("hub lookup of %s failed: %s", name, exc)
            return False, groups  # do not cache a network failure
        if len(self._admins) > 10_000:
            self._admins.clear()
        self._admins[name] = (admin, groups, now + self.cache_max_age)
        return admin, groups

    async def _user(self, model: dict[str, Any]) -> User:
        name = str(model["name"])
        if model.get("kind", "user") == "service":
            return User(f"service:{name}", admin=False)
        groups = frozenset(str(g) for g in model.get("groups") or ())
        admin = bool(model.get("admin"))
        if not admin or "groups" not in model:
            hub_admin, hub_groups = await self._hub_user(name)
            admin, groups = admin or hub_admin, groups | hub_groups
        return User(name, admin=admin or bool(groups & self.admin_groups), groups=groups)

    async def authenticate(
        self, handler: RequestHandler, allow_query_token: bool = False
    ) -> User | None:
        token = request_token(handler, allow_query_token)
        if token:
            if self.fallback is not None:
                found = await self.fallback.authenticate(handler, allow_query_token)
                if found is not None:
                    handler._idds_auth = "idds"  # type: ignore[attr-defined]
                    return found
            model = await self.hub.user_for_token(
                token, session_id=self.hub.get_session_id(handler), sync=False
            )
            if model is None:
                return None
            if not self._allowed(model):
                raise tornado.web.HTTPError(
                    403,
                    f"hub token of {model.get('name')!r} lacks the scope "
                    f"{' or '.join(sorted(self._required()))}",
                )
            handler._token_authenticated = True  # type: ignore[attr-defined]
            handler._idds_auth = "hub"  # type: ignore[attr-defined]
            return await self._user(model)
        # a browser: the cookie set by the OAuth callback
        model = await self._cookie_model(handler)
        if model is None:
            return None
        if not self._allowed(model):
            raise tornado.web.HTTPError(
                403, f"hub user {model.get('name')!r} may not use this service"
            )
        if handler.request.method not in SAFE_METHODS:
            self.check_xsrf(handler)
        handler._idds_auth = "cookie"  # type: ignore[attr-defined]
        return await self._user(model)

    async def _cookie_model(self, handler: RequestHandler) -> dict[str, Any] | None:
        if not handler.application.settings.get("cookie_secret"):
            return None
        model: dict[str, Any] | None = await self.hub._get_user_cookie(handler)
        return model

    def check_xsrf(self, handler: RequestHandler) -> None:
        """A cookie-authenticated write must carry the hub-style XSRF token (``_xsrf`` or
        ``X-XSRFToken``), which a page of this service gets from :meth:`xsrf_token`."""
        sent = (
            handler.get_argument("_xsrf", None)
            or handler.request.headers.get("X-Xsrftoken")
            or handler.request.headers.get("X-Csrftoken")
        )
        if not sent or sent.encode() != self.xsrf_token(handler):
            raise tornado.web.HTTPError(
                403,
                "XSRF token missing or wrong: a cookie-authenticated "
                "write needs '_xsrf' (or send a token instead)",
            )

    def xsrf_token(self, handler: RequestHandler) -> bytes:
        from jupyterhub._xsrf_utils import get_xsrf_token

        self.hub._patch_xsrf(handler)
        return bytes(get_xsrf_token(handler, cookie_path=self.prefix))

    async def recheck(self, handler: RequestHandler) -> str | None:
        """Streams opened with a token end when it is revoked (within the cache's age)."""
        kind = getattr(handler, "_idds_auth", None)
        if kind == "idds" and self.fallback is not None:
            return await self.fallback.recheck(handler)
        if kind == "hub":
            token = request_token(handler, allow_query_token=True)
            if token and await self.hub.user_for_token(token, sync=False) is None:
                return "hub token revoked"
        return None

    # ------------------------------------------------------------------ browser pages
    def app_settings(self, home: str | os.PathLike[str] | None = None) -> dict[str, Any]:
        """Settings the tornado application needs for the OAuth cookie. The cookie secret
        is kept in ``<home>/hub-cookie-secret`` (0600), so a restarted service keeps its
        browsers signed in."""
        return {"cookie_secret": cookie_secret(home), "login_url": self.hub.login_url}

    def extra_handlers(self, base_url: str) -> list[tuple[str, type[Any], dict[str, Any]]]:
        """``<prefix>oauth_callback`` (ends the OAuth flow) and ``<prefix>`` (a page that
        starts it and says who is signed in)."""
        from idds_jupyter.api import api_base, url_join

        root = url_join(base_url).rstrip("/") + "/"
        return [
            (root + "oauth_callback", OAuthCallbackHandler, {"hub_auth": self.hub}),
            (root + "?", LandingHandler, {"auth": self, "api": api_base(base_url) + "/"}),
        ]


def _hub_handler_base() -> Any:
    from jupyterhub.services.auth import HubOAuthCallbackHandler

    return HubOAuthCallbackHandler


class OAuthCallbackHandler(_hub_handler_base()):  # type: ignore[misc]
    def initialize(self, hub_auth: Any) -> None:
        self.hub_auth = hub_auth


class LandingHandler(tornado.web.RequestHandler):
    """The service's page: sends a browser through the hub's login, then names its user."""

    def initialize(self, auth: HubAuthenticator, api: str) -> None:
        self.auth = auth
        self.api = api

    async def get(self) -> None:
        user = await self.auth.authenticate(self)
        if user is None:
            self.redirect(self.login_url())
            return
        self.set_header("Content-Type", "text/html; charset=utf-8")
        # the XSRF token a page's scripts send with cookie-authenticated writes (X-XSRFToken)
        xsrf = self.auth.xsrf_token(self).decode()
        self.write(
            f"<!doctype html><title>iDDS</title><meta name='idds-xsrf' content='{html.escape(xsrf)}'>"
            "<h1>iDDS service</h1>"
            f"<p>Signed in as <b>{html.escape(user.name)}</b>{' (admin)' if user.admin else ''}.</p>"
            f"<p>REST API: <a href='{html.escape(self.api)}requests'>{html.escape(self.api)}</a></p>"
        )

    def login_url(self) -> str:
        """The hub's authorize URL with a fresh state cookie and PKCE (as HubOAuthenticated)."""
        from tornado.httputil import url_concat

        hub = self.auth.hub
        params: dict[str, str] = {}
        verifier = None
        if hub.pkce_enabled:
            verifier, challenge, method = hub.generate_pkce_code_challenge()
            params.update(code_challenge=challenge, code_challenge_method=method)
        params["state"] = hub.set_state_cookie(
            self, next_url=self.request.uri, code_verifier=verifier
        )
        return str(url_concat(hub.login_url, params))


__all__ = ["HubAuthenticator", "hub_service_address", "in_hub_service"]
