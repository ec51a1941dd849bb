"""A real ``jupyter server`` with the extension, and kernels it starts, for the integration tests."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import requests
from jupyter_client import BlockingKernelClient


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class JupyterServer:
    """``jupyter server`` in a subprocess, with its own runtime dir and iDDS home."""

    def __init__(
        self, tmp: Path, base_url: str = "/", token: str = "test-token", args: tuple[str, ...] = ()
    ) -> None:
        self.tmp = tmp
        self.port = free_port()
        self.base_url = base_url if base_url.endswith("/") else base_url + "/"
        self.token = token
        self.runtime = tmp / "runtime"
        self.url = f"http://127.0.0.1:{self.port}{self.base_url}"
        env = dict(
            os.environ,
            JUPYTER_RUNTIME_DIR=str(self.runtime),
            IDDS_HOME=str(tmp / "idds"),
            IDDS_WORKERS="2",
        )
        for var in ("IDDS_URL", "IDDS_TOKEN", "IDDS_DB_URL"):
            env.pop(var, None)
        self.log = open(tmp / "jupyter.log", "wb")  # noqa: SIM115 - closed in stop()
        self.proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "jupyter",
                "server",
                "--allow-root",
                "--no-browser",
                "--ip",
                "127.0.0.1",
                f"--port={self.port}",
                f"--IdentityProvider.token={token}",
                f"--ServerApp.base_url={self.base_url}",
                f"--ServerApp.root_dir={tmp}",
                "--ServerApp.port_retries=0",
                *args,
            ],
            env=env,
            cwd=tmp,
            stdout=self.log,
            stderr=subprocess.STDOUT,
        )
        deadline = time.monotonic() + 60
        while True:
            try:
                if requests.get(self.url + "api/status", headers=self.auth, timeout=2).ok:
                    break
            except requests.RequestException:
                pass
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(
                    "jupyter server did not start:\n" + (tmp / "jupyter.log").read_text()
                )
            time.sleep(0.2)

    @property
    def auth(self) -> dict[str, str]:
        return {"Authorization": f"token {self.token}"}

    def api(self, method: str, path: str, token: bool = True, **kw: Any) -> requests.Response:
        headers = self.auth if token else {}
        return requests.request(
            method, self.url + "idds/api/v1/" + path, headers=headers, timeout=30, **kw
        )

    def start_kernel(self, name: str) -> tuple[str, BlockingKernelClient]:
        r = requests.post(
            self.url + "api/kernels", headers=self.auth, json={"name": name}, timeout=60
        )
        r.raise_for_status()
        kid = r.json()["id"]
        cf = self.runtime / f"kernel-{kid}.json"
        deadline = time.monotonic() + 30
        while not cf.exists() and time.monotonic() < deadline:
            time.sleep(0.1)
        kc = BlockingKernelClient(connection_file=str(cf))
        kc.load_connection_file()
        kc.start_channels()
        kc.wait_for_ready(timeout=60)
        return kid, kc

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
        self.log.close()


def run_cell(kc: BlockingKernelClient, code: str, timeout: float = 120) -> dict[str, Any]:
    """Execute ``code``; returns {"status", "stdout", "stderr", "results": [text/plain...], "error"}."""
    out: dict[str, Any] = {"stdout": "", "stderr": "", "results": [], "data": [], "error": None}

    def hook(msg: dict[str, Any]) -> None:
        t, c = msg["msg_type"], msg["content"]
        if t == "stream":
            out[c["name"]] += c["text"]
        elif t in ("execute_result", "display_data"):
            out["results"].append(c["data"].get("text/plain", ""))
            out["data"].append(c["data"])
        elif t == "error":
            out["error"] = f"{c['ename']}: {c['evalue']}"

    reply = kc.execute_interactive(code, output_hook=hook, timeout=timeout)
    out["status"] = reply["content"]["status"]
    if out["status"] == "error" and out["error"] is None:
        out["error"] = f"{reply['content'].get('ename')}: {reply['content'].get('evalue')}"
    return out


__all__ = ["JupyterServer", "free_port", "json", "run_cell"]
