"""Tables of the REST service's authentication: API bearer tokens.

Defined on the store's one ``metadata`` so that ``metadata.create_all`` and the
Alembic environment see them; created by migration ``0002_tokens``.
"""

from __future__ import annotations

from sqlalchemy import Boolean, Column, Float, Index, String, Table

from idds_jupyter.store.tables import Id, metadata

# One row per issued token. Only the sha256 hex digest of the token is kept:
# tokens are 256-bit random strings, so a fast unsalted hash cannot be brute-forced.
api_tokens = Table(
    "api_tokens",
    metadata,
    Column("id", Id, primary_key=True, autoincrement=True),
    Column("user", String(255), nullable=False),
    Column("name", String(255), nullable=False, default=""),
    Column("token_hash", String(64), nullable=False, unique=True),
    Column("admin", Boolean, nullable=False, default=False),
    Column("created_at", Float, nullable=False),
    Column("last_used_at", Float),
    Column("revoked_at", Float),
    Column("expires_at", Float),  # None: never; past it the token is refused (schema 0006)
)
Index("ix_api_tokens_user", api_tokens.c.user)

__all__ = ["api_tokens"]
