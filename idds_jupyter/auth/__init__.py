"""Identity of API callers: a small pluggable interface and the bearer-token implementation.

Handlers only ever ask ``self.current_user`` for a :class:`User`. Who decides
is an :class:`Authenticator`: the standalone server (``idds-jupyter serve``)
uses :class:`TokenAuthenticator` (tokens in the store); the Jupyter server
extension plugs in one that trusts Jupyter's own identity.
"""

from __future__ import annotations

import abc
import asyncio
from collections.abc import Callable
from concurrent.futures import Executor
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import tornado.web

if TYPE_CHECKING:
    from sqlalchemy.engine import Engine
    from tornado.web import RequestHandler


@dataclass(frozen=True)
class User:
    """An authenticated caller; ``admin`` sees and controls every user's runs; ``groups``
    (the hub's or the OIDC token's) choose per-group quotas."""

    name: str
    admin: bool = False
    groups: frozenset[str] = frozenset()


class TokenExpired(tornado.web.HTTPError):
    """401 for a token past its expiry; the answer names the expiry (``{"error": ...}``)."""

    def __init__(self, message: str) -> None:
        super().__init__(401, "%s", message)
        self.message = message


class Authenticator(abc.ABC):
    """Decides who sent a request. Must not block the IOLoop (use the executor)."""

    # How often an open stream's credentials are checked again (seconds).
    recheck_s = 5.0

    @abc.abstractmethod
    async def authenticate(
        self, handler: RequestHandler, allow_query_token: bool = False
    ) -> User | None:
        """The caller of ``handler``'s request, or None when it is not authenticated."""

    async def recheck(self, handler: RequestHandler) -> str | None:
        """Why the credentials ``handler`` was opened with no longer hold (revoked,
        expired), or None while they do: a long-lived stream asks every ``recheck_s``."""
        return None


def request_token(handler: RequestHandler, allow_query_token: bool = False) -> str | None:
    """The bearer token of a request: ``Authorization: Bearer T`` (or ``token T``),
    else ``?token=T`` when allowed (websockets, where browsers cannot set headers)."""
    header = handler.request.headers.get("Authorization", "")
    scheme, _, value = header.strip().partition(" ")
    if scheme.lower() in ("bearer", "token") and value.strip():
        return value.strip()
    if allow_query_token:
        q = handler.get_query_argument("token", None)
        if q:
            return q
    return None


class TokenAuthenticator(Authenticator):
    """Bearer tokens issued by ``idds-jupyter token create`` or ``POST auth/tokens``."""

    # A verified token is trusted this long without asking the store again; a
    # revocation (from any process) takes effect within it.
    CACHE_S = 5.0

    def __init__(self, engine: Engine, executor: Executor | None = None) -> None:
        self.engine = engine
        self.executor = executor
        # token digest -> (user, trusted until (monotonic), expires_at (epoch) or None)
        self._verified: dict[str, tuple[User, float, float | None]] = {}

    @property
    def recheck_s(self) -> float:  # type: ignore[override]
        """Open streams re-verify their token as often as a verification is cached."""
        return self.CACHE_S

    def cached(self, token: str) -> User | None:
        """The user of a token verified less than ``CACHE_S`` ago and not expired (no I/O)."""
        import time

        from idds_jupyter.store.tokens import hash_token

        hit = self._verified.get(hash_token(token))
        if (
            hit is not None
            and hit[1] > time.monotonic()
            and (hit[2] is None or hit[2] > time.time())
        ):
            return hit[0]
        return None

    def verify(self, token: str) -> User | None:
        """Blocking lookup (runs in the executor); an expired token raises :class:`TokenExpired`."""
        hit = self.cached(token)
        if hit is not None:
            return hit
        return self._lookup(token)

    def _lookup(self, token: str) -> User | None:
        """Ask the store (no cache); remember a valid token for ``CACHE_S``."""
        import time

        from idds_jupyter.store.tokens import TokenExpiredError, check_token, hash_token

        key = hash_token(token)
        try:
            row = check_token(self.engine, token)
        except TokenExpiredError as exc:
            self._verified.pop(key, None)
            raise TokenExpired(str(exc)) from None
        if row is None:
            self._verified.pop(key, None)
            return None
        user = User(row["user"], bool(row["admin"]))
        if len(self._verified) > 10_000:
            self._verified.clear()
        self._verified[key] = (user, time.monotonic() + self.CACHE_S, row["expires_at"])
        return user

    def still_valid(self, token: str) -> str | None:
        """Blocking: None while ``token`` holds, else why not ('revoked', 'expired')."""
        try:
            user = self._lookup(token)
        except TokenExpired as exc:
            return exc.message
        return None if user is not None else "token revoked"

    async def recheck(self, handler: RequestHandler) -> str | None:
        token = request_token(handler, allow_query_token=True)
        if not token:
            return None
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self.executor, self.still_valid, token)

    def forget(self) -> None:
        """Drop cached verifications (after a revocation in this process)."""
        self._verified.clear()

    async def authenticate(
        self, handler: RequestHandler, allow_query_token: bool = False
    ) -> User | None:
        token = request_token(handler, allow_query_token)
        if not token:
            return None
        user = self.cached(token)  # the common case needs no trip to a thread
        if user is not None:
            return user
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self.executor, self.verify, token)


class StaticAuthenticator(Authenticator):
    """Every request is one user (for embedding behind an outer auth layer, e.g. Jupyter's).

    ``identify`` may map the handler to a user (return None to refuse).
    """

    def __init__(self, user: User, identify: Callable[[Any], User | None] | None = None) -> None:
        self.user = user
        self.identify = identify

    async def authenticate(
        self, handler: RequestHandler, allow_query_token: bool = False
    ) -> User | None:
        return self.identify(handler) if self.identify is not None else self.user


__all__ = [
    "Authenticator",
    "StaticAuthenticator",
    "TokenAuthenticator",
    "TokenExpired",
    "User",
    "request_token",
]
