"""The API of the iDDS service in Python: :class:`Client`, and the process's default client.

One method per REST call (runs, works, results, monitor, provenance, catalog,
cache), over :mod:`.transport`; waits (:meth:`Client.wait_run`, results) over the
push channel (:mod:`.push`). Where the service is, :mod:`.discovery` finds.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable, Mapping
from typing import Any
from urllib.parse import quote

from idds_jupyter.client.discovery import find_server
from idds_jupyter.client.push import Listener, PushChannel
from idds_jupyter.client.transport import API_PREFIX, Transport

__all__ = ["INLINE_BLOB", "TERMINAL", "Client", "get_client", "set_client"]

_SMALL_BLOB = 64 * 1024  # PUT small blobs directly (as cheap as a HEAD); HEAD first above
TERMINAL = frozenset({"finished", "subfinished", "failed", "aborted"})
INLINE_BLOB = 256 * 1024  # blobs up to this size ride along with a submission


class Client:
    """REST client of one iDDS service, with a lazily started push channel."""

    def __init__(
        self, url: str | None = None, token: str | None = None, timeout: float = 60.0
    ) -> None:
        if url is None:
            url, found_token = find_server()
            token = found_token if token is None else token
        elif token is None:
            token = os.environ.get("IDDS_TOKEN", "")
        self.url = url.rstrip("/")
        self.token = token or ""
        self.api = self.url + API_PREFIX
        self.timeout = timeout
        self.transport = Transport(self.url, self.token, timeout)
        self.uploaded: set[str] = set()  # digests this client knows the server has
        self._push: PushChannel | None = None
        self._router: Any = None  # idds_jupyter.faat.results.ResultRouter, made on first use
        self._lock = threading.Lock()
        self._pid = os.getpid()

    def __repr__(self) -> str:
        return f"Client({self.url!r})"

    # ------------------------------------------------------------------ http
    def request(self, method: str, path: str, **kw: Any) -> Any:
        """One REST call (:meth:`.Transport.request`): the response, or :class:`IddsError`."""
        return self.transport.request(method, path, **kw)

    def _json(self, method: str, path: str, body: Any = None, **kw: Any) -> Any:
        resp = self.request(method, path, json_body=body, **kw)
        if not resp.content:
            return None
        return resp.json()

    # ------------------------------------------------------------------ runs
    def submit(
        self,
        template: Mapping[str, Any],
        params: Mapping[str, Any] | None = None,
        open: bool = False,
        **extra: Any,
    ) -> int:
        """Submit a workflow template; returns the new workflow id."""
        blobs: dict[str, bytes] | None = extra.pop("blobs", None)
        body: dict[str, Any] = {"template": dict(template), "params": dict(params or {})}
        if open:
            body["open"] = True
        body.update(extra)
        if blobs:
            body["blobs"] = _encode_blobs(blobs)
        wid = int(self._json("POST", "requests", body)["id"])
        if blobs:
            self.uploaded.update(blobs)
        return wid

    def submit_faat(
        self, body_sha: str, args_sha: str, name: str, params: Mapping[str, Any] | None = None
    ) -> int:
        """Submit a FaaT workflow whose body runs on the server (``where="server"``)."""
        req = {
            "faat": {"body": body_sha, "args": args_sha, "name": name},
            "params": dict(params or {}),
        }
        return int(self._json("POST", "requests", req)["id"])

    def status(self, workflow_id: int, works: bool = True) -> dict[str, Any]:
        """The run; ``works=False`` leaves out its works (the cheap call a waiter makes)."""
        params = None if works else {"works": "false"}
        return dict(self._json("GET", f"requests/{int(workflow_id)}", params=params))

    def runs(self, limit: int = 100) -> list[dict[str, Any]]:
        """Your runs (all runs for an admin), newest first, at most ``limit``."""
        out = self._json("GET", "requests", params={"limit": int(limit)})
        if isinstance(out, dict):  # tolerate {"requests": [...]} / {"runs": [...]}
            out = out.get("requests", out.get("runs", []))
        return list(out)

    def abort(self, workflow_id: int) -> dict[str, Any]:
        """Abort a run: its running jobs are cancelled; it cannot be resumed."""
        return dict(self._json("POST", f"requests/{int(workflow_id)}/abort", {}))

    def retry(self, workflow_id: int) -> dict[str, Any]:
        """Run the failed jobs of a run again."""
        return dict(self._json("POST", f"requests/{int(workflow_id)}/retry", {}))

    def add_works(
        self,
        workflow_id: int,
        works: list[dict[str, Any]],
        blobs: dict[str, bytes] | None = None,
        declared: dict[str, int] | None = None,
    ) -> list[str]:
        """Add works to a running run (``blobs``: payloads they reference by sha256); returns
        their names. ``declared``: works that will have that many jobs (:meth:`add_jobs`)."""
        body: dict[str, Any] = {"works": works}
        if blobs:
            body["blobs"] = _encode_blobs(blobs)
        if declared:
            body["declared"] = declared
        out = self._json("POST", f"requests/{int(workflow_id)}/works", body)
        if blobs:
            self.uploaded.update(blobs)
        return list(out.get("names", [w.get("name") for w in works]))

    def add_jobs(
        self, workflow_id: int, work: str, start: int, kwargs_list: list[dict[str, Any]]
    ) -> None:
        """Jobs ``start``, ``start + 1``, … of a work added with ``declared`` (JSON keyword
        arguments each): they go to a worker before their rows are written."""
        self._json(
            "POST",
            f"requests/{int(workflow_id)}/works/{quote(work, safe='')}/jobs",
            {"start": int(start), "kwargs_list": kwargs_list},
        )

    def close(
        self,
        workflow_id: int,
        *,
        result: Any = None,
        result_blob: str | None = None,
        error: str | None = None,
        traceback: str | None = None,
    ) -> dict[str, Any]:
        """End the body of an open workflow (it finishes when its works are done)."""
        body: dict[str, Any] = {}
        if result is not None:
            body["result"] = result
        if result_blob is not None:
            body["result_blob"] = result_blob
        if error is not None:
            body["error"] = error
        if traceback is not None:
            body["traceback"] = traceback
        return dict(self._json("POST", f"requests/{int(workflow_id)}/close", body) or {})

    def work_results(
        self, workflow_id: int, work: str, offset: int = 0, limit: int | None = None
    ) -> list[dict[str, Any]]:
        """Job results of one work, in job order (all of them when ``limit`` is None)."""
        out: list[dict[str, Any]] = []
        page = limit or 5000
        while True:
            got = self._json(
                "GET",
                f"requests/{int(workflow_id)}/works/{work}/results",
                params={"offset": offset, "limit": page},
            )["results"]
            out.extend(got)
            if limit is not None or len(got) < page:
                return out
            offset += len(got)

    def trials(
        self,
        workflow_id: int,
        since: str | None = None,
        work: str | None = None,
        limit: int | None = None,
    ) -> dict[str, Any]:
        """The ended jobs (an HPO study's trials) of a run after cursor ``since``, in one page.

        ``{"columns", "params", "trials": [row, ...], "cursor", "more", "status"}``; pass the
        answer's ``cursor`` as ``since`` next time for what ended meanwhile.
        """
        params: dict[str, Any] = {}
        if since:
            params["since"] = since
        if work is not None:
            params["work"] = work
        if limit is not None:
            params["limit"] = int(limit)
        return dict(self._json("GET", f"monitor/{int(workflow_id)}/trials", params=params))

    def monitor(self, workflow_id: int) -> dict[str, Any]:
        """A run's summary: status, job counts by status, timings."""
        return dict(self._json("GET", f"monitor/{int(workflow_id)}"))

    def provenance(
        self, workflow_id: int, work: str | None = None, idx: int | None = None
    ) -> dict[str, Any]:
        """One job's provenance and lineage (``work`` and ``idx``), else the whole run's.

        The whole run's: every recorded job (paged through), environments, links and
        per-work counts.
        """
        if work is not None:
            return dict(
                self._json(
                    "GET",
                    f"monitor/{int(workflow_id)}/works/{quote(work, safe='')}/jobs/"
                    f"{int(idx or 0)}/provenance",
                )
            )
        out: dict[str, Any] = {}
        offset = 0
        while True:
            page = dict(
                self._json(
                    "GET",
                    f"monitor/{int(workflow_id)}/provenance",
                    params={"offset": offset, "limit": 5000},
                )
            )
            if not out:
                out = page
            else:
                out["jobs"] += page["jobs"]
                out["links"] += page["links"]
                out["environments"].update(page["environments"])
            if len(page["jobs"]) < 5000:
                out.pop("offset", None)
                return out
            offset += len(page["jobs"])

    def rerun(self, workflow_id: int, failed: bool = True, changed: bool = False) -> int:
        """A new run of a run's template, every work memoized (see ``POST requests/{id}/rerun``)."""
        return int(
            self._json(
                "POST",
                f"requests/{int(workflow_id)}/rerun",
                {"failed": bool(failed), "changed": bool(changed)},
            )["id"]
        )

    def dag(self, workflow_id: int) -> dict[str, Any]:
        """Work instances (nodes, with job counts) and dependency/branch edges of a run."""
        return dict(self._json("GET", f"monitor/{int(workflow_id)}/dag"))

    def jobs(
        self,
        workflow_id: int,
        work: str,
        offset: int = 0,
        limit: int = 100,
        status: str | None = None,
    ) -> dict[str, Any]:
        """A page of the jobs of one work of a run, optionally only those in ``status``."""
        params: dict[str, Any] = {"offset": offset, "limit": limit}
        if status:
            params["status"] = status
        return dict(
            self._json(
                "GET",
                f"monitor/{int(workflow_id)}/works/{quote(work, safe='')}/jobs",
                params=params,
            )
        )

    def log(self, job_id: int, tail: int | None = None) -> str:
        """A job's output (the last ``tail`` lines when given)."""
        params = {"tail": tail} if tail else None
        return str(self.request("GET", f"logs/{int(job_id)}", params=params).text)

    def whoami(self) -> dict[str, Any]:
        """The user the server takes this client for (and whether an admin)."""
        return dict(self._json("GET", "auth/whoami"))

    # --------------------------------------------------------------- catalog
    def add_dataset(
        self, name: str, files: list[Any], meta: dict[str, Any] | None = None
    ) -> dict[str, Any]:
        """Register a dataset (its files, optional metadata) in the catalog."""
        body: dict[str, Any] = {"name": name, "files": list(files)}
        if meta:
            body["meta"] = meta
        return dict(self._json("POST", "catalog/datasets", body))

    def datasets(self) -> list[dict[str, Any]]:
        """The caller's datasets (an admin's: everyone's)."""
        return list(self._json("GET", "catalog/datasets")["datasets"])

    def dataset(self, name: str) -> dict[str, Any]:
        """A dataset of the catalog, with its files and their availability."""
        return dict(self._json("GET", f"catalog/datasets/{quote(name, safe='')}"))

    def mark_available(self, name: str, files: list[str] | None = None) -> int:
        """Files of a dataset are staged: jobs waiting on them are released; returns how many."""
        res = self._json(
            "POST", f"catalog/datasets/{quote(name, safe='')}/available", {"files": files}
        )
        return int(res["released"])

    # ----------------------------------------------------------------- cache
    def cache_has(self, sha: str) -> bool:
        """Whether the server's cache holds the blob with sha256 ``sha``."""
        resp = self.request("HEAD", f"cache/{sha}", ok=(200, 404))
        return bool(resp.status_code == 200)

    def cache_put(self, data: bytes, sha: str | None = None) -> str:
        """Upload ``data`` to the server's cache; returns its sha256."""
        import hashlib

        sha = sha or hashlib.sha256(data).hexdigest()
        self.request("PUT", f"cache/{sha}", data=data, ok=(200, 201, 204))
        self.uploaded.add(sha)
        return sha

    def cache_get(self, sha: str) -> bytes:
        """The bytes of a blob of the server's cache."""
        return bytes(self.request("GET", f"cache/{sha}").content)

    def cache_stats(self) -> dict[str, Any]:
        """The cache's size, limit and number of blobs."""
        return dict(self._json("GET", "cache"))

    def upload(
        self, data: bytes, sha: str | None = None, defer: dict[str, bytes] | None = None
    ) -> str:
        """Make sure the server has ``data``; returns its sha256. One upload per unique blob.

        Digests known to be on the server are remembered; large blobs are checked
        with ``HEAD`` first, small ones are ``PUT`` directly (idempotent, one trip) —
        or, given ``defer``, collected there to travel inside the next submission.
        """
        import hashlib

        sha = sha or hashlib.sha256(data).hexdigest()
        if sha in self.uploaded:
            return sha
        if defer is not None and len(data) <= INLINE_BLOB:
            defer[sha] = data
            return sha
        if len(data) > _SMALL_BLOB and self.cache_has(sha):
            self.uploaded.add(sha)
            return sha
        return self.cache_put(data, sha)

    # ------------------------------------------------------------------ push
    @property
    def ws_url(self) -> str:
        """The URL of the server's live event stream (websocket)."""
        base = self.url
        if base.startswith("https://"):
            base = "wss://" + base[len("https://") :]
        elif base.startswith("http://"):
            base = "ws://" + base[len("http://") :]
        from urllib.parse import quote

        return f"{base}{API_PREFIX}stream?token={quote(self.token)}"

    @property
    def push(self) -> PushChannel:
        """The push channel, started (and connected, or raising) on first use."""
        ch = self._push
        if ch is None:
            with self._lock:
                if self._push is None:
                    ch = PushChannel(self)
                    ch.start()  # raises (and stops) when the stream cannot be opened
                    self._push = ch
                ch = self._push
        return ch

    def on_message(self, listener: Listener) -> Callable[[], None]:
        """Call ``listener(message)`` (in the push thread) for every pushed message."""
        return self.push.add_listener(listener)

    def wait_event(
        self,
        predicate: Callable[[dict[str, Any]], bool],
        timeout: float | None = None,
        check: Callable[[], dict[str, Any] | None] | None = None,
    ) -> dict[str, Any]:
        """Block until a pushed message satisfies ``predicate``; returns it.

        ``check`` is called after subscribing (and after every reconnection): if it
        returns a dict, that is returned at once (closes the race with events that
        happened before the wait started).
        """
        return self.push.wait_event(predicate, timeout, check)

    def wait_workflow(self, workflow_id: int, timeout: float | None = None) -> str:
        """Block until the workflow is terminal (pushed ``workflow.terminal``); returns its status."""
        return str(self._wait_terminal(workflow_id, timeout).get("status"))

    def wait_run(
        self, workflow_id: int, timeout: float | None = None
    ) -> tuple[str, dict[str, Any] | None]:
        """Block until the workflow is terminal.

        Returns its status, and its :meth:`status` (``works=False``) when the wait read it
        (None when a pushed event said it ended).
        """
        got = self._wait_terminal(workflow_id, timeout)
        return str(got.get("status")), got.get("run")

    def _wait_terminal(self, workflow_id: int, timeout: float | None) -> dict[str, Any]:
        """The ``workflow.terminal`` message, or ``{"status", "run"}`` from a status read."""
        key = str(int(workflow_id))
        deadline = None if timeout is None else time.monotonic() + timeout

        def check() -> dict[str, Any] | None:
            st = self.status(int(workflow_id), works=False)
            return {"status": st["status"], "run": st} if st["status"] in TERMINAL else None

        # a terminal event ends the wait; a state change ("workflow.dirty", e.g. after an
        # abort, which may end the run without a terminal event) triggers one status check,
        # unless it names a status the run goes on in (a closed run with jobs still to end)
        def match(m: dict[str, Any]) -> bool:
            if str(m.get("key")) != key:
                return False
            return m.get("type") == "workflow.terminal" or (
                m.get("type") == "workflow.dirty" and m.get("status") in (None, *TERMINAL)
            )

        while True:  # every wait checks the status once after subscribing (no lost event)
            left = None if deadline is None else max(0.0, deadline - time.monotonic())
            try:
                msg = self.wait_event(match, left, check)
            except TimeoutError:
                raise TimeoutError(
                    f"workflow {workflow_id} not finished after {timeout} s"
                ) from None
            if msg.get("type") != "workflow.dirty":
                return msg

    def shutdown(self) -> None:
        """Stop the push channel and close the HTTP connections of this thread."""
        if self._push is not None:
            self._push.stop()
            self._push = None
        self.transport.close()


def _encode_blobs(blobs: dict[str, bytes]) -> dict[str, str]:
    import base64

    return {sha: base64.b64encode(data).decode("ascii") for sha, data in blobs.items()}


# --------------------------------------------------------------------------- default client

_default: Client | None = None
_default_lock = threading.Lock()


def get_client() -> Client:
    """The process-wide default client (created on first use, re-created after a fork)."""
    global _default
    c = _default
    if c is None or c._pid != os.getpid():
        with _default_lock:
            c = _default
            if c is None or c._pid != os.getpid():
                c = _default = Client()
    return c


def set_client(client: Client | None) -> Client | None:
    """Replace the process-wide default client (``None`` forgets it); returns the old one."""
    global _default
    with _default_lock:
        old, _default = _default, client
    return old
