"""The worker gets the file (issue 24, item 3): ``transfer: http`` workers download a job's
Rucio file with Rucio's download client, with their own Rucio credentials.

Real parts: a Rucio 41 server from PyPI on loopback (PostgreSQL database, a DISK RSE with the
file:// protocol, so Rucio's download client copies through its posix protocol); the iDDS
API server (Clerk and Transformer; the test claims the jobs and renders their specs with the
Carrier's own Submitter code, as a batch backend does, then mints their job tokens); the
worker is ``python -m idds_jupyter.worker --http`` in a subprocess with only
``IDDS_SERVER_URL``/``IDDS_JOB_ID``/``IDDS_JOB_TOKEN`` and its own ``RUCIO_CONFIG``.
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import time
import zlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from postgres import PostgresServer  # noqa: E402
from rucio_server import PASSWORD, RucioServer  # noqa: E402
from sqlalchemy import select  # noqa: E402

from idds_jupyter.agents.agent import Context  # noqa: E402
from idds_jupyter.agents.carrier import CarrierState  # noqa: E402
from idds_jupyter.agents.carrier.submitter import Submitter  # noqa: E402
from idds_jupyter.api.server import ServerHandle, start_server  # noqa: E402
from idds_jupyter.backends.transfer import http_spec, inbox_name  # noqa: E402
from idds_jupyter.bus import NullBus  # noqa: E402
from idds_jupyter.client import Client  # noqa: E402
from idds_jupyter.config import Config  # noqa: E402
from idds_jupyter.data.rucio import RucioSettings, RucioSource, pfn_path  # noqa: E402
from idds_jupyter.store.cache import write_blob  # noqa: E402
from idds_jupyter.store.job_tokens import JobTokens  # noqa: E402
from idds_jupyter.store.jobs import claim_ready  # noqa: E402
from idds_jupyter.store.tables import jobs  # noqa: E402

ROOT = Path(__file__).resolve().parents[2]


def read_file(file: str, **_: Any) -> dict[str, Any]:
    """The processing code: reads the file it is given, whole."""
    data = Path(file).read_bytes()
    return {"path": file, "sha256": hashlib.sha256(data).hexdigest(), "size": len(data)}


@pytest.fixture(scope="module")
def rucio() -> Iterator[RucioServer]:
    pg = PostgresServer().start()
    srv: RucioServer | None = None
    try:
        srv = RucioServer(pg.create_database("rucio"))
        srv.start()
        yield srv
    finally:
        if srv is not None:
            srv.stop()
        pg.stop()


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerHandle]:
    tmp = tmp_path_factory.mktemp("rucio-download")
    cfg = Config.load(
        None, home=tmp / "home", db_url=f"sqlite:///{tmp / 'idds.db'}", poll_interval=0.3
    )
    handle = start_server(cfg, "127.0.0.1", 0, "/", roles=("clerk", "transformer"))
    try:
        yield handle
    finally:
        handle.stop()


def disk_dataset(rucio: RucioServer, scope: str, name: str, n: int) -> dict[str, bytes]:
    """A dataset whose replicas are AVAILABLE on DISK (bytes at their PFNs, true checksums)."""
    c = rucio.client()
    if scope not in c.list_scopes():
        c.add_scope("root", scope)
    content = {f"{name}.f{i}": os.urandom(1000 + i) + f"file {i}\n".encode() for i in range(n)}
    pfns = c.lfns2pfns("DISK", [f"{scope}:{f}" for f in content], operation="write", scheme="file")
    files = []
    for f, data in content.items():
        path = Path(pfn_path(pfns[f"{scope}:{f}"]))
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
        files.append(
            {
                "scope": scope,
                "name": f,
                "bytes": len(data),
                "adler32": f"{zlib.adler32(data) & 0xFFFFFFFF:08x}",
                "md5": hashlib.md5(data).hexdigest(),  # noqa: S324 - Rucio's checksum
            }
        )
    c.add_replicas("DISK", files)
    c.add_dataset(scope, name)
    c.attach_dids(scope, name, [{"scope": scope, "name": f} for f in content])
    return content


def claimed_specs(handle: ServerHandle, wid: int, n: int) -> list[dict[str, Any]]:
    """Claim the run's jobs and render their specs as the Carrier's Submitter does."""
    orch = handle.ctx.orch
    engine = orch.engine
    deadline = time.monotonic() + 30
    while True:
        with engine.connect() as conn:
            st = [
                r.status
                for r in conn.execute(select(jobs.c.status).where(jobs.c.workflow_id == wid))
            ]
        if len(st) == n and set(st) == {"ready"}:
            break
        assert time.monotonic() < deadline, st
        time.sleep(0.1)
    sub = Submitter(
        Context(engine=engine, bus=NullBus(), config=handle.ctx.config, owner="test-carrier"),
        CarrierState(backends={}),
    )
    with engine.begin() as conn:
        claimed = claim_ready(conn, "test-carrier", ["local"], 1000, 600)
        return sub._specs(conn, claimed)


def run_worker(handle: ServerHandle, spec: dict[str, Any], env: dict[str, str]) -> int:
    """What a batch backend with ``transfer: http`` does for one job: spec blob, job token,
    then the wrapper in a process of its own."""
    cfg = handle.ctx.config
    sha = write_blob(cfg.cache_dir, json.dumps(http_spec(spec), sort_keys=True).encode())[0]
    token = JobTokens.for_home(cfg.home).mint(spec["job_id"], spec["attempt"], sha, 600)
    proc = subprocess.run(
        [sys.executable, "-m", "idds_jupyter.worker", "--http"],
        env={
            "PATH": os.environ.get("PATH", ""),
            "PYTHONPATH": f"{ROOT}{os.pathsep}{ROOT / 'tests' / 'usecases'}",
            **env,
            "IDDS_SERVER_URL": handle.url,
            "IDDS_JOB_ID": str(spec["job_id"]),
            "IDDS_JOB_TOKEN": token,
        },
        capture_output=True,
        text=True,
        timeout=120,
    )
    return proc.returncode


def inbox(handle: ServerHandle, spec: dict[str, Any]) -> dict[str, Any]:
    path = Path(handle.ctx.config.result_inbox) / inbox_name(spec["job_id"], spec["attempt"])
    return dict(json.loads(path.read_text()))


def test_http_workers_download_their_rucio_files_with_their_own_credentials(
    rucio: RucioServer, server: ServerHandle
) -> None:
    scope, ds = "dl", "download3"
    content = disk_dataset(rucio, scope, ds, 3)
    uri = f"rucio://{scope}:{ds}"
    client = Client(server.url, token=server.token)
    src = RucioSource(
        client,
        uri,
        RucioSettings(
            host=rucio.url,
            account="root",
            username="ddmlab",
            password=PASSWORD,
            rse_expression="DISK",
            lifetime=3600,
        ),
    )
    src.register()
    src.ensure_rule()
    assert sorted(src.poll().available) == sorted(f"{scope}:{f}" for f in content)
    wid = client.submit(
        {
            "name": "rucio-download",
            "works": [
                {
                    "name": "read",
                    "function": "test_usecases_rucio_download:read_file",
                    "input_dataset": uri,
                    "parameters": {"file": "{file}"},
                }
            ],
        }
    )
    specs = claimed_specs(server, wid, 3)
    for spec in specs:  # the service names the DID and RSE; never a Rucio secret
        assert spec["input_file"]["rse"] == "DISK"
        assert spec["input_file"]["did"].startswith(f"{scope}:{ds}.f")
        assert PASSWORD not in json.dumps(http_spec(spec))
    worker_env = {"RUCIO_CONFIG": str(rucio.client_cfg), "TMPDIR": str(rucio.dir)}
    for spec in specs:
        assert run_worker(server, spec, worker_env) == 0, inbox(server, spec)
        res = inbox(server, spec)
        assert res["ok"], res
        name = spec["input_file"]["did"].split(":", 1)[1]
        got = res["result"]
        # the exact bytes, read from the job's scratch directory, not from the RSE's path
        assert got["sha256"] == hashlib.sha256(content[name]).hexdigest()
        assert got["size"] == len(content[name])
        assert got["path"] != pfn_path(spec["input_file"]["pfn"])
        assert Path(got["path"]).name == name
        scratch = Path(got["path"]).parent.parent
        assert scratch.parent == rucio.dir and scratch.name.startswith(
            f"idds-job-{spec['job_id']}-"
        )
        assert not scratch.exists()  # the wrapper removed its scratch dir


def test_a_failed_download_or_no_credentials_fail_the_job_naming_the_did(
    rucio: RucioServer, server: ServerHandle
) -> None:
    scope, ds = "dl", "broken2"
    content = disk_dataset(rucio, scope, ds, 2)
    uri = f"rucio://{scope}:{ds}"
    client = Client(server.url, token=server.token)
    src = RucioSource(
        client,
        uri,
        RucioSettings(
            host=rucio.url, account="root", username="ddmlab", password=PASSWORD, lifetime=3600
        ),
    )
    src.register()
    src.ensure_rule()
    src.poll()
    wid = client.submit(
        {
            "name": "rucio-broken",
            "works": [
                {
                    "name": "read",
                    "function": "test_usecases_rucio_download:read_file",
                    "input_dataset": uri,
                    "parameters": {"file": "{file}"},
                }
            ],
        }
    )
    bad, nocreds = sorted(claimed_specs(server, wid, 2), key=lambda s: s["input_file"]["did"])
    # the replica's bytes are corrupt at the RSE: Rucio's client refuses its checksum
    Path(pfn_path(bad["input_file"]["pfn"])).write_bytes(b"corrupted")
    assert run_worker(server, bad, {"RUCIO_CONFIG": str(rucio.client_cfg)}) == 1
    res = inbox(server, bad)
    assert not res["ok"]
    assert f"cannot download Rucio file {bad['input_file']['did']} from DISK" in res["error"]
    # a worker with no Rucio identity of its own: the service lends it none
    empty = rucio.dir / "empty.cfg"
    empty.write_text("[client]\n")
    assert run_worker(server, nocreds, {"RUCIO_CONFIG": str(empty)}) == 1
    res = inbox(server, nocreds)
    assert not res["ok"]
    assert f"cannot download Rucio file {nocreds['input_file']['did']}" in res["error"]
    assert len(content) == 2


def make_cert(tmp: Path) -> tuple[Path, Path]:
    """A self-signed x509 certificate and its key (mode 600, as Rucio's client requires)."""
    import datetime

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "idds test user")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now)
        .not_valid_after(now + datetime.timedelta(days=1))
        .sign(key, hashes.SHA256())
    )
    cert_path, key_path = tmp / "usercert.pem", tmp / "userkey.pem"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    key_path.chmod(0o600)
    return cert_path, key_path


