"""``GET /logs/{job_id}/notebook``: the executed notebook of a whole-notebook job.

A job of an exported notebook (:func:`idds_jupyter.export.runtime.run_notebook`)
keeps the notebook it executed next to its log, ``job-<id>.<attempt>.ipynb``
beside ``job-<id>.<attempt>.log``. The path comes from the store (the job's
log path), never from the request; only the run's owner (or an admin) reads
it. The file is sent as it is, JSON text: the service parses nothing of it.
``?download=1`` asks the browser to save it.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path

from idds_jupyter.api.base import ApiError, ApiHandler
from idds_jupyter.store import monitor

__all__ = ["MAX_NOTEBOOK", "ExecutedNotebookHandler", "notebook_path"]

#: an executed notebook larger than this is not served (outputs of plots add up)
MAX_NOTEBOOK = 256 * 2**20


def notebook_path(log_path: str | None) -> Path | None:
    """The executed notebook beside a job's log (``job-1.0.log`` → ``job-1.0.ipynb``)."""
    if not log_path or not log_path.endswith(".log"):
        return None
    return Path(log_path[: -len(".log")] + ".ipynb")


def _read(path: Path) -> bytes | None:
    """The file's bytes: a regular file, not followed through a symlink; None when absent."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW)
    except OSError:
        return None
    with os.fdopen(fd, "rb") as fh:
        st = os.fstat(fh.fileno())
        if not stat.S_ISREG(st.st_mode):
            return None
        if st.st_size > MAX_NOTEBOOK:
            raise ApiError(413, f"the executed notebook is {st.st_size} bytes, over the "
                                f"limit of {MAX_NOTEBOOK} bytes for serving it")
        return fh.read()


class ExecutedNotebookHandler(ApiHandler):
    async def get(self, job_id: str) -> None:
        jid = int(job_id)
        row = await self.run(monitor.job_log, self.ctx.orch.engine, jid)
        if row is None or (row["owner"] != self.user.name and not self.user.admin):
            raise ApiError(404, f"no job with id {jid}")
        path = notebook_path(row["log_path"])
        data = None if path is None else await self.run(_read, path)
        if data is None:
            raise ApiError(404, f"job {jid} has no executed notebook (only jobs of a notebook "
                                "exported in whole-notebook mode have one, once they ran)")
        self.set_header("Content-Type", "application/x-ipynb+json")
        if self.get_query_argument("download", "") not in ("", "0", "false"):
            assert path is not None
            self.set_header("Content-Disposition", f'attachment; filename="{path.name}"')
        self.finish(data)
