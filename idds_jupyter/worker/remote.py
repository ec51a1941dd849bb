"""``python -m idds_jupyter.worker --http``: one job whose inputs and result travel over HTTP.

For batch jobs with ``transfer: http`` (no filesystem shared with the
orchestrator). The job is named by the environment the backend gives it
(or the matching options):

* ``IDDS_SERVER_URL`` — the service, e.g. ``http://host:8888/`` (``/idds/api/v1`` is added);
* ``IDDS_JOB_ID`` — the job;
* ``IDDS_JOB_TOKEN`` — its job token (bound to the job and this attempt).

The wrapper

1. makes a scratch directory (under ``$TMPDIR``; HTCondor points it at the
   job's sandbox) — the job runs there;
2. ``GET /jobs/{id}/spec``, then ``GET /jobs/{id}/blobs/{sha256}`` for each
   blob the spec names (the pickled function, the calls, the sandbox zip),
   streaming each to a file and checking its sha256;
3. runs the job with :func:`~idds_jupyter.worker.job.run_job` (function and
   command jobs alike; a function job's value is pickled into the scratch dir);
4. ``POST /jobs/{id}/result`` as ``multipart/form-data``: the result JSON, the
   pickled value or exception (bytes, as named by their sha256 in the result),
   the job's output (its last 8 MiB) and, for a job of a notebook exported in
   whole-notebook mode, the executed notebook (at most :data:`NOTEBOOK_LIMIT`), which
   the service keeps beside the job's log;
5. removes the scratch directory.

A job of a Rucio-bound work names its file in ``input_file`` (``did``, ``rse``, ``pfn``).
The wrapper downloads it with Rucio's own download client
(``rucio.client.downloadclient.DownloadClient``, which verifies the checksum) into the
scratch directory and gives the job that local path (its ``file`` argument, and the PFN
in its command) instead of the PFN. It authenticates with **its own** Rucio credentials:
rucio's standard ``RUCIO_CONFIG`` / ``RUCIO_ACCOUNT`` / ``RUCIO_AUTH_TYPE`` /
``X509_USER_PROXY`` / token settings, from the worker's environment or declared by the
work in its ``env``; the service never puts its own Rucio secrets in a job spec. A worker
without ``rucio-clients``, or a failed download, fails the job with the DID and the reason.

Transient HTTP trouble (connection refused or reset, timeouts, 408/429/5xx)
is retried with exponential back-off (``IDDS_HTTP_RETRIES``, default 8 tries,
about a minute). A refusal (401/403/404: the token expired, or the attempt is
over) is final. If the inputs cannot be fetched the wrapper posts a failed
result saying why, so the job is retried like any failed job.

Exit code: 0 — result delivered, job ok; 1 — result delivered, job failed;
2 — nothing could be delivered (the scheduler's view decides: the job is
reported failed once its task ends). Standard library only (and rucio-clients for a
job that names a Rucio file).
"""

from __future__ import annotations

import contextlib
import hashlib
import http.client
import json
import os
import shlex
import shutil
import signal
import sys
import tempfile
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Iterator
from typing import Any

from idds_jupyter.backoff import Backoff
from idds_jupyter.worker.job import (
    _base_result,
    _set_error,
    kill_current_command,
    notebook_path,
    run_job,
)

__all__ = [
    "NOTEBOOK_LIMIT",
    "HttpRefused",
    "JobClient",
    "RucioDownloadError",
    "api_base",
    "run_http",
]

API_PATH = "idds/api/v1"
TRANSIENT = {408, 425, 429, 500, 502, 503, 504}
LOG_TAIL = 8 * 2**20
#: the largest executed notebook a job sends back (outputs of plots add up)
NOTEBOOK_LIMIT = 64 * 2**20
_CHUNK = 1 << 20


class HttpRefused(Exception):
    """The server refused the request for good (the status and its error message)."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(f"HTTP {status}: {message}")
        self.status = status
        self.message = message


def api_base(url: str) -> str:
    """``http://host:port/base/`` → ``http://host:port/base/idds/api/v1`` (idempotent)."""
    url = url.strip().rstrip("/")
    return url if url.endswith("/" + API_PATH) else f"{url}/{API_PATH}"


def _error_text(exc: urllib.error.HTTPError) -> str:
    try:
        body = exc.read()
        msg = json.loads(body).get("error") if body else None
    except Exception:
        msg = None
    return str(msg or exc.reason or "")