def test_x509_and_oidc_token_settings_reach_rucios_client_configuration_only(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The test Rucio server accepts userpass only: these check what the client is given
    (a token already on file, so constructing the client contacts no server)."""
    from idds_jupyter.data.rucio import rucio_client

    (tmp_path / "token").write_text("a-cached-rucio-token")
    cfg = tmp_path / "rucio.cfg"
    cfg.write_text(f"[client]\nauth_token_file_path = {tmp_path / 'token'}\n")
    monkeypatch.setenv("RUCIO_CONFIG", str(cfg))
    cert, key = make_cert(tmp_path)
    rc = rucio_client(
        RucioSettings(
            host="https://rucio.example.org",
            auth_host="https://rucio-auth.example.org",
            auth_type="x509",
            account="alice",
            vo="atl",
            client_cert=str(cert),
            client_key=str(key),
        )
    )
    assert (rc.auth_type, rc.account, rc.vo) == ("x509", "alice", "atl")
    assert (rc.host, rc.auth_host) == (
        "https://rucio.example.org",
        "https://rucio-auth.example.org",
    )
    assert (rc.creds["client_cert"], rc.creds["client_key"]) == (str(cert), str(key))
    # an OIDC token from a file: Rucio's client takes it through WLCG token discovery
    jwt = tmp_path / "bt"
    jwt.write_text("eyJhbGciOiJSUzI1NiJ9.e30.c2ln\n")
    monkeypatch.delenv("BEARER_TOKEN", raising=False)
    monkeypatch.setenv("BEARER_TOKEN_FILE", "")  # restored after the test
    (tmp_path / "token").unlink()  # nothing cached: the token must come from the setting
    for auth_type in ("oidc", "token"):
        rc = rucio_client(
            RucioSettings(
                host="https://rucio.example.org",
                auth_type=auth_type,
                account="alice",
                auth_token_file=str(jwt),
            )
        )
        assert rc.auth_type == "oidc"
        assert rc.headers["X-Rucio-Auth-Token"] == "eyJhbGciOiJSUzI1NiJ9.e30.c2ln"


def test_bad_rucio_auth_settings_name_the_setting_configuration_only(tmp_path: Path) -> None:
    from idds_jupyter.data.rucio import rucio_client

    cert, key = make_cert(tmp_path)
    empty = tmp_path / "empty"
    empty.write_text("")
    cases = [
        (dict(auth_type="x509", client_key=str(key)), "rucio_client_cert is not set"),
        (dict(auth_type="x509", client_cert=str(cert)), "rucio_client_key is not set"),
        (
            dict(auth_type="x509", client_cert=str(tmp_path / "nope.pem"), client_key=str(key)),
            "rucio_client_cert: an x509 certificate file",
        ),
        (dict(auth_type="x509_proxy", x509_proxy=str(tmp_path / "x509up")), "rucio_x509_proxy"),
        (dict(auth_type="oidc"), "rucio_auth_token_file is not set"),
        (dict(auth_type="token", auth_token_file=str(empty)), "rucio_auth_token_file: .* empty"),
        (dict(auth_type="kerberos5"), "rucio_auth_type 'kerberos5' is not one of"),
    ]
    for kw, match in cases:
        with pytest.raises(ValueError, match=match):
            rucio_client(RucioSettings(host="https://rucio.example.org", **kw))  # type: ignore[arg-type]


def test_rucio_and_x509_variables_reach_jobs_only_when_declared_or_allowed_configuration_only() -> (
    None
):
    from idds_jupyter.worker.env import job_environment

    service = {"PATH": "/bin", "RUCIO_CONFIG": "/etc/service-rucio.cfg", "X509_USER_PROXY": "/p"}
    assert "RUCIO_CONFIG" not in job_environment(base=service)
    assert "X509_USER_PROXY" not in job_environment(base=service)
    mine = job_environment({"RUCIO_CONFIG": "/home/alice/rucio.cfg"}, base=service)
    assert mine["RUCIO_CONFIG"] == "/home/alice/rucio.cfg" and "X509_USER_PROXY" not in mine
    allowed = job_environment(base=service, allow=("RUCIO_*", "X509_*"))
    assert allowed["RUCIO_CONFIG"] == "/etc/service-rucio.cfg"
    assert allowed["X509_USER_PROXY"] == "/p"
