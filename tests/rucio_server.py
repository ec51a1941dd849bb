"""A real Rucio server on loopback for the tests, as tests/postgres.py is for PostgreSQL.

The server (``rucio`` from PyPI, its REST API under gunicorn) runs from its own venv,
installed once by ``bash ci/rucio.sh deps``; its database is a real PostgreSQL
(tests/postgres.py) or an SQLite file. The tests talk to it with ``rucio-clients``
only, as a deployment would. Two RSEs: ``TAPE`` (rse_type TAPE, the files' origin)
and ``DISK`` (the staging destination), file protocol, posix directories under the
server's temp dir.

No FTS can run here: replicas are moved to AVAILABLE by whoever plays the transfer
tool (:meth:`RucioServer.fts_transfer_done`, named so in the tests), through Rucio's
own API, exactly as Rucio's conveyor does when FTS reports a finished transfer.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
PASSWORD = "secret-rucio-test"


def pfn_local(pfn: str) -> str:
    """The path of a file:// PFN (file://localhost/x/y -> /x/y)."""
    from idds_jupyter.data.rucio import pfn_path

    return pfn_path(pfn)


def server_venv() -> Path:
    out = subprocess.run(
        ["bash", str(ROOT / "ci" / "rucio.sh"), "path"], check=True, capture_output=True, text=True
    ).stdout.strip()
    venv = Path(out)
    if not (venv / "bin" / "gunicorn").exists() or not (venv / ".installed").exists():
        raise RuntimeError(f"no Rucio server venv at {venv}: run `bash ci/rucio.sh deps` first")
    return venv


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


_BOOTSTRAP = """
from rucio.db.sqla.util import build_database, create_base_vo, create_root_account
build_database()
create_base_vo()
create_root_account()
"""

_DAEMONS = """
from rucio.daemons.conveyor.submitter import submitter
from rucio.daemons.conveyor.poller import poller
from rucio.daemons.conveyor.finisher import finisher
from rucio.daemons.hermes.hermes import hermes
submitter(once=True, partition_wait_time=0, transfertools=['mock'], transfertype='single',
          filter_transfertool=None, bulk=10000)
poller(once=True, older_than=0, partition_wait_time=0, transfertool='mock', db_bulk=10000,
       fts_bulk=10000)
finisher(once=True, partition_wait_time=0, bulk=10000, db_bulk=10000)
hermes(once=True)
"""


