"""One configuration: a ``jupyter_server_config.py`` sets the core's settings as traitlets of
``IddsExtension``, and the running extension uses them (read back through ``GET /config``)."""

from __future__ import annotations

import getpass
from collections.abc import Iterator

import pytest
import requests
from jupyter_helpers import JupyterServer


@pytest.fixture(scope="module")
def configured(tmp_path_factory: pytest.TempPathFactory) -> Iterator[JupyterServer]:
    tmp = tmp_path_factory.mktemp("jupyter-config")
    config = tmp / "jupyter_server_config.py"
    config.write_text(
        'c.IddsExtension.slurm_partition = "short"\n'
        "c.IddsExtension.max_json_depth = 7\n"
        'c.IddsExtension.backends = ["local", "slurm"]\n'
        'c.IddsExtension.panda_token = "secret-token-text"\n'
        f"c.IddsExtension.admin_users = [{getpass.getuser()!r}]\n"
    )
    mp = pytest.MonkeyPatch()
    # the environment gives what the traitlets do not; a traitlet wins over it
    mp.setenv("IDDS_SLURM_ACCOUNT", "physics")
    mp.setenv("IDDS_SLURM_PARTITION", "long")
    try:
        server = JupyterServer(tmp, args=(f"--config={config}",))
    finally:
        mp.undo()
    try:
        yield server
    finally:
        server.stop()


def test_slurm_partition_from_jupyter_server_config_is_read_back(configured: JupyterServer) -> None:
    r = configured.api("GET", "config")
    assert r.status_code == 200, r.text
    got = r.json()["settings"]
    assert got["slurm_partition"] == "short"  # c.IddsExtension, over IDDS_SLURM_PARTITION
    assert got["slurm_account"] == "physics"  # the environment, as for `idds-jupyter serve`
    assert got["max_json_depth"] == 7
    assert got["backends"] == ["local", "slurm"]
    assert got["panda_token"] == "(set)"  # secrets are never sent back
    assert got["workers"] == 2  # IDDS_WORKERS of the helper
    # by default the agents run in a child process; the "local" bus becomes the ZeroMQ
    # broker the server hosts between them (the settings in effect)
    assert got["agents"] == "process" and got["bus"].startswith("zmq://127.0.0.1:")


def test_the_settings_are_for_admins_only(configured: JupyterServer) -> None:
    r = configured.api("POST", "auth/tokens", json={"name": "bob's", "user": "bob"})
    assert r.status_code in (200, 201), r.text
    bob = {"Authorization": f"Bearer {r.json()['token']}"}
    r = requests.get(configured.url + "idds/api/v1/auth/whoami", headers=bob, timeout=30)
    assert r.json() == {"user": "bob", "admin": False}
    r = requests.get(configured.url + "idds/api/v1/config", headers=bob, timeout=30)
    assert r.status_code == 403 and "only an admin" in r.text
