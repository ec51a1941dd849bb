"""The extension follows Jupyter's conventions (issue 18, item 4), against a real ``jupyter server``.

- The API's handlers are jupyter_server ``APIHandler`` subclasses given through the
  extension's ``handlers``: Jupyter's ``Host`` check, its XSRF check of
  cookie-authenticated writes and its security headers apply; requests are
  ``@authenticated`` and ``@authorized`` on the resource ``idds`` by the server's
  authorizer (here one that lets nobody write to ``idds``).
- Nothing in the Jupyter server's process changes the interpreter's garbage
  collector settings, even with the agents in threads there (``agents = thread``,
  not the default child process): read in that very process by a small server
  extension of this test (``gcprobe``).
"""

from __future__ import annotations

import gc
import os
import re
from collections.abc import Iterator
from pathlib import Path

import psutil
import pytest
import requests
from jupyter_helpers import JupyterServer
from jupyter_server.base.handlers import APIHandler

pytestmark = pytest.mark.timeout(300)

CALL = {"name": "call", "works": [{"name": "f", "function": "idds_jupyter.worker.job:noop"}]}

# Imported by the server (from the test's directory, on its PYTHONPATH).
PROBE = '''
import gc
import json

from jupyter_server.auth.authorizer import Authorizer
from jupyter_server.base.handlers import APIHandler
from tornado import web


class NoIddsWrites(Authorizer):
    """Everything, but writing to the resource "idds"."""

    def is_authorized(self, handler, user, action, resource):
        return not (resource == "idds" and action == "write")


class GcHandler(APIHandler):
    @web.authenticated
    def get(self):
        self.finish(json.dumps({"threshold": gc.get_threshold(), "frozen": gc.get_freeze_count()}))


def _jupyter_server_extension_points():
    return [{"module": "gcprobe"}]


def _load_jupyter_server_extension(serverapp):
    serverapp.web_app.add_handlers(".*$", [(serverapp.base_url + "gcprobe", GcHandler)])
'''


@pytest.fixture(scope="module")
def jupyter(tmp_path_factory: pytest.TempPathFactory) -> Iterator[JupyterServer]:
    tmp = tmp_path_factory.mktemp("jupyter")
    (tmp / "gcprobe.py").write_text(PROBE)
    with pytest.MonkeyPatch.context() as mp:  # the server's environment is this one's
        mp.setenv(
            "PYTHONPATH", os.pathsep.join(p for p in (str(tmp), os.environ.get("PYTHONPATH")) if p)
        )
        server = JupyterServer(
            tmp,
            base_url="/base/",
            args=(
                "--ServerApp.jpserver_extensions=gcprobe=True",
                "--ServerApp.authorizer_class=gcprobe.NoIddsWrites",
                "--IddsExtension.agents=thread",  # in-process mode: its agents share gc
            ),
        )
    try:
        yield server
    finally:
        server.stop()


def browser(server: JupyterServer) -> tuple[requests.Session, str]:
    """A browser's session: logged in with the login form; its XSRF token."""
    s = requests.Session()
    page = s.get(server.url + "login", timeout=30)
    xsrf = s.cookies.get("_xsrf") or re.search(r'name="_xsrf" value="([^"]+)"', page.text).group(1)  # type: ignore[union-attr]
    r = s.post(
        server.url + "login",
        data={"password": server.token, "_xsrf": xsrf},
        allow_redirects=False,
        timeout=30,
    )
    assert r.status_code in (302, 303), r.text[:300]
    return s, str(s.cookies.get("_xsrf") or xsrf)


def test_api_handlers_are_jupyter_api_handlers() -> None:
    from idds_jupyter_server.handlers import as_jupyter

    from idds_jupyter.api import ROUTES
    from idds_jupyter.api.jobs import JobApiHandler
    from idds_jupyter.api.stream import StreamHandler

    for _path, cls in ROUTES:
        made = as_jupyter(cls)
        assert issubclass(made, cls)
        if cls is StreamHandler:
            continue
        assert issubclass(made, APIHandler), cls
        assert made.auth_resource == "idds"
        guarded = [getattr(made, m) for m in ("get", "post", "put", "delete") if m in vars(made)]
        assert guarded, (
            cls
        )  # each route's methods are wrapped (authenticated + authorized, or public)
        public = getattr(cls, "public", False) or issubclass(cls, JobApiHandler)
        for fn in guarded:
            assert getattr(fn, "__allow_unauthenticated", False) is bool(public), (cls, fn)