class RucioServer:
    """``start()`` builds the schema and serves; ``stop()``/``serve()`` stop and restart the
    REST server only (the database stays): a Rucio outage in the middle of a run."""

    def __init__(self, db_url: str | None = None, workers: int = 2) -> None:
        self.venv = server_venv()
        self.dir = Path(tempfile.mkdtemp(prefix="idds-rucio-"))
        self.db_url = db_url or f"sqlite:///{self.dir}/rucio.db"
        self.port = _free_port()
        self.workers = workers
        self.proc: subprocess.Popen[bytes] | None = None
        self._client: Any = None
        self._hermes_configured = False
        self.server_cfg = self.dir / "server.cfg"
        self.client_cfg = self.dir / "client.cfg"
        self.rse_dir = {"TAPE": self.dir / "rse" / "tape", "DISK": self.dir / "rse" / "disk"}

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def _site_packages(self) -> Path:
        return next((self.venv / "lib").glob("python3*/site-packages"))

    def _write_config(self) -> None:
        migrate = self._site_packages() / "rucio" / "db" / "sqla" / "migrate_repo"
        alembic = self.dir / "alembic.ini"
        alembic.write_text(
            f"[alembic]\nscript_location = {migrate}\nsqlalchemy.url = {self.db_url}\n"
            "[loggers]\nkeys = root\n[handlers]\nkeys = console\n[formatters]\nkeys = generic\n"
            "[logger_root]\nlevel = WARN\nhandlers = console\n"
            "[handler_console]\nclass = StreamHandler\nargs = (sys.stderr,)\nlevel = NOTSET\n"
            "formatter = generic\n[formatter_generic]\nformat = %(levelname)s %(message)s\n"
        )
        (self.dir / "logs").mkdir(exist_ok=True)
        self.server_cfg.write_text(
            f"[common]\nlogdir = {self.dir}/logs\nloglevel = WARNING\n"
            f"[database]\ndefault = {self.db_url}\npool_size = 5\n"
            f"[bootstrap]\nuserpass_identity = ddmlab\nuserpass_pwd = {PASSWORD}\n"
            "userpass_email = ddmlab@example.org\n"
            f"[alembic]\ncfg = {alembic}\n"
            "[policy]\npermission = generic\nschema = generic\nlfn2pfn_algorithm_default = hash\n"
            "[core]\nuse_temp_tables = False\n"
        )
        self.client_cfg.write_text(
            f"[client]\nrucio_host = {self.url}\nauth_host = {self.url}\nauth_type = userpass\n"
            f"username = ddmlab\npassword = {PASSWORD}\naccount = root\n"
            f"auth_token_file_path = {self.dir}/token\nrequest_retries = 1\n"
        )

    def _env(self) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("RUCIO_")}
        env["RUCIO_CONFIG"] = str(self.server_cfg)
        env["PATH"] = f"{self.venv}/bin:{env.get('PATH', '')}"
        return env

    def start(self) -> RucioServer:
        """Schema, REST server, RSEs; on failure nothing is left running."""
        try:
            return self._start()
        except BaseException:
            self.stop()
            raise

    def _start(self) -> RucioServer:
        self._write_config()
        for d in self.rse_dir.values():
            d.mkdir(parents=True, exist_ok=True)
        subprocess.run(
            [str(self.venv / "bin" / "python"), "-c", _BOOTSTRAP],
            env=self._env(),
            check=True,
            capture_output=True,
            cwd=self.dir,
        )
        self.serve()
        self._setup_rses()
        return self

    def serve(self, timeout: float = 30.0) -> None:
        """Start (or restart) the REST server on the same port, and wait for ``/ping``."""
        log = open(self.dir / "gunicorn.log", "ab")  # noqa: SIM115 -- the child's log
        self.proc = subprocess.Popen(
            [
                str(self.venv / "bin" / "gunicorn"),
                "-b",
                f"127.0.0.1:{self.port}",
                "-w",
                str(self.workers),
                "--timeout",
                "60",
                "rucio.web.rest.flaskapi.v1.main:application",
            ],
            env=self._env(),
            cwd=self.dir,
            stdout=log,
            stderr=log,
            start_new_session=True,
        )
        log.close()
        deadline = time.time() + timeout
        while time.time() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(
                    f"rucio server exited: {(self.dir / 'gunicorn.log').read_text()[-3000:]}"
                )
            try:
                with urllib.request.urlopen(f"{self.url}/ping", timeout=2) as r:
                    if r.status == 200:
                        return
            except OSError:
                time.sleep(0.1)
        raise TimeoutError(f"rucio server not answering on {self.url}")

    def stop_serving(self) -> None:
        """Stop the REST server (the database and its state stay)."""
        if self.proc is not None and self.proc.poll() is None:
            os.killpg(self.proc.pid, 15)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, 9)
                self.proc.wait(5)
        self.proc = None

    def stop(self) -> None:
        try:
            self.stop_serving()
        finally:
            shutil.rmtree(self.dir, ignore_errors=True)

    # ------------------------------------------------------------- the client side
    def client(self) -> Any:
        """A ``rucio.client.Client`` (rucio-clients, in the tests' environment) as root."""
        if self._client is None:
            self._client = self._new_client()
        return self._client

    def _new_client(self) -> Any:
        os.environ["RUCIO_CONFIG"] = str(self.client_cfg)
        os.environ["RUCIO_CLIENT_MODE"] = "1"
        from rucio.client import Client

        return Client(
            rucio_host=self.url,
            auth_host=self.url,
            account="root",
            auth_type="userpass",
            creds={"username": "ddmlab", "password": PASSWORD},
        )

    def _setup_rses(self) -> None:
        c = self.client()
        for rse, kind in (("TAPE", "TAPE"), ("DISK", "DISK")):
            c.add_rse(rse, rse_type=kind, deterministic=True)
            c.add_protocol(
                rse,
                {
                    "scheme": "file",
                    "hostname": "localhost",
                    "port": 0,
                    "prefix": str(self.rse_dir[rse]) + "/",
                    "impl": "rucio.rse.protocols.posix.Default",
                    "domains": {
                        "lan": {"read": 1, "write": 1, "delete": 1},
                        "wan": {
                            "read": 1,
                            "write": 1,
                            "delete": 1,
                            "third_party_copy_read": 1,
                            "third_party_copy_write": 1,
                        },
                    },
                },
            )
            c.set_local_account_limit("root", rse, 10**15)
        c.add_distance("TAPE", "DISK", {"distance": 1})

    def make_dataset(self, scope: str, name: str, n_files: int, size: int = 16) -> list[str]:
        """A dataset of ``n_files`` files whose only replicas are on TAPE (bytes written there)."""
        c = self.client()
        if scope not in c.list_scopes():
            c.add_scope("root", scope)
        names = [f"{name}.f{i:04d}" for i in range(n_files)]
        files = [{"scope": scope, "name": n, "bytes": size, "adler32": "0cc737eb"} for n in names]
        c.add_replicas("TAPE", files)
        c.add_dataset(scope, name)
        c.attach_dids(scope, name, [{"scope": scope, "name": n} for n in names])
        return names

    def fts_transfer_done(
        self, scope: str, names: list[str], content: bytes | None = None, rse: str = "DISK"
    ) -> list[str]:
        """Play the transfer tool (FTS, which cannot run here): the bytes land at the
        destination PFNs, and the replicas are declared AVAILABLE through Rucio's API, as
        the conveyor's finisher does when FTS reports ``transfer-done``. Returns the PFNs."""
        c = self.client()
        pfns = c.lfns2pfns(rse, [f"{scope}:{n}" for n in names], operation="write", scheme="file")
        out = []
        for n in names:
            pfn = pfns[f"{scope}:{n}"]
            path = Path(pfn_local(pfn))
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(content if content is not None else f"data of {n}\n".encode())
            out.append(pfn)
        c.update_replicas_states(rse, [{"scope": scope, "name": n, "state": "A"} for n in names])
        return out

    def configure_hermes(
        self, broker_port: int, vhost: str, destination: str = "/topic/rucio.events"
    ) -> None:
        """Rucio's own daemons for :meth:`run_daemons`: the conveyor with Rucio's mock transfer
        tool, and Hermes delivering the messages table over STOMP to the broker."""
        if self._hermes_configured:
            return
        self._hermes_configured = True
        with open(self.server_cfg, "a") as fh:
            fh.write(
                "[conveyor]\ntransfertool = mock\nscheme = file\n"
                "[hermes]\nservices_list = activemq\n"
                f"[messaging-hermes]\nbrokers = 127.0.0.1\nport = {broker_port}\n"
                f"nonssl_port = {broker_port}\nuse_ssl = False\nusername = hermes\n"
                f"password = hermes\ndestination = {destination}\n"
                f"broker_virtual_host = {vhost}\nemail_from = rucio@localhost\n"
            )

    def run_daemons(self) -> str:
        """One pass of Rucio's conveyor (submitter, poller, finisher with the mock transfer
        tool: no bytes are copied, the requests go DONE, the replicas AVAILABLE, and
        ``transfer-done`` messages are written) and of Hermes (which sends them over STOMP)."""
        out = subprocess.run(
            [str(self.venv / "bin" / "python"), "-c", _DAEMONS],
            env=self._env(),
            cwd=self.dir,
            capture_output=True,
            text=True,
            timeout=120,
        )
        if out.returncode != 0:
            raise RuntimeError(f"rucio daemons failed: {out.stderr[-3000:]}")
        return out.stdout

    def write_at_destination(self, scope: str, names: list[str], rse: str = "DISK") -> None:
        """The bytes FTS would copy (Rucio's mock transfer tool copies none)."""
        pfns = self.client().lfns2pfns(
            rse, [f"{scope}:{n}" for n in names], operation="write", scheme="file"
        )
        for n in names:
            path = Path(pfn_local(pfns[f"{scope}:{n}"]))
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(f"data of {n}\n".encode())

    def fts_transfer_failed(self, scope: str, names: list[str], rse: str = "DISK") -> None:
        """Play the transfer tool reporting a failed transfer: the replicas go UNAVAILABLE,
        their locks (and the rule) STUCK."""
        self.client().update_replicas_states(
            rse, [{"scope": scope, "name": n, "state": "U"} for n in names]
        )


