"""The in-process job runner: :func:`run_job` turns a job spec into a result dict.

A job spec is a JSON-able dict::

    {"job_id": int, "attempt": int, "work_id": int, "workflow_id": int,
     "kind": "function" | "command",
     "function": "pkg.mod:qualname" | None,
     "command": str | list[str] | None,  # substituted: a shell command (values quoted)
                                       # or an argv list run without a shell
     "render_error": str | None,       # why the command could not be rendered (job fails)
     "kwargs": dict,                   # keyword arguments of the function
     "payload": {"sha256": str, "path": str,     # cloudpickled fn, or (fn, args, kwargs)
                 "sandbox": {"sha256", "path"}?} | None,  # zip of the user's modules
     "call": {"sha256": str, "path": str, "index": int} | None,  # (args, kwargs) list
     "result_dir": str | None,         # cache dir: the pickled value/exception go there
     "env": dict[str, str], "timeout_s": float | None,
     "log_dir": str | None, "cwd": str | None}

The result is a JSON-able dict::

    {"job_id", "attempt", "ok": bool, "result": JSON | None,
     "summary": {"type": str, "repr": str} | None, "error": str | None,
     "exc_type": str | None, "traceback": str | None, "exit_code": int | None,
     "wall_s": float, "max_rss_kb": int, "log_path": str | None,
     "started_at": float, "finished_at": float,
     # with result_dir: "blob"/"blob_size"/"inline" (base64 when small) of the pickled
     # value, or "error_blob"/"error_inline" of the pickled exception
    }

:func:`run_job` never raises for a job's own failure (only ``KeyboardInterrupt``
propagates); everything else becomes ``ok: False`` with the error, the
qualified exception type and the full traceback text.
"""

from __future__ import annotations

import contextlib
import importlib
import io
import json
import os
import resource
import signal
import subprocess
import sys
import tempfile
import threading
import time
import traceback
from collections.abc import Callable, Iterator
from typing import Any

from idds_jupyter.worker._context import _CURRENT, JobContext
from idds_jupyter.worker.env import job_environment
from idds_jupyter.worker.platform_info import describe as describe_environment

__all__ = [
    "run_job",
    "run_jobs",
    "resolve",
    "kill_current_command",
    "kill_session",
    "share_results",
    "noop",
    "sleep",
    "fail",
    "echo",
]

# ru_maxrss is in kilobytes on Linux, bytes on macOS.
_RSS_DIV = 1024 if sys.platform == "darwin" else 1
_LOG_TAIL_LINES = 20
_REPR_MAX = 2000

_resolved: dict[str, Callable[..., Any]] = {}
_payloads: dict[str, bytes] = {}
_PAYLOAD_CACHE_ENTRIES = 64
_PAYLOAD_CACHE_MAX_BYTES = 1 << 20
# The shell command (Popen) currently running in this process, so that a pool
# worker being terminated can take its process group down with it.
_current_proc: subprocess.Popen[bytes] | None = None


# --------------------------------------------------------------------------- helpers


def resolve(ref: str) -> Callable[..., Any]:
    """Import ``"pkg.mod:qualname"`` (qualname may be dotted) and return the object (cached)."""
    fn = _resolved.get(ref)
    if fn is not None:
        return fn
    module_name, sep, qualname = ref.partition(":")
    if not sep or not module_name or not qualname:
        raise ValueError(f"function reference {ref!r} is not of the form 'pkg.module:qualname'")
    obj: Any = importlib.import_module(module_name)
    for part in qualname.split("."):
        obj = getattr(obj, part)
    if not callable(obj):
        raise TypeError(f"function reference {ref!r} names a {type(obj).__name__}, not a callable")
    _resolved[ref] = obj
    return obj


