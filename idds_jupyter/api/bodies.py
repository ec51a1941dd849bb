"""Server-side workflow bodies (``@workflow(where="server")``): a separate, resource-limited process.

The service never unpickles a body: it creates the open workflow and starts
``python -m idds_jupyter.faat.runner`` as its owner (a token minted for that
run, revoked when the process ends). The process has its own session and
limits on memory, CPU time and open files; if it dies without closing its
workflow, the workflow is closed with the reason.
"""

from __future__ import annotations

import logging
import os
import resource
import subprocess
import sys
import threading
from dataclasses import dataclass
from pathlib import Path

from sqlalchemy.engine import Engine

log = logging.getLogger("idds_jupyter.api")


@dataclass
class BodyLimits:
    memory_mb: int = 4096
    cpu_s: int = 24 * 3600
    open_files: int = 1024


def _limit(limits: BodyLimits) -> None:  # runs in the child, before exec
    os.setsid()
    mem = limits.memory_mb * 2**20
    resource.setrlimit(resource.RLIMIT_AS, (mem, mem))
    resource.setrlimit(resource.RLIMIT_CPU, (limits.cpu_s, limits.cpu_s))
    resource.setrlimit(resource.RLIMIT_NOFILE, (limits.open_files, limits.open_files))


def launch_body(
    engine: Engine,
    url: str,
    owner: str,
    workflow_id: int,
    body: str,
    args: str,
    sandbox: str | None,
    log_dir: Path,
    limits: BodyLimits | None = None,
    close: object = None,
) -> subprocess.Popen[bytes]:
    """Start the body of open workflow ``workflow_id``; returns the process (watched in a thread)."""
    from idds_jupyter.store.tokens import create_token, revoke_token

    row, token = create_token(engine, owner, name=f"workflow-body-{workflow_id}")
    log_dir.mkdir(parents=True, exist_ok=True)
    out = open(log_dir / f"body-{workflow_id}.log", "wb")  # noqa: SIM115 - handed to the child
    env = {k: v for k, v in os.environ.items() if not k.startswith("IDDS_")}
    env.update(IDDS_URL=url, IDDS_TOKEN=token)
    argv = [sys.executable, "-m", "idds_jupyter.faat.runner", str(workflow_id), body, args]
    if sandbox:
        argv.append(sandbox)
    lim = limits or BodyLimits()
    proc = subprocess.Popen(
        argv,
        env=env,
        stdout=out,
        stderr=subprocess.STDOUT,
        stdin=subprocess.DEVNULL,
        cwd=log_dir,
        preexec_fn=lambda: _limit(lim),
    )  # noqa: PLW1509
    out.close()

    def watch() -> None:
        code = proc.wait()
        revoke_token(engine, int(row["id"]))
        if code != 0 and callable(close):
            close(
                workflow_id,
                f"the workflow body process ended with exit code {code} "
                f"(log: {log_dir / f'body-{workflow_id}.log'})",
            )

    threading.Thread(target=watch, name=f"idds-body-{workflow_id}", daemon=True).start()
    return proc
