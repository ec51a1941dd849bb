"""Real workload engines for the engine tests: local processes, Dask, Slurm, HTCondor, PanDA.

Slurm and HTCondor are installed and started on loopback by ``ci/engines/*.sh``
(session-scoped fixtures). If an engine cannot be started the tests that need it
FAIL with the script's reason: they are never skipped silently.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

HERE = Path(__file__).parent
ROOT = HERE.parent.parent
CI = ROOT / "ci" / "engines"

sys.path.insert(0, str(HERE))

from engine_support import Engine  # noqa: E402

ENGINES = ["local", "dask", "slurm", "htcondor", "panda_standin"]
#: the batch systems, whose jobs can run without a shared filesystem (transfer: http)
BATCH_ENGINES = ["slurm", "htcondor", "panda_standin"]

#: credentials the PanDA stand-in demands (panda-client sends them with PANDA_AUTH=oidc)
PANDA_TOKEN = "standin-id-token"
PANDA_VO = "idds"


@pytest.fixture(autouse=True)
def _worker_path(monkeypatch: pytest.MonkeyPatch) -> None:
    """Worker processes (and batch jobs, which inherit it) import enginefuncs from here."""
    monkeypatch.setenv(
        "PYTHONPATH",
        os.pathsep.join(p for p in (str(HERE), str(ROOT), os.environ.get("PYTHONPATH", "")) if p),
    )


def run_script(script: str, action: str, timeout: float = 900) -> dict[str, str]:
    """Run ``ci/engines/<script> <action>``; the ``KEY=value`` lines it prints, or pytest.fail."""
    try:
        proc = subprocess.run(
            ["bash", str(CI / script), action],
            capture_output=True,
            text=True,
            timeout=timeout,
            stdin=subprocess.DEVNULL,
        )
    except subprocess.TimeoutExpired as exc:
        pytest.fail(f"ci/engines/{script} {action} did not finish in {timeout:g} s: {exc.stderr!r}")
    if proc.returncode != 0:
        pytest.fail(
            f"ci/engines/{script} {action} failed (exit {proc.returncode}):\n"
            f"{proc.stdout[-3000:]}\n{proc.stderr[-5000:]}"
        )
    out: dict[str, str] = {}
    for line in proc.stdout.splitlines():
        key, sep, value = line.partition("=")
        if sep and key.isidentifier():
            out[key] = value
    return out


# ----------------------------------------------------------------------------- engines


def _backend(runner: Any, name: str) -> Any:
    return runner.carrier.backends[name]


def _sigkill(info: dict[str, Any]) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.kill(int(info["pid"]), signal.SIGKILL)


@pytest.fixture(scope="session")
def slurm_cluster() -> Iterator[dict[str, str]]:
    """A one-node Slurm on 127.0.0.1 (ci/engines/slurm.sh), for the whole session."""
    was_running = (
        subprocess.run(["bash", str(CI / "slurm.sh"), "status"], capture_output=True).returncode
        == 0
    )
    env = run_script("slurm.sh", "start")
    if "SLURM_CONF" not in env:
        pytest.fail(f"ci/engines/slurm.sh start printed no SLURM_CONF line: {env}")
    old = os.environ.get("SLURM_CONF")
    os.environ["SLURM_CONF"] = env["SLURM_CONF"]
    try:
        yield env
    finally:
        if not was_running:
            subprocess.run(["bash", str(CI / "slurm.sh"), "stop"], capture_output=True)
        if old is None:
            os.environ.pop("SLURM_CONF", None)
        else:
            os.environ["SLURM_CONF"] = old


def _slurm_active(runner: Any) -> int:
    b = _backend(runner, "slurm")
    out = subprocess.run(
        [
            "squeue",
            "--noheader",
            "--array",
            f"--name={b.job_name}",
            "--states=PENDING,RUNNING,COMPLETING,CONFIGURING,SUSPENDED",
            "--format=%i",
        ],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    return len(out.split())


@pytest.fixture(scope="session")
def condor_pool() -> Iterator[dict[str, str]]:
    """A minicondor in a Debian 13 chroot (ci/engines/htcondor.sh), for the whole session."""
    was_running = (
        subprocess.run(["bash", str(CI / "htcondor.sh"), "status"], capture_output=True).returncode
        == 0
    )
    env = run_script("htcondor.sh", "start")
    for key in ("CONDOR_SCHEDD", "CONDOR_TOKEN"):
        if key not in env:
            pytest.fail(f"ci/engines/htcondor.sh start printed no {key} line: {env}")
    # The pool runs jobs as its unprivileged job user, through host paths bind-mounted into
    # the chroot (/tmp whole): from a checkout inside a 0700 directory (a clone in mktemp -d)
    # that user could not execute the venv's python (errno=13). The way is opened (o+x only)
    # for the session and closed after (tests/pathtrap.py).
    from pathtrap import reachable

    with reachable([sys.executable, str(ROOT)]) as opened:
        if opened:
            sys.stderr.write(
                "condor_pool: opened search permission for the job user on "
                + ", ".join(d for d, _ in opened)
                + " (restored after)\n"
            )
        try:
            yield env
        finally:
            if not was_running:
                subprocess.run(["bash", str(CI / "htcondor.sh"), "stop"], capture_output=True)


def _condor_kill(info: dict[str, Any]) -> None:
    subprocess.run(
        ["bash", str(CI / "htcondor.sh"), "rm", str(info["task"])], check=True, capture_output=True
    )


def _condor_active(runner: Any) -> int:
    return int(_backend(runner, "htcondor").queued_in_schedd())


@pytest.fixture(scope="session")
def panda_server() -> Iterator[Any]:
    """The PanDA stand-in server (tests/engines/panda_standin.py) and pilots running its jobs."""
    from panda_standin import PandaStandin

    server = PandaStandin(pilots=4, queues=("IDDS_TEST",), token=PANDA_TOKEN, vo=PANDA_VO).start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(params=ENGINES)
def engine(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Engine]:
    yield from _engine(request.param, request, tmp_path)


@pytest.fixture(params=BATCH_ENGINES)
def batch_engine(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Engine]:
    """The batch engines only (Slurm, HTCondor, the PanDA stand-in)."""
    yield from _engine(request.param, request, tmp_path)


def _engine(name: str, request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Engine]:
    if name == "local":
        yield Engine(
            name,
            "local",
            tmp_path,
            kill=_sigkill,
            active=lambda r: _backend(r, "local").in_flight(),
        )
    elif name == "dask":
        from distributed import LocalCluster

        with LocalCluster(
            n_workers=2, threads_per_worker=2, processes=True, dashboard_address=None
        ) as cluster:
            yield Engine(
                name,
                "dask",
                tmp_path,
                {"dask_address": cluster.scheduler_address},
                kill=_sigkill,
                active=lambda r: _backend(r, "dask").in_flight(),
                kill_fails_job=False,
                reports_start=False,
                kills_running=False,
            )
    elif name == "slurm":
        request.getfixturevalue("slurm_cluster")

        def scancel(info: dict[str, Any]) -> None:
            subprocess.run(["scancel", str(info["task"])], check=True, capture_output=True)

        yield Engine(name, "slurm", tmp_path, kill=scancel, active=_slurm_active)
    elif name == "htcondor":
        env = request.getfixturevalue("condor_pool")
        # HTCondor runs jobs as a non-root user (CONDOR_JOB_USER): a world-writable work dir
        # under /tmp, which ci/engines/htcondor.sh bind-mounts into the chroot
        work = Path(tempfile.mkdtemp(prefix="idds-condor-test-", dir="/tmp"))
        work.chmod(0o777)
        try:
            yield Engine(
                name,
                "htcondor",
                work,
                {"condor_schedd": env["CONDOR_SCHEDD"], "condor_token": env["CONDOR_TOKEN"]},
                kill=_condor_kill,
                active=_condor_active,
                jobs_run_as_other_user=True,
            )
        finally:
            shutil.rmtree(work, ignore_errors=True)
    elif name == "panda_standin":
        server = request.getfixturevalue("panda_server")
        opts = {
            "panda_url": server.url,
            "panda_queue": "IDDS_TEST",
            "panda_token": PANDA_TOKEN,
            "panda_vo": PANDA_VO,
            "shared_dir": str(tmp_path / "batch"),
        }
        # the core's Carrier creates backends from the configuration; the panda backend
        # also reads it from the environment (IDDS_PANDA_*, IDDS_SHARED_DIR)
        mp = request.getfixturevalue("monkeypatch")
        for key, value in opts.items():
            mp.setenv(f"IDDS_{key.upper()}", value)
        # a payload killed from outside: the pilot reports it failed (signal 9) to the server
        yield Engine(name, "panda", tmp_path, opts, kill=_sigkill, active=lambda r: server.active())
    else:  # pragma: no cover
        raise AssertionError(name)
