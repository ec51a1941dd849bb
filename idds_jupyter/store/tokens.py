"""API bearer tokens: issue, verify, list, revoke.

A token is ``secrets.token_urlsafe(32)`` (256 random bits) shown once to its
holder; the store keeps only its sha256 hex digest. A plain fast hash is
enough here (unlike passwords): the tokens are high-entropy, so nobody can
brute-force a digest back to a token, and lookup by digest is one indexed query.

A token may carry an expiry (``expires_at``, epoch seconds; ``None``: never),
set from a lifetime at creation (``expires_in``, e.g. ``3600`` or ``"1h"``).
Past it the token is refused, and the refusal says that it expired.
"""

from __future__ import annotations

import hashlib
import math
import re
import secrets
from typing import Any

from sqlalchemy import select, update
from sqlalchemy.engine import Engine

from idds_jupyter.store.auth_tables import api_tokens
from idds_jupyter.store.sql import now

# last_used_at is refreshed at most this often, so reads do not turn into writes.
TOUCH_INTERVAL = 60.0

PUBLIC_COLUMNS = (
    api_tokens.c.id,
    api_tokens.c.user,
    api_tokens.c.name,
    api_tokens.c.admin,
    api_tokens.c.created_at,
    api_tokens.c.last_used_at,
    api_tokens.c.revoked_at,
    api_tokens.c.expires_at,
)