class JobClient:
    """The job's side of ``/jobs/{id}/…``: bearer job token, retries on transient errors."""

    def __init__(
        self,
        server: str,
        job_id: int,
        token: str,
        retries: int = 8,
        timeout: float = 120.0,
        backoff: float = 0.5,
    ) -> None:
        self.base = api_base(server)
        self.job_id = int(job_id)
        self.token = token
        self.retries = max(1, int(retries))
        self.timeout = timeout
        self.backoff = backoff

    def _url(self, path: str) -> str:
        return f"{self.base}/jobs/{self.job_id}{path}"

    def _retry(self, what: str, fn: Any) -> Any:
        backoff = Backoff(self.backoff, maximum=max(30.0, self.backoff))
        for attempt in range(1, self.retries + 1):
            try:
                return fn()
            except urllib.error.HTTPError as exc:
                msg = _error_text(exc)
                if exc.code not in TRANSIENT:
                    raise HttpRefused(exc.code, msg) from None
                last: Exception = HttpRefused(exc.code, msg)
            except (
                urllib.error.URLError,
                ConnectionError,
                TimeoutError,
                http.client.HTTPException,
                _Truncated,
            ) as exc:
                last = exc
            if attempt < self.retries:
                delay = backoff.next()
                sys.stderr.write(f"idds worker: {what}: {last}; retrying in {delay:g} s\n")
                time.sleep(delay)
        raise ConnectionError(f"{what}: gave up after {self.retries} tries: {last}")

    def _open(self, req: urllib.request.Request) -> Any:
        req.add_header("Authorization", f"Bearer {self.token}")
        return urllib.request.urlopen(req, timeout=self.timeout)  # noqa: S310 - our server

    def spec(self) -> dict[str, Any]:
        def once() -> dict[str, Any]:
            with self._open(urllib.request.Request(self._url("/spec"))) as resp:
                data = json.loads(resp.read())
            if not isinstance(data, dict):
                raise ValueError("the job spec is not a JSON object")
            return data

        return self._retry("fetching the job spec", once)

    def download(self, sha: str, dest: str) -> int:
        """Stream blob ``sha`` into ``dest``, checking its digest; returns its size."""

        def once() -> int:
            h = hashlib.sha256()
            size = 0
            tmp = dest + ".part"
            with (
                self._open(urllib.request.Request(self._url(f"/blobs/{sha}"))) as resp,
                open(tmp, "wb") as fh,
            ):
                while True:
                    chunk = resp.read(_CHUNK)
                    if not chunk:
                        break
                    h.update(chunk)
                    size += len(chunk)
                    fh.write(chunk)
            if h.hexdigest() != sha:
                os.unlink(tmp)
                raise _Truncated(f"blob {sha}: got {size} bytes with sha256 {h.hexdigest()}")
            os.replace(tmp, dest)
            return size

        return int(self._retry(f"fetching blob {sha[:12]}", once))

    def post_result(
        self, result: dict[str, Any], files: dict[str, str], log: bytes | None
    ) -> dict[str, Any]:
        """POST the result (JSON), the files (part name → path) and the log, as multipart."""
        boundary = uuid.uuid4().hex
        pieces: list[tuple[bytes, str | bytes | None]] = []

        def head(name: str, filename: str, ctype: str) -> bytes:
            return (
                f'--{boundary}\r\nContent-Disposition: form-data; name="{name}"; '
                f'filename="{filename}"\r\nContent-Type: {ctype}\r\n\r\n'
            ).encode()

        pieces.append(
            (head("result", "result.json", "application/json"), json.dumps(result).encode("utf-8"))
        )
        for name, path in files.items():
            pieces.append((head(name, os.path.basename(path), "application/octet-stream"), path))
        if log:
            pieces.append((head("log", "job.log", "text/plain"), log))
        tail = f"--{boundary}--\r\n".encode()
        length = len(tail)
        for h, body in pieces:
            n = os.path.getsize(body) if isinstance(body, str) else len(body or b"")
            length += len(h) + n + 2

        def chunks() -> Iterator[bytes]:
            for h, body in pieces:
                yield h
                if isinstance(body, str):
                    with open(body, "rb") as fh:
                        while True:
                            block = fh.read(_CHUNK)
                            if not block:
                                break
                            yield block
                elif body:
                    yield body
                yield b"\r\n"
            yield tail

        def once() -> dict[str, Any]:
            req = urllib.request.Request(self._url("/result"), data=chunks(), method="POST")
            req.add_header("Content-Type", f"multipart/form-data; boundary={boundary}")
            req.add_header("Content-Length", str(length))
            with self._open(req) as resp:
                answer = json.loads(resp.read() or b"{}")
            return answer if isinstance(answer, dict) else {}

        return dict(self._retry("posting the result", once))


class _Truncated(Exception):
    """A download that ended short or corrupt (retried like a dropped connection)."""


