"""The shared deployment on a real JupyterHub: one iDDS service for every user of the hub.

The hub (examples/jupyterhub_config.py) runs the iDDS service as a managed service on
PostgreSQL; single-user servers (SimpleLocalProcessSpawner) run the extension in client
mode, so their kernels reach the service through the hub's proxy with the server's own
hub token.
"""

from __future__ import annotations

import os
import re
import signal
import time
from typing import Any

import pytest
import requests
from hub_helpers import Hub, echo_template, wait_for


def run_cell(kc: Any, code: str, timeout: float = 120) -> dict[str, Any]:
    out: dict[str, Any] = {"stdout": "", "stderr": "", "error": None}

    def hook(msg: dict[str, Any]) -> None:
        t, c = msg["msg_type"], msg["content"]
        if t == "stream":
            out[c["name"]] += c["text"]
        elif t == "error":
            out["error"] = f"{c['ename']}: {c['evalue']}\n" + "\n".join(c.get("traceback", []))

    reply = kc.execute_interactive(code, output_hook=hook, timeout=timeout)
    out["status"] = reply["content"]["status"]
    return out


def ok(kc: Any, code: str, timeout: float = 120) -> str:
    out = run_cell(kc, code, timeout)
    assert out["status"] == "ok", out
    return str(out["stdout"])


def api(hub: Hub, token: str, method: str, path: str, **kw: Any) -> requests.Response:
    return requests.request(
        method,
        hub.service_url + "idds/api/v1/" + path,
        headers={"Authorization": f"token {token}"},
        timeout=30,
        **kw,
    )


WORK_CELL = """
from idds_jupyter import work

@work
def square(x):
    return x * x

print("value", square(7))
"""


TEMPLATE_CELL = """%%idds template --submit
name: hub-template
works:
  - name: gen
    function: idds_jupyter.worker.job:echo
    kwargs_list: [{x: 1}, {x: 2}]
"""


@pytest.fixture(scope="module")
def alice(hub: Hub) -> dict[str, Any]:
    hub.start_server("alice")
    token = hub.user_token("alice")
    kid, kc = hub.start_kernel("alice", token)
    return {"token": token, "kc": kc}


def test_alice_kernel_runs_work_on_the_shared_service(hub: Hub, alice: dict[str, Any]) -> None:
    kc = alice["kc"]
    env = ok(
        kc,
        "import os; print(os.environ['IDDS_URL']); print(os.environ['IDDS_TOKEN'] == "
        "os.environ['JUPYTERHUB_API_TOKEN'])",
    )
    assert env.split() == [hub.service_url, "True"]
    assert "value 49" in ok(kc, WORK_CELL)
    # the magics reach the same service: a template cell, submitted and waited for
    ok(kc, "%load_ext idds_jupyter")
    ok(kc, TEMPLATE_CELL)
    out = ok(kc, "run = _\nprint(run.wait(timeout=60), run.info()['owner'])")
    assert out.split() == ["finished", "alice"], out
    # the run is alice's, on the shared service
    runs = api(hub, alice["token"], "GET", "requests").json()
    print(runs)


@pytest.fixture(scope="module")
def bob(hub: Hub) -> dict[str, Any]:
    return {"token": hub.user_token("bob")}


@pytest.fixture(scope="module")
def admin(hub: Hub) -> dict[str, Any]:
    return {"token": hub.user_token("admin")}


def _alice_runs(hub: Hub, alice: dict[str, Any]) -> list[dict[str, Any]]:
    return list(api(hub, alice["token"], "GET", "requests").json()["requests"])


