"""Notebooks exported to batch workflows, over REST (docs/export.md).

``POST /notebooks/export`` and ``POST /notebooks/submit`` take a notebook's content (what a
JupyterLab command holds), keep it where its jobs read it and export (and submit) it;
``GET /logs/{job_id}/notebook`` serves the executed notebook of a whole-notebook job.

A job of an exported notebook (:func:`idds_jupyter.export.runtime.run_notebook`)
keeps the notebook it executed next to its log, ``job-<id>.<attempt>.ipynb``
beside ``job-<id>.<attempt>.log``. The path comes from the store (the job's
log path), never from the request; only the run's owner (or an admin) reads
it. The file is sent as it is, JSON text: the service parses nothing of it.
``?download=1`` asks the browser to save it.
"""

from __future__ import annotations

import os
import re
import stat
from pathlib import Path
from typing import Any

from idds_jupyter.api.base import ApiError, ApiHandler
from idds_jupyter.store import monitor

__all__ = [
    "MAX_NOTEBOOK",
    "ExecutedNotebookHandler",
    "NotebookExportHandler",
    "NotebookSubmitHandler",
    "notebook_path",
]

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
            raise ApiError(
                413,
                f"the executed notebook is {st.st_size} bytes, over the "
                f"limit of {MAX_NOTEBOOK} bytes for serving it",
            )
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
            raise ApiError(
                404,
                f"job {jid} has no executed notebook (only jobs of a notebook "
                "exported in whole-notebook mode have one, once they ran)",
            )
        self.set_header("Content-Type", "application/x-ipynb+json")
        if self.get_query_argument("download", "") not in ("", "0", "false"):
            assert path is not None
            self.set_header("Content-Disposition", f'attachment; filename="{path.name}"')
        self.finish(data)


# ------------------------------------------------- a notebook's content, exported / submitted
def _notebook_file(home: Path, owner: str, nb: dict[str, Any], name: str) -> Path:
    """The notebook kept where its jobs read it: ``home/notebooks/<owner digest>/<sha>/<name>``
    (content-addressed; the owner's own directory, 0700)."""
    import hashlib
    import json

    data = json.dumps(nb, sort_keys=True, separators=(",", ":")).encode()
    sha = hashlib.sha256(data).hexdigest()
    who = hashlib.sha256(owner.encode()).hexdigest()[:16]
    d = home / "notebooks" / who / sha
    d.mkdir(parents=True, exist_ok=True)
    for p in (home / "notebooks" / who, d):
        os.chmod(p, 0o700)
    path = d / name
    if not path.exists():
        tmp = d / f".{name}.tmp"
        tmp.write_bytes(data)
        os.replace(tmp, path)
    return path


def _export_request(handler: ApiHandler, body: dict[str, Any]) -> dict[str, Any]:
    """Checked fields of an export/submit body: notebook, name, mode, group, sweep."""
    nb = body.get("notebook")
    if not isinstance(nb, dict) or not isinstance(nb.get("cells"), list):
        raise ApiError(
            400, "field 'notebook' must be a notebook (nbformat 4 JSON object with 'cells')"
        )
    name = body.get("name") or "notebook.ipynb"
    if not isinstance(name, str) or not re.fullmatch(r"[\w .,+-]{1,120}\.ipynb", name):
        raise ApiError(400, "field 'name' must be a plain file name ending in .ipynb (no '/')")
    mode = body.get("mode") or "notebook"
    if mode not in ("notebook", "cells"):
        raise ApiError(400, "field 'mode' must be 'notebook' or 'cells'")
    group = body.get("group") or "cell"
    if group not in ("cell", "heading"):
        raise ApiError(400, "field 'group' must be 'cell' or 'heading'")
    sweep = body.get("sweep")
    limit = int(handler.ctx.config.max_jobs_per_submission)
    if sweep is None:
        items: list[dict[str, Any]] = []
    elif isinstance(sweep, dict) and all(isinstance(v, list) for v in sweep.values()):
        import itertools
        import math

        n = math.prod(len(v) for v in sweep.values()) if sweep else 0
        if n > limit:  # counted before the product is made
            raise ApiError(
                413,
                f"the sweep makes {n} jobs, over max_jobs_per_submission ({limit})",
                limit=limit,
                setting="max_jobs_per_submission",
            )
        keys = list(sweep)
        items = [
            dict(zip(keys, combo, strict=True))
            for combo in itertools.product(*(sweep[k] for k in keys))
        ]
    elif isinstance(sweep, list) and all(isinstance(x, dict) for x in sweep):
        items = sweep
    else:
        raise ApiError(
            400, "field 'sweep' must map names to lists of values, or be a list of objects"
        )
    return {"notebook": nb, "name": name, "mode": mode, "group": group, "sweep": items}


def _first(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def _export(home: Path, owner: str, req: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    """``(template, parameters cell defaults)``; blocking (the executor)."""
    from idds_jupyter.export import export_template
    from idds_jupyter.export.notebook import read_notebook
    from idds_jupyter.export.params import parameter_defaults
    from idds_jupyter.model import TemplateError

    path = _notebook_file(home, owner, req["notebook"], req["name"])
    try:
        nb = read_notebook(str(path))
        defaults = parameter_defaults(nb)
        tmpl = export_template(
            str(path),
            req["mode"],
            sweep=req["sweep"] or None,
            group=req["group"],
            name=req["name"][: -len(".ipynb")],
        )
    except (TemplateError, ValueError, RecursionError, MemoryError) as exc:
        raise ApiError(400, f"{req['name']}: {_first(exc)}") from None
    except Exception as exc:  # nbformat's errors on a broken notebook
        raise ApiError(
            400, f"{req['name']} is not a readable notebook: {type(exc).__name__}: {_first(exc)}"
        ) from None
    return tmpl, defaults


class NotebookExportHandler(ApiHandler):
    """``POST /notebooks/export``: a notebook's template, its YAML and its parameters (the
    defaults of its ``parameters`` cell, for a form)."""

    async def post(self) -> None:
        from idds_jupyter.export import to_yaml

        req = _export_request(self, self.json_body())
        tmpl, defaults = await self.run(_export, self.ctx.config.home, self.user.name, req)
        self.send({"template": tmpl, "yaml": to_yaml(tmpl), "parameters": defaults})


class NotebookSubmitHandler(ApiHandler):
    """``POST /notebooks/submit``: export a notebook and submit it as the caller's run."""

    async def post(self) -> None:
        from idds_jupyter.api import limits
        from idds_jupyter.api.handlers import _template_error
        from idds_jupyter.model import TemplateError

        body = self.json_body()
        req = _export_request(self, body)
        params = body.get("params") or {}
        if not isinstance(params, dict):
            raise ApiError(400, "field 'params' must be a JSON object")
        backend = body.get("backend")
        if backend is not None and not isinstance(backend, str):
            raise ApiError(400, "field 'backend' must be a string")
        tmpl, _ = await self.run(_export, self.ctx.config.home, self.user.name, req)
        quota = limits.quota(
            self, limits.check_jobs(self.ctx.config, tmpl.get("works"), user=self.user)
        )

        def submit() -> int:
            quota()
            return self.ctx.orch.submit(tmpl, params, owner=self.user.name, backend=backend)

        try:
            wid = await self.run(submit)
        except TemplateError as exc:
            raise _template_error(exc) from None
        except (ValueError, TypeError, KeyError) as exc:
            raise ApiError(400, f"invalid workflow: {str(exc).splitlines()[0]}") from None
        self.ctx.remember_owner(wid, self.user.name)
        self.send({"id": wid, "name": tmpl["name"], "works": len(tmpl["works"])}, 201)
