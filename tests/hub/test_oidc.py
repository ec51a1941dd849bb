"""OIDC access tokens for clients outside the hub: a key pair made here, the issuer's
discovery document and JWKS served on loopback, a real service (``start_server`` with the
authenticators ``idds-jupyter serve`` builds from the config) on SQLite."""

from __future__ import annotations

import argparse
import json
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import jwt
import pytest
import requests
from cryptography.hazmat.primitives.asymmetric import rsa
from jwt.algorithms import RSAAlgorithm

from idds_jupyter.api.server import ServerHandle, start_server
from idds_jupyter.cli import _serve_auth
from idds_jupyter.config import Config

AUDIENCE = "idds"


class Issuer:
    """An OIDC issuer on loopback: /.well-known/openid-configuration and /jwks.json."""

    def __init__(self) -> None:
        self.key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        self.other = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        jwk = json.loads(RSAAlgorithm.to_jwk(self.key.public_key()))
        jwk.update(kid="k1", use="sig", alg="RS256")
        self.jwks = {"keys": [jwk]}
        self.fetches = 0
        issuer = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802 - http.server's name
                if self.path == "/.well-known/openid-configuration":
                    body = {"issuer": issuer.url, "jwks_uri": issuer.url + "/jwks.json"}
                elif self.path == "/jwks.json":
                    issuer.fetches += 1
                    body = issuer.jwks
                else:
                    self.send_error(404)
                    return
                data = json.dumps(body).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, *args: Any) -> None:
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def token(self, key: Any = None, kid: str = "k1", alg: str = "RS256", **claims: Any) -> str:
        now = int(time.time())
        payload = {
            "iss": self.url,
            "aud": AUDIENCE,
            "sub": "u-1",
            "preferred_username": "alice",
            "iat": now,
            "exp": now + 600,
            **claims,
        }
        payload = {k: v for k, v in payload.items() if v is not None}
        return jwt.encode(
            payload, key if key is not None else self.key, algorithm=alg, headers={"kid": kid}
        )


@pytest.fixture(scope="module")
def issuer() -> Iterator[Issuer]:
    i = Issuer()
    yield i
    i.httpd.shutdown()


def serve_oidc(tmp: Path, issuer_url: str, **kw: Any) -> ServerHandle:
    """A service with ``oidc_issuer`` set, authenticating as ``idds-jupyter serve --auth
    token`` does with that config: OIDC, then its own tokens."""
    cfg = Config.load(
        None,
        home=tmp / "home",
        db_url=f"sqlite:///{tmp / 'idds.db'}",
        workers=1,
        oidc_issuer=issuer_url,
        oidc_audience=AUDIENCE,
        **kw,
    )
    args = argparse.Namespace(
        auth="token", ip="127.0.0.1", port=0, port_explicit=True, base_url="/"
    )
    return start_server(cfg, "127.0.0.1", 0, "/", auth=_serve_auth(args, cfg))


@pytest.fixture(scope="module")
def served(issuer: Issuer, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerHandle]:
    handle = serve_oidc(
        tmp_path_factory.mktemp("oidc"),
        issuer.url,
        oidc_admin_groups=("idds-admins",),
        group_quotas=(
            "students:max_jobs_per_submission=3",
            "students:max_submissions_per_minute=2",
            "unlimited:max_jobs_per_submission=0",
        ),
    )
    yield handle
    handle.stop()


def call(
    handle: ServerHandle,
    token: str | None,
    method: str = "GET",
    path: str = "auth/whoami",
    **kw: Any,
) -> requests.Response:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    return requests.request(
        method, handle.url + "idds/api/v1/" + path, headers=headers, timeout=30, **kw
    )


def test_a_valid_access_token_is_the_user_of_its_claim(
    served: ServerHandle, issuer: Issuer
) -> None:
    r = call(served, issuer.token())
    assert r.status_code == 200, r.text
    assert r.json()["user"] == "alice" and r.json()["admin"] is False
    # her runs are hers
    template = {
        "name": "oidc-run",
        "works": [
            {"name": "echo", "function": "idds_jupyter.worker.job:echo", "kwargs_list": [{"x": 1}]}
        ],
    }
    sub = call(served, issuer.token(), "POST", "requests", json={"template": template})
    assert sub.status_code in (200, 201), sub.text
    run = call(served, issuer.token(), "GET", f"requests/{sub.json()['id']}").json()
    assert run["owner"] == "alice"
    # another OIDC user does not see it
    assert (
        call(
            served, issuer.token(preferred_username="bob"), "GET", f"requests/{sub.json()['id']}"
        ).status_code
        == 404
    )