def test_alices_server_runs_no_core_and_forwards_the_api(hub: Hub, alice: dict[str, Any]) -> None:
    # client mode: no embedded core (no connection file of one); the server's own
    # idds/api/v1 (what the JupyterLab extension calls) is the shared service's, as alice
    assert not list(hub.home("alice").rglob("idds-server-*.json"))
    own = f"{hub.url}/user/alice/idds/api/v1/"
    auth = {"Authorization": f"token {alice['token']}"}
    who = requests.get(own + "auth/whoami", headers=auth, timeout=30).json()
    assert who["user"] == "alice" and not who["admin"]
    assert who == api(hub, alice["token"], "GET", "auth/whoami").json()
    via_server = requests.get(own + "requests", headers=auth, timeout=30).json()["requests"]
    assert [r["id"] for r in via_server] == [r["id"] for r in _alice_runs(hub, alice)]
    # a write through the server: validated by the service (its 400 comes back whole)
    bad = requests.post(
        own + "requests", headers=auth, json={"template": {"works": "x"}}, timeout=30
    )
    assert bad.status_code == 400 and "error" in bad.json()
    # without credentials the single-user server refuses before anything is forwarded
    assert requests.get(own + "requests", timeout=30).status_code in (302, 403)


def test_bob_sees_none_of_alices_runs(hub: Hub, alice: dict[str, Any], bob: dict[str, Any]) -> None:
    mine = _alice_runs(hub, alice)
    assert mine and {r["owner"] for r in mine} == {"alice"}
    r = api(hub, bob["token"], "GET", "requests")
    assert r.status_code == 200
    assert r.json()["requests"] == []
    for path in (
        f"requests/{mine[0]['id']}",
        f"monitor/{mine[0]['id']}/dag",
        f"monitor/{mine[0]['id']}",
    ):
        got = api(hub, bob["token"], "GET", path)
        assert got.status_code == 404, (path, got.status_code, got.text)
    assert api(hub, bob["token"], "POST", f"requests/{mine[0]['id']}/abort").status_code == 404
    assert api(hub, alice["token"], "GET", f"requests/{mine[0]['id']}").status_code == 200


def test_admin_sees_every_users_runs(
    hub: Hub, alice: dict[str, Any], bob: dict[str, Any], admin: dict[str, Any]
) -> None:
    template = {
        "name": "bobs-run",
        "works": [
            {"name": "echo", "function": "idds_jupyter.worker.job:echo", "kwargs_list": [{"x": 1}]}
        ],
    }
    r = api(hub, bob["token"], "POST", "requests", json={"template": template})
    assert r.status_code in (200, 201), r.text
    bob_id = r.json()["id"]
    who = api(hub, admin["token"], "GET", "auth/whoami").json()
    assert who["user"] == "admin" and who["admin"] is True
    owners = {x["owner"] for x in api(hub, admin["token"], "GET", "requests").json()["requests"]}
    assert {"alice", "bob"} <= owners
    assert api(hub, admin["token"], "GET", f"requests/{bob_id}").status_code == 200
    # members of the configured hub group are admins too
    assert hub.api("POST", "users/carol").status_code in (201, 409)
    assert hub.api("POST", "groups/idds-admins/users", json={"users": ["carol"]}).ok
    carol = hub.user_token("carol")
    assert api(hub, carol, "GET", "auth/whoami").json()["admin"] is True
    assert {"alice", "bob"} <= {
        x["owner"] for x in api(hub, carol, "GET", "requests").json()["requests"]
    }


def test_group_quotas_follow_the_hub_groups(hub: Hub) -> None:
    """IDDS_GROUP_QUOTAS (set by the test hub): members of the hub group 'idds-students'
    may submit 2 jobs at once; the groups are the hub's, also for a token whose scopes do
    not show them (the service asks the hub)."""
    for name in ("dave", "erin"):
        assert hub.api("POST", f"users/{name}").status_code in (201, 409)
    assert hub.api("POST", "groups/idds-students").status_code in (201, 409)
    assert hub.api("POST", "groups/idds-students/users", json={"users": ["dave"]}).ok
    three = echo_template("three", 3)
    narrow = hub.user_token("dave", scopes=["access:services!service=idds"])
    for token in (hub.user_token("dave"), narrow):
        r = api(hub, token, "POST", "requests", json={"template": three})
        assert r.status_code == 413, r.text
        assert "max_jobs_per_submission for group 'idds-students'" in r.text, r.text
    r = api(hub, hub.user_token("erin"), "POST", "requests", json={"template": three})
    assert r.status_code in (200, 201), r.text


