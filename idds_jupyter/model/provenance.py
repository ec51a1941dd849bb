"""Provenance: the hashing rules that say what produced a job's result (no I/O but file reads).

A job's result is identified by three digests (sha256, hex):

* **code** — what ran: a FaaT payload's function blob (the cloudpickled function
  with the closures and globals it carries) and its sandbox; a ``module:qualname``
  reference with the digest of that module's source file; a command as the work's
  template resolved it (parameters substituted; per-job values are inputs).
* **input** — what it ran on: the work's resolved parameters, the job's kwargs and
  index, its FaaT call (the calls blob and the position in it), its input file, its
  environment variables and working directory, and the result digests of the
  upstream jobs it waited for (job-level links) — a changed upstream value changes it.
* **result** — what came out: the pickled value's blob digest, the digest of the
  inline pickle, or of the canonical JSON result.

Memoization (``cache: true``) keys a job by ``(namespace, code, input)``: the
namespace is the run owner's own (``owner:NAME``) unless the work names a shared
one (``cache: "NAME"`` → ``ns:NAME``). The server hashes only digests and JSON: it
never unpickles anything.
"""

from __future__ import annotations

import ast
import hashlib
import json
import os
import sys
from collections.abc import Callable, Iterable, Mapping
from typing import Any

__all__ = [
    "cache_enabled",
    "cache_key",
    "cache_namespace",
    "canonical",
    "code_hash",
    "input_hash",
    "input_hasher",
    "result_hash",
    "sha256_text",
    "with_cache",
]


def canonical(value: Any) -> str:
    """Canonical JSON: sorted keys, no spaces; non-JSON values by their repr."""
    return json.dumps(value, sort_keys=True, separators=(",", ":"), default=repr)


