"""The Work concept: the static template of one task made of one or more jobs."""

from __future__ import annotations

import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from .errors import ExpressionError, TemplateError
from .parameter import parse_template, placeholders
from .shell import check_command

if TYPE_CHECKING:
    from .workflow import Workflow

__all__ = ["FUNCTION_REF", "JOB_DEP_PATTERNS", "POLICIES", "JobDep", "Work"]

JOB_DEP_PATTERNS = ("one_to_one", "all", "window", "explicit")
POLICIES = ("subfinished", "failed")
#: ``package.module:qualname`` — how a function work names its callable.
FUNCTION_REF = re.compile(r"^[A-Za-z_]\w*(\.[A-Za-z_]\w*)*:[A-Za-z_]\w*(\.[A-Za-z_]\w*)*$")


@dataclass
class JobDep:
    """A job-level dependency on the jobs of another work of the same scope.

    Job-level links let a child job start as soon as *its* parents finished,
    instead of waiting for the whole parent work (Rubin-style large DAGs).
    """

    work: str
    pattern: str = "one_to_one"
    size: int = 2
    map: list[list[int]] | None = None

    def edges(self, n_child: int, n_parent: int) -> Iterator[tuple[int, int]]:
        """Yield ``(parent_index, child_index)`` pairs, lazily (linear except for ``all``).

        Raises ValueError when the pattern cannot link these counts.
        """
        if self.pattern == "one_to_one":
            if n_child != n_parent:
                raise ValueError(
                    f"job_deps on {self.work!r}: one_to_one needs equal job counts, "
                    f"got {n_child} child and {n_parent} parent jobs"
                )
            return ((i, i) for i in range(n_child))
        if self.pattern == "all":
            return ((p, c) for c in range(n_child) for p in range(n_parent))
        if self.pattern == "window":
            if self.size < 1:
                raise ValueError(f"job_deps on {self.work!r}: window size must be >= 1")
            if n_parent == 0:
                return iter(())
            span = min(self.size, n_parent)
            return (((c + k) % n_parent, c) for c in range(n_child) for k in range(span))
        if self.pattern == "explicit":
            return self._explicit(n_child, n_parent)
        raise ValueError(f"job_deps on {self.work!r}: unknown pattern {self.pattern!r}")

    def _explicit(self, n_child: int, n_parent: int) -> Iterator[tuple[int, int]]:
        mapping = self.map or []
        if len(mapping) != n_child:
            raise ValueError(
                f"job_deps on {self.work!r}: explicit map has {len(mapping)} rows for {n_child} child jobs"
            )
        for c, parents in enumerate(mapping):
            for p in parents:
                if not 0 <= p < n_parent:
                    raise ValueError(
                        f"job_deps on {self.work!r}: parent index {p} out of range 0..{n_parent - 1}"
                    )
                yield p, c

    def to_dict(self) -> dict[str, Any]:
        d: dict[str, Any] = {"work": self.work, "pattern": self.pattern}
        if self.pattern == "window" or self.size != 2:
            d["size"] = self.size
        if self.map is not None:
            d["map"] = [list(row) for row in self.map]
        return d

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> JobDep:
        raw_map = d.get("map")
        return cls(
            work=d["work"],
            pattern=d.get("pattern", "one_to_one"),
            size=d.get("size", 2),
            map=[list(row) for row in raw_map] if raw_map is not None else None,
        )


