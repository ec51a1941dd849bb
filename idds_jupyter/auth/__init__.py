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

if TYPE_CHECKING:
    from sqlalchemy.engine import Engine
    from tornado.web import RequestHandler


@dataclass(frozen=True)
class User:
    """An authenticated caller; ``admin`` sees and controls every user's runs."""

    name: str
    admin: bool = False


class Authenticator(abc.ABC):
    """Decides who sent a request. Must not block the IOLoop (use the executor)."""

    @abc.abstractmethod
    async def authenticate(self, handler: RequestHandler, allow_query_token: bool = False) -> User | None:
        """The caller of ``handler``'s request, or None when it is not authenticated."""


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

    def __init__(self, engine: Engine, executor: Executor | None = None) -> None:
        self.engine = engine
        self.executor = executor

    def verify(self, token: str) -> User | None:
        """Blocking lookup (runs in the executor)."""
        from idds_jupyter.store.tokens import verify_token

        row = verify_token(self.engine, token)
        return None if row is None else User(row["user"], bool(row["admin"]))

    async def authenticate(self, handler: RequestHandler, allow_query_token: bool = False) -> User | None:
        token = request_token(handler, allow_query_token)
        if not token:
            return None
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self.executor, self.verify, token)


class StaticAuthenticator(Authenticator):
    """Every request is one user (for embedding behind an outer auth layer, e.g. Jupyter's).

    ``identify`` may map the handler to a user (return None to refuse).
    """

    def __init__(self, user: User, identify: Callable[[Any], User | None] | None = None) -> None:
        self.user = user
        self.identify = identify

    async def authenticate(self, handler: RequestHandler, allow_query_token: bool = False) -> User | None:
        return self.identify(handler) if self.identify is not None else self.user


__all__ = ["Authenticator", "StaticAuthenticator", "TokenAuthenticator", "User", "request_token"]