def test_tokens_without_the_service_scope_and_unknown_tokens_are_refused(hub: Hub) -> None:
    narrow = hub.user_token("bob", scopes=["read:users:name!user=bob"])
    r = api(hub, narrow, "GET", "requests")
    assert r.status_code == 403 and "access:services!service=idds" in r.text
    assert api(hub, "not-a-token", "GET", "requests").status_code == 401
    anon = requests.get(hub.service_url + "idds/api/v1/requests", timeout=30)
    assert anon.status_code == 401, anon.text


def test_the_services_own_tokens_keep_working(hub: Hub) -> None:
    token = (hub.state / "idds" / "serve-token").read_text().strip()
    who = api(hub, token, "GET", "auth/whoami").json()
    assert who["admin"] is True


def test_browser_signs_in_through_the_hubs_oauth(hub: Hub, alice: dict[str, Any]) -> None:
    s = hub.login("alice")
    page = s.get(hub.service_url, timeout=60)  # -> hub authorize -> oauth_callback -> the page
    assert page.status_code == 200, page.text[:500]
    assert "Signed in as <b>alice</b>" in page.text
    assert any("/hub/api/oauth2/authorize" in h.url for h in page.history)
    template = {
        "name": "for-the-browser",
        "works": [
            {
                "name": "nap",
                "function": "idds_jupyter.worker.job:sleep",
                "kwargs_list": [{"seconds": 30}],
            }
        ],
    }
    mine = api(hub, alice["token"], "POST", "requests", json={"template": template}).json()["id"]
    wait_for(lambda: _status(hub, alice["token"], mine) == "running", 60, "the run to start")
    r = s.get(hub.service_url + "idds/api/v1/requests", timeout=30)
    assert r.status_code == 200
    assert {x["owner"] for x in r.json()["requests"]} == {"alice"}
    assert mine in {x["id"] for x in r.json()["requests"]}
    # a cookie-authenticated write needs the XSRF token
    unsent = s.post(hub.service_url + f"idds/api/v1/requests/{mine}/suspend", timeout=30)
    assert unsent.status_code in (401, 403), (unsent.status_code, unsent.text)  # cookie not taken
    # ... which the service's page gives its scripts
    xsrf = re.search(r"name='idds-xsrf' content='([^']+)'", page.text)
    assert xsrf is not None
    sent = s.post(
        hub.service_url + f"idds/api/v1/requests/{mine}/suspend",
        headers={"X-XSRFToken": xsrf.group(1)},
        timeout=30,
    )
    assert sent.status_code == 200, sent.text
    assert (
        s.post(
            hub.service_url + f"idds/api/v1/requests/{mine}/abort",
            headers={"X-XSRFToken": xsrf.group(1)},
            timeout=30,
        ).status_code
        == 200
    )
    # bob's browser does not see alice's runs
    sb = hub.login("bob")
    assert sb.get(hub.service_url, timeout=60).status_code == 200
    rb = sb.get(hub.service_url + "idds/api/v1/requests", timeout=30)
    assert "alice" not in {x["owner"] for x in rb.json()["requests"]}
    assert sb.get(hub.service_url + f"idds/api/v1/requests/{mine}", timeout=30).status_code == 404


