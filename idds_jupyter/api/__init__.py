"""The REST service: tornado handlers under ``<base_url>idds/api/v1/``.

``make_app(ctx)`` builds a standalone :class:`tornado.web.Application`;
``handlers(ctx, base_url)`` returns the same rules for a host application
(the Jupyter server extension mounts them with its own authenticator).
The routes are described by ``openapi.yaml`` in this package.
"""

from __future__ import annotations

import re
from typing import Any

import tornado.web

from idds_jupyter.api import handlers as h
from idds_jupyter.api import jobs as jh
from idds_jupyter.api import provenance as ph
from idds_jupyter.api.base import ApiError, ApiHandler
from idds_jupyter.api.config import ConfigHandler
from idds_jupyter.api.context import ApiContext, make_context
from idds_jupyter.api.metrics import MetricsHandler, MonitorAggregateHandler
from idds_jupyter.api.notebooks import (
    ExecutedNotebookHandler,
    NotebookExportHandler,
    NotebookSubmitHandler,
)
from idds_jupyter.api.stream import StreamHandler
from idds_jupyter.api.trials import TrialsHandler

API_PREFIX = "idds/api/v1"

# Path parameters: OpenAPI name -> regex (passed to handlers positionally, in path order).
PARAMS = {
    "id": r"[0-9]+",
    "job_id": r"[0-9]+",
    "token_id": r"[0-9]+",
    "action": "|".join(h.ACTIONS),
    "name": r"[^/]+",
    "sha256": r"[^/]+",
    "dataset": r"[^/]+",
    "idx": r"[0-9]+",
}

# (OpenAPI path under the prefix, handler class)
ROUTES: list[tuple[str, type[tornado.web.RequestHandler]]] = [
    ("/ping", h.PingHandler),
    ("/openapi.yaml", h.OpenApiHandler),
    ("/auth/whoami", h.WhoAmIHandler),
    ("/config", ConfigHandler),
    ("/auth/tokens", h.TokensHandler),
    ("/auth/tokens/{token_id}", h.TokenHandler),
    ("/requests", h.RequestsHandler),
    ("/requests/{id}", h.RequestHandler),
    ("/requests/{id}/works", h.RequestWorksHandler),
    ("/requests/{id}/works/{name}/jobs", h.RequestWorkJobsHandler),
    ("/requests/{id}/close", h.RequestCloseHandler),
    ("/requests/{id}/works/{name}/results", h.WorkResultsHandler),
    ("/requests/{id}/rerun", ph.RerunHandler),
    ("/requests/{id}/{action}", h.RequestControlHandler),
    ("/cache", h.CacheStatsHandler),
    ("/cache/{sha256}", h.CacheBlobHandler),
    ("/catalog/datasets", h.DatasetsHandler),
    ("/catalog/datasets/{dataset}", h.DatasetHandler),
    ("/catalog/datasets/{dataset}/available", h.DatasetAvailableHandler),
    ("/catalog/datasets/{dataset}/staging", h.DatasetStagingHandler),
    ("/metrics", MetricsHandler),
    ("/monitor", MonitorAggregateHandler),
    ("/monitor/{id}", h.MonitorHandler),
    ("/monitor/{id}/dag", h.MonitorDagHandler),
    ("/monitor/{id}/works/{name}/jobs", h.MonitorJobsHandler),
    ("/monitor/{id}/trials", TrialsHandler),
    ("/monitor/{id}/provenance", ph.RunProvenanceHandler),
    ("/monitor/{id}/works/{name}/jobs/{idx}/provenance", ph.JobProvenanceHandler),
    ("/messages", h.MessagesHandler),
    ("/logs/{job_id}", h.LogHandler),
    ("/logs/{job_id}/notebook", ExecutedNotebookHandler),
    ("/notebooks/export", NotebookExportHandler),
    ("/notebooks/submit", NotebookSubmitHandler),
    # job-token routes of batch jobs with transfer: http (idds_jupyter.api.jobs)
    ("/jobs/{job_id}/spec", jh.JobSpecHandler),
    ("/jobs/{job_id}/blobs/{sha256}", jh.JobBlobHandler),
    ("/jobs/{job_id}/result", jh.JobResultHandler),
    ("/stream", StreamHandler),
]


def url_join(*parts: str) -> str:
    """Join URL path pieces with single slashes; keeps a leading slash."""
    out = "/".join(p.strip("/") for p in parts if p and p.strip("/"))
    return "/" + out


def api_base(base_url: str = "/") -> str:
    """``<base_url>idds/api/v1`` with a leading and no trailing slash."""
    return url_join(base_url or "/", API_PREFIX)


def route_regex(base_url: str, template: str) -> str:
    """The tornado pattern of an OpenAPI path: each ``{param}`` becomes a positional group."""
    path = re.sub(r"\{(\w+)\}", lambda m: f"({PARAMS[m.group(1)]})", template)
    return api_base(base_url) + path


def openapi_path(pattern: str, base_url: str = "/") -> str | None:
    """The OpenAPI path of a route pattern made by :func:`route_regex` (None if not ours)."""
    pattern = pattern.rstrip("$")
    for template, _ in ROUTES:
        if route_regex(base_url, template) == pattern:
            return template
    return None


#: path parameters that are ids of the store (64-bit integers: larger ones are 404)
ID_PARAMS = frozenset({"id", "job_id", "token_id"})


def handlers(ctx: ApiContext, base_url: str = "/") -> list[tuple[str, type[Any], dict[str, Any]]]:
    """The API's URL rules under ``base_url``, each handler initialised with ``ctx`` (and
    the positions of its id arguments)."""
    out: list[tuple[str, type[Any], dict[str, Any]]] = []
    for path, cls in ROUTES:
        kw: dict[str, Any] = {"ctx": ctx}
        ids = tuple(i for i, p in enumerate(re.findall(r"\{(\w+)\}", path)) if p in ID_PARAMS)
        if ids:
            kw["ids"] = ids
        out.append((route_regex(base_url, path), cls, kw))
    return out


def make_app(ctx: ApiContext, base_url: str = "/", **settings: Any) -> tornado.web.Application:
    """A standalone application serving the API (bearer-token auth from ``ctx.auth``)."""
    settings.setdefault("xsrf_cookies", False)
    settings.setdefault("websocket_ping_interval", 30)
    settings.setdefault("default_handler_class", h.NotFoundHandler)
    settings.setdefault("default_handler_args", {"ctx": ctx})
    return tornado.web.Application(handlers(ctx, base_url), **settings)


__all__ = [
    "API_PREFIX",
    "PARAMS",
    "ROUTES",
    "ApiContext",
    "ApiError",
    "ApiHandler",
    "api_base",
    "handlers",
    "make_app",
    "make_context",
    "openapi_path",
    "route_regex",
    "url_join",
]