def _read_verified(ref: dict[str, Any]) -> bytes:
    """The bytes of a content-addressed blob ``{"sha256", "path"}``, checked against their digest."""
    import hashlib

    sha = ref.get("sha256") or ""
    data = _payloads.get(sha) if sha else None
    if data is not None:
        return data
    path = ref["path"]
    with open(path, "rb") as fh:
        data = fh.read()
    if sha:
        digest = hashlib.sha256(data).hexdigest()
        if digest != sha:
            raise ValueError(f"blob {path} has sha256 {digest}, expected {sha}")
        if len(data) <= _PAYLOAD_CACHE_MAX_BYTES:
            if len(_payloads) >= _PAYLOAD_CACHE_ENTRIES:
                _payloads.pop(next(iter(_payloads)))
            _payloads[sha] = data
    return data


_calls: dict[str, list[Any]] = {}


def _load_call(call: dict[str, Any]) -> tuple[tuple[Any, ...], dict[str, Any]]:
    """Arguments of call ``index`` in a calls blob: a pickled list of ``(args, kwargs)``.

    One blob serves every job of a ``map``; it is unpickled once per worker
    process (the list, not each job's arguments, is what is shared).
    """
    sha = call.get("sha256") or ""
    calls = _calls.get(sha)
    if calls is None:
        import cloudpickle

        calls = cloudpickle.loads(_read_verified(call))
        if not isinstance(calls, list):
            raise TypeError(f"calls blob {sha} is not a list of (args, kwargs)")
        if len(_calls) >= 8:
            _calls.pop(next(iter(_calls)))
        _calls[sha] = calls
    args, kwargs = calls[int(call.get("index", 0))]
    return tuple(args or ()), dict(kwargs or {})


def _use_sandbox(sandbox: dict[str, Any], root: str | None) -> None:
    """Unpack a sandbox zip of the user's modules once and put it first on ``sys.path``."""
    import zipfile

    sha = sandbox["sha256"]
    base = root or tempfile.gettempdir()
    target = os.path.join(base, "sandboxes", sha)
    if not os.path.isdir(target):
        os.makedirs(os.path.dirname(target), exist_ok=True)
        tmp = tempfile.mkdtemp(dir=os.path.dirname(target))
        with zipfile.ZipFile(io.BytesIO(_read_verified(sandbox))) as zf:
            for name in zf.namelist():  # a sandbox holds relative module paths only
                if name.startswith("/") or ".." in name.split("/"):
                    raise ValueError(f"sandbox {sha}: unsafe member {name!r}")
            zf.extractall(tmp)
        with contextlib.suppress(OSError):  # another worker unpacked it first
            os.replace(tmp, target)
    if target not in sys.path:
        sys.path.insert(0, target)


def _store_pickled(res: dict[str, Any], key: str, value: Any, result_dir: str) -> None:
    """Pickle ``value`` into the content-addressed cache; small ones also travel inline."""
    import base64
    import hashlib

    import cloudpickle

    data = cloudpickle.dumps(value)
    if len(data) <= _INLINE_MAX:  # small: travels and is kept with its job, no cache file
        res[key.replace("blob", "inline")] = base64.b64encode(data).decode()
        return
    sha = hashlib.sha256(data).hexdigest()
    path = os.path.join(result_dir, sha[:2], sha)
    if not os.path.exists(path):
        os.makedirs(os.path.dirname(path), exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=os.path.dirname(path), prefix=".tmp-")
        if _result_mode != 0o600:
            os.fchmod(fd, _result_mode)
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
        os.replace(tmp, path)
    res[key] = sha
    res[f"{key}_size"] = len(data)


_INLINE_MAX = 32 * 1024
_result_mode = 0o600


def share_results() -> None:
    """Result blobs 0640: where the job area's ACL names the service (a worker started
    through sudo), the group bits are the ACL's mask, so the service may read them; the
    account's group has no entry of its own there."""
    global _result_mode
    _result_mode = 0o640


