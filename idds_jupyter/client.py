"""The Python client of the iDDS REST service (``{url}/idds/api/v1/``) and its push channel.

:class:`Client` finds its server from ``url``/``token`` arguments, else the
``IDDS_URL``/``IDDS_TOKEN`` environment variables, else the newest connection
file ``idds-<port>.json`` in the Jupyter runtime dir whose server process is
alive. REST calls go through one keep-alive connection per thread: plain
``http.client`` for an ``http://`` server reached without a proxy (the usual
local case, a millisecond less per call), else a ``requests.Session`` (TLS,
proxies, CA bundles). Errors from the server are raised as :class:`IddsError`
(status, one-line message).

The push channel (:class:`PushChannel`, ``client.push``) is one background
thread running a tornado websocket client on its own event loop. It subscribes
to the stream, reconnects with backoff (and re-subscribes), and dispatches each
message to the registered listeners. After every (re)connection it calls the
``on_connect`` hooks, which fetch what may have been missed over REST — the
only time results are fetched rather than pushed.
"""

from __future__ import annotations

import contextlib
import glob
import json
import os
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from typing import Any
from urllib.parse import quote

from idds_jupyter.backoff import Backoff

__all__ = ["Client", "IddsError", "PushChannel", "get_client", "find_server", "API_PREFIX"]

API_PREFIX = "/idds/api/v1/"
_SMALL_BLOB = 64 * 1024  # PUT small blobs directly (as cheap as a HEAD); HEAD first above

Listener = Callable[[dict[str, Any]], None]


class IddsError(Exception):
    """An error answered by the iDDS service (or the failure to reach it)."""

    def __init__(self, status: int, message: str, retry_after: float | None = None) -> None:
        self.status = status
        self.message = " ".join(str(message).split())
        # seconds the service asked to wait before trying again (503: database busy)
        self.retry_after = retry_after
        super().__init__(status, self.message)

    def __str__(self) -> str:
        return f"{self.status}: {self.message}" if self.status else self.message


# --------------------------------------------------------------------------- discovery


def _pid_alive(pid: Any) -> bool:
    try:
        pid = int(pid)
    except (TypeError, ValueError):
        return False
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _runtime_dir() -> str | None:
    try:
        from jupyter_core.paths import jupyter_runtime_dir
    except ImportError:
        return None
    return str(jupyter_runtime_dir())


def find_server(runtime_dir: str | None = None) -> tuple[str, str]:
    """``(url, token)`` from ``IDDS_URL``/``IDDS_TOKEN`` or the newest live connection file."""
    url = os.environ.get("IDDS_URL")
    if url:
        token = os.environ.get("IDDS_TOKEN")
        if token is None:
            raise IddsError(0, "IDDS_URL is set but IDDS_TOKEN is not: set both, or neither to use "
                               "the connection file of a running server")
        return url, token
    rdir = runtime_dir or _runtime_dir()
    if rdir is None:
        raise IddsError(0, "no iDDS server: IDDS_URL/IDDS_TOKEN are not set and jupyter_core is "
                           "not installed to find a connection file")
    files = sorted(glob.glob(os.path.join(rdir, "idds-*.json")), key=_mtime, reverse=True)
    stale = 0
    for path in files:
        try:
            with open(path, encoding="utf-8") as fh:
                info = json.load(fh)
        except (OSError, ValueError):
            continue
        if not _pid_alive(info.get("pid")):
            stale += 1
            continue
        if info.get("url") and info.get("token") is not None:
            return str(info["url"]), str(info["token"])
    extra = f" ({stale} stale file(s) of stopped servers)" if stale else ""
    raise IddsError(0, f"no iDDS server: IDDS_URL/IDDS_TOKEN are not set and no connection file "
                       f"idds-*.json of a running server is in {rdir}{extra}; start one with "
                       f"'idds-jupyter serve' or 'jupyter lab'")


def _mtime(path: str) -> float:
    try:
        return os.path.getmtime(path)
    except OSError:
        return 0.0


# --------------------------------------------------------------------------- client


