"""A real JupyterHub for the tests: examples/jupyterhub_config.py, configurable-http-proxy
from npm (ci/hub), SimpleLocalProcessSpawner single-user servers and the iDDS service
managed by the hub.

The tests drive the hub through its REST API with the token of a test-only service
(``hub-driver``, admin scopes) added by a config file that loads the example config
first; users log in as browsers do (``login``), kernels are started through a user's
single-user server (``start_kernel``) and driven over ZeroMQ with its connection file.
"""

from __future__ import annotations

import contextlib
import os
import re
import secrets
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import requests
from jupyter_client import BlockingKernelClient

REPO = Path(__file__).resolve().parents[2]
EXAMPLE_CONFIG = REPO / "examples" / "jupyterhub_config.py"
#: ``IDDS_HUB_PROXY`` for a copy of the tests outside the checkout (``make mutate``)
PROXY = Path(
    os.environ.get("IDDS_HUB_PROXY")
    or REPO / "ci" / "hub" / "node_modules" / ".bin" / "configurable-http-proxy"
)
PASSWORD = "test-password"


def free_port_block(n: int = 4) -> int:
    """A port p with p..p+n-1 all free on loopback."""
    for _ in range(200):
        base = secrets.randbelow(20000) + 30000
        socks = []
        try:
            for i in range(n):
                s = socket.socket()
                s.bind(("127.0.0.1", base + i))
                socks.append(s)
            return base
        except OSError:
            continue
        finally:
            for s in socks:
                s.close()
    raise RuntimeError("no block of free ports")


def wait_for(pred: Any, timeout: float, what: str, interval: float = 0.25) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = pred()
        if value:
            return value
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(interval)


def echo_template(name: str, n: int) -> dict[str, Any]:
    """A run of one work of ``n`` echo jobs."""
    return {
        "name": name,
        "works": [
            {
                "name": "echo",
                "function": "idds_jupyter.worker.job:echo",
                "kwargs_list": [{"x": i} for i in range(n)],
            }
        ],
    }