def _load_payload(payload: dict[str, Any]) -> tuple[Any, tuple[Any, ...], dict[str, Any]]:
    """Read (verified, content-addressed) and unpickle a ``(fn, args, kwargs)`` blob, or a bare function.

    The verified bytes of small blobs are cached by sha256 (many jobs share one
    function blob); they are unpickled afresh for every job, so no state leaks
    from one job to the next.
    """
    import cloudpickle

    obj = cloudpickle.loads(_read_verified(payload))
    if callable(obj):
        return obj, (), {}
    if not (isinstance(obj, tuple) and len(obj) == 3):
        raise TypeError(f"payload {payload.get('path')} is not a (fn, args, kwargs) tuple")
    fn, args, kwargs = obj
    return fn, tuple(args or ()), dict(kwargs or {})


def _qualified(exc_type: type[BaseException]) -> str:
    mod = exc_type.__module__
    if mod in ("builtins", "__main__", None):
        return exc_type.__qualname__
    return f"{mod}.{exc_type.__qualname__}"


def _one_line(exc: BaseException) -> str:
    msg = str(exc).strip().replace("\r", " ").replace("\n", " ")
    if len(msg) > _REPR_MAX:
        msg = msg[:_REPR_MAX] + "…"
    name = type(exc).__name__
    return f"{name}: {msg}" if msg else name


def _jsonable(value: Any) -> tuple[Any, dict[str, str] | None]:
    """``(result, summary)``: the value itself when it is JSON-able, else a summary."""
    if value is None:
        return None, None
    try:
        json.dumps(value, allow_nan=False)
        return value, None
    except (TypeError, ValueError, OverflowError, RecursionError):
        pass
    try:
        text = repr(value)
    except Exception as exc:  # a broken __repr__ must not fail the job
        text = f"<unrepresentable: {_one_line(exc)}>"
    if len(text) > _REPR_MAX:
        text = text[:_REPR_MAX] + "…"
    tp = type(value)
    return None, {"type": f"{tp.__module__}.{tp.__qualname__}", "repr": text}


def _log_path(log_dir: str, job_id: Any, attempt: Any) -> str:
    return os.path.join(log_dir, f"job-{job_id}.{attempt}.log")


def notebook_path(log_dir: str, job_id: Any, attempt: Any) -> str:
    """Where a whole-notebook job keeps its executed notebook: beside its log."""
    return os.path.join(log_dir, f"job-{job_id}.{attempt}.ipynb")