def test_jupyter_checks_and_headers_apply(jupyter: JupyterServer) -> None:
    r = jupyter.api("GET", "requests")
    assert r.status_code == 200, r.text
    assert "default-src 'none'" in r.headers["Content-Security-Policy"]  # APIHandler's
    assert r.headers["Content-Type"].startswith("application/json")
    yaml = jupyter.api("GET", "openapi.yaml")  # the API's own content types are kept
    assert yaml.status_code == 200 and yaml.headers["Content-Type"].startswith("application/yaml")
    # Jupyter's Host check (no remote access configured): a DNS-rebinding name is refused
    evil = requests.get(
        jupyter.url + "idds/api/v1/requests",
        timeout=30,
        headers={**jupyter.auth, "Host": f"rebind.example:{jupyter.port}"},
    )
    assert evil.status_code == 403
    assert (
        requests.get(
            jupyter.url + "idds/api/v1/ping",
            timeout=30,
            headers={"Host": f"rebind.example:{jupyter.port}"},
        ).status_code
        == 403
    )


def test_cookie_writes_need_xsrf_and_the_authorizer_decides(jupyter: JupyterServer) -> None:
    s, xsrf = browser(jupyter)
    api = jupyter.url + "idds/api/v1/"
    assert s.get(api + "auth/whoami", timeout=30).status_code == 200  # reads: allowed
    # a cookie-authenticated write without the XSRF token: Jupyter's XSRF check refuses it
    r = s.post(api + "requests", json={"workflow": CALL}, timeout=30)
    assert r.status_code == 403 and "_xsrf" in r.json()["error"], r.text
    # with it, the authorizer (no writes to "idds" here) decides: refused, by name
    r = s.post(api + "requests", json={"workflow": CALL}, headers={"X-XSRFToken": xsrf}, timeout=30)
    assert r.status_code == 403 and "not authorized to write idds" in r.json()["error"], r.text
    # ... as with the server's token; Jupyter's own API stays writable (resource contents)
    assert jupyter.api("POST", "requests", json={"workflow": CALL}).status_code == 403
    r = requests.post(
        jupyter.url + "api/contents", json={"type": "notebook"}, headers=jupyter.auth, timeout=30
    )
    assert r.status_code == 201, r.text


def test_jupyter_server_process_keeps_default_gc_settings(jupyter: JupyterServer) -> None:
    # the agents run in threads of this server (agents = thread), no child, and have warmed up
    assert jupyter.api("GET", "requests").status_code == 200
    server = psutil.Process(jupyter.proc.pid)
    assert not [
        p
        for p in server.children(recursive=True)
        if "idds_jupyter.agents.supervised" in p.cmdline()
    ]
    r = requests.get(jupyter.url + "gcprobe", headers=jupyter.auth, timeout=30)
    assert r.status_code == 200, r.text
    assert tuple(r.json()["threshold"]) == (700, 10, 10)  # CPython's defaults
    assert r.json()["frozen"] == 0


def test_runner_tunes_gc_only_when_it_owns_the_process(tmp_path: Path) -> None:
    from idds_jupyter.agents.runner import Runner
    from idds_jupyter.config import Config

    before = gc.get_threshold()
    cfg = Config.load(None, home=str(tmp_path / "idds"), db_url=f"sqlite:///{tmp_path}/idds.db")
    with Runner(cfg, roles=("clerk",)) as runner:  # hosted (as in the extension): tune_gc False
        assert runner.tune_gc is False
        from idds_jupyter.agents import runner as runner_mod

        runner_mod._warm_up(runner.tune_gc)
        assert gc.get_threshold() == before and gc.get_freeze_count() == 0