class Client:
    """REST client of one iDDS service, with a lazily started push channel."""

    def __init__(self, url: str | None = None, token: str | None = None,
                 timeout: float = 60.0) -> None:
        if url is None:
            url, found_token = find_server()
            token = found_token if token is None else token
        elif token is None:
            token = os.environ.get("IDDS_TOKEN", "")
        self.url = url.rstrip("/")
        self.token = token or ""
        self.api = self.url + API_PREFIX
        self.timeout = timeout
        self.uploaded: set[str] = set()  # digests this client knows the server has
        self._local = threading.local()
        self._push: PushChannel | None = None
        self._router: Any = None  # idds_jupyter.faat.results.ResultRouter, made on first use
        self._lock = threading.Lock()
        self._pid = os.getpid()

    def __repr__(self) -> str:
        return f"Client({self.url!r})"

    # ------------------------------------------------------------------ http
    @property
    def session(self) -> Any:
        """This thread's HTTP session (``requests.Session``), made on first use."""
        s = getattr(self._local, "session", None)
        if s is None:
            import requests

            s = requests.Session()
            # Read the proxy and CA settings of the environment once, not on every
            # request (requests re-reads os.environ per call: a millisecond each).
            s.proxies.update(requests.utils.get_environ_proxies(self.url))
            ca = os.environ.get("REQUESTS_CA_BUNDLE") or os.environ.get("CURL_CA_BUNDLE")
            if ca:
                s.verify = ca
            s.trust_env = False
            if self.token:
                s.headers["Authorization"] = f"Bearer {self.token}"
            self._local.session = s
        return s

    @property
    def _direct(self) -> _Direct | None:
        """The plain keep-alive connection of this thread, when the URL allows one."""
        if not hasattr(self._local, "direct"):
            self._local.direct = _Direct.for_url(self.api, self.token, self.timeout)
        return self._local.direct

    #: how long in all a call waits out "database busy" answers (503 with Retry-After: the
    #: service stored nothing and asks to try again) before it raises them
    busy_retry_s = 60.0

    def request(self, method: str, path: str, **kw: Any) -> Any:
        """One REST call.

        Returns the response (``status_code``, ``content``, ``text``, ``json()``,
        ``headers``) or raises :class:`IddsError`. A database busy answer
        (503 with ``Retry-After``: nothing was changed) is tried again after the wait it
        names, for up to :attr:`busy_retry_s` seconds in all.
        """
        waited = 0.0
        while True:
            try:
                return self._request_once(method, path, **kw)
            except IddsError as exc:
                pause = exc.retry_after
                if exc.status != 503 or pause is None or waited + pause > self.busy_retry_s:
                    raise
            time.sleep(pause)
            waited += pause

    def _request_once(self, method: str, path: str, *, json_body: Any = None,
                      data: bytes | None = None, params: Mapping[str, Any] | None = None,
                      ok: Iterable[int] = (200, 201, 204),
                      headers: Mapping[str, str] | None = None) -> Any:
        direct = self._direct
        if direct is not None:
            body = data
            hdrs = dict(headers or {})
            if json_body is not None:
                body = json.dumps(json_body, separators=(",", ":")).encode()
                hdrs.setdefault("Content-Type", "application/json")
            elif data is not None:
                hdrs.setdefault("Content-Type", "application/octet-stream")
            try:
                resp = direct.request(method, path.lstrip("/"), body, params, hdrs)
            except OSError as exc:
                raise IddsError(0, f"cannot reach the iDDS service at {self.url}: {exc}") from None
            if resp.status_code not in tuple(ok):
                raise IddsError(resp.status_code, _error_message(resp, method, path),
                                _retry_after(resp))
            return resp
        return self._request_session(method, path, json_body=json_body, data=data, params=params,
                                     ok=ok, headers=headers)

    def _request_session(self, method: str, path: str, *, json_body: Any, data: bytes | None,
                         params: Mapping[str, Any] | None, ok: Iterable[int],
                         headers: Mapping[str, str] | None) -> Any:
        import requests

        url = self.api + path.lstrip("/")
        kw: dict[str, Any] = {"timeout": self.timeout}
        if json_body is not None:
            kw["data"] = json.dumps(json_body, separators=(",", ":"))
            kw["headers"] = {"Content-Type": "application/json"}
        elif data is not None:
            kw["data"] = data
            kw["headers"] = {"Content-Type": "application/octet-stream"}
        if headers:
            kw["headers"] = {**kw.get("headers", {}), **headers}
        if params:
            kw["params"] = params
        try:
            resp = self.session.request(method, url, **kw)
        except requests.ConnectionError as exc:
            raise IddsError(0, f"cannot reach the iDDS service at {self.url}: {exc}") from None
        except requests.RequestException as exc:
            raise IddsError(0, f"{method} {url}: {exc}") from None
        if resp.status_code not in tuple(ok):
            raise IddsError(resp.status_code, _error_message(resp, method, path),
                            _retry_after(resp))
        return resp

    def _json(self, method: str, path: str, body: Any = None, **kw: Any) -> Any:
        resp = self.request(method, path, json_body=body, **kw)
        if not resp.content:
            return None
        return resp.json()

    # ------------------------------------------------------------------ runs
    def submit(self, template: Mapping[str, Any], params: Mapping[str, Any] | None = None,
               open: bool = False, **extra: Any) -> int:
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

    def submit_faat(self, body_sha: str, args_sha: str, name: str,
                    params: Mapping[str, Any] | None = None) -> int:
        """Submit a FaaT workflow whose body runs on the server (``where="server"``)."""
        req = {"faat": {"body": body_sha, "args": args_sha, "name": name},
               "params": dict(params or {})}
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

    def add_works(self, workflow_id: int, works: list[dict[str, Any]],
                  blobs: dict[str, bytes] | None = None) -> list[str]:
        """Add works to a running run (``blobs``: payloads they reference by sha256); returns their names."""
        body: dict[str, Any] = {"works": works}
        if blobs:
            body["blobs"] = _encode_blobs(blobs)
        out = self._json("POST", f"requests/{int(workflow_id)}/works", body)
        if blobs:
            self.uploaded.update(blobs)
        return list(out.get("names", [w.get("name") for w in works]))

    def close(self, workflow_id: int, *, result: Any = None, result_blob: str | None = None,
              error: str | None = None, traceback: str | None = None) -> dict[str, Any]:
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

    def work_results(self, workflow_id: int, work: str, offset: int = 0,
                     limit: int | None = None) -> list[dict[str, Any]]:
        """Job results of one work, in job order (all of them when ``limit`` is None)."""
        out: list[dict[str, Any]] = []
        page = limit or 5000
        while True:
            got = self._json("GET", f"requests/{int(workflow_id)}/works/{work}/results",
                             params={"offset": offset, "limit": page})["results"]
            out.extend(got)
            if limit is not None or len(got) < page:
                return out
            offset += len(got)

    def monitor(self, workflow_id: int) -> dict[str, Any]:
        """A run's summary: status, job counts by status, timings."""
        return dict(self._json("GET", f"monitor/{int(workflow_id)}"))

    def provenance(self, workflow_id: int, work: str | None = None,
                   idx: int | None = None) -> dict[str, Any]:
        """One job's provenance and lineage (``work`` and ``idx``), else the whole run's.

        The whole run's: every recorded job (paged through), environments, links and
        per-work counts.
        """
        if work is not None:
            return dict(self._json(
                "GET", f"monitor/{int(workflow_id)}/works/{quote(work, safe='')}/jobs/"
                       f"{int(idx or 0)}/provenance"))
        out: dict[str, Any] = {}
        offset = 0
        while True:
            page = dict(self._json("GET", f"monitor/{int(workflow_id)}/provenance",
                                   params={"offset": offset, "limit": 5000}))
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
        return int(self._json("POST", f"requests/{int(workflow_id)}/rerun",
                              {"failed": bool(failed), "changed": bool(changed)})["id"])

    def dag(self, workflow_id: int) -> dict[str, Any]:
        """Work instances (nodes, with job counts) and dependency/branch edges of a run."""
        return dict(self._json("GET", f"monitor/{int(workflow_id)}/dag"))

    def jobs(self, workflow_id: int, work: str, offset: int = 0, limit: int = 100,
             status: str | None = None) -> dict[str, Any]:
        """A page of the jobs of one work of a run, optionally only those in ``status``."""
        params: dict[str, Any] = {"offset": offset, "limit": limit}
        if status:
            params["status"] = status
        return dict(self._json("GET", f"monitor/{int(workflow_id)}/works/{quote(work, safe='')}/jobs",
                               params=params))

    def log(self, job_id: int, tail: int | None = None) -> str:
        """A job's output (the last ``tail`` lines when given)."""
        params = {"tail": tail} if tail else None
        return str(self.request("GET", f"logs/{int(job_id)}", params=params).text)

    def whoami(self) -> dict[str, Any]:
        """The user the server takes this client for (and whether an admin)."""
        return dict(self._json("GET", "auth/whoami"))

    # --------------------------------------------------------------- catalog
    def add_dataset(self, name: str, files: list[Any], meta: dict[str, Any] | None = None) -> dict[str, Any]:
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
        res = self._json("POST", f"catalog/datasets/{quote(name, safe='')}/available", {"files": files})
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

    def upload(self, data: bytes, sha: str | None = None,
               defer: dict[str, bytes] | None = None) -> str:
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
            base = "wss://" + base[len("https://"):]
        elif base.startswith("http://"):
            base = "ws://" + base[len("http://"):]
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

    def wait_event(self, predicate: Callable[[dict[str, Any]], bool],
                   timeout: float | None = None,
                   check: Callable[[], dict[str, Any] | None] | None = None) -> dict[str, Any]:
        """Block until a pushed message satisfies ``predicate``; returns it.

        ``check`` is called after subscribing (and after every reconnection): if it
        returns a dict, that is returned at once (closes the race with events that
        happened before the wait started).
        """
        return self.push.wait_event(predicate, timeout, check)

    def wait_workflow(self, workflow_id: int, timeout: float | None = None) -> str:
        """Block until the workflow is terminal (pushed ``workflow.terminal``); returns its status."""
        return str(self._wait_terminal(workflow_id, timeout).get("status"))

    def wait_run(self, workflow_id: int, timeout: float | None = None
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
                m.get("type") == "workflow.dirty" and m.get("status") in (None, *TERMINAL))

        while True:  # every wait checks the status once after subscribing (no lost event)
            left = None if deadline is None else max(0.0, deadline - time.monotonic())
            try:
                msg = self.wait_event(match, left, check)
            except TimeoutError:
                raise TimeoutError(f"workflow {workflow_id} not finished after {timeout} s") from None
            if msg.get("type") != "workflow.dirty":
                return msg

    def shutdown(self) -> None:
        """Stop the push channel and close the HTTP connections of this thread."""
        if self._push is not None:
            self._push.stop()
            self._push = None
        s = getattr(self._local, "session", None)
        if s is not None:
            s.close()
            self._local.session = None


