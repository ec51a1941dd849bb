"""OIDC access tokens (JWT) for clients outside the hub, as iDDS accepts them.

A request's bearer token that is a JWT (``header.payload.signature``) is
validated against the issuer's JWKS (``PyJWKClient``; the URL from the
issuer's ``.well-known/openid-configuration`` unless ``oidc_jwks_url`` names
it): the signature (asymmetric algorithms only — never ``none`` or a shared
secret), the issuer, the audience and the expiry (``exp`` required). The user
is the ``oidc_username_claim`` (default ``preferred_username``); members of the
``oidc_admin_groups`` (from ``oidc_groups_claim``) are admins. Any other token
goes to the next authenticator (the service's own tokens, the hub's).

Keys are fetched in the API's executor, never on the IOLoop, and cached
(``PyJWKClient``'s cache; an unknown ``kid`` refetches the set once).
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from concurrent.futures import Executor
from typing import TYPE_CHECKING, Any

from idds_jupyter.api.base import ApiError
from idds_jupyter.auth import Authenticator, User, request_token

if TYPE_CHECKING:
    from tornado.web import RequestHandler

    from idds_jupyter.config import Config

log = logging.getLogger("idds_jupyter.auth.oidc")

#: asymmetric algorithms only: a token signed with a shared secret or not at all is refused
ALGORITHMS = (
    "RS256",
    "RS384",
    "RS512",
    "ES256",
    "ES384",
    "ES512",
    "PS256",
    "PS384",
    "PS512",
    "EdDSA",
)


def looks_like_jwt(token: str) -> bool:
    return token.count(".") == 2 and token.startswith("ey")


class OIDCAuthenticator(Authenticator):
    """JWT access tokens of one issuer; everything else to ``fallback``."""

    def __init__(
        self,
        issuer: str,
        audience: str,
        *,
        jwks_url: str = "",
        username_claim: str = "preferred_username",
        groups_claim: str = "groups",
        admin_groups: set[str] | frozenset[str] = frozenset(),
        fallback: Authenticator | None = None,
        executor: Executor | None = None,
        leeway: float = 30.0,
        cache_s: float = 300.0,
    ) -> None:
        if not issuer or not audience:
            raise ValueError("OIDC needs oidc_issuer and oidc_audience")
        self.issuer = issuer
        self.audience = audience
        self.jwks_url = jwks_url
        self.username_claim = username_claim
        self.groups_claim = groups_claim
        self.admin_groups = set(admin_groups)
        self.fallback = fallback
        self.executor = executor
        self.leeway = leeway
        self.cache_s = cache_s
        self._jwks: Any = None

    @classmethod
    def from_config(
        cls, cfg: Config, fallback: Authenticator | None = None, executor: Executor | None = None
    ) -> OIDCAuthenticator:
        return cls(
            cfg.oidc_issuer,
            cfg.oidc_audience,
            jwks_url=cfg.oidc_jwks_url,
            username_claim=cfg.oidc_username_claim,
            groups_claim=cfg.oidc_groups_claim,
            admin_groups=set(cfg.oidc_admin_groups),
            fallback=fallback,
            executor=executor,
        )

    # What the host app asks of its authenticator (a hub fallback's OAuth pages, streams).
    @property
    def recheck_s(self) -> float:  # type: ignore[override]
        return float(getattr(self.fallback, "recheck_s", 5.0))

    def __getattr__(self, name: str) -> Any:
        if name in ("app_settings", "extra_handlers") and self.fallback is not None:
            return getattr(self.fallback, name)
        raise AttributeError(name)

    # ------------------------------------------------------------------ keys
    def _client(self) -> Any:
        """The JWKS client (blocking the first time: discovery)."""
        if self._jwks is None:
            import urllib.request

            from jwt import PyJWKClient

            url = self.jwks_url
            if not url:
                well_known = self.issuer.rstrip("/") + "/.well-known/openid-configuration"
                with urllib.request.urlopen(well_known, timeout=10) as resp:  # noqa: S310 - configured https URL
                    url = json.load(resp)["jwks_uri"]
            self._jwks = PyJWKClient(url, cache_keys=True, lifespan=int(self.cache_s), timeout=10)
        return self._jwks

    def verify(self, token: str) -> User:
        """Blocking: the user of a valid JWT, else :class:`ApiError` 401 naming why."""
        import jwt

        try:
            header = jwt.get_unverified_header(token)
        except jwt.InvalidTokenError as exc:
            raise ApiError(401, f"invalid OIDC token: {exc}") from None
        alg = header.get("alg")
        if alg not in ALGORITHMS:
            raise ApiError(
                401,
                f"invalid OIDC token: algorithm {alg!r} is not accepted "
                f"(signed tokens only: {', '.join(ALGORITHMS[:3])}, ...)",
            )
        try:
            key = self._client().get_signing_key_from_jwt(token)
            claims = jwt.decode(
                token,
                key.key,
                algorithms=[alg],
                audience=self.audience,
                issuer=self.issuer,
                leeway=self.leeway,
                options={"require": ["exp", "iss", "aud"]},
            )
        except jwt.ExpiredSignatureError:
            raise ApiError(401, "invalid OIDC token: expired") from None
        except jwt.PyJWKClientError as exc:
            raise ApiError(
                401, f"invalid OIDC token: no key of the issuer verifies it ({exc})"
            ) from None
        except jwt.InvalidTokenError as exc:
            raise ApiError(401, f"invalid OIDC token: {exc}") from None
        except OSError as exc:
            log.warning("OIDC: the issuer's keys could not be fetched: %s", exc)
            raise ApiError(503, "the OIDC issuer's keys cannot be fetched; retry") from None
        name = claims.get(self.username_claim)
        if not isinstance(name, str) or not name:
            raise ApiError(401, f"invalid OIDC token: no {self.username_claim!r} claim")
        groups = claims.get(self.groups_claim) or []
        if isinstance(groups, str):
            groups = [groups]
        names = frozenset(str(g).strip("/") for g in groups)
        return User(name, admin=bool(self.admin_groups & names), groups=names)

    async def authenticate(
        self, handler: RequestHandler, allow_query_token: bool = False
    ) -> User | None:
        token = request_token(handler, allow_query_token)
        if token and looks_like_jwt(token):
            loop = asyncio.get_running_loop()
            user = await loop.run_in_executor(self.executor, self.verify, token)
            handler._idds_oidc_exp = _exp(token)  # type: ignore[attr-defined]  # see recheck()
            return user
        if self.fallback is not None:
            return await self.fallback.authenticate(handler, allow_query_token)
        return None

    async def recheck(self, handler: RequestHandler) -> str | None:
        exp = getattr(handler, "_idds_oidc_exp", None)
        if exp is not None:
            return "OIDC token expired" if exp < time.time() else None
        if self.fallback is not None:
            return await self.fallback.recheck(handler)
        return None


def _exp(token: str) -> float | None:
    import jwt

    try:
        exp = jwt.decode(token, options={"verify_signature": False}).get("exp")
    except jwt.InvalidTokenError:
        return None
    return float(exp) if isinstance(exp, int | float) else None


__all__ = ["ALGORITHMS", "OIDCAuthenticator", "looks_like_jwt"]