def test_the_labextensions_calls_from_alices_browser(hub: Hub, alice: dict[str, Any]) -> None:
    """What JupyterLab's extension does in alice's browser: her server's own idds/api/v1
    with the Jupyter cookie, writes with the _xsrf cookie's value in X-XSRFToken."""
    s = hub.login("alice")
    lab = s.get(f"{hub.url}/user/alice/lab", timeout=60)  # the server's OAuth with the hub
    assert lab.status_code == 200, lab.url
    own = f"{hub.url}/user/alice/idds/api/v1/"
    runs = s.get(own + "requests", timeout=30)
    assert runs.status_code == 200 and {r["owner"] for r in runs.json()["requests"]} == {"alice"}
    template = {
        "name": "from-the-sidebar",
        "works": [
            {"name": "echo", "function": "idds_jupyter.worker.job:echo", "kwargs_list": [{"x": 3}]}
        ],
    }
    assert (
        s.post(own + "requests", json={"template": template}, timeout=30).status_code == 403
    )  # no XSRF
    xsrf = s.cookies.get("_xsrf", path="/user/alice/")
    assert xsrf
    r = s.post(
        own + "requests", json={"template": template}, headers={"X-XSRFToken": xsrf}, timeout=30
    )
    assert r.status_code in (200, 201), r.text
    got = api(hub, alice["token"], "GET", f"requests/{r.json()['id']}").json()
    assert got["owner"] == "alice"
    # bob's browser session cannot use alice's server at all
    sb = hub.login("bob")
    assert sb.get(own + "requests", timeout=30, allow_redirects=False).status_code in (302, 403)


SLOW_CELL = """
from idds_jupyter import work, workflow

@work
def slow_square(x):
    import time
    time.sleep(8)
    return x * x

@workflow(where="server")
def slow(x):
    return slow_square(x) + 1

run = slow.submit(5)
print("run", run.id)
"""


def _status(hub: Hub, token: str, run_id: int) -> str:
    return str(api(hub, token, "GET", f"requests/{run_id}").json()["status"])


def test_a_run_outlives_alices_server(hub: Hub, alice: dict[str, Any]) -> None:
    out = ok(alice["kc"], SLOW_CELL)
    run_id = int(out.split("run", 1)[1].split()[0])
    time.sleep(1.5)
    assert _status(hub, alice["token"], run_id) == "running"
    alice["kc"].stop_channels()
    hub.stop_server("alice")  # the hub's REST API; her kernel goes with the server
    assert _status(hub, alice["token"], run_id) == "running"
    wait_for(lambda: _status(hub, alice["token"], run_id) == "finished", 120, "the run to finish")
    # she comes back: a new server, a new kernel, the result by the run's id
    hub.start_server("alice")
    _, kc = hub.start_kernel("alice", alice["token"])
    alice["kc"] = kc
    got = ok(
        kc,
        f"from idds_jupyter import get_run\nprint('result', get_run({run_id}).result(timeout=60))",
    )
    assert "result 26" in got


def test_runs_finish_when_the_hub_restarts_the_service(hub: Hub, alice: dict[str, Any]) -> None:
    template = {
        "name": "through-a-restart",
        "works": [
            {
                "name": "nap",
                "function": "idds_jupyter.worker.job:sleep",
                "kwargs_list": [{"seconds": 6}] * 2,
            },
            {
                "name": "after",
                "function": "idds_jupyter.worker.job:echo",
                "kwargs_list": [{"x": 1}],
                "depends_on": ["nap"],
            },
        ],
    }
    r = api(hub, alice["token"], "POST", "requests", json={"template": template})
    assert r.status_code in (200, 201), r.text
    run_id = int(r.json()["id"])
    wait_for(
        lambda: _jobs(hub, alice["token"], run_id, "nap").get("running"),
        60,
        "the first jobs to run",
    )
    old = hub.service_pid()
    assert old is not None
    os.kill(old, signal.SIGKILL)
    # JupyterHub notices its managed service died and starts it again (its poll interval: 30 s)
    wait_for(
        lambda: (p := hub.service_pid()) is not None and p != old,
        90,
        "the hub to restart the service",
    )
    wait_for(lambda: _ok_ping(hub), 60, "the restarted service")
    wait_for(
        lambda: _status(hub, alice["token"], run_id) == "finished",
        120,
        "the run to finish after the restart",
    )
    # and the kernel's client reaches the new process with nothing done
    got = ok(
        alice["kc"], f"from idds_jupyter import get_run\nprint('status', get_run({run_id}).status)"
    )
    assert "status finished" in got


