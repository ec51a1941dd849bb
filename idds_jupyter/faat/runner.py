"""Run a ``@workflow(where="server")`` body next to the service.

The service answers ``POST requests {"faat": {"body", "args", "name", "sandbox"?}}``
by creating an *open* workflow and starting::

    IDDS_URL=<service url> IDDS_TOKEN=<owner's token> \\
        python -m idds_jupyter.faat.runner <workflow id> <body sha> <args sha> [<sandbox sha>]

This process downloads the blobs (it, not the service, unpickles them), runs
the body with the workflow as its current run — its ``@work`` calls add works
to it through the REST API — and closes the workflow with the body's result or
error, exactly as a body running in a notebook does.
"""

from __future__ import annotations

import io
import os
import sys
import tempfile
import traceback
import zipfile

__all__ = ["run_body", "main"]


def _install_sandbox(data: bytes) -> str:
    root = tempfile.mkdtemp(prefix="idds-sandbox-")
    with zipfile.ZipFile(io.BytesIO(data)) as zf:
        for member in zf.namelist():
            target = os.path.realpath(os.path.join(root, member))
            if not target.startswith(os.path.realpath(root) + os.sep):
                raise ValueError(f"sandbox member {member!r} escapes the sandbox")
        zf.extractall(root)
    sys.path.insert(0, root)
    return root


def run_body(workflow_id: int, body: str, args: str, sandbox: str | None = None) -> int:
    """Run the body of open workflow ``workflow_id``; returns a process exit code."""
    from idds_jupyter.client import get_client
    from idds_jupyter.faat import serialize
    from idds_jupyter.faat.workflow import Run, close_with_result

    client = get_client()
    run = Run(client, workflow_id)
    try:
        if sandbox:
            _install_sandbox(client.cache_get(sandbox))
        fn = serialize.loads(client.cache_get(body))
        fargs, fkwargs = serialize.loads(client.cache_get(args))
    except Exception as exc:
        client.close(
            workflow_id,
            error=f"cannot load the workflow body: {type(exc).__name__}: {exc}",
            traceback=traceback.format_exc(),
        )
        return 2
    with run.active():
        try:
            value = fn(*fargs, **fkwargs)
        except BaseException as exc:
            client.close(
                workflow_id,
                error=f"{type(exc).__name__}: {' '.join(str(exc).split())}",
                traceback=traceback.format_exc(),
            )
            return 1
    close_with_result(client, workflow_id, value)
    return 0


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if len(argv) not in (3, 4):
        sys.stderr.write(
            "usage: python -m idds_jupyter.faat.runner WORKFLOW_ID BODY_SHA ARGS_SHA [SANDBOX_SHA]\n"
        )
        return 2
    return run_body(int(argv[0]), argv[1], argv[2], argv[3] if len(argv) == 4 else None)


if __name__ == "__main__":
    sys.exit(main())