def _blob_refs(spec: dict[str, Any]) -> list[dict[str, Any]]:
    refs: list[dict[str, Any]] = []
    payload = spec.get("payload")
    if isinstance(payload, dict):
        refs.append(payload)
        if isinstance(payload.get("sandbox"), dict):
            refs.append(payload["sandbox"])
    if isinstance(spec.get("call"), dict):
        refs.append(spec["call"])
    return refs


def _fetch_inputs(client: JobClient, spec: dict[str, Any], blob_dir: str) -> None:
    """Download every blob the spec names; point the spec at the local copies."""
    os.makedirs(blob_dir, exist_ok=True)
    for ref in _blob_refs(spec):
        sha = str(ref.get("sha256") or "")
        dest = os.path.join(blob_dir, sha)
        if not os.path.exists(dest):
            client.download(sha, dest)
        ref["path"] = dest


class RucioDownloadError(RuntimeError):
    """The job's Rucio file could not be downloaded (the DID and the reason are in the text)."""


#: names of a work's declared ``env`` the download client sees (the user's own Rucio identity)
RUCIO_ENV_PREFIXES = ("RUCIO_", "X509_")


@contextlib.contextmanager
def _declared_rucio_env(declared: dict[str, Any]) -> Iterator[None]:
    """The work's declared ``RUCIO_*``/``X509_*`` variables, for the download only."""
    names = {
        str(k): str(v)
        for k, v in (declared or {}).items()
        if str(k).startswith(RUCIO_ENV_PREFIXES) and v is not None
    }
    saved = {k: os.environ.get(k) for k in names}
    os.environ.update(names)
    os.environ.setdefault("RUCIO_CLIENT_MODE", "1")
    try:
        yield
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def _fetch_rucio_file(spec: dict[str, Any], scratch: str) -> str | None:
    """Download the job's Rucio file (``input_file``) into ``scratch``; point the job at it.

    Returns the local path, or None when the job names no Rucio file."""
    ref = spec.get("input_file")
    if not isinstance(ref, dict) or not ref.get("did"):
        return None
    did, rse, pfn = str(ref["did"]), ref.get("rse"), ref.get("pfn")
    scope, sep, name = did.partition(":")
    if not sep or not scope or not name or "/" in name:
        raise RucioDownloadError(f"cannot download Rucio file {did!r}: not a SCOPE:NAME DID")
    with _declared_rucio_env(spec.get("env") or {}):
        try:
            from rucio.client.downloadclient import DownloadClient
        except ImportError as exc:
            raise RucioDownloadError(
                f"cannot download Rucio file {did}: rucio-clients is not installed on this "
                f"worker ({exc}); install it (pip install rucio-clients) or run the work with "
                "transfer: shared"
            ) from None
        dest = os.path.join(scratch, "rucio")
        item: dict[str, Any] = {"did": did, "base_dir": dest, "no_subdir": True}
        if rse:
            item["rse"] = str(rse)
        try:
            out = DownloadClient(tracing=False).download_dids([item])
        except Exception as exc:
            raise RucioDownloadError(
                f"cannot download Rucio file {did}"
                f"{f' from {rse}' if rse else ''}: {type(exc).__name__}: {exc}"
            ) from None
    done = [
        f
        for f in out or []
        if f.get("clientState") in ("DONE", "ALREADY_DONE") and f.get("dest_file_paths")
    ]
    if not done:
        states = ", ".join(str(f.get("clientState")) for f in out or []) or "nothing downloaded"
        raise RucioDownloadError(f"cannot download Rucio file {did}: {states}")
    local = str(done[0]["dest_file_paths"][0])
    if not os.path.isfile(local):
        raise RucioDownloadError(f"cannot download Rucio file {did}: {local} is missing")
    ref["path"] = local
    kwargs = spec.get("kwargs")
    if isinstance(kwargs, dict) and "file" in kwargs:
        kwargs["file"] = local
    cmd = spec.get("command")
    if pfn and isinstance(cmd, list):
        spec["command"] = [local if a == pfn else a for a in cmd]
    elif pfn and isinstance(cmd, str):
        spec["command"] = cmd.replace(shlex.quote(str(pfn)), shlex.quote(local))
    spec["env"] = {**(spec.get("env") or {}), "IDDS_INPUT_FILE": local}
    return local


def _read_tail(path: str | None, n: int = LOG_TAIL) -> bytes | None:
    if not path:
        return None
    try:
        with open(path, "rb") as fh:
            fh.seek(0, os.SEEK_END)
            fh.seek(max(0, fh.tell() - n))
            return fh.read() or None
    except OSError:
        return None


def _result_files(res: dict[str, Any], result_dir: str | None) -> dict[str, str]:
    files: dict[str, str] = {}
    if not result_dir:
        return files
    for key in ("blob", "error_blob"):
        sha = res.get(key)
        if sha:
            path = os.path.join(result_dir, sha[:2], sha)
            if os.path.exists(path):
                files[key] = path
    return files