# The longest lifetime a token may be given (ten years); no expiry at all is None.
MAX_LIFETIME = 10 * 365 * 86400.0
_UNITS = {"s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0, "w": 604800.0}
_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([smhdw]?)\s*$")


def parse_duration(value: object) -> float:
    """Seconds of a token lifetime: a positive number of seconds, or text like ``90``,
    ``30m``, ``1h``, ``7d``, ``2w``. :class:`ValueError` names what is wrong."""
    if isinstance(value, bool):
        raise ValueError(f"expected seconds or a duration like '1h', got {value!r}")
    if isinstance(value, int | float):
        seconds = float(value)
    elif isinstance(value, str):
        m = _DURATION.match(value)
        if not m:
            raise ValueError(
                f"expected seconds or a duration like '30m', '1h', '7d', got {value[:40]!r}"
            )
        seconds = float(m.group(1)) * _UNITS[m.group(2) or "s"]
    else:
        raise ValueError(f"expected seconds or a duration like '1h', got {type(value).__name__}")
    if not math.isfinite(seconds) or seconds <= 0:
        raise ValueError(f"a lifetime must be more than 0 seconds, got {value!r}")
    if seconds > MAX_LIFETIME:
        raise ValueError(f"a lifetime may be at most {int(MAX_LIFETIME)} seconds (ten years)")
    return seconds


class TokenExpiredError(ValueError):
    """A known, unrevoked token past its ``expires_at``."""

    def __init__(self, expires_at: float) -> None:
        import datetime

        self.expires_at = expires_at
        when = datetime.datetime.fromtimestamp(expires_at, datetime.UTC).strftime(
            "%Y-%m-%d %H:%M:%S UTC"
        )
        super().__init__(f"token expired at {when}: create a new one")


def hash_token(token: str) -> str:
    """The stored form of a token: sha256 hex (tokens are high-entropy; see the module docstring)."""
    return hashlib.sha256(token.encode("utf-8")).hexdigest()


def create_token(
    engine: Engine, user: str, name: str = "", admin: bool = False, expires_in: float | None = None
) -> tuple[dict[str, Any], str]:
    """Issue a token for ``user`` (valid ``expires_in`` seconds; None: until revoked);
    returns (its public row, the plaintext token)."""
    if not user or not isinstance(user, str):
        raise ValueError("a token needs a non-empty user name")
    token = secrets.token_urlsafe(32)
    t = now()
    expires_at = None if expires_in is None else t + parse_duration(expires_in)
    with engine.begin() as conn:
        pk = conn.execute(
            api_tokens.insert().values(
                user=user,
                name=name or "",
                token_hash=hash_token(token),
                admin=bool(admin),
                created_at=t,
                expires_at=expires_at,
            )
        ).inserted_primary_key
        assert pk is not None
        row = conn.execute(select(*PUBLIC_COLUMNS).where(api_tokens.c.id == pk[0])).mappings().one()
    return _public(row), token


def verify_token(engine: Engine, token: str) -> dict[str, Any] | None:
    """The public row of a valid (known, not revoked, not expired) token, or None."""
    try:
        return check_token(engine, token)
    except TokenExpiredError:
        return None


def check_token(engine: Engine, token: str) -> dict[str, Any] | None:
    """As :func:`verify_token`, but an expired token raises :class:`TokenExpiredError`
    (so that its holder is told why), where an unknown or revoked one is None."""
    if not token:
        return None
    h = hash_token(token)
    with engine.begin() as conn:
        row = (
            conn.execute(
                select(*PUBLIC_COLUMNS).where(
                    api_tokens.c.token_hash == h, api_tokens.c.revoked_at.is_(None)
                )
            )
            .mappings()
            .first()
        )
        if row is None:
            return None
        t = now()
        if row["expires_at"] is not None and row["expires_at"] <= t:
            raise TokenExpiredError(float(row["expires_at"]))
        if row["last_used_at"] is None or row["last_used_at"] < t - TOUCH_INTERVAL:
            conn.execute(
                update(api_tokens).where(api_tokens.c.id == row["id"]).values(last_used_at=t)
            )
    return _public(row)


def list_tokens(
    engine: Engine, user: str | None = None, include_revoked: bool = False
) -> list[dict[str, Any]]:
    """Tokens of ``user`` (all users when None), oldest first; never the secret."""
    stmt = select(*PUBLIC_COLUMNS).order_by(api_tokens.c.id)
    if user is not None:
        stmt = stmt.where(api_tokens.c.user == user)
    if not include_revoked:
        stmt = stmt.where(api_tokens.c.revoked_at.is_(None))
    with engine.begin() as conn:
        return [_public(r) for r in conn.execute(stmt).mappings()]


def get_token(engine: Engine, token_id: int) -> dict[str, Any] | None:
    with engine.begin() as conn:
        row = (
            conn.execute(select(*PUBLIC_COLUMNS).where(api_tokens.c.id == token_id))
            .mappings()
            .first()
        )
    return None if row is None else _public(row)


def revoke_token(engine: Engine, token_id: int, user: str | None = None) -> bool:
    """Revoke a token (only ``user``'s when given); True if it was active."""
    cond = [api_tokens.c.id == token_id, api_tokens.c.revoked_at.is_(None)]
    if user is not None:
        cond.append(api_tokens.c.user == user)
    with engine.begin() as conn:
        res = conn.execute(update(api_tokens).where(*cond).values(revoked_at=now()))
    return bool(res.rowcount)


def find_active(
    engine: Engine, user: str, name: str, admin: bool | None = None
) -> list[dict[str, Any]]:
    """Active tokens of ``user`` named ``name`` (optionally with this admin flag)."""
    stmt = select(*PUBLIC_COLUMNS).where(
        api_tokens.c.user == user, api_tokens.c.name == name, api_tokens.c.revoked_at.is_(None)
    )
    if admin is not None:
        stmt = stmt.where(api_tokens.c.admin == admin)
    with engine.begin() as conn:
        return [_public(r) for r in conn.execute(stmt.order_by(api_tokens.c.id)).mappings()]


def _public(row: Any) -> dict[str, Any]:
    d = dict(row)
    d["admin"] = bool(d["admin"])
    return d


__all__ = [
    "MAX_LIFETIME",
    "TokenExpiredError",
    "check_token",
    "create_token",
    "find_active",
    "get_token",
    "hash_token",
    "list_tokens",
    "parse_duration",
    "revoke_token",
    "verify_token",
]
