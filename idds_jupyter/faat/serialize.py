"""Serialization of FaaT functions, calls and values: cloudpickle, content-addressed blobs.

* A function defined in ``__main__`` (a script, a notebook) has no module file
  the workers could import, so it is pickled by value (its module is registered
  with ``cloudpickle.register_pickle_by_value`` when that is ``__main__``).
* Modules of the user's working directory (imported modules whose file lies
  under ``os.getcwd()``, outside site-packages and the interpreter) are packed
  into a *sandbox* zip, deterministic so that its sha256 names it; the workers
  put it on ``sys.path`` and import those modules from it.
* :func:`upload` sends a blob to the server cache once: digests already on the
  server are remembered per client.

The server only ever sees digests and bytes; it never unpickles them.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import inspect
import io
import os
import site
import sys
import sysconfig
import threading
import zipfile
from collections.abc import Callable, Iterable, Mapping
from typing import TYPE_CHECKING, Any

import cloudpickle

if TYPE_CHECKING:
    from idds_jupyter.client import Client

__all__ = [
    "dumps",
    "loads",
    "digest",
    "upload",
    "pack_function",
    "bound_payload",
    "pack_calls",
    "sandbox",
    "user_modules",
    "decode_inline",
    "json_call",
    "plain_json",
]

_ZIP_DATE = (1980, 1, 1, 0, 0, 0)
_OURS = frozenset({"idds_jupyter", "idds_jupyter_server"})  # installed wherever jobs run
_lock = threading.Lock()


def digest(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def dumps(obj: Any) -> bytes:
    return cloudpickle.dumps(obj, protocol=5)


def loads(data: bytes) -> Any:
    return cloudpickle.loads(data)


def decode_inline(text: str) -> Any:
    return cloudpickle.loads(base64.b64decode(text))


def upload(client: Client, data: bytes, defer: dict[str, bytes] | None = None) -> str:
    """Put ``data`` in the server's cache (unless it is known to be there); returns its sha256.

    With ``defer``, small blobs are collected there to travel inside the submission.
    """
    return client.upload(data, digest(data), defer=defer)


def _by_value(fn: Callable[..., Any]) -> None:
    mod_name = getattr(fn, "__module__", None)
    if mod_name == "__main__":
        mod = sys.modules.get("__main__")
        if mod is not None and mod_name not in cloudpickle.list_registry_pickle_by_value():
            with contextlib.suppress(ValueError):
                cloudpickle.register_pickle_by_value(mod)


def pack_function(fn: Callable[..., Any]) -> bytes:
    """The cloudpickled function (by value when it lives in ``__main__``)."""
    _by_value(fn)
    return dumps(fn)


def pack_calls(calls: list[tuple[tuple[Any, ...], dict[str, Any]]]) -> bytes:
    """ONE blob for all the calls of a submit/map: a list of ``(args, kwargs)``."""
    return dumps(calls)


# --------------------------------------------------------------------------- sandbox


def _excluded_roots() -> list[str]:
    roots: set[str] = set()
    for p in (sys.prefix, sys.base_prefix, sys.exec_prefix):
        roots.add(os.path.realpath(p))
    for key in ("stdlib", "platstdlib", "purelib", "platlib"):
        with contextlib.suppress(Exception):
            roots.add(os.path.realpath(sysconfig.get_paths()[key]))
    with contextlib.suppress(Exception):
        for p in site.getsitepackages():
            roots.add(os.path.realpath(p))
    with contextlib.suppress(Exception):
        roots.add(os.path.realpath(site.getusersitepackages()))
    return sorted(r for r in roots if r)


def _under(path: str, root: str) -> bool:
    return path == root or path.startswith(root.rstrip(os.sep) + os.sep)


_scan_cache: dict[str, Any] = {"key": None, "mods": []}
# module name -> (id of the module object, its source file when it is a user module, else None)
_decided: dict[str, tuple[int, str | None]] = {}


def user_modules(cwd: str | None = None) -> list[tuple[str, str]]:
    """``(module name, file)`` of imported modules whose file lies under the working dir.

    Left out: ``__main__``, anything in site-packages or the interpreter's own
    directories, this package (installed wherever jobs run), and files that are
    not ``.py`` sources. Each module is judged once (until it is re-imported).
    """
    cwd = os.path.realpath(cwd or os.getcwd())
    key = (cwd, len(sys.modules))
    with _lock:
        if _scan_cache["key"] == key:
            return list(_scan_cache["mods"])
        if _scan_cache.get("cwd") != cwd:
            _decided.clear()
            _scan_cache["cwd"] = cwd
            _scan_cache["excluded"] = [r for r in _excluded_roots() if not _under(cwd, r)]
        excluded: list[str] = _scan_cache["excluded"]
    found: list[tuple[str, str]] = []
    for name, mod in list(sys.modules.items()):
        known = _decided.get(name)
        if known is not None and known[0] == id(mod):
            if known[1] is not None:
                found.append((name, known[1]))
            continue
        path = _user_file(name, mod, cwd, excluded)
        _decided[name] = (id(mod), path)
        if path is not None:
            found.append((name, path))
    found.sort()
    with _lock:
        _scan_cache["key"] = key
        _scan_cache["mods"] = found
    return list(found)


def _user_file(name: str, mod: Any, cwd: str, excluded: list[str]) -> str | None:
    if name == "__main__" or mod is None or name.partition(".")[0] in _OURS:
        return None
    f = getattr(mod, "__file__", None)
    if not isinstance(f, str) or not f.endswith(".py"):
        return None
    if any(_under(f, r) for r in excluded):  # installed: known without resolving links
        return None
    real = os.path.realpath(f)
    if not _under(real, cwd) or any(_under(real, r) for r in excluded):
        return None
    return real


def _archive_name(name: str, path: str) -> str | None:
    """Where a module's file goes in the zip, so that ``import name`` finds it there."""
    parts = name.split(".")
    base = os.path.basename(path)
    if base == "__init__.py":
        return "/".join(parts) + "/__init__.py"
    if os.path.splitext(base)[0] != parts[-1]:
        return None  # loaded under another name (e.g. by a test runner): cannot be re-imported
    return "/".join(parts) + ".py"