def _max_rss(who: int) -> int:
    return int(resource.getrusage(who).ru_maxrss // _RSS_DIV)


@contextlib.contextmanager
def _patched_env(env: dict[str, str] | None, scrub: bool = False) -> Iterator[None]:
    if scrub:  # a Dask worker: only the allow-list while the function runs
        saved_all = dict(os.environ)
        os.environ.clear()
        os.environ.update(job_environment(env, base=saved_all))
        try:
            yield
        finally:
            os.environ.clear()
            os.environ.update(saved_all)
        return
    if not env:
        yield
        return
    saved = {k: os.environ.get(k) for k in env}
    os.environ.update({k: str(v) for k, v in env.items()})
    try:
        yield
    finally:
        for k, old in saved.items():
            if old is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = old


@contextlib.contextmanager
def _chdir(cwd: str | None) -> Iterator[None]:
    if not cwd:
        yield
        return
    old = os.getcwd()
    os.chdir(cwd)
    try:
        yield
    finally:
        os.chdir(old)


class _Alarm:
    """SIGALRM-based timeout, only in the main thread (otherwise not enforced)."""

    def __init__(self, timeout_s: float | None) -> None:
        self.timeout_s = timeout_s
        self.armed = False
        self._old: Any = None

    def _fire(self, signum: int, frame: Any) -> None:
        _kill_strays()  # what the function started ends with it
        raise TimeoutError(f"job exceeded its timeout of {self.timeout_s:g} s")

    def __enter__(self) -> _Alarm:
        t = self.timeout_s
        if t and t > 0 and threading.current_thread() is threading.main_thread():
            self._old = signal.signal(signal.SIGALRM, self._fire)
            signal.setitimer(signal.ITIMER_REAL, float(t))
            self.armed = True
        return self

    def __exit__(self, *exc: Any) -> None:
        if self.armed:
            signal.setitimer(signal.ITIMER_REAL, 0)
            signal.signal(signal.SIGALRM, self._old if self._old is not None else signal.SIG_DFL)
            self.armed = False


# --------------------------------------------------------------------------- runners


def _base_result(spec: dict[str, Any]) -> dict[str, Any]:
    return {
        "job_id": spec.get("job_id"),
        "attempt": spec.get("attempt", 0),
        "ok": False,
        "result": None,
        "summary": None,
        "error": None,
        "exc_type": None,
        "traceback": None,
        "exit_code": None,
        "wall_s": 0.0,
        "max_rss_kb": 0,
        "log_path": None,
        "started_at": 0.0,
        "finished_at": 0.0,
    }


def _set_error(res: dict[str, Any], exc: BaseException) -> None:
    res["ok"] = False
    res["error"] = _one_line(exc)
    res["exc_type"] = _qualified(type(exc))
    res["traceback"] = "".join(traceback.format_exception(type(exc), exc, exc.__traceback__))


def _run_function(spec: dict[str, Any], res: dict[str, Any]) -> None:
    kwargs = spec.get("kwargs") or {}
    payload = spec.get("payload")
    log_dir = spec.get("log_dir")
    try:
        if payload:
            if payload.get("sandbox"):
                _use_sandbox(payload["sandbox"], spec.get("result_dir"))
            fn, args, pkw = _load_payload(payload)
            if spec.get("call"):
                args, pkw = _load_call(spec["call"])
            if kwargs:
                pkw = {**pkw, **kwargs}
        else:
            ref = spec.get("function")
            if not ref:
                raise ValueError("function job has neither 'function' nor 'payload'")
            fn, args, pkw = resolve(ref), (), kwargs
    except BaseException as exc:
        if isinstance(exc, KeyboardInterrupt):
            raise
        _set_error(res, exc)
        return

    out = io.StringIO() if log_dir else None
    try:
        with contextlib.ExitStack() as stack:
            if out is not None:
                stack.enter_context(contextlib.redirect_stdout(out))
                stack.enter_context(contextlib.redirect_stderr(out))
            stack.enter_context(_patched_env(spec.get("env"), bool(spec.get("scrub_env"))))
            stack.enter_context(_chdir(spec.get("cwd")))
            with _Alarm(spec.get("timeout_s")):
                value = fn(*args, **pkw)
        res["ok"] = True
        res["result"], res["summary"] = _jsonable(value)
        if spec.get("result_dir"):
            _store_pickled(res, "blob", value, spec["result_dir"])
    except BaseException as exc:
        if isinstance(exc, KeyboardInterrupt):
            raise
        if res["ok"]:  # the value did not pickle: the job failed to deliver it
            res["ok"] = False
        _set_error(res, exc)
        if spec.get("result_dir"):
            # an exception that does not pickle comes back as a RemoteError
            with contextlib.suppress(Exception):
                _store_pickled(res, "error_blob", exc, spec["result_dir"])
    finally:
        res["max_rss_kb"] = _max_rss(resource.RUSAGE_SELF)
        if out is not None and log_dir:
            text = out.getvalue()
            if text:
                path = _log_path(log_dir, res["job_id"], res["attempt"])
                try:
                    os.makedirs(log_dir, exist_ok=True)
                    with open(path, "w", encoding="utf-8", errors="replace") as fh:
                        fh.write(text)
                    res["log_path"] = path
                except OSError as exc:  # the job itself succeeded or failed on its own
                    sys.stderr.write(f"idds worker: cannot write log {path}: {exc}\n")


def _tail(path: str, nbytes: int = 65536) -> list[str]:
    try:
        with open(path, "rb") as fh:
            fh.seek(0, os.SEEK_END)
            size = fh.tell()
            fh.seek(max(0, size - nbytes))
            data = fh.read()
    except OSError:
        return []
    return data.decode("utf-8", errors="replace").splitlines()


def _kill_group(proc: subprocess.Popen[bytes], sig: int = signal.SIGKILL) -> None:
    try:
        os.killpg(proc.pid, sig)
    except (ProcessLookupError, PermissionError):
        with contextlib.suppress(ProcessLookupError):
            proc.send_signal(sig)


def _kill_strays() -> None:
    """In a pool worker (it leads its own session): SIGKILL every other process of the
    session, i.e. what the job that just timed out started. Elsewhere (a Dask worker, a
    process that does not lead its session) nothing."""
    me = os.getpid()
    if os.getsid(0) == me:
        kill_session(me, spare=me)


def kill_session(sid: int, spare: int | None = None) -> list[int]:
    """SIGKILL every process of session ``sid`` but ``spare`` (what a job started, a dead
    worker's shell children). Linux (``/proc``); elsewhere nothing. The pids signalled."""
    killed: list[int] = []
    try:
        names = os.listdir("/proc")
    except OSError:
        return killed
    for name in names:
        if not name.isdigit() or int(name) == spare:
            continue
        try:
            with open(f"/proc/{name}/stat", "rb") as fh:
                data = fh.read()
        except OSError:
            continue
        fields = data[data.rfind(b")") + 2 :].split()
        if len(fields) > 3 and int(fields[3]) == sid:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(int(name), signal.SIGKILL)
                killed.append(int(name))
    return killed


def kill_current_command(sig: int = signal.SIGKILL) -> None:
    """Kill the process group of the shell command this process is running, if any."""
    proc = _current_proc
    if proc is not None and proc.poll() is None:
        _kill_group(proc, sig)


def _run_command(spec: dict[str, Any], res: dict[str, Any]) -> None:
    global _current_proc
    command = spec.get("command")
    log_dir = spec.get("log_dir")
    timeout = spec.get("timeout_s") or None
    tmp_files: list[str] = []
    try:
        if not command:
            raise ValueError("command job has no 'command'")
        if log_dir:
            os.makedirs(log_dir, exist_ok=True)
            log_path = _log_path(log_dir, res["job_id"], res["attempt"])
            res["log_path"] = log_path
        else:
            fd, log_path = tempfile.mkstemp(prefix=f"idds-job-{res['job_id']}-", suffix=".log")
            os.close(fd)
            tmp_files.append(log_path)
        fd, result_path = tempfile.mkstemp(
            prefix=f"idds-result-{res['job_id']}-", suffix=".json", dir=log_dir or None
        )
        os.close(fd)
        tmp_files.append(result_path)
        # a pool worker's environment is the allow-list already; a Dask worker's is not
        env = (
            job_environment(spec.get("env"), base=os.environ)
            if spec.get("scrub_env")
            else {**os.environ, **{k: str(v) for k, v in (spec.get("env") or {}).items()}}
        )
        env["IDDS_RESULT"] = result_path
        env["IDDS_JOB_ID"] = str(res["job_id"])
        env["IDDS_ATTEMPT"] = str(res["attempt"])
        for key, name in (("work_id", "IDDS_WORK_ID"), ("workflow_id", "IDDS_WORKFLOW_ID")):
            if spec.get(key) is not None:
                env[name] = str(spec[key])
        with open(log_path, "wb") as log:
            proc = subprocess.Popen(
                command,
                shell=isinstance(command, str),  # a list is an argv: no shell parses it
                env=env,
                cwd=spec.get("cwd") or None,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                process_group=0,
            )
            _current_proc = proc
            try:
                rc = proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                _kill_group(proc)
                rc = proc.wait()
                res["exit_code"] = rc
                res["error"] = f"TimeoutError: command exceeded its timeout of {timeout:g} s"
                res["exc_type"] = "TimeoutError"
                res["traceback"] = "\n".join(_tail(log_path)[-_LOG_TAIL_LINES:]) or None
                return
            except BaseException:
                _kill_group(proc)
                proc.wait()
                raise
            finally:
                _current_proc = None
        res["exit_code"] = rc
        lines = _tail(log_path)
        if rc != 0:
            what = f"exit code {rc}" if rc > 0 else f"killed by signal {-rc}"
            tail = "\n".join(lines[-_LOG_TAIL_LINES:])
            res["error"] = f"{what}: {lines[-1].strip()}" if lines else what
            res["traceback"] = tail or None
            res["exc_type"] = "CommandError"
        else:
            res["ok"] = True
        # the result: the IDDS_RESULT file, else the last non-empty output line as JSON
        value: Any = None
        found = False
        with contextlib.suppress(OSError):
            with open(result_path, encoding="utf-8") as fh:
                text = fh.read()
            if text.strip():
                try:
                    value, found = json.loads(text), True
                except ValueError:
                    res["summary"] = {"type": "invalid-json", "repr": text[:_REPR_MAX]}
        if not found and res["summary"] is None:
            for line in reversed(lines):
                if line.strip():
                    with contextlib.suppress(ValueError):
                        value, found = json.loads(line), True
                    break
        if found:
            res["result"], res["summary"] = _jsonable(value)
    except BaseException as exc:
        if isinstance(exc, KeyboardInterrupt):
            raise
        _set_error(res, exc)
    finally:
        res["max_rss_kb"] = _max_rss(resource.RUSAGE_CHILDREN)
        for path in tmp_files:
            with contextlib.suppress(OSError):
                os.unlink(path)


def run_job(spec: dict[str, Any]) -> dict[str, Any]:
    """Run one job spec in this process; return its JSON-able result dict (never raises)."""
    res = _base_result(spec)
    ctx = JobContext(
        job_id=res["job_id"],
        attempt=res["attempt"],
        work_id=spec.get("work_id"),
        workflow_id=spec.get("workflow_id"),
        log_dir=spec.get("log_dir"),
    )
    token = _CURRENT.set(ctx)
    res["started_at"] = time.time()
    t0 = time.perf_counter()
    try:
        kind = spec.get("kind") or ("command" if spec.get("command") else "function")
        if spec.get("render_error"):  # its placeholders could not be filled: fail, run nothing
            _set_error(res, ValueError(spec["render_error"]))
        elif kind == "function":
            _run_function(spec, res)
        elif kind == "command":
            _run_command(spec, res)
        else:
            _set_error(res, ValueError(f"unknown job kind {kind!r}"))
    finally:
        res["wall_s"] = time.perf_counter() - t0
        res["finished_at"] = time.time()
        with contextlib.suppress(Exception):  # provenance: where it ran (never fails a job)
            res.update(describe_environment())
        if not res["max_rss_kb"]:
            res["max_rss_kb"] = _max_rss(resource.RUSAGE_SELF)
        _CURRENT.reset(token)
    return res


def run_jobs(specs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Run several job specs one after the other (used for batched remote tasks)."""
    return [run_job(spec) for spec in specs]


# --------------------------------------------------------------------------- ready-made callables


def noop(**kwargs: Any) -> None:
    """Do nothing (benchmarks)."""
    return None


def sleep(seconds: float = 0.0, **kwargs: Any) -> None:
    """Sleep ``seconds``."""
    time.sleep(seconds)


def fail(message: str = "boom", **kwargs: Any) -> None:
    """Raise ``RuntimeError(message)``."""
    raise RuntimeError(message)


def echo(**kwargs: Any) -> dict[str, Any]:
    """Return the keyword arguments."""
    return kwargs