def _executed_notebook(log_dir: str, res: dict[str, Any]) -> str | None:
    """The executed notebook the job left beside its log (whole-notebook mode), if any
    and not too big to send."""
    path = notebook_path(log_dir, res.get("job_id"), res.get("attempt"))
    try:
        size = os.path.getsize(path)
    except OSError:
        return None
    if size > NOTEBOOK_LIMIT:
        sys.stderr.write(
            f"idds worker --http: the executed notebook ({size} bytes) is over "
            f"{NOTEBOOK_LIMIT} bytes: not sent\n"
        )
        return None
    return path


def run_http(
    server: str | None = None,
    job_id: int | str | None = None,
    token: str | None = None,
    keep: bool = False,
) -> int:
    """Fetch, run and report one job over HTTP (see the module docstring); the exit code."""
    server = server or os.environ.get("IDDS_SERVER_URL")
    job_id = job_id if job_id is not None else os.environ.get("IDDS_JOB_ID")
    token = token or os.environ.get("IDDS_JOB_TOKEN")
    missing = [
        n
        for n, v in (
            ("IDDS_SERVER_URL", server),
            ("IDDS_JOB_ID", job_id),
            ("IDDS_JOB_TOKEN", token),
        )
        if not v
    ]
    if missing:
        sys.stderr.write(
            f"idds worker --http: missing {', '.join(missing)} (environment or options)\n"
        )
        return 2
    try:
        jid = int(str(job_id))
    except ValueError:
        sys.stderr.write(f"idds worker --http: job id {job_id!r} is not an integer\n")
        return 2
    retries = int(os.environ.get("IDDS_HTTP_RETRIES") or 8)
    client = JobClient(str(server), jid, str(token), retries=retries)
    scratch = tempfile.mkdtemp(prefix=f"idds-job-{jid}-")
    private = os.path.join(scratch, ".idds")
    os.makedirs(private)

    def on_term(signum: int, frame: Any) -> None:
        kill_current_command()
        if not keep:
            shutil.rmtree(scratch, ignore_errors=True)
        os._exit(128 + signum)

    if hasattr(signal, "SIGTERM"):
        with contextlib.suppress(ValueError):  # not the main thread
            signal.signal(signal.SIGTERM, on_term)
    try:
        try:
            spec = client.spec()
        except HttpRefused as exc:
            sys.stderr.write(f"idds worker --http: job {jid}: the server refused the spec: {exc}\n")
            return 2
        except Exception as exc:
            sys.stderr.write(f"idds worker --http: job {jid}: {exc}\n")
            return 2
        spec["job_id"] = jid
        result_dir = os.path.join(private, "cache") if spec.pop("result_blobs", False) else None
        try:
            _fetch_inputs(client, spec, os.path.join(private, "blobs"))
        except Exception as exc:  # the job cannot run: say why, it is retried like any failure
            res = _base_result(spec)
            _set_error(res, exc)
            res["error"] = f"could not fetch the job's inputs from {client.base}: {res['error']}"
            res["started_at"] = res["finished_at"] = time.time()
            return _deliver(client, res, {}, None)
        try:
            _fetch_rucio_file(spec, scratch)
        except Exception as exc:  # no rucio-clients, or the download failed: fail the job
            res = _base_result(spec)
            _set_error(res, exc)
            res["started_at"] = res["finished_at"] = time.time()
            return _deliver(client, res, {}, None)
        with open(os.path.join(private, "spec.json"), "w", encoding="utf-8") as fh:
            json.dump(spec, fh)
        spec["result_dir"] = result_dir
        spec["log_dir"] = os.path.join(private, "logs")
        spec["cwd"] = scratch  # the job runs in its scratch dir, never in a path of the server
        spec["env"] = {
            **(spec.get("env") or {}),
            "IDDS_JOB_SPEC": os.path.join(private, "spec.json"),
        }
        res = run_job(spec)
        log = _read_tail(res.pop("log_path", None))
        files = _result_files(res, result_dir)
        nb = _executed_notebook(spec["log_dir"], res)
        if nb:
            files["notebook"] = nb
        return _deliver(client, res, files, log)
    finally:
        if not keep:
            shutil.rmtree(scratch, ignore_errors=True)


def _deliver(
    client: JobClient, res: dict[str, Any], files: dict[str, str], log: bytes | None
) -> int:
    try:
        client.post_result(res, files, log)
    except Exception as exc:
        sys.stderr.write(
            f"idds worker --http: job {client.job_id}: could not deliver the result: {exc}\n"
        )
        sys.stderr.write(json.dumps({k: res.get(k) for k in ("ok", "error", "traceback")}) + "\n")
        return 2
    return 0 if res.get("ok") else 1