TERMINAL = frozenset({"finished", "subfinished", "failed", "aborted"})


INLINE_BLOB = 256 * 1024  # blobs up to this size ride along with a submission


class _Response:
    """What callers read of a response (the names ``requests`` uses)."""

    def __init__(self, status: int, reason: str, headers: Mapping[str, str], content: bytes) -> None:
        self.status_code = status
        self.reason = reason
        self.headers = headers
        self.content = content

    @property
    def text(self) -> str:
        return self.content.decode("utf-8", "replace")

    def json(self) -> Any:
        return json.loads(self.content)


class _Direct:
    """One keep-alive ``http.client`` connection to a plain-HTTP server (one per thread)."""

    def __init__(self, host: str, port: int, base: str, token: str, timeout: float) -> None:
        self.host, self.port, self.base, self.timeout = host, port, base, timeout
        self.auth = {"Authorization": f"Bearer {token}"} if token else {}
        self.conn: Any = None

    @classmethod
    def for_url(cls, api: str, token: str, timeout: float) -> _Direct | None:
        """None where ``requests`` must do it: HTTPS, or a proxy set for this host."""
        from urllib.parse import urlsplit
        from urllib.request import getproxies, proxy_bypass

        u = urlsplit(api)
        if u.scheme != "http" or not u.hostname:
            return None
        if getproxies().get("http") and not proxy_bypass(u.hostname):
            return None
        return cls(u.hostname, u.port or 80, u.path, token, timeout)

    def request(self, method: str, path: str, body: bytes | None,
                params: Mapping[str, Any] | None, headers: dict[str, str]) -> _Response:
        import http.client
        from urllib.parse import urlencode

        target = self.base + path
        if params:
            target += "?" + urlencode({k: v for k, v in params.items() if v is not None})
        hdrs = {**self.auth, **headers}
        for attempt in (0, 1):
            fresh = self.conn is None
            if fresh:
                self.conn = http.client.HTTPConnection(self.host, self.port, timeout=self.timeout)
            try:
                self.conn.request(method, target, body=body, headers=hdrs)
                r = self.conn.getresponse()
                content = r.read()
            except (http.client.RemoteDisconnected, ConnectionResetError, BrokenPipeError):
                self.close()
                if fresh or attempt:  # a reused connection the server had closed: once more
                    raise
                continue
            except BaseException:
                self.close()
                raise
            if r.will_close:
                self.close()
            return _Response(r.status, r.reason, r.headers, content)
        raise AssertionError("unreachable")  # pragma: no cover

    def close(self) -> None:
        if self.conn is not None:
            with contextlib.suppress(Exception):
                self.conn.close()
            self.conn = None


