"""Jupyter's own identity for the API: the Jupyter user owns the runs.

A request is authenticated by the Jupyter server's identity provider (its
token in ``Authorization: token …`` or ``?token=``, or its login cookie —
then with Jupyter's XSRF check) and authorized by its authorizer, as every
Jupyter handler is (``idds_jupyter_server.handlers``). An idds token is
accepted too, for kernels of a server that has no token: :class:`IddsIdentity`
adds it to the server's identity provider for the API's routes only.
"""

from __future__ import annotations

from typing import Any

import tornado.web
from jupyter_core.utils import ensure_async
from jupyter_server.auth.identity import IdentityProvider, PasswordIdentityProvider
from jupyter_server.auth.identity import User as JupyterUser
from jupyter_server.auth.utils import HTTP_METHOD_TO_AUTH_ACTION

from idds_jupyter.api.base import ApiError
from idds_jupyter.auth import Authenticator, TokenAuthenticator, User, request_token

#: the resource of jupyter_server's authorizer that the API's routes are
RESOURCE = "idds"


class IddsIdentity:
    """The server's identity provider, plus idds tokens (a request Jupyter did not
    take but that bears a valid idds token is that token's user, token-authenticated
    — so no XSRF or origin check, as for Jupyter's own tokens).

    Everything else (cookies, login, token settings) is the server's provider's.
    """

    def __init__(self, inner: Any, fallback: TokenAuthenticator | None) -> None:
        self.inner = inner
        self.fallback = fallback

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)

    async def get_user(self, handler: tornado.web.RequestHandler) -> JupyterUser | None:
        user = await ensure_async(self.inner.get_user(handler))
        # (what is_token_authenticated reads; it cannot be asked before current_user is set)
        token_auth = getattr(handler, "_token_authenticated", False)
        if (
            (user is None or not token_auth)
            and self.fallback is not None
            and request_token(handler, allow_query_token=True)
        ):
            # A token Jupyter did not take (a server without one): an idds token, as
            # the kernels of such a server carry.
            found = await self.fallback.authenticate(handler, allow_query_token=True)
            if found is not None:
                handler._idds_user = found  # type: ignore[attr-defined]
                handler._idds_token = True  # type: ignore[attr-defined]  # see recheck()
                return JupyterUser(username=found.name)
        return user

    def is_token_authenticated(self, handler: tornado.web.RequestHandler) -> bool:
        return bool(
            getattr(handler, "_idds_token", False) or self.inner.is_token_authenticated(handler)
        )

    def should_check_origin(self, handler: tornado.web.RequestHandler) -> bool:
        return not self.is_token_authenticated(handler)


class JupyterAuthenticator(Authenticator):
    """The API's user of a request Jupyter authenticated (``handler.current_user``)."""

    def __init__(
        self,
        identity_provider: Any,
        authorizer: Any,
        fallback: TokenAuthenticator | None,
        admins: set[str] | None = None,
        owner: str | None = None,
    ) -> None:
        """``owner`` names the user of a single-user server, whose default identity
        provider makes up a new anonymous name per token request."""
        self.identity_provider = identity_provider
        self.identity = IddsIdentity(identity_provider, fallback)
        self.owner = owner
        self.authorizer = authorizer
        self.fallback = fallback
        self.admins = admins or set()

    async def authenticate(
        self, handler: tornado.web.RequestHandler, allow_query_token: bool = False
    ) -> User | None:
        """Map the Jupyter user to the API's; refuse (403, as Jupyter's own API) a request
        without one, and one the authorizer does not allow, before its body is read."""
        found = getattr(handler, "_idds_user", None)
        if found is not None:
            return found
        user = handler.current_user
        if user is None:
            raise ApiError(
                403,
                "forbidden: send the Jupyter token ('Authorization: token T') "
                "or log in to the Jupyter server",
            )
        action = HTTP_METHOD_TO_AUTH_ACTION.get(str(handler.request.method).upper(), "write")
        if self.authorizer is not None and not await ensure_async(
            self.authorizer.is_authorized(handler, user, action, RESOURCE)
        ):
            raise tornado.web.HTTPError(
                403, f"user {user.username!r} is not authorized to {action} {RESOURCE}"
            )
        name = str(user.username)
        if self.owner and type(self.identity_provider) in (
            IdentityProvider,
            PasswordIdentityProvider,
        ):
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


__all__ = ["RESOURCE", "IddsIdentity", "JupyterAuthenticator"]
