"""The hub authenticator statement by statement, against a real JupyterHub.

The hub (examples/jupyterhub_config.py, its iDDS service entry external) runs as
a process; the iDDS service runs in this process (``start_server`` with
:class:`~idds_jupyter.auth.hub.HubAuthenticator`), so what it decides is the code
under test here, mutants included (``make mutate``). Users: alice (group
``physics``), bob, carol (group ``idds-admins``) and the hub admin ``admin``.
"""

from __future__ import annotations

import asyncio
import re
import stat
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests
from hub_helpers import Hub, echo_template, wait_for

from idds_jupyter.api.server import ServerHandle, start_server
from idds_jupyter.auth import Authenticator, User
from idds_jupyter.auth.hub import (
    HubAuthenticator,
    cookie_secret,
    hub_service_address,
    in_hub_service,
)
from idds_jupyter.config import Config

#: the hub's answers (admin flags, tokens) are cached this long by the service under test
CACHE_S = 4.0

EXTRA = """
c.Authenticator.allowed_users = {"alice", "bob", "carol"}
c.JupyterHub.load_groups = {"idds-admins": {"users": ["carol"]}, "physics": {"users": ["alice"]}}
"""


class Live:
    def __init__(self, hub: Hub, handle: ServerHandle, auth: HubAuthenticator) -> None:
        self.hub = hub
        self.handle = handle
        self.auth = auth
        self.api = hub.service_url + "idds/api/v1/"

    def get(self, path: str, token: str | None = None, scheme: str = "token") -> requests.Response:
        headers = {"Authorization": f"{scheme} {token}"} if token else {}
        return requests.get(self.api + path, headers=headers, timeout=30)

    def post(self, path: str, token: str, body: Any) -> requests.Response:
        headers = {"Authorization": f"token {token}"}
        return requests.post(self.api + path, json=body, headers=headers, timeout=30)


@pytest.fixture(scope="module")
def live(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Live]:
    state = tmp_path_factory.mktemp("hubauth")
    made: list[HubAuthenticator] = []
    handles: list[ServerHandle] = []

    def make(fallback: Authenticator) -> HubAuthenticator:
        made.append(HubAuthenticator(fallback, admin_groups={"idds-admins"}, cache_max_age=CACHE_S))
        return made[0]

    with pytest.MonkeyPatch.context() as mp:

        def start(variables: dict[str, str]) -> None:
            """The service in this process, with the variables a hub gives it."""
            for k, v in variables.items():
                mp.setenv(k, v)
            mp.delenv("IDDS_COOKIE_SECRET", raising=False)
            cfg = Config.load(
                None,
                home=state / "idds",
                db_url=f"sqlite:///{state / 'idds.db'}",
                group_quotas=("physics:max_jobs_per_submission=2",),
            )
            handles.append(
                start_server(
                    cfg,
                    "127.0.0.1",
                    int(variables["JUPYTERHUB_SERVICE_URL"].rsplit(":", 1)[1]),
                    variables["JUPYTERHUB_SERVICE_PREFIX"],
                    agents=False,
                    auth=make,
                    port_retries=0,
                )
            )

        hub = Hub(state, external=True, start_service=start, extra_config=EXTRA)
        try:
            yield Live(hub, handles[0], made[0])
        finally:
            for handle in handles:
                handle.stop()
            hub.stop()


# ---------------------------------------------------------------------- where the hub is
def test_a_hub_service_is_known_by_both_variables(monkeypatch: pytest.MonkeyPatch) -> None:
    both = {"JUPYTERHUB_API_TOKEN": "t", "JUPYTERHUB_SERVICE_PREFIX": "/services/idds/"}
    assert in_hub_service(both)
    assert not in_hub_service({"JUPYTERHUB_API_TOKEN": "t"})
    assert not in_hub_service({"JUPYTERHUB_SERVICE_PREFIX": "/services/idds/"})
    assert not in_hub_service({**both, "JUPYTERHUB_API_TOKEN": ""})
    assert hub_service_address({"JUPYTERHUB_API_TOKEN": "t"}) is None
    assert hub_service_address(both) == ("127.0.0.1", 0, "/services/idds/")
    at = {**both, "JUPYTERHUB_SERVICE_URL": "http://10.1.2.3:8123"}
    assert hub_service_address(at) == ("10.1.2.3", 8123, "/services/idds/")
    assert hub_service_address({**both, "JUPYTERHUB_SERVICE_URL": "https://idds.example"}) == (
        "idds.example",
        443,
        "/services/idds/",
    )
    assert hub_service_address({**both, "JUPYTERHUB_SERVICE_URL": "http://idds.example"}) == (
        "idds.example",
        80,
        "/services/idds/",
    )
    assert hub_service_address({**both, "JUPYTERHUB_SERVICE_URL": "http://:8124"}) == (
        "127.0.0.1",
        8124,
        "/services/idds/",
    )
    # without an argument: this process's environment
    for k in (*both, "JUPYTERHUB_SERVICE_URL"):
        monkeypatch.delenv(k, raising=False)
    assert not in_hub_service() and hub_service_address() is None
    for k, v in at.items():
        monkeypatch.setenv(k, v)
    assert in_hub_service() and hub_service_address() == ("10.1.2.3", 8123, "/services/idds/")