def _encode_blobs(blobs: dict[str, bytes]) -> dict[str, str]:
    import base64

    return {sha: base64.b64encode(data).decode("ascii") for sha, data in blobs.items()}


def _retry_after(resp: Any) -> float | None:
    """A 503's ``Retry-After`` in seconds (None: absent, or not a number of seconds)."""
    if resp.status_code != 503:
        return None
    try:
        return max(0.0, float(resp.headers.get("Retry-After")))
    except (TypeError, ValueError):
        return None


def _error_message(resp: Any, method: str, path: str) -> str:
    text = ""
    try:
        body = resp.json()
        if isinstance(body, dict):
            text = str(body.get("message") or body.get("error") or body.get("reason") or body)
        else:
            text = str(body)
    except ValueError:
        text = (resp.text or resp.reason or "").strip()
    text = " ".join(text.split())
    return f"{method} {path}: {text}" if text else f"{method} {path}: {resp.reason}"


# --------------------------------------------------------------------------- push channel


class _Waiter:
    __slots__ = ("predicate", "event", "message")

    def __init__(self, predicate: Callable[[dict[str, Any]], bool]) -> None:
        self.predicate = predicate
        self.event = threading.Event()
        self.message: dict[str, Any] | None = None

    def offer(self, msg: dict[str, Any]) -> bool:
        if self.message is None and self.predicate(msg):
            self.message = msg
            self.event.set()
            return True
        return False