def _jobs(hub: Hub, token: str, run_id: int, work: str) -> dict[str, int]:
    works = api(hub, token, "GET", f"requests/{run_id}").json()["works"]
    return dict(next(w for w in works if w["name"] == work)["jobs"])


def test_the_stream_sends_bob_none_of_alices_events(
    hub: Hub, alice: dict[str, Any], bob: dict[str, Any], admin: dict[str, Any]
) -> None:
    """Alice's stream goes through her server's forwarded route (as the labextension's);
    bob's and the admin's straight to the service with their hub tokens, subscribed to
    everything: the admin's gets alice's events, bob's none."""
    import asyncio
    import json

    from tornado.httpclient import HTTPRequest
    from tornado.websocket import websocket_connect

    ws_base = hub.url.replace("http", "ws", 1)

    async def main() -> tuple[
        list[dict[str, Any]], list[dict[str, Any]], list[dict[str, Any]], int
    ]:
        a = await websocket_connect(
            HTTPRequest(
                f"{ws_base}/user/alice/idds/api/v1/stream",
                headers={"Authorization": f"token {alice['token']}"},
            )
        )
        b = await websocket_connect(
            HTTPRequest(
                f"{ws_base}/services/idds/idds/api/v1/stream",
                headers={"Authorization": f"token {bob['token']}"},
            )
        )
        c = await websocket_connect(
            HTTPRequest(
                f"{ws_base}/services/idds/idds/api/v1/stream",
                headers={"Authorization": f"token {admin['token']}"},
            )
        )
        for ws in (a, b, c):
            ws.write_message(json.dumps({"subscribe": "*"}))
            assert json.loads(await ws.read_message())["type"] == "subscribed"
        template = {
            "name": "streamed",
            "works": [
                {
                    "name": "echo",
                    "function": "idds_jupyter.worker.job:echo",
                    "kwargs_list": [{"x": 2}],
                }
            ],
        }
        r = await asyncio.to_thread(
            api, hub, alice["token"], "POST", "requests", json={"template": template}
        )
        wid = int(r.json()["id"])
        got_a: list[dict[str, Any]] = []
        got_b: list[dict[str, Any]] = []
        got_c: list[dict[str, Any]] = []

        async def read(ws: Any, into: list[dict[str, Any]], until: float) -> None:
            while True:
                try:
                    msg = await asyncio.wait_for(
                        ws.read_message(), max(0.05, until - time.monotonic())
                    )
                except TimeoutError:
                    return
                if msg is None:
                    return
                into.append(json.loads(msg))
                if (
                    into[-1].get("type") == "workflow.terminal"
                    and into[-1].get("workflow_id") == wid
                ):
                    return

        deadline = time.monotonic() + 60
        await read(a, got_a, deadline)
        await read(c, got_c, time.monotonic() + 10)
        await read(b, got_b, time.monotonic() + 3)  # bob: a few seconds more after alice's end
        for ws in (a, b, c):
            ws.close()
        return got_a, got_b, got_c, wid

    got_a, got_b, got_c, wid = asyncio.run(main())
    assert any(m.get("workflow_id") == wid for m in got_a), got_a
    assert any(m.get("workflow_id") == wid for m in got_c), got_c
    assert not [m for m in got_b if m.get("workflow_id") == wid], got_b


def _ok_ping(hub: Hub) -> bool:
    try:
        return requests.get(hub.service_url + "idds/api/v1/ping", timeout=5).ok
    except requests.RequestException:
        return False