def test_the_cookie_secret_is_kept_private_and_survives_a_restart(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("IDDS_COOKIE_SECRET", raising=False)
    home = tmp_path / "state" / "home"  # made, parents too
    first = cookie_secret(home)
    assert len(first) == 32
    path = home / "hub-cookie-secret"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert path.read_text() == first.hex() + "\n"
    assert cookie_secret(home) == first  # a restarted service keeps its browsers signed in
    path.write_text("not hex\n")  # a damaged file is replaced, not fatal
    fresh = cookie_secret(home)
    assert len(fresh) == 32 and fresh != first and cookie_secret(home) == fresh
    one, two = cookie_secret(None), cookie_secret(None)
    assert len(one) == 32 and one != two
    monkeypatch.setenv("IDDS_COOKIE_SECRET", "from-the-environment")
    assert cookie_secret(home) == b"from-the-environment"


# ---------------------------------------------------------------------- tokens
def test_the_services_own_tokens_are_asked_first_and_admin_groups_count(live: Live) -> None:
    """The first test of the module's service: mutmut credits the authenticator's
    construction to it alone, so it checks what the constructor sets up."""
    r = live.get("auth/whoami", live.handle.token)  # the service's admin token (the fallback)
    assert r.status_code == 200 and r.json() == {"user": live.handle.user, "admin": True}
    carol = live.hub.user_token("carol", scopes=["access:services!service=idds"])
    assert live.get("auth/whoami", carol).json() == {"user": "carol", "admin": True}
    assert live.get("auth/whoami", "no-such-token").status_code == 401
    # the OAuth routes and the cookie secret, kept in the service's home
    s, page = _signed_in(live, "bob")
    assert "Signed in as <b>bob</b>." in page.text
    assert "href='/services/idds/idds/api/v1/requests'" in page.text
    assert s.get(live.api + "auth/whoami", timeout=30).json() == {"user": "bob", "admin": False}
    kept = Path(live.handle.ctx.config.home) / "hub-cookie-secret"
    assert stat.S_IMODE(kept.stat().st_mode) == 0o600


def test_hub_tokens_name_their_user_in_either_scheme(live: Live) -> None:
    alice = live.hub.user_token("alice")
    for scheme in ("token", "Bearer"):
        r = live.get("auth/whoami", alice, scheme)
        assert r.status_code == 200, r.text
        assert r.json() == {"user": "alice", "admin": False}
    assert live.get("auth/whoami", "no-such-token").status_code == 401
    assert live.get("auth/whoami").status_code == 401


def test_a_token_without_the_service_scope_is_refused_by_name(live: Live) -> None:
    narrow = live.hub.user_token("bob", scopes=["read:users:name!user=bob"])
    r = live.get("auth/whoami", narrow)
    assert r.status_code == 403, r.text
    assert "'bob'" in r.text and "access:services!service=idds" in r.text


def test_admins_are_the_hubs_admins_and_the_admin_groups_members(live: Live) -> None:
    who = {n: live.get("auth/whoami", live.hub.user_token(n)).json() for n in ("admin", "carol")}
    assert who == {
        "admin": {"user": "admin", "admin": True},
        "carol": {"user": "carol", "admin": True},  # a member of idds-admins
    }
    # a narrow token shows the service neither the admin flag nor the groups: it asks the hub
    narrow = live.hub.user_token("carol", scopes=["access:services!service=idds"])
    assert live.get("auth/whoami", narrow).json() == {"user": "carol", "admin": True}
    narrow = live.hub.user_token("admin", scopes=["access:services!service=idds"])
    assert live.get("auth/whoami", narrow).json() == {"user": "admin", "admin": True}


def test_a_users_groups_come_from_the_hub(live: Live) -> None:
    """group_quotas (physics: 2 jobs per submission) apply to alice whatever her token shows."""
    three = echo_template("three", 3)
    narrow = live.hub.user_token("alice", scopes=["access:services!service=idds"])
    for token in (live.hub.user_token("alice"), narrow):
        r = live.post("requests", token, {"template": three})
        assert r.status_code == 413, r.text
        assert "max_jobs_per_submission for group 'physics'" in r.text
    r = live.post("requests", live.hub.user_token("bob"), {"template": three})
    assert r.status_code in (200, 201), r.text


def test_a_service_token_is_a_service_never_an_admin(live: Live) -> None:
    r = live.get("auth/whoami", live.hub.driver_token)  # a hub service with admin scopes
    assert r.status_code == 200, r.text
    assert r.json() == {"user": "service:hub-driver", "admin": False}


def test_what_a_token_model_leaves_out_is_asked_of_the_hub(live: Live) -> None:
    """A hub's token model may lack the admin flag or the groups (by the token's scopes,
    or an older hub): the service then asks ``GET users/NAME`` with its own token. What
    the model says is kept; the hub's answer adds to it."""
    auth = live.auth

    def user(model: dict[str, Any]) -> tuple[str, bool, frozenset[str]]:
        auth._admins.clear()
        u = asyncio.run(auth._user({"kind": "user", **model}))
        return u.name, u.admin, u.groups

    assert user({"name": "carol"}) == ("carol", True, frozenset({"idds-admins"}))
    assert user({"name": "admin"})[1] is True  # the hub's admin
    assert user({"name": "alice", "admin": False}) == ("alice", False, frozenset({"physics"}))
    # the model's own groups and flag count, with the hub's
    assert user({"name": "carol", "admin": False, "groups": ["x"]}) == (
        "carol",
        True,
        frozenset({"x", "idds-admins"}),
    )
    assert user({"name": "ghost", "admin": True, "groups": []})[1] is True
    assert user({"name": "ghost", "admin": False, "groups": ["idds-admins"]})[1] is True
    assert user({"name": "ghost"}) == ("ghost", False, frozenset())  # the hub knows no ghost
    assert asyncio.run(auth._user({"name": "hub-driver", "kind": "service", "admin": True})) == (
        User("service:hub-driver", admin=False)
    )


def test_the_hubs_answers_are_cached_for_their_age_then_asked_again(live: Live) -> None:
    auth = live.auth
    auth._admins.clear()
    bare = {"name": "bob", "kind": "user"}
    first = time.monotonic()
    assert asyncio.run(auth._user(bare)).admin is False
    grant = {"users": ["bob"]}
    promoted = live.hub.api("POST", "groups/idds-admins/users", json=grant)
    assert promoted.ok, promoted.text
    try:
        if time.monotonic() - first < CACHE_S / 2:  # asked again well within its age
            assert asyncio.run(auth._user(bare)).admin is False
        seen = wait_for(
            lambda: asyncio.run(auth._user(bare)).admin and time.monotonic(),
            CACHE_S * 4,
            "bob's membership of idds-admins to be seen",
            interval=0.1,
        )
        assert seen - first >= CACHE_S * 0.9  # not before the first answer's age
    finally:
        live.hub.api("DELETE", "groups/idds-admins/users", json=grant)


def test_streams_hold_while_their_tokens_do_and_end_when_revoked(live: Live) -> None:
    """Hub tokens in the header and in ``?token=`` (browsers' websockets), and one of the
    service's own tokens: open past a recheck, then closed, each saying why."""
    import json

    from tornado.httpclient import HTTPRequest
    from tornado.websocket import WebSocketClientConnection, websocket_connect

    def hub_token() -> tuple[str, str]:
        made = live.hub.api(
            "POST", "users/alice/tokens", json={"note": "stream", "expires_in": 3600}
        ).json()
        return made["token"], made["id"]

    (header_token, header_id), (query_token, query_id) = hub_token(), hub_token()
    own = live.post("auth/tokens", header_token, {"name": "own-stream"}).json()
    url = live.api.replace("http", "ws", 1) + "stream"

    async def opened(req: HTTPRequest | str) -> WebSocketClientConnection:
        ws = await websocket_connect(req)
        ws.write_message(json.dumps({"subscribe": "*"}))
        assert json.loads(str(await ws.read_message()))["type"] == "subscribed"
        return ws

    async def main() -> list[str | None]:
        streams = [
            await opened(HTTPRequest(url, headers={"Authorization": f"token {header_token}"})),
            await opened(f"{url}?token={query_token}"),
            await opened(f"{url}?token={own['token']}"),
        ]
        await asyncio.sleep(live.auth.recheck_s + 1.5)  # rechecked once at least
        assert [ws.close_code for ws in streams] == [None, None, None]
        for tid in (header_id, query_id):
            assert live.hub.api("DELETE", f"users/alice/tokens/{tid}").status_code == 204
        revoked = requests.delete(
            live.api + f"auth/tokens/{own['id']}",
            headers={"Authorization": f"token {live.handle.token}"},
            timeout=30,
        )
        assert revoked.ok, revoked.text
        for ws in streams:
            while await ws.read_message() is not None:
                pass
        return [ws.close_reason for ws in streams]

    reasons = asyncio.run(asyncio.wait_for(main(), 60))
    assert reasons == ["hub token revoked", "hub token revoked", "token revoked"]


# ---------------------------------------------------------------------- browsers
def _signed_in(live: Live, name: str) -> tuple[requests.Session, requests.Response]:
    s = live.hub.login(name)
    page = s.get(live.hub.service_url, timeout=60)  # -> hub authorize -> callback -> page
    assert page.status_code == 200, page.text[:500]
    return s, page


def test_a_browser_signs_in_through_the_hub_and_writes_with_the_xsrf_token(live: Live) -> None:
    anon = requests.get(live.hub.service_url, timeout=30, allow_redirects=False)
    assert anon.status_code == 302
    where = anon.headers["Location"]
    assert "/hub/api/oauth2/authorize" in where or "/hub/login" in where
    # the page without its trailing slash, and a token in its query, are no sign-in either
    bare = live.hub.service_url.rstrip("/")
    assert requests.get(bare, timeout=30, allow_redirects=False).status_code == 302
    alice_token = live.hub.user_token("alice")
    with_query = requests.get(
        live.hub.service_url + "?token=" + alice_token, timeout=30, allow_redirects=False
    )
    assert with_query.status_code == 302
    s, page = _signed_in(live, "alice")
    assert "Signed in as <b>alice</b>." in page.text and "(admin)" not in page.text
    assert page.headers["Content-Type"] == "text/html; charset=utf-8"
    assert "<h1>iDDS service</h1>" in page.text
    assert "href='/services/idds/idds/api/v1/requests'" in page.text
    assert any("/hub/api/oauth2/authorize" in h.url for h in page.history)
    authorize = next(h for h in page.history if "/hub/api/oauth2/authorize" in h.url)
    assert "code_challenge=" in authorize.url and "state=" in authorize.url  # PKCE and state
    assert s.get(live.api + "auth/whoami", timeout=30).json() == {"user": "alice", "admin": False}
    m = re.search(r"name='idds-xsrf' content='([^']+)'", page.text)
    assert m is not None
    xsrf = m.group(1)

    def write(**kw: Any) -> requests.Response:
        return s.post(live.api + "auth/tokens", json={"name": "from-the-browser"}, timeout=30, **kw)

    # refused by the hub's cookie check before this service's own (the same test)
    for refused in (write(), write(headers={"X-XSRFToken": xsrf + "x"})):
        assert refused.status_code in (401, 403), refused.text
    for header in ("X-XSRFToken", "X-CSRFToken"):
        ok = write(headers={header: xsrf})
        assert ok.status_code in (200, 201), ok.text
        assert ok.json()["user"] == "alice"
    ok = s.post(
        live.api + "auth/tokens?_xsrf=" + xsrf,
        json={"name": "form-style"},
        timeout=30,
    )
    assert ok.status_code in (200, 201), ok.text


def test_an_admins_page_says_so(live: Live) -> None:
    _, page = _signed_in(live, "admin")
    assert "Signed in as <b>admin</b> (admin)." in page.text