@dataclass
class Work:
    """Static template of a Work: what to run, how many jobs, and what it waits for.

    Exactly one of ``command`` (a shell template whose values are quoted, or an argv
    list run without a shell), ``function`` (``pkg.mod:qualname``),
    ``payload`` (a pickled function in the cache, from Function-as-a-Task:
    ``{"function": sha256, "calls": sha256 of the (args, kwargs) list, "sandbox"?: sha256}``)
    or ``workflow`` (a sub-workflow used as a Work) is set. At most one of
    ``kwargs_list`` (one job per item), ``n_jobs`` (one job per ``job_index``) and
    ``input_dataset`` (one job per ``file``) is set; otherwise the work has one job.
    """

    name: str
    command: str | list[str] | None = None
    function: str | None = None
    workflow: Workflow | None = None
    payload: dict[str, str] | None = None
    parameters: dict[str, Any] = field(default_factory=dict)
    kwargs_list: list[dict[str, Any]] | str | None = None
    n_jobs: int | None = None
    input_dataset: str | None = None
    depends_on: list[str] = field(default_factory=list)
    job_deps: list[JobDep] = field(default_factory=list)
    on_failure: list[str] = field(default_factory=list)
    retries: int = 0
    policy: str = "subfinished"
    backend: str | None = None
    resources: dict[str, Any] = field(default_factory=dict)
    timeout_s: float | None = None
    env: dict[str, str] = field(default_factory=dict)
    #: memoization (off by default): True, or the name of a shared cache namespace
    cache: bool | str = False

    @property
    def kind(self) -> str:
        """``"command"``, ``"function"`` (also a payload) or ``"workflow"`` (``"invalid"`` if not one)."""
        set_ = [
            k
            for k in ("command", "function", "workflow", "payload")
            if getattr(self, k) is not None
        ]
        if len(set_) != 1:
            return "invalid"
        return "function" if set_[0] == "payload" else set_[0]

    def fixed_job_count(self) -> int | None:
        """The job count when known before running (None for sweeps resolved at run time)."""
        if self.workflow is not None:
            return 0
        if isinstance(self.kwargs_list, list):
            return len(self.kwargs_list)
        if self.kwargs_list is not None or self.input_dataset is not None:
            return None
        if self.n_jobs is not None:
            return self.n_jobs
        return 1

    def job_count(
        self, kwargs_list_resolved: list[Any] | None = None, n_files: int | None = None
    ) -> int:
        """How many jobs this work expands to, given the run-time sweep and dataset size."""
        if self.workflow is not None:
            return 0
        if kwargs_list_resolved is not None:
            return len(kwargs_list_resolved)
        if isinstance(self.kwargs_list, list):
            return len(self.kwargs_list)
        if self.kwargs_list is not None:
            raise ValueError(
                f"work {self.name!r}: kwargs_list {self.kwargs_list!r} must be resolved first"
            )
        if self.n_jobs is not None:
            return self.n_jobs
        if self.input_dataset is not None:
            if n_files is None:
                raise ValueError(
                    f"work {self.name!r}: number of files of {self.input_dataset!r} needed"
                )
            return n_files
        return 1

    def templated_values(self) -> list[Any]:
        """The fields whose placeholders are substituted (and so create implicit dependencies)."""
        values: list[Any] = [self.parameters]
        if self.command is not None:
            values.append(self.command)
        if self.kwargs_list is not None:
            values.append(self.kwargs_list)
        return values

    def check(self, qualname: str | None = None) -> None:
        """Check this work's own fields (types, exclusivity, formats); raise :class:`TemplateError`."""
        who = qualname or self.name

        def err(fld: str, msg: str) -> TemplateError:
            return TemplateError(who, fld, msg)

        if not isinstance(self.name, str) or not self.name:
            raise err("name", f"must be a non-empty string, got {self.name!r}")
        kinds = [
            k
            for k in ("command", "function", "workflow", "payload")
            if getattr(self, k) is not None
        ]
        if not kinds:
            raise err("command", "one of command, function or workflow is required")
        if len(kinds) > 1:
            raise err(
                kinds[1],
                f"only one of command, function or workflow may be set (got {' and '.join(kinds)})",
            )
        if self.payload is not None:
            if not isinstance(self.payload, dict) or not isinstance(
                self.payload.get("function"), str
            ):
                raise err(
                    "payload", "must be a mapping with the sha256 digest of the function blob"
                )
            for key, sha in self.payload.items():
                if key not in ("function", "calls", "sandbox"):
                    raise err(f"payload.{key}", "unknown key; expected function, calls, sandbox")
                if not isinstance(sha, str) or not _SHA256.match(sha):
                    raise err(f"payload.{key}", f"must be a sha256 hex digest, got {sha!r}")
        if isinstance(self.command, list):
            if not self.command or not all(isinstance(a, str) for a in self.command):
                raise err(
                    "command", "a list command (argv, no shell) must be a non-empty list of strings"
                )
        elif self.command is not None and not isinstance(self.command, str):
            raise err(
                "command",
                f"must be a string (shell) or a list of strings (argv), got {type(self.command).__name__}",
            )
        if self.function is not None and (
            not isinstance(self.function, str) or not FUNCTION_REF.match(self.function)
        ):
            raise err(
                "function", f"must look like 'package.module:qualname', got {self.function!r}"
            )
        if self.workflow is not None and type(self.workflow).__name__ != "Workflow":
            raise err("workflow", f"must be a Workflow, got {type(self.workflow).__name__}")
        if not isinstance(self.parameters, dict) or not all(
            isinstance(k, str) for k in self.parameters
        ):
            raise err("parameters", "must be a mapping of names to values")
        sweeps = [
            k for k in ("kwargs_list", "n_jobs", "input_dataset") if getattr(self, k) is not None
        ]
        if len(sweeps) > 1:
            raise err(
                sweeps[1],
                f"only one of kwargs_list, n_jobs, input_dataset may be set (got {' and '.join(sweeps)})",
            )
        if self.workflow is not None and sweeps:
            raise err(sweeps[0], "a sub-workflow work has no jobs of its own")
        kl = self.kwargs_list
        if kl is not None:
            if isinstance(kl, str):
                parts = _parts(who, "kwargs_list", kl)
                if len(parts) != 1 or isinstance(parts[0], str):
                    raise err(
                        "kwargs_list",
                        f"a string kwargs_list must be exactly one placeholder like '{{gen.result}}', got {kl!r}",
                    )
            elif not isinstance(kl, list) or not all(isinstance(item, dict) for item in kl):
                raise err(
                    "kwargs_list", "must be a list of dicts (one per job) or a single placeholder"
                )
        if self.n_jobs is not None and (not _is_int(self.n_jobs) or self.n_jobs < 0):
            raise err("n_jobs", f"must be a non-negative integer, got {self.n_jobs!r}")
        if self.input_dataset is not None and (
            not isinstance(self.input_dataset, str) or not self.input_dataset
        ):
            raise err("input_dataset", f"must be a dataset name, got {self.input_dataset!r}")
        if isinstance(self.input_dataset, str) and self.input_dataset.startswith("rucio://"):
            scope, sep, dsname = self.input_dataset[len("rucio://") :].partition(":")
            if not (sep and scope and dsname) or "/" in scope:
                raise err(
                    "input_dataset",
                    f"a Rucio dataset is rucio://SCOPE:NAME, got {self.input_dataset!r}",
                )
        for fld in ("depends_on", "on_failure"):
            value = getattr(self, fld)
            if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
                raise err(fld, "must be a list of names")
        if not isinstance(self.job_deps, list):
            raise err("job_deps", "must be a list")
        for i, jd in enumerate(self.job_deps):
            _check_job_dep(who, i, jd)
        if not _is_int(self.retries) or self.retries < 0:
            raise err("retries", f"must be a non-negative integer, got {self.retries!r}")
        if self.policy not in POLICIES:
            raise err("policy", f"must be one of {', '.join(POLICIES)}, got {self.policy!r}")
        if self.backend is not None and not isinstance(self.backend, str):
            raise err("backend", f"must be a string, got {self.backend!r}")
        if not isinstance(self.resources, dict):
            raise err("resources", "must be a mapping")
        if self.timeout_s is not None and (
            isinstance(self.timeout_s, bool)
            or not isinstance(self.timeout_s, int | float)
            or self.timeout_s <= 0
        ):
            raise err("timeout_s", f"must be a positive number, got {self.timeout_s!r}")
        if not isinstance(self.env, dict) or not all(
            isinstance(k, str) and isinstance(v, str) for k, v in self.env.items()
        ):
            raise err("env", "must map names to strings")
        if not isinstance(self.cache, bool | str) or (
            isinstance(self.cache, str) and not self.cache.strip()
        ):
            raise err("cache", f"must be true, false or a namespace name, got {self.cache!r}")
        for fld in ("command", "parameters"):
            value = getattr(self, fld)
            if value is not None:
                try:
                    placeholders(value)
                except ExpressionError as exc:
                    raise err(fld, str(exc)) from None
        if isinstance(self.command, str):
            try:
                check_command(self.command)
            except ValueError as exc:
                raise err("command", str(exc)) from None

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-able dict; fields at their default are left out for readable templates."""
        d: dict[str, Any] = {"name": self.name}
        if self.command is not None:
            d["command"] = list(self.command) if isinstance(self.command, list) else self.command
        if self.function is not None:
            d["function"] = self.function
        if self.workflow is not None:
            d["workflow"] = self.workflow.to_dict()
        if self.payload is not None:
            d["payload"] = dict(self.payload)
        if self.parameters:
            d["parameters"] = dict(self.parameters)
        if self.kwargs_list is not None:
            d["kwargs_list"] = (
                self.kwargs_list
                if isinstance(self.kwargs_list, str)
                else [dict(k) for k in self.kwargs_list]
            )
        for key in ("n_jobs", "input_dataset", "backend", "timeout_s"):
            if getattr(self, key) is not None:
                d[key] = getattr(self, key)
        if self.depends_on:
            d["depends_on"] = list(self.depends_on)
        if self.job_deps:
            d["job_deps"] = [jd.to_dict() for jd in self.job_deps]
        if self.on_failure:
            d["on_failure"] = list(self.on_failure)
        if self.retries:
            d["retries"] = self.retries
        if self.policy != "subfinished":
            d["policy"] = self.policy
        if self.resources:
            d["resources"] = dict(self.resources)
        if self.env:
            d["env"] = dict(self.env)
        if self.cache:
            d["cache"] = self.cache
        return d

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> Work:
        """Build from a dict already checked against the JSON Schema."""
        from .workflow import Workflow

        sub = d.get("workflow")
        kl = d.get("kwargs_list")
        return cls(
            name=d["name"],
            command=list(d["command"]) if isinstance(d.get("command"), list) else d.get("command"),
            function=d.get("function"),
            workflow=Workflow.from_dict(sub, validate=False) if sub is not None else None,
            payload=dict(d["payload"]) if d.get("payload") is not None else None,
            parameters=dict(d.get("parameters") or {}),
            kwargs_list=[dict(x) for x in kl] if isinstance(kl, list) else kl,
            n_jobs=d.get("n_jobs"),
            input_dataset=d.get("input_dataset"),
            depends_on=list(d.get("depends_on") or []),
            job_deps=[JobDep.from_dict(x) for x in d.get("job_deps") or []],
            on_failure=list(d.get("on_failure") or []),
            retries=d.get("retries", 0),
            policy=d.get("policy", "subfinished"),
            backend=d.get("backend"),
            resources=dict(d.get("resources") or {}),
            timeout_s=d.get("timeout_s"),
            env=dict(d.get("env") or {}),
            cache=d.get("cache") or False,
        )


_SHA256 = re.compile(r"^[0-9a-f]{64}$")


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _parts(who: str, fld: str, text: str) -> tuple[Any, ...]:
    try:
        return parse_template(text)
    except ExpressionError as exc:
        raise TemplateError(who, fld, str(exc)) from None


def _check_job_dep(who: str, i: int, jd: Any) -> None:
    fld = f"job_deps[{i}]"
    if not isinstance(jd, JobDep):
        raise TemplateError(who, fld, f"must be a JobDep, got {type(jd).__name__}")
    if not isinstance(jd.work, str) or not jd.work:
        raise TemplateError(who, f"{fld}.work", "must name a work")
    if jd.pattern not in JOB_DEP_PATTERNS:
        raise TemplateError(
            who,
            f"{fld}.pattern",
            f"must be one of {', '.join(JOB_DEP_PATTERNS)}, got {jd.pattern!r}",
        )
    if not _is_int(jd.size) or jd.size < 1:
        raise TemplateError(who, f"{fld}.size", f"must be a positive integer, got {jd.size!r}")
    if jd.pattern == "explicit":
        if jd.map is None:
            raise TemplateError(who, f"{fld}.map", "an explicit job dependency needs a map")
        if not isinstance(jd.map, list) or not all(
            isinstance(row, list) and all(_is_int(p) and p >= 0 for p in row) for row in jd.map
        ):
            raise TemplateError(who, f"{fld}.map", "must be a list of lists of parent job indices")
    elif jd.map is not None:
        raise TemplateError(
            who, f"{fld}.map", f"map is only used by the explicit pattern, not {jd.pattern!r}"
        )