class PushChannel:
    """The websocket client of the stream, in one background thread with its own loop."""

    CONNECT_TIMEOUT = 15.0

    def __init__(self, client: Client, subscribe: Any = "*") -> None:
        self.client = client
        self.subscription = subscribe
        self.connected = threading.Event()
        self.last_error: str | None = None
        self.reconnects = 0
        self._listeners: list[Listener] = []
        self._on_connect: list[Callable[[], None]] = []
        self._waiters: list[_Waiter] = []
        self._lock = threading.Lock()
        self._stopping = False
        self._loop: Any = None
        self._conn: Any = None
        self._thread = threading.Thread(target=self._run, name="idds-push", daemon=True)

    # -------------------------------------------------------------- control
    def start(self, timeout: float | None = None) -> None:
        """Open the stream; raises :class:`IddsError` if it is not open within ``timeout`` s."""
        self._thread.start()
        if not self.connected.wait(self.CONNECT_TIMEOUT if timeout is None else timeout):
            self.stop()
            raise IddsError(0, f"cannot open the result stream {self.client.ws_url.split('?')[0]}: "
                               f"{self.last_error or 'timed out'}")

    def stop(self) -> None:
        """Close the stream and stop its thread."""
        self._stopping = True
        loop, conn = self._loop, self._conn
        if loop is not None:
            with contextlib.suppress(RuntimeError):
                loop.call_soon_threadsafe(lambda: conn.close() if conn is not None else None)
        if threading.current_thread() is not self._thread and self._thread.is_alive():
            self._thread.join(timeout=5)

    def add_listener(self, listener: Listener) -> Callable[[], None]:
        """Call ``listener`` with every event; returns a function that removes it."""
        with self._lock:
            self._listeners = [*self._listeners, listener]

        def remove() -> None:
            with self._lock:
                self._listeners = [x for x in self._listeners if x is not listener]

        return remove

    def add_on_connect(self, hook: Callable[[], None]) -> Callable[[], None]:
        """Run ``hook()`` (in a helper thread) after every reconnection."""
        with self._lock:
            self._on_connect = [*self._on_connect, hook]

        def remove() -> None:
            with self._lock:
                self._on_connect = [x for x in self._on_connect if x is not hook]

        return remove

    def wait_event(self, predicate: Callable[[dict[str, Any]], bool], timeout: float | None = None,
                   check: Callable[[], dict[str, Any] | None] | None = None) -> dict[str, Any]:
        """Wait for the first event that ``predicate`` accepts, and return it.

        ``check`` (optional) reads the state from the server, for an event that came before
        the wait began: a non-None answer ends the wait with it.
        """
        w = _Waiter(predicate)
        with self._lock:
            self._waiters.append(w)
        remove_hook: Callable[[], None] | None = None
        try:
            if check is not None:
                def recheck() -> None:
                    got = check()
                    if got is not None and w.message is None:
                        w.message = got
                        w.event.set()

                remove_hook = self.add_on_connect(recheck)
                recheck()
            if not w.event.wait(timeout):
                raise TimeoutError(f"no matching event within {timeout} s")
            assert w.message is not None
            return w.message
        finally:
            if remove_hook is not None:
                remove_hook()
            with self._lock, contextlib.suppress(ValueError):
                self._waiters.remove(w)

    # -------------------------------------------------------------- thread
    def _run(self) -> None:
        import asyncio

        loop = asyncio.new_event_loop()
        self._loop = loop
        try:
            loop.run_until_complete(self._main())
        finally:
            self._loop = None
            loop.close()

    async def _main(self) -> None:
        import asyncio

        from tornado.httpclient import HTTPRequest
        from tornado.websocket import websocket_connect

        loop = asyncio.get_running_loop()
        backoff = Backoff(0.05, maximum=5.0)
        first = True
        while not self._stopping:
            try:
                req = HTTPRequest(self.client.ws_url, connect_timeout=10, request_timeout=None,
                                  headers={"Authorization": f"Bearer {self.client.token}"})
                conn = await websocket_connect(req, ping_interval=20, ping_timeout=20,
                                               max_message_size=1 << 30)
                self._conn = conn
                if self._stopping:
                    conn.close()
                    break
                await conn.write_message(json.dumps({"subscribe": self.subscription}))
                backoff.reset()
                # ready once the service acknowledged the subscription ("subscribed")
                ack_by = loop.time() + 5.0
                ready = False
                while True:
                    timeout = None if ready else max(0.0, ack_by - loop.time())
                    try:
                        raw = await asyncio.wait_for(conn.read_message(), timeout)
                    except TimeoutError:
                        raw, msg = "", {"type": "subscribed"}  # a service that sends no ack
                    if raw is None:
                        self.last_error = f"stream closed ({conn.close_code} {conn.close_reason or ''})".strip()
                        break
                    if raw:
                        try:
                            msg = json.loads(raw)
                        except ValueError:
                            continue
                    if not isinstance(msg, dict):
                        continue
                    if not ready and msg.get("type") in ("subscribed", "error"):
                        if msg.get("type") == "error":
                            self.last_error = str(msg.get("error"))
                            break
                        ready = True
                        if not first:
                            self.reconnects += 1
                        first = False
                        self.connected.set()
                        self._resync()
                        continue
                    self._dispatch(msg)
            except Exception as exc:
                self.last_error = f"{type(exc).__name__}: {exc}"
            self.connected.clear()
            self._conn = None
            if self._stopping:
                break
            await asyncio.sleep(backoff.next())

    def _resync(self) -> None:
        with self._lock:
            hooks = list(self._on_connect)
        if not hooks:
            return

        def run() -> None:
            for hook in hooks:
                with contextlib.suppress(Exception):
                    hook()

        threading.Thread(target=run, name="idds-push-resync", daemon=True).start()

    def _dispatch(self, msg: dict[str, Any]) -> None:
        for listener in self._listeners:
            try:
                listener(msg)
            except Exception as exc:  # a listener's bug must not kill the channel
                self.last_error = f"listener {listener!r}: {type(exc).__name__}: {exc}"
        if self._waiters:
            with self._lock:
                waiters = list(self._waiters)
            for w in waiters:
                with contextlib.suppress(Exception):
                    w.offer(msg)


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
