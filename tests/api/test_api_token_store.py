"""The API token store (store/tokens.py) on SQLite and PostgreSQL: what a token grants and
for how long. Written for the mutants ``make mutate`` left alive in it: a token made
without ``admin`` is no admin's, expiry is counted forward from creation, a revoked or
expired token is refused, revocation is the owner's only, and the secret is never stored
or listed."""

from __future__ import annotations

import re
import time
from collections.abc import Iterator
from typing import Any

import pytest
from sqlalchemy import select

from idds_jupyter.store import tokens
from idds_jupyter.store.auth_tables import api_tokens
from idds_jupyter.store.engine import make_engine
from idds_jupyter.store.tables import metadata


@pytest.fixture
def engine(db_url: str) -> Iterator[Any]:
    eng = make_engine(db_url)
    metadata.create_all(eng)
    try:
        yield eng
    finally:
        eng.dispose()


def test_a_token_grants_what_it_was_made_with(engine: Any) -> None:
    row, secret = tokens.create_token(engine, "alice")
    assert row["user"] == "alice" and row["admin"] is False and row["name"] == ""
    assert row["expires_at"] is None and row["revoked_at"] is None
    assert len(secret) >= 43  # 32 random bytes, url-safe base64
    assert row["last_used_at"] is None
    seen = tokens.verify_token(engine, secret)
    assert seen is not None and (seen["id"], seen["user"], seen["admin"]) == (
        row["id"],
        "alice",
        False,
    )
    used = tokens.get_token(engine, row["id"])
    assert used is not None and used["last_used_at"] == pytest.approx(time.time(), abs=5)
    adm, adm_secret = tokens.create_token(engine, "root", name="ops", admin=True)
    assert adm["admin"] is True and adm["name"] == "ops"
    assert tokens.verify_token(engine, adm_secret)["admin"] is True
    assert secret != adm_secret
    # the store holds the hash only; no listing or lookup gives the secret back
    with engine.begin() as conn:
        stored = conn.execute(select(api_tokens.c.token_hash)).scalars().all()
    assert tokens.hash_token(secret) in stored and secret not in stored
    for listed in (tokens.list_tokens(engine), [tokens.get_token(engine, row["id"])]):
        assert secret not in repr(listed) and tokens.hash_token(secret) not in repr(listed)


def test_a_token_needs_a_user(engine: Any) -> None:
    for bad in ("", None, 7):
        with pytest.raises(ValueError, match="non-empty user name"):
            tokens.create_token(engine, bad)  # type: ignore[arg-type]
    assert tokens.list_tokens(engine) == []


def test_unknown_and_empty_tokens_are_refused(engine: Any) -> None:
    tokens.create_token(engine, "alice")
    assert tokens.verify_token(engine, "") is None
    assert tokens.check_token(engine, "not-a-token") is None


def test_a_token_expires_after_its_lifetime(engine: Any) -> None:
    t0 = time.time()
    row, secret = tokens.create_token(engine, "alice", expires_in="1h")
    assert row["expires_at"] == pytest.approx(t0 + 3600, abs=5)
    assert tokens.verify_token(engine, secret) is not None
    short, short_secret = tokens.create_token(engine, "alice", expires_in=0.5)
    assert short["expires_at"] == pytest.approx(t0 + 0.5, abs=5)
    time.sleep(0.7)
    assert tokens.verify_token(engine, short_secret) is None
    with pytest.raises(tokens.TokenExpiredError, match="token expired at .* UTC"):
        tokens.check_token(engine, short_secret)
    assert tokens.verify_token(engine, secret) is not None  # the long one still holds
    for bad in (0, -5, "soon", True, 11 * 365 * 86400):
        with pytest.raises(ValueError):
            tokens.create_token(engine, "alice", expires_in=bad)


def test_revocation_is_the_owners_and_final(engine: Any) -> None:
    a, a_secret = tokens.create_token(engine, "alice", name="laptop")
    b, _ = tokens.create_token(engine, "bob", name="laptop")
    assert tokens.revoke_token(engine, a["id"], user="bob") is False  # not bob's
    assert tokens.verify_token(engine, a_secret) is not None
    assert tokens.revoke_token(engine, a["id"], user="alice") is True
    assert tokens.revoke_token(engine, a["id"], user="alice") is False  # already revoked
    assert tokens.verify_token(engine, a_secret) is None
    assert tokens.check_token(engine, a_secret) is None
    # listings: the user's own, revoked ones only when asked
    assert [t["id"] for t in tokens.list_tokens(engine, "alice")] == []
    revoked = tokens.list_tokens(engine, "alice", include_revoked=True)
    assert [t["id"] for t in revoked] == [a["id"]] and revoked[0]["revoked_at"] is not None
    assert [t["id"] for t in tokens.list_tokens(engine)] == [b["id"]]
    assert [t["user"] for t in tokens.list_tokens(engine, "bob")] == ["bob"]
    # an admin (no user given) revokes anyone's
    assert tokens.revoke_token(engine, b["id"]) is True
    assert tokens.list_tokens(engine) == []


def test_find_active_by_name_and_admin_flag(engine: Any) -> None:
    plain, _ = tokens.create_token(engine, "svc", name="hub")
    adm, _ = tokens.create_token(engine, "svc", name="hub", admin=True)
    tokens.create_token(engine, "svc", name="other")
    assert [t["id"] for t in tokens.find_active(engine, "svc", "hub")] == [plain["id"], adm["id"]]
    assert [t["id"] for t in tokens.find_active(engine, "svc", "hub", admin=True)] == [adm["id"]]
    assert [t["id"] for t in tokens.find_active(engine, "svc", "hub", admin=False)] == [plain["id"]]
    tokens.revoke_token(engine, adm["id"])
    assert [t["id"] for t in tokens.find_active(engine, "svc", "hub")] == [plain["id"]]


def test_lifetimes_read_as_documented(engine: Any) -> None:
    assert tokens.parse_duration("90") == 90.0  # no unit: seconds
    assert tokens.parse_duration(" 1.5 h ") == 5400.0
    assert tokens.parse_duration("2w") == 2 * 604800.0
    assert tokens.parse_duration(tokens.MAX_LIFETIME) == tokens.MAX_LIFETIME  # at the limit
    for bad, says in (
        (True, "expected seconds or a duration like '1h', got True"),
        ("soon", "got 'soon'"),
        ([1], "got list"),
        (0, "more than 0 seconds, got 0"),
        (float("nan"), "more than 0 seconds"),
        (tokens.MAX_LIFETIME + 1, "at most 315360000 seconds (ten years)"),
    ):
        with pytest.raises(ValueError, match=re.escape(says)):
            tokens.parse_duration(bad)
    err = tokens.TokenExpiredError(0.0)
    assert err.expires_at == 0.0
    assert str(err) == "token expired at 1970-01-01 00:00:00 UTC: create a new one"


def test_lookups_stay_within_a_user(engine: Any) -> None:
    mine, _ = tokens.create_token(engine, "svc", name="hub")
    tokens.create_token(engine, "eve", name="hub")
    assert [t["id"] for t in tokens.find_active(engine, "svc", "hub")] == [mine["id"]]
    assert tokens.get_token(engine, mine["id"] + 1000) is None