def test_members_of_the_admin_groups_are_admins(served: ServerHandle, issuer: Issuer) -> None:
    r = call(served, issuer.token(preferred_username="carol", groups=["physics", "idds-admins"]))
    assert r.json() == {**r.json(), "user": "carol", "admin": True}
    r = call(served, issuer.token(preferred_username="dave", groups=["physics"]))
    assert r.json()["admin"] is False


@pytest.mark.parametrize(
    "case",
    [
        "expired",
        "wrong-audience",
        "wrong-issuer",
        "unsigned",
        "hs256-with-public-key",
        "another-key",
        "unknown-kid",
        "no-exp",
        "no-username",
        "garbage",
    ],
)
def test_bad_tokens_are_refused(served: ServerHandle, issuer: Issuer, case: str) -> None:
    from cryptography.hazmat.primitives import serialization

    now = int(time.time())
    token = {
        "expired": lambda: issuer.token(iat=now - 3600, exp=now - 600),
        "wrong-audience": lambda: issuer.token(aud="someone-else"),
        "wrong-issuer": lambda: issuer.token(iss="https://evil.example.org"),
        "unsigned": lambda: jwt.encode(
            {"iss": issuer.url, "aud": AUDIENCE, "exp": now + 600, "preferred_username": "alice"},
            None,
            algorithm="none",
        ),
        "hs256-with-public-key": lambda: _hs256_forgery(issuer, serialization, now),
        "another-key": lambda: issuer.token(key=issuer.other),
        "unknown-kid": lambda: issuer.token(key=issuer.other, kid="k9"),
        "no-exp": lambda: issuer.token(exp=None),
        "no-username": lambda: issuer.token(preferred_username=None),
        "garbage": lambda: "eyJhbGciOiJSUzI1NiJ9.not-base64!.x",
    }[case]()
    r = call(served, token)
    assert r.status_code == 401, (case, r.status_code, r.text)
    assert "OIDC" in r.json()["error"], r.text
    if case == "expired":
        assert "expired" in r.json()["error"]
    if case == "wrong-audience":
        assert "audience" in r.json()["error"].lower()


def _hs256_forgery(issuer: Issuer, serialization: Any, now: int) -> str:
    """The algorithm-confusion attack: HS256 keyed with the issuer's public key (PEM)."""
    import base64
    import hashlib
    import hmac

    pem = issuer.key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )

    def b64(data: bytes) -> str:
        return base64.urlsafe_b64encode(data).rstrip(b"=").decode()

    head = b64(json.dumps({"alg": "HS256", "typ": "JWT", "kid": "k1"}).encode())
    body = b64(
        json.dumps(
            {"iss": issuer.url, "aud": AUDIENCE, "exp": now + 600, "preferred_username": "alice"}
        ).encode()
    )
    sig = hmac.new(pem, f"{head}.{body}".encode(), hashlib.sha256).digest()
    return f"{head}.{body}.{b64(sig)}"


def test_the_services_own_tokens_and_no_token(served: ServerHandle) -> None:
    assert call(served, served.token).json()["admin"] is True
    assert call(served, None).status_code == 401
    assert call(served, "not-a-token").status_code == 401


def test_keys_are_cached(served: ServerHandle, issuer: Issuer) -> None:
    call(served, issuer.token())
    before = issuer.fetches
    for _ in range(5):
        assert call(served, issuer.token()).status_code == 200
    assert issuer.fetches == before


def _jobs(n: int) -> dict[str, Any]:
    return {
        "name": f"quota-{n}",
        "works": [
            {
                "name": "echo",
                "function": "idds_jupyter.worker.job:echo",
                "kwargs_list": [{"x": i} for i in range(n)],
            }
        ],
    }


def test_group_quotas_follow_the_tokens_groups(served: ServerHandle, issuer: Issuer) -> None:
    """``group_quotas``: a member of 'students' may submit 3 jobs at once and twice a
    minute; a user of no such group has the defaults; a member of 'students' and
    'unlimited' gets the most generous (none)."""
    dana = issuer.token(preferred_username="dana", groups=["students"])
    over = call(served, dana, "POST", "requests", json={"template": _jobs(4)})
    assert over.status_code == 413, over.text
    assert "max_jobs_per_submission for group 'students'" in over.text, over.text
    for _ in range(2):
        ok = call(served, dana, "POST", "requests", json={"template": _jobs(3)})
        assert ok.status_code in (200, 201), ok.text
    third = call(served, dana, "POST", "requests", json={"template": _jobs(1)})
    assert third.status_code == 429, third.text
    assert "max_submissions_per_minute for group 'students'" in third.text, third.text
    erin = issuer.token(preferred_username="erin")
    assert call(served, erin, "POST", "requests", json={"template": _jobs(4)}).status_code in (
        200,
        201,
    )
    fay = issuer.token(preferred_username="fay", groups=["/students", "unlimited"])
    got = call(served, fay, "POST", "requests", json={"template": _jobs(4)})
    assert got.status_code in (200, 201), got.text


