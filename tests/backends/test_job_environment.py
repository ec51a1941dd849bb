"""The one allow-list every backend builds a job's environment with (issue 19, item 1)."""

from __future__ import annotations

import os
import pwd
from types import SimpleNamespace

import pytest

from idds_jupyter.backends.base import job_environment
from idds_jupyter.backends.batch import PKG_ROOT, BatchBackend

SERVICE_ENV = {
    "PATH": "/usr/bin:/bin",
    "LANG": "C.UTF-8",
    "LC_ALL": "C.UTF-8",
    "TZ": "UTC",
    "PYTHONPATH": "/opt/extra",
    "HOME": "/root",
    "IDDS_TOKEN": "t1",
    "IDDS_URL": "http://x",
    "JUPYTER_TOKEN": "t2",
    "JUPYTERHUB_API_TOKEN": "t3",
    "IDDS_DB_URL": "postgresql://u:pw@h/db",
    "AWS_SECRET_ACCESS_KEY": "t4",
    "HTTP_PROXY": "http://proxy:3128",
}
LEAKS = {
    "IDDS_TOKEN",
    "IDDS_URL",
    "JUPYTER_TOKEN",
    "JUPYTERHUB_API_TOKEN",
    "IDDS_DB_URL",
    "AWS_SECRET_ACCESS_KEY",
    "HTTP_PROXY",
}


def test_allow_list_declared_and_operator_additions() -> None:
    env = job_environment({"MINE": "1", "PATH": "/work/bin"}, base=SERVICE_ENV, pythonpath="/pkg")
    assert not set(env) & LEAKS
    assert env["MINE"] == "1" and env["PATH"] == "/work/bin"  # the work's declaration wins
    assert env["LANG"] == "C.UTF-8" and env["LC_ALL"] == "C.UTF-8" and env["TZ"] == "UTC"
    assert env["PYTHONPATH"] == "/pkg" + os.pathsep + "/opt/extra"
    me = pwd.getpwuid(os.getuid())
    assert env["HOME"] == me.pw_dir and env["USER"] == me.pw_name
    assert (
        job_environment(base=SERVICE_ENV, allow=["HTTP_PROXY"])["HTTP_PROXY"] == "http://proxy:3128"
    )


@pytest.mark.parametrize("transfer", ["shared", "http"])
def test_batch_jobs_get_the_allow_list(monkeypatch: pytest.MonkeyPatch, transfer: str) -> None:
    """Slurm passes this environment to sbatch, HTCondor keeps a part of it, PanDA its extras:
    with either transfer no service variable reaches a batch job."""
    for k in list(os.environ):
        monkeypatch.delenv(k)
    for k, v in SERVICE_ENV.items():
        monkeypatch.setenv(k, v)
    fake = SimpleNamespace(extra_env={"FROM_CONFIG": "yes"})
    env = BatchBackend.job_env(fake, transfer)  # type: ignore[arg-type]
    assert not set(env) & LEAKS, set(env) & LEAKS
    assert env["FROM_CONFIG"] == "yes" and env["PYTHONPATH"].split(os.pathsep)[0] == PKG_ROOT