_sandbox_cache: dict[Any, tuple[bytes, str] | None] = {}


def sandbox(modules: Iterable[tuple[str, str]] | None = None) -> tuple[bytes, str] | None:
    """``(zip bytes, sha256)`` of the working-directory modules, or None when there are none.

    The zip is deterministic (sorted entries, fixed timestamps): the same sources
    give the same digest, so an unchanged sandbox is never uploaded twice.
    Parent packages of packed submodules get their ``__init__.py`` (or an empty one).
    """
    mods = list(modules) if modules is not None else user_modules()
    if not mods:
        return None
    entries: dict[str, str] = {}
    for name, path in mods:
        arc = _archive_name(name, path)
        if arc is not None:
            entries[arc] = path
    if not entries:
        return None
    stats = []
    for arc, path in sorted(entries.items()):
        try:
            st = os.stat(path)
        except OSError:
            continue
        stats.append((arc, path, st.st_mtime_ns, st.st_size))
    key = tuple(stats)
    with _lock:
        if key in _sandbox_cache:
            return _sandbox_cache[key]
    files: dict[str, bytes] = {}
    for arc, path, _, _ in stats:
        try:
            with open(path, "rb") as fh:
                files[arc] = fh.read()
        except OSError:
            continue
    for arc in list(files):
        parts = arc.split("/")[:-1]
        for i in range(1, len(parts) + 1):
            init = "/".join(parts[:i]) + "/__init__.py"
            files.setdefault(init, b"")
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as zf:
        for arc in sorted(files):
            info = zipfile.ZipInfo(arc, date_time=_ZIP_DATE)
            info.external_attr = 0o644 << 16
            info.compress_type = zipfile.ZIP_DEFLATED
            zf.writestr(info, files[arc])
    data = buf.getvalue()
    out: tuple[bytes, str] | None = (data, digest(data)) if files else None
    with _lock:
        if len(_sandbox_cache) > 32:
            _sandbox_cache.clear()
        _sandbox_cache[key] = out
    return out