@pytest.mark.parametrize(
    ("entry", "says"),
    [
        ("students", "is not 'GROUP:SETTING=N'"),
        ("students:max_jobs=3", "'max_jobs' is not one of"),
        ("students:max_jobs_per_work=lots", "'lots' is not a whole number"),
        ("students:max_jobs_per_work=-1", "must be 0 (none) or more"),
    ],
)
def test_bad_group_quotas_are_refused_naming_the_entry(entry: str, says: str) -> None:
    with pytest.raises(ValueError, match="group_quotas entry") as err:
        Config.load(None, group_quotas=(entry,))
    assert says in str(err.value) and entry in str(err.value)


def test_claim_shapes(served: ServerHandle, issuer: Issuer) -> None:
    """A user name must be a non-empty string; groups may be one string or a list, with
    Keycloak's leading '/' ("/idds-admins" is the group idds-admins)."""
    for bad in (123, "", ["alice"]):
        r = call(served, issuer.token(preferred_username=bad))
        assert r.status_code == 401 and "OIDC" in r.json()["error"], (bad, r.text)
    one = call(served, issuer.token(preferred_username="gus", groups="idds-admins"))
    assert one.status_code == 200 and one.json()["admin"] is True, one.text
    slash = call(served, issuer.token(preferred_username="hal", groups=["/idds-admins"]))
    assert slash.status_code == 200 and slash.json()["admin"] is True, slash.text


def test_clock_skew_within_the_leeway_is_allowed(served: ServerHandle, issuer: Issuer) -> None:
    """The issuer's clock and ours differ a little: 30 s of leeway, not more."""
    now = int(time.time())
    assert call(served, issuer.token(iat=now - 700, exp=now - 10)).status_code == 200
    late = call(served, issuer.token(iat=now - 700, exp=now - 90))
    assert late.status_code == 401 and "expired" in late.json()["error"], late.text


def test_an_unreachable_issuer_is_a_503(tmp_path: Path) -> None:
    """The issuer's keys cannot be fetched: 503 saying so (retry later), not a 401 that
    would tell a valid user their token is bad, nor a 500."""
    down = Issuer()
    token = down.token()
    down.httpd.shutdown()
    down.httpd.server_close()
    handle = serve_oidc(tmp_path, down.url)
    try:
        r = call(handle, token)
        assert r.status_code == 503, r.text
        assert "OIDC issuer's keys cannot be fetched" in r.json()["error"], r.text
        assert call(handle, handle.token).status_code == 200  # its own tokens still work
    finally:
        handle.stop()


def test_an_oidc_streams_closes_when_its_token_expires(
    served: ServerHandle, issuer: Issuer
) -> None:
    """A stream opened with an access token is closed (1008) once the token's ``exp`` has
    passed (checked every few seconds), not kept open on a token the issuer no longer
    vouches for."""
    import asyncio

    import tornado.websocket
    from tornado.httpclient import HTTPRequest

    exp = int(time.time()) + 3
    token = issuer.token(preferred_username="ivy", exp=exp)
    url = served.url.replace("http://", "ws://") + "idds/api/v1/stream"

    async def watch() -> tuple[float, int | None, str | None]:
        conn = await tornado.websocket.websocket_connect(
            HTTPRequest(url, headers={"Authorization": f"Bearer {token}"})
        )
        conn.write_message(json.dumps({"subscribe": "*"}))
        while True:
            msg = await asyncio.wait_for(conn.read_message(), 30)
            if msg is None:
                return time.time(), conn.close_code, conn.close_reason

    closed_at, code, reason = asyncio.run(watch())
    assert code == 1008 and reason == "OIDC token expired", (code, reason)
    assert exp <= closed_at <= exp + 15, closed_at - exp


def test_an_issuer_without_an_audience_is_refused(tmp_path: Path) -> None:
    """Without an audience any token of the issuer, minted for any other service, would do."""
    from idds_jupyter.auth.oidc import OIDCAuthenticator

    cfg = Config.load(None, home=tmp_path / "home", oidc_issuer="https://issuer.example")
    with pytest.raises(ValueError, match="OIDC needs oidc_issuer and oidc_audience"):
        OIDCAuthenticator.from_config(cfg)
    with pytest.raises(ValueError, match="OIDC needs oidc_issuer and oidc_audience"):
        OIDCAuthenticator("", AUDIENCE)