class StompBroker:
    """A real STOMP broker on loopback (``coilmq`` from PyPI), standing in for ActiveMQ."""

    def __init__(self) -> None:
        self.port = _free_port()
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    #: coilmq accepts only its own name as the STOMP 1.2 ``host`` header (virtual host)
    vhost = socket.getfqdn()

    def start(self, timeout: float = 20.0) -> StompBroker:
        exe = Path(sys.executable).parent / "coilmq"
        self.proc = subprocess.Popen(
            [str(exe), "-b", "127.0.0.1", "-p", str(self.port)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
        )
        deadline = time.time() + timeout
        while time.time() < deadline:
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=1).close()
                return self
            except OSError:
                time.sleep(0.05)
        raise TimeoutError(f"coilmq not listening on {self.address}")

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            os.killpg(self.proc.pid, 15)
            self.proc.wait(10)


class Hermes:
    """Plays Rucio's Hermes daemon (it needs the server's message table and runs beside
    Rucio's daemons, not here): sends Rucio-format messages to the broker over STOMP."""

    def __init__(self, broker: StompBroker, destination: str = "/topic/rucio.events") -> None:
        import stomp

        self.destination = destination
        self.conn = stomp.Connection12([("127.0.0.1", broker.port)], vhost=broker.vhost)
        self.conn.connect(wait=True)

    def transfer_done(
        self, scope: str, name: str, dst_rse: str = "DISK", dst_url: str = ""
    ) -> None:
        from idds_jupyter.data.rucio import hermes_message

        body = hermes_message(
            "transfer-done",
            {
                "scope": scope,
                "name": name,
                "dst-rse": dst_rse,
                "dst-url": dst_url,
                "src-rse": "TAPE",
                "activity": "Staging",
                "transfer-tool": "fts3 (played by the test)",
            },
        )
        self.conn.send(
            destination=self.destination,
            body=body,
            headers={"event_type": "transfer-done", "persistent": "true"},
        )

    def close(self) -> None:
        self.conn.disconnect()


if __name__ == "__main__":  # manual use: start one and print its URL
    srv = RucioServer(sys.argv[1] if len(sys.argv) > 1 else None).start()
    print(srv.url, srv.client_cfg, flush=True)
    try:
        while True:
            time.sleep(3600)
    finally:
        srv.stop()
