"""Jupyter's own identity for the API: the Jupyter user owns the runs.

A request is authenticated by the Jupyter server's identity provider (its
token in ``Authorization: token …`` or ``?token=``, or its login cookie —
then with the XSRF check browsers need), and authorized by its authorizer.
An idds token is accepted too, for kernels of a server that has no token.
"""

from __future__ import annotations

import inspect
from typing import Any

import tornado.web
from jupyter_server.auth.identity import IdentityProvider, PasswordIdentityProvider

from idds_jupyter.api.base import ApiError
from idds_jupyter.auth import Authenticator, TokenAuthenticator, User, request_token

SAFE_METHODS = ("GET", "HEAD", "OPTIONS")


class JupyterAuthenticator(Authenticator):
    def __init__(self, identity_provider: Any, authorizer: Any, fallback: TokenAuthenticator | None,
                 admins: set[str] | None = None, owner: str | None = None) -> None:
        """``owner`` names the user of a single-user server, whose default identity
        provider makes up a new anonymous name per token request."""
        self.identity_provider = identity_provider
        self.owner = owner
        self.authorizer = authorizer
        self.fallback = fallback
        self.admins = admins or set()

    async def authenticate(self, handler: tornado.web.RequestHandler,
                           allow_query_token: bool = False) -> User | None:
        user = self.identity_provider.get_user(handler)
        if inspect.isawaitable(user):
            user = await user
        token_auth = getattr(handler, "_token_authenticated", False)
        if (user is None or not token_auth) and self.fallback is not None \
                and request_token(handler, allow_query_token=True):
            # A token Jupyter did not take (a server without one): an idds token, as
            # the kernels of such a server carry.
            found = await self.fallback.authenticate(handler, allow_query_token=True)
            if found is not None:
                handler._idds_token = True  # type: ignore[attr-defined]  # see recheck()
                return found
        if user is None:
            # As Jupyter's own API: 403 for a request without valid credentials.
            raise ApiError(403, "forbidden: send the Jupyter token ('Authorization: token T') "
                                "or log in to the Jupyter server")
        if not token_auth and handler.request.method not in SAFE_METHODS:
            # Cookie-authenticated writes come from a browser: require the XSRF token.
            tornado.web.RequestHandler.check_xsrf_cookie(handler)
        resource = "idds"
        action = "read" if handler.request.method in SAFE_METHODS else "write"
        if self.authorizer is not None and not self.authorizer.is_authorized(handler, user, action, resource):
            raise tornado.web.HTTPError(403, f"user {user.username!r} is not authorized to {action} {resource}")
        name = str(user.username)
        if self.owner and type(self.identity_provider) in (IdentityProvider, PasswordIdentityProvider):
            name = self.owner  # single-user server: one owner, whatever the anonymous name
        return User(name, admin=name in self.admins)

    def forget(self) -> None:
        """Drop the idds tokens' cached verifications (after a revocation in this process)."""
        if self.fallback is not None:
            self.fallback.forget()

    @property
    def recheck_s(self) -> float:  # type: ignore[override]
        return self.fallback.recheck_s if self.fallback is not None else 5.0

    async def recheck(self, handler: tornado.web.RequestHandler) -> str | None:
        """A stream opened with an idds token closes when that token is revoked or expires
        (Jupyter's own token lives as long as the server)."""
        if getattr(handler, "_idds_token", False) and self.fallback is not None:
            return await self.fallback.recheck(handler)
        return None