class Hub:
    def __init__(
        self,
        state: Path,
        db_url: str | None = None,
        service_env: dict[str, str] | None = None,
        external: bool = False,
        start_service: Callable[[dict[str, str]], None] | None = None,
        extra_config: str = "",
    ) -> None:
        """``external``: the iDDS service is not the hub's to start: its entry gets a
        ``url`` and an ``api_token`` and no command, and this starts it (as a systemd unit
        or another host would) with the variables a managed service gets
        (:meth:`service_environment`). ``start_service``, if given, is a function that
        starts the service itself, given the hub's variables (:meth:`hub_variables`), before
        the hub starts (a hub waits ~30 s for an external service it cannot reach).
        ``extra_config``: lines appended to the hub's configuration."""
        if not PROXY.exists():
            raise RuntimeError(f"{PROXY} is missing: run `make hub-deps` (npm install in ci/hub)")
        self.state = state
        self.port = free_port_block(4)
        self.url = f"http://127.0.0.1:{self.port}"
        self.service_url = self.url + "/services/idds/"
        self.driver_token = secrets.token_hex(32)
        config = state / "jupyterhub_test_config.py"
        config.write_text(
            f"load_subconfig({str(EXAMPLE_CONFIG)!r})\n"
            "c.JupyterHub.services.append({'name': 'hub-driver', 'api_token': "
            f"{self.driver_token!r}}})\n"
            "c.JupyterHub.load_roles.append({'name': 'hub-driver', 'services': ['hub-driver'], "
            "'scopes': ['admin:users', 'admin:servers', 'tokens', 'access:servers', "
            "'read:services', 'admin:groups', 'access:services!service=idds']})\n"
            # jobs of a killed service are reclaimed quickly (the service-restart test)
            "c.JupyterHub.services[0]['environment'].update(IDDS_LOCK_TTL='8', "
            "IDDS_POLL_INTERVAL='1')\n"
            "c.JupyterHub.log_level = 'INFO'\n"
            # more settings of the service (IDDS_ISOLATION...), as a deployment adds them
            f"c.JupyterHub.services[0]['environment'].update({dict(service_env or {})!r})\n"
            + extra_config
        )
        self.service_token = secrets.token_hex(32)
        self.service_proc: subprocess.Popen[bytes] | None = None
        if external:
            env_file = state / "external-service-env.json"
            with config.open("a") as fh:
                fh.write(
                    "import json as _json\n"
                    "_svc = c.JupyterHub.services[0]\n"
                    "del _svc['command']\n"
                    f"open({str(env_file)!r}, 'w').write(_json.dumps(_svc.pop('environment')))\n"
                    f"_svc['api_token'] = {self.service_token!r}\n"
                    "_svc['oauth_client_id'] = 'service-idds'\n"
                    "_svc['oauth_redirect_uri'] = '/services/idds/oauth_callback'\n"
                )
        env = dict(
            os.environ,
            IDDS_HUB_STATE=str(state),
            IDDS_HUB_PORT=str(self.port),
            IDDS_HUB_PASSWORD=PASSWORD,
            IDDS_HUB_WORKERS="2",
            IDDS_HUB_GROUP_QUOTAS="idds-students:max_jobs_per_submission=2",
        )
        if db_url:
            env["IDDS_HUB_DB_URL"] = db_url
        for var in (
            "IDDS_URL",
            "IDDS_TOKEN",
            "IDDS_DB_URL",
            "IDDS_HOME",
            "JUPYTERHUB_API_TOKEN",
            "JUPYTER_RUNTIME_DIR",
        ):
            env.pop(var, None)
        self.hub_env = env
        if external and start_service is not None:
            start_service(self.hub_variables())
        self.log_path = state / "hub.log"
        self.log = open(self.log_path, "wb")  # noqa: SIM115 - closed in stop()
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "jupyterhub", "-f", str(config)],
            cwd=state,
            env=env,
            stdout=self.log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        if external and start_service is None:
            self._start_external()
        try:
            wait_for(self._up, 90, "the hub and the iDDS service")
        except Exception:
            self.stop()
            raise RuntimeError("the hub did not start:\n" + self.log_tail()) from None

    def service_environment(self) -> dict[str, str]:
        """What an external iDDS service is started with: its entry's settings and the
        variables the hub gives a managed service."""
        import json

        env_file = self.state / "external-service-env.json"
        wait_for(env_file.exists, 60, "the hub to read its configuration")
        time.sleep(0.2)  # written in one call; let it land
        return {**json.loads(env_file.read_text()), **self.hub_variables()}

    def hub_variables(self) -> dict[str, str]:
        """The ``JUPYTERHUB_*`` variables the hub gives its iDDS service."""
        return {
            "JUPYTERHUB_API_TOKEN": self.service_token,
            "JUPYTERHUB_API_URL": f"http://127.0.0.1:{self.port + 1}/hub/api",
            "JUPYTERHUB_BASE_URL": "/",
            "JUPYTERHUB_SERVICE_NAME": "idds",
            "JUPYTERHUB_SERVICE_URL": f"http://127.0.0.1:{self.port + 3}",
            "JUPYTERHUB_SERVICE_PREFIX": "/services/idds/",
            "JUPYTERHUB_CLIENT_ID": "service-idds",
            "JUPYTERHUB_OAUTH_CALLBACK_URL": "/services/idds/oauth_callback",
            "JUPYTERHUB_OAUTH_ACCESS_SCOPES": '["access:services!service=idds"]',
        }

    def _start_external(self) -> None:
        """The iDDS service started outside the hub, with the settings of its entry."""
        env = {
            **{k: v for k, v in self.hub_env.items() if not k.startswith(("IDDS_", "JUPYTERHUB_"))},
            **self.service_environment(),
        }
        self.service_proc = subprocess.Popen(
            [sys.executable, "-m", "idds_jupyter.cli", "serve", "--auth", "hub"],
            cwd=self.state,
            env=env,
            stdout=self.log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )

    def _up(self) -> bool:
        if self.proc.poll() is not None:
            raise RuntimeError("the hub exited:\n" + self.log_tail())
        try:
            return (
                requests.get(self.url + "/hub/api/", timeout=2).ok
                and requests.get(self.service_url + "idds/api/v1/ping", timeout=2).ok
            )
        except requests.RequestException:
            return False

    def log_tail(self, n: int = 60) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-n:])
        except OSError:
            return ""

    # ------------------------------------------------------------------ hub REST API
    def api(self, method: str, path: str, **kw: Any) -> requests.Response:
        kw.setdefault("timeout", 30)
        return requests.request(
            method,
            f"{self.url}/hub/api/{path.lstrip('/')}",
            headers={"Authorization": f"token {self.driver_token}"},
            **kw,
        )

    def user_token(self, name: str, scopes: list[str] | None = None) -> str:
        body: dict[str, Any] = {"note": "test", "expires_in": 3600}
        if scopes is not None:
            body["scopes"] = scopes
        r = self.api("POST", f"users/{name}/tokens", json=body)
        assert r.status_code in (200, 201), r.text
        return str(r.json()["token"])

    def server_ready(self, name: str) -> bool:
        r = self.api("GET", f"users/{name}")
        r.raise_for_status()
        server = (r.json().get("servers") or {}).get("")
        return bool(server and server.get("ready"))

    def start_server(self, name: str, timeout: float = 90) -> None:
        r = self.api("POST", f"users/{name}/server")
        assert r.status_code in (201, 202, 400), r.text  # 400: already running
        wait_for(lambda: self.server_ready(name), timeout, f"{name}'s server")

    def stop_server(self, name: str, timeout: float = 60) -> None:
        r = self.api("DELETE", f"users/{name}/server")
        assert r.status_code in (202, 204), r.text
        wait_for(
            lambda: not self.api("GET", f"users/{name}").json().get("servers"),
            timeout,
            f"{name}'s server to stop",
        )

    def service_pid(self) -> int | None:
        """The pid of the managed iDDS service process (found by its listening port)."""
        port = self.port + 3
        out = subprocess.run(
            ["ss", "-ltnpH", f"sport = :{port}"], capture_output=True, text=True
        ).stdout
        m = re.search(r"pid=(\d+)", out)
        return int(m.group(1)) if m else None

    # ------------------------------------------------------------------ users
    def home(self, name: str) -> Path:
        return self.state / "home" / name

    def login(self, name: str) -> requests.Session:
        """Log in on the hub's login page as a browser would; returns its session (cookies)."""
        s = requests.Session()
        page = s.get(f"{self.url}/hub/login", timeout=30)
        m = re.search(r'name="_xsrf" value="([^"]+)"', page.text)
        data = {"username": name, "password": PASSWORD}
        if m:
            data["_xsrf"] = m.group(1)
        r = s.post(f"{self.url}/hub/login?next=", data=data, timeout=60, allow_redirects=False)
        assert r.status_code == 302, (r.status_code, r.text[:500])
        return s

    def start_kernel(
        self, name: str, token: str, kernel: str = "python3"
    ) -> tuple[str, BlockingKernelClient]:
        """A kernel started by ``name``'s single-user server (its REST API, through the proxy)."""
        r = requests.post(
            f"{self.url}/user/{name}/api/kernels",
            json={"name": kernel},
            headers={"Authorization": f"token {token}"},
            timeout=60,
        )
        assert r.status_code == 201, r.text
        kid = r.json()["id"]
        cf = wait_for(
            lambda: next(iter(self.home(name).rglob(f"kernel-{kid}.json")), None),
            30,
            "the kernel's connection file",
        )
        kc = BlockingKernelClient(connection_file=str(cf))
        kc.load_connection_file()
        kc.hb_channel.time_to_dead = 10.0  # a loaded machine misses 1 s heartbeats
        kc.start_channels()
        for attempt in range(3):
            try:
                kc.wait_for_ready(timeout=60)
                break
            except RuntimeError:  # "died" by a missed heartbeat; the kernel is still there
                if attempt == 2:
                    raise
                time.sleep(2)
        return kid, kc

    def stop(self) -> None:
        if self.service_proc is not None and self.service_proc.poll() is None:
            self.service_proc.send_signal(signal.SIGTERM)
            try:
                self.service_proc.wait(30)
            except subprocess.TimeoutExpired:
                self.service_proc.kill()
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
        # the hub stops its proxy and services; anything left in its session goes too
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.proc.pid, signal.SIGKILL)
        self.log.close()


__all__ = ["PASSWORD", "Hub", "echo_template", "free_port_block", "wait_for"]