def payload(
    client: Client,
    fn: Callable[..., Any],
    calls: list[tuple[tuple[Any, ...], dict[str, Any]]] | None,
    with_sandbox: bool = True,
    defer: dict[str, bytes] | None = None,
) -> dict[str, str]:
    """Upload what a FaaT work needs; returns its ``payload`` dict of digests.

    ``calls`` None: the jobs' arguments are their JSON keyword arguments (:func:`json_call`).
    """
    out = {"function": upload(client, pack_function(fn), defer)}
    if calls is not None:
        out["calls"] = upload(client, pack_calls(calls), defer)
    return _with_sandbox(client, out) if with_sandbox else out


def bound_payload(
    client: Client,
    fn: Callable[..., Any],
    kwargs: Mapping[str, Any],
    defer: dict[str, bytes] | None = None,
) -> dict[str, str]:
    """The payload of jobs that all call ``fn(**kwargs, **their JSON kwargs)``: ONE blob,
    ``(fn, (), kwargs)``, for jobs whose own arguments the server writes (as JSON), such
    as the trials of an HPO study it steers."""
    for value in kwargs.values():
        if callable(value):
            _by_value(value)
    _by_value(fn)
    return _with_sandbox(client, {"function": upload(client, dumps((fn, (), dict(kwargs))), defer)})


def _with_sandbox(client: Client, out: dict[str, str]) -> dict[str, str]:
    box = sandbox()
    if box is not None:
        data, sha = box
        out["sandbox"] = client.upload(data, sha)
    return out


def jsonable(value: Any) -> bool:
    import json

    try:
        json.dumps(value, allow_nan=False)
    except (TypeError, ValueError, OverflowError, RecursionError):
        return False
    return True


#: a call's arguments travel as JSON up to this size (bigger ones are pickled into a blob)
MAX_JSON_CALL = 4096
_SAFE_INT = 2**53


def plain_json(value: Any, dicts: bool = True, depth: int = 0) -> bool:
    """``value`` travels as a job's JSON keyword argument and comes back the same (from
    SQLite's JSON and PostgreSQL's JSONB): exact ``str``/``int``/``float``/``bool``/``None``
    and ``list``, and with ``dicts`` ``dict`` with ``str`` keys (JSONB does not keep their
    order). Integers a JSON number holds exactly; finite floats but ``-0.0`` and those
    written with a positive exponent (JSONB prints ``1e16`` as an integer); strings without ``{``/``}`` (the
    templates' placeholders, which the server substitutes) or NUL, encodable as UTF-8."""
    t = type(value)
    if value is None or t is bool:
        return True
    if t is int:
        return -_SAFE_INT < value < _SAFE_INT
    if t is float:
        text = repr(value)
        return "e+" not in text and "n" not in text and text != "-0.0"
    if t is str:
        if "{" in value or "}" in value or "\x00" in value:
            return False
        try:
            value.encode("utf-8")
        except UnicodeEncodeError:
            return False
        return True
    if depth >= 16:
        return False
    if t is list:
        return all(plain_json(v, dicts, depth + 1) for v in value)
    if t is dict and dicts:
        return all(
            type(k) is str and plain_json(k) and plain_json(v, dicts, depth + 1)
            for k, v in value.items()
        )
    return False


def json_call(
    fn: Callable[..., Any], args: tuple[Any, ...], kwargs: Mapping[str, Any]
) -> dict[str, Any] | None:
    """The arguments of ``fn(*args, **kwargs)`` as JSON keyword arguments, when they are
    :func:`plain_json`, small and bind to named parameters; None: they go pickled."""
    try:
        sig = inspect.signature(fn)
        bound = sig.bind(*args, **kwargs)
    except (TypeError, ValueError):  # no signature, or a call that fails: it fails remotely
        return None
    named = (inspect.Parameter.POSITIONAL_OR_KEYWORD, inspect.Parameter.KEYWORD_ONLY)
    if any(sig.parameters[n].kind not in named for n in bound.arguments):
        return None
    out = dict(bound.arguments)  # by name: their order does not matter
    if not all(plain_json(v, dicts=False) for v in out.values()):
        return None
    import json

    if len(json.dumps(out, separators=(",", ":"))) > MAX_JSON_CALL:
        return None
    return out


def json_params(params: Mapping[str, Any]) -> dict[str, Any]:
    """Parameters as the server may see them: JSON values as they are, others by repr."""
    return {k: (v if jsonable(v) else repr(v)) for k, v in params.items()}