def sha256_text(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8", "surrogatepass")).hexdigest()


def _work(spec: Mapping[str, Any]) -> Mapping[str, Any]:
    return spec.get("work") or {}


def cache_enabled(spec: Mapping[str, Any]) -> bool:
    """Whether a work (its stored spec) memoizes its jobs."""
    return bool(_work(spec).get("cache"))


def cache_namespace(spec: Mapping[str, Any], owner: str | None) -> str:
    cache = _work(spec).get("cache")
    if isinstance(cache, str) and cache.strip():
        return f"ns:{cache.strip()}"
    return f"owner:{owner or 'local'}"


def code_hash(spec: Mapping[str, Any]) -> str:
    """The code identity of a work's jobs (see the module doc)."""
    work = _work(spec)
    payload = work.get("payload")
    if payload:
        ident: dict[str, Any] = {"faat": payload.get("function"), "sandbox": payload.get("sandbox")}
    elif work.get("function"):
        ref = str(work["function"])
        module, _, qualname = ref.partition(":")
        ident = {"function": ref, "source": function_source_digest(module, qualname)}
    else:
        ident = {"command": spec.get("command", work.get("command"))}
    return sha256_text(canonical(ident))


def input_hash(
    spec: Mapping[str, Any],
    kwargs: Any,
    idx: int,
    file: str | None,
    parents: Iterable[str | None] = (),
) -> str:
    """The input identity of one job (see the module doc)."""
    return input_hasher(spec)(kwargs, idx, file, parents)


def input_hasher(
    spec: Mapping[str, Any],
) -> Callable[[Any, int, str | None, Iterable[str | None]], str]:
    """:func:`input_hash` for the jobs of one work: the work's part is serialised once."""
    work = _work(spec)
    payload = work.get("payload") or {}
    prefix = canonical(
        {
            "parameters": spec.get("parameters") or {},
            "job_parameters": spec.get("job_parameters") or {},
            "calls": payload.get("calls"),
            "env": work.get("env") or {},
            "cwd": spec.get("cwd"),
        }
    ).encode("utf-8", "surrogatepass")

    def one(kwargs: Any, idx: int, file: str | None, parents: Iterable[str | None] = ()) -> str:
        h = hashlib.sha256(prefix)
        h.update(b"\0%d\0" % int(idx))
        if kwargs:
            h.update(canonical(kwargs).encode("utf-8", "surrogatepass"))
        h.update(b"\0")
        if file is not None:
            h.update(file.encode("utf-8", "surrogatepass"))
        h.update(b"\0")
        h.update(",".join(sorted(p or "" for p in parents)).encode())
        return h.hexdigest()

    return one


def cache_key(namespace: str, code: str, inputs: str) -> str:
    return sha256_text(f"{namespace}\0{code}\0{inputs}")


def result_hash(blob: str | None, inline: str | None, result: Any) -> str:
    """The identity of a job's value: its blob, else its inline pickle, else its JSON."""
    if blob:
        return str(blob)
    if inline:
        return sha256_text(f"inline\0{inline}")
    if result is None:
        return _NULL
    return sha256_text(f"json\0{canonical(result)}")


_NULL = sha256_text("json\0null")


# ------------------------------------------------------------------ module sources

_SOURCES: dict[str, tuple[float, str | None]] = {}


def _module_file(module: str) -> str | None:
    """A module's source file on ``sys.path``, found without importing it (the server
    runs no user code)."""
    parts = module.split(".")
    for root in [os.getcwd(), *sys.path]:
        if not root or not os.path.isdir(root):
            continue
        base = os.path.join(root, *parts)
        for path in (base + ".py", os.path.join(base, "__init__.py")):
            if os.path.isfile(path):
                return path
    return None


def function_source_digest(module: str, qualname: str) -> str | None:
    """sha256 of what a ``module:qualname`` function's result depends on in its source:
    its own definition, the module's top-level statements that are not definitions
    (imports, constants) and the top-level functions and classes its body names (one
    level). Editing another function of the module changes nothing. None when the
    module is not a file on the path (then only the reference identifies the code)."""
    path = _module_file(module)
    if path is None:
        return None
    try:
        mtime = os.stat(path).st_mtime
        key = f"{path}\0{qualname}"
        cached = _SOURCES.get(key)
        if cached is not None and cached[0] == mtime:
            return cached[1]
        with open(path, encoding="utf-8", errors="replace") as fh:
            text = fh.read()
    except OSError:
        return None
    digest: str | None
    try:
        digest = _digest_function(text, qualname)
    except SyntaxError:
        digest = hashlib.sha256(text.encode()).hexdigest()
    _SOURCES[key] = (mtime, digest)
    return digest


def _digest_function(text: str, qualname: str) -> str:
    tree = ast.parse(text)
    defs = (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)
    top = {n.name: n for n in tree.body if isinstance(n, defs)}
    target = top.get(qualname.split(".")[0])
    if target is None:  # not found by name: the whole module identifies it
        return hashlib.sha256(text.encode()).hexdigest()
    used = {n.id for n in ast.walk(target) if isinstance(n, ast.Name)}
    lines = text.splitlines()

    def source(node: ast.stmt) -> str:  # whole lines: one split of the file, not one per node
        return "\n".join(lines[node.lineno - 1 : node.end_lineno or node.lineno])

    parts = [source(target)]
    parts += [source(n) for n in tree.body if not isinstance(n, defs)]
    parts += [source(top[name]) for name in sorted(used) if name in top and top[name] is not target]
    return sha256_text("\0".join(parts))


def with_cache(template: Mapping[str, Any]) -> dict[str, Any]:
    """A re-run's template: every work (and the works of sub-workflows) memoizes, keeping a
    shared namespace a work already names. Jobs whose code and inputs are unchanged then
    take their earlier results; the failed, the changed and what depends on them run."""
    out = dict(template)
    works = []
    for w in template.get("works") or ():
        if not isinstance(w, Mapping):
            works.append(w)
            continue
        w = dict(w)
        if not w.get("cache"):
            w["cache"] = True
        if isinstance(w.get("workflow"), Mapping):
            w["workflow"] = with_cache(w["workflow"])
        works.append(w)
    out["works"] = works
    return out
