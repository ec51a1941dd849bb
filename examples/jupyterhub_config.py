"""A JupyterHub on one machine with the shared iDDS service (docs/deploy-jupyterhub.md).

Used as is by ``make hub`` and by the tests in ``tests/hub/``. Everything that
differs between them comes from the environment:

- ``IDDS_HUB_STATE``: a directory for the hub's database, cookie secret, the users'
  home directories and the iDDS service's home (default ``/tmp/idds-hub``);
- ``IDDS_HUB_PORT``: the public port of the proxy (default 8000); the hub takes
  ``IDDS_HUB_PORT+1``, the proxy's API ``+2``, the iDDS service ``+3`` unless
  ``IDDS_HUB_SERVICE_PORT`` says otherwise;
- ``IDDS_HUB_DB_URL``: the iDDS service's database (default SQLite in its home;
  a PostgreSQL URL in production);
- ``IDDS_HUB_PASSWORD``: the dummy authenticator's password (default ``idds-demo``);
- ``IDDS_HUB_PROXY``: the ``configurable-http-proxy`` command (default the one
  ``npm install`` put in ``ci/hub/node_modules``).

For a real hub replace the DummyAuthenticator and SimpleLocalProcessSpawner with
yours; the parts that matter to iDDS are the service, the roles and ``Spawner``
environment (marked "iDDS" below).
"""

import os
import shutil
import sys
from pathlib import Path

c = get_config()  # type: ignore[name-defined]  # noqa: F821 - provided by JupyterHub

repo = Path(__file__).resolve().parent.parent
venv_bin = Path(sys.executable).parent
state = Path(os.environ.get("IDDS_HUB_STATE", "/tmp/idds-hub")).resolve()
state.mkdir(parents=True, exist_ok=True)
port = int(os.environ.get("IDDS_HUB_PORT", "8000"))
service_port = int(os.environ.get("IDDS_HUB_SERVICE_PORT", str(port + 3)))
public_url = f"http://127.0.0.1:{port}"

# --- the hub, its proxy and its database -------------------------------------------------
c.JupyterHub.bind_url = public_url
# Also what single-user servers tell their kernels (JUPYTERHUB_PUBLIC_URL): the
# address at which a kernel reaches the iDDS service through the proxy.
c.JupyterHub.public_url = public_url
c.JupyterHub.hub_bind_url = f"http://127.0.0.1:{port + 1}"
c.ConfigurableHTTPProxy.api_url = f"http://127.0.0.1:{port + 2}"
proxy = os.environ.get("IDDS_HUB_PROXY") or str(
    repo / "ci/hub/node_modules/.bin/configurable-http-proxy"
)
if not Path(proxy).exists():
    proxy = shutil.which("configurable-http-proxy") or proxy
c.ConfigurableHTTPProxy.command = [proxy]
c.ConfigurableHTTPProxy.pid_file = str(state / "proxy.pid")
c.JupyterHub.db_url = f"sqlite:///{state / 'jupyterhub.sqlite'}"
c.JupyterHub.cookie_secret_file = str(state / "jupyterhub_cookie_secret")
c.JupyterHub.cleanup_servers = True

# --- users: a password for everyone, alice and bob, an admin ---------------------------------
c.JupyterHub.authenticator_class = "dummy"
c.DummyAuthenticator.password = os.environ.get("IDDS_HUB_PASSWORD", "idds-demo")
c.Authenticator.allowed_users = {"alice", "bob"}
c.Authenticator.admin_users = {"admin"}

# --- single-user servers: local processes, one home directory each ---------------------------
c.JupyterHub.spawner_class = "simple"  # SimpleLocalProcessSpawner: all as the hub's account
c.SimpleLocalProcessSpawner.home_dir_template = str(state / "home" / "{username}")
c.Spawner.cmd = [str(venv_bin / "jupyterhub-singleuser")]
c.Spawner.default_url = "/lab"
c.Spawner.http_timeout = 60
c.Spawner.start_timeout = 60
if os.geteuid() == 0:
    c.Spawner.args = ["--allow-root"]
# iDDS: where the extension in each server finds the shared service (client mode).
c.Spawner.environment = {"IDDS_SERVICE_URL": "/services/idds/"}

# --- iDDS: the shared service, managed (started and restarted) by the hub -------------------
idds_home = state / "idds"
c.JupyterHub.services = [
    {
        "name": "idds",
        "url": f"http://127.0.0.1:{service_port}",
        "command": [sys.executable, "-m", "idds_jupyter.cli", "serve", "--auth", "hub"],
        "environment": {
            "IDDS_HOME": str(idds_home),
            "IDDS_DB_URL": os.environ.get("IDDS_HUB_DB_URL")
            or f"sqlite:///{idds_home / 'idds.db'}",
            "IDDS_BUS": "local",
            "IDDS_WORKERS": os.environ.get("IDDS_HUB_WORKERS", "2"),
            # members of these hub groups are iDDS admins (hub admins always are)
            "IDDS_HUB_ADMIN_GROUPS": "idds-admins",
            # limits for the members of hub groups, "GROUP:SETTING=N,..."
            # (docs/deploy-jupyterhub.md, "Fair share and quotas")
            "IDDS_GROUP_QUOTAS": os.environ.get("IDDS_HUB_GROUP_QUOTAS", ""),
            "PYTHONPATH": os.environ.get("PYTHONPATH", ""),
        },
        "oauth_no_confirm": True,
    },
]

# --- iDDS: who may use the service --------------------------------------------------------
c.JupyterHub.load_groups = {"idds-admins": {"users": []}}
c.JupyterHub.load_roles = [
    # every user may reach the service (browser OAuth, tokens made on the token page)
    {"name": "user", "scopes": ["self", "access:services!service=idds"]},
    # the token of each single-user server (its kernels' IDDS_TOKEN) may reach it too
    {
        "name": "server",
        "scopes": ["users:activity!user", "access:servers!server", "access:services!service=idds"],
    },
    # the service reads users' admin flags and groups
    {"name": "idds-service", "scopes": ["read:users"], "services": ["idds"]},
]
