"""Search spaces and samplers: thin names over Optuna's distributions and samplers.

A space maps parameter names to distributions::

    space = {"lr": loguniform(1e-4, 1e-1), "depth": integer(2, 12),
             "dropout": uniform(0.0, 0.5), "kernel": categorical(["rbf", "linear"])}

Optuna distributions (``optuna.distributions.FloatDistribution`` …) are
accepted as they are. Samplers are Optuna's — this module only builds them
from a name (``"tpe"``, ``"gp"``, ``"cmaes"``, ``"random"``, ``"grid"``) and a seed.
"""

from __future__ import annotations

import copy
import importlib.util
import re
import warnings
from collections.abc import Mapping, Sequence
from types import ModuleType
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # Optuna is the ``hpo`` extra: imported when a function needs it
    import optuna
    from optuna.distributions import (
        BaseDistribution,
        CategoricalDistribution,
        FloatDistribution,
        IntDistribution,
    )

__all__ = [
    "uniform",
    "loguniform",
    "integer",
    "categorical",
    "as_space",
    "space_to_json",
    "space_from_json",
    "make_sampler",
    "SAMPLERS",
    "grid_of",
    "trial_work_name",
    "parse_trial_work",
    "frozen_trial",
    "resumed_seed",
    "tell",
    "best_of",
    "summary_of",
    "HPO_INSTALL_HINT",
    "require_optuna",
]

Space = dict[str, "BaseDistribution"]

#: how to get what HPO needs, named by every error of a base install that meets a study
HPO_INSTALL_HINT = "pip install 'idds-jupyter[hpo]'"


def require_optuna() -> ModuleType:
    """Optuna, or the one error a base install (no ``hpo`` extra) gives for HPO."""
    try:
        import optuna
    except ModuleNotFoundError as e:
        raise ModuleNotFoundError(
            f"hyper-parameter optimisation needs Optuna, which is not installed: {HPO_INSTALL_HINT}",
            name="optuna",
        ) from e
    return optuna


def _dists() -> Any:
    return require_optuna().distributions


SAMPLERS = ("tpe", "gp", "cmaes", "random", "grid")
_ALIASES = {
    "tpe": "tpe",
    "gp": "gp",
    "bayes": "gp",
    "gaussian-process": "gp",
    "cmaes": "cmaes",
    "cma-es": "cmaes",
    "cma": "cmaes",
    "random": "random",
    "grid": "grid",
}


def uniform(low: float, high: float, step: float | None = None) -> FloatDistribution:
    """A float drawn uniformly from ``[low, high]`` (on a grid of ``step`` when given)."""
    return _dists().FloatDistribution(float(low), float(high), step=step)


def loguniform(low: float, high: float) -> FloatDistribution:
    """A positive float drawn uniformly in log scale from ``[low, high]``."""
    return _dists().FloatDistribution(float(low), float(high), log=True)


def integer(low: int, high: int, step: int = 1, log: bool = False) -> IntDistribution:
    """An integer of ``[low, high]`` (inclusive)."""
    return _dists().IntDistribution(int(low), int(high), step=step, log=log)


def categorical(choices: Sequence[Any]) -> CategoricalDistribution:
    """One of ``choices`` (None, bool, int, float or str)."""
    return _dists().CategoricalDistribution(list(choices))


def as_space(space: Mapping[str, Any] | None, where: str = "space") -> Space:
    """Check a space: every value must be a distribution (a list means categorical)."""
    if space is None:
        return {}
    base = _dists().BaseDistribution
    if not isinstance(space, Mapping):
        raise TypeError(
            f"{where} must map parameter names to distributions, got {type(space).__name__}"
        )
    out: Space = {}
    for name, dist in space.items():
        if not isinstance(name, str) or not name.isidentifier():
            raise ValueError(f"{where}: parameter name {name!r} must be a Python identifier")
        if isinstance(dist, list | tuple):
            dist = categorical(dist)
        if not isinstance(dist, base):
            raise TypeError(
                f"{where}[{name!r}] must be a distribution (uniform, loguniform, integer, "
                f"categorical or an optuna distribution), got {dist!r}"
            )
        out[name] = dist
    return out


def space_to_json(space: Space) -> dict[str, str]:
    to_json = _dists().distribution_to_json
    return {k: to_json(v) for k, v in space.items()}


def space_from_json(d: Mapping[str, str]) -> Space:
    from_json = _dists().json_to_distribution
    return {k: from_json(v) for k, v in d.items()}


def grid_of(space: Space) -> dict[str, list[Any]]:
    """The grid of a space for the grid sampler (floats need a ``step``)."""
    dists = _dists()
    grid: dict[str, list[Any]] = {}
    for name, d in space.items():
        if isinstance(d, dists.CategoricalDistribution):
            grid[name] = list(d.choices)
        elif isinstance(d, dists.IntDistribution) and not d.log:
            grid[name] = list(range(d.low, d.high + 1, d.step))
        elif isinstance(d, dists.FloatDistribution) and d.step is not None:
            n = int(round((d.high - d.low) / d.step))
            grid[name] = [d.low + i * d.step for i in range(n + 1)]
        else:
            raise ValueError(
                f"grid sampler: parameter {name!r} ({d}) has no finite grid; "
                f"give it a step, make it categorical, or pass optuna.samplers.GridSampler"
            )
    return grid


def grid_size(space: Space) -> int:
    n = 1
    for values in grid_of(space).values():
        n *= len(values)
    return n


def make_sampler(
    sampler: str | optuna.samplers.BaseSampler,
    seed: int | None,
    space: Space,
    options: Mapping[str, Any] | None = None,
    parallel: int = 1,
) -> optuna.samplers.BaseSampler:
    """An Optuna sampler from a name (with ``seed`` and ``options``), or a copy of an instance.

    ``parallel``: how many trials a study keeps in flight. Above 1, TPE is built with
    Optuna's ``constant_liar`` (trials still running count as bad points, so that trials
    asked together do not all land on the same promising spot; Optuna's default since 5.0,
    not in 4), unless ``options`` says ``constant_liar`` itself.
    """
    optuna = require_optuna()
    if isinstance(sampler, optuna.samplers.BaseSampler):
        return copy.deepcopy(sampler)
    kind = _ALIASES.get(str(sampler).lower())
    if kind is None:
        raise ValueError(
            f"unknown sampler {sampler!r}; use one of {', '.join(SAMPLERS)} "
            f"or an optuna sampler instance"
        )
    opts = dict(options or {})
    if kind == "tpe":
        if int(parallel) > 1:
            opts.setdefault("constant_liar", True)
        with warnings.catch_warnings():  # constant_liar is "experimental" since Optuna 2.8
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            return optuna.samplers.TPESampler(seed=seed, **opts)
    if kind == "random":
        return optuna.samplers.RandomSampler(seed=seed)
    if kind == "gp":
        if importlib.util.find_spec("torch") is None:
            raise ImportError(
                "the Gaussian-process sampler (optuna.samplers.GPSampler) needs "
                "PyTorch: pip install 'idds-jupyter[hpo-gp]' (or pip install torch)"
            )
        return optuna.samplers.GPSampler(seed=seed, **opts)
    if kind == "cmaes":
        if importlib.util.find_spec("cmaes") is None:
            raise ImportError(
                "the CMA-ES sampler needs the cmaes package: pip install cmaes "
                "(or idds-jupyter[hpo])"
            )
        return optuna.samplers.CmaEsSampler(seed=seed, **opts)
    return optuna.samplers.GridSampler(grid_of(space), seed=seed)


# -- trials as works ---------------------------------------------------------------------
# A study's works are named after its trials, by the client's driver and by the server's
# Steerer alike: ``[<segment>_]trial_<n>`` (one trial), ``..._trial_<a>_<b>`` (trials a..b,
# one job each), ``..._trial_<n>_r<k>`` (rung k of a budgeted trial).
_TRIAL_WORK = re.compile(
    r"^(?:(?P<seg>\w+?)_)?trial_(?P<n>\d+)(?:_(?P<last>\d+)|_r(?P<rung>\d+))?$"
)


def trial_work_name(
    segment: str | None, first: int, last: int | None = None, rung: int | None = None
) -> str:
    base = f"trial_{first}" if segment is None else f"{segment}_trial_{first}"
    if rung:
        return f"{base}_r{rung}"
    return base if last is None or last == first else f"{base}_{last}"


def parse_trial_work(name: str) -> tuple[str | None, int, int, int | None] | None:
    """``(segment, first trial, last trial, rung)`` of a trial work's name, or None."""
    m = _TRIAL_WORK.match(name)
    if m is None:
        return None
    first = int(m.group("n"))
    last = int(m.group("last")) if m.group("last") else first
    return m.group("seg"), first, last, int(m.group("rung")) if m.group("rung") else None


def frozen_trial(
    space: Space,
    params: Mapping[str, Any] | None,
    value: float | None,
    number: int,
    work: str,
    intermediates: Mapping[int, float] | None = None,
    **attrs: Any,
) -> optuna.trial.FrozenTrial:
    """A trial that ran elsewhere, to hand to ``study.add_trials``: complete with ``value``,
    else pruned (it reported intermediate values) or failed."""
    optuna = require_optuna()
    from optuna.trial import TrialState

    params = dict(params or {})
    dists = {k: space[k] for k in params if k in space}
    state = (
        TrialState.COMPLETE
        if value is not None
        else (TrialState.PRUNED if intermediates else TrialState.FAIL)
    )
    return optuna.trial.create_trial(
        params={k: params[k] for k in dists},
        distributions=dists,
        value=value,
        state=state,
        intermediate_values=dict(intermediates or {}) or None,
        user_attrs={"trial": number, "work": work, **attrs},
    )


def resumed_seed(seed: int, index: int, allocated: int) -> int:
    """The seed of segment ``index`` when a study resumes with ``allocated`` trials: a
    sampler seeded as at the start would ask the same points again."""
    return ((seed + index) * 1_000_003 + allocated) % 2**31


def tell(
    study: optuna.Study, trial: optuna.trial.Trial, value: float | None, state: Any = None
) -> None:
    """``study.tell`` outside ``study.optimize`` (the grid sampler calls ``study.stop()``
    when it is exhausted, which Optuna allows only inside its loop)."""
    tl = study._thread_local
    tl.in_optimize_loop = True
    try:
        if value is not None:
            study.tell(trial, value)
        else:
            study.tell(trial, state=state)
    finally:
        tl.in_optimize_loop = False


def best_of(studies: Mapping[str | None, optuna.Study]) -> dict[str | None, dict[str, Any]]:
    """Per segment with a completed trial: the best value, parameters and trial number."""
    from optuna.trial import TrialState

    out: dict[str | None, dict[str, Any]] = {}
    for name, study in studies.items():
        if study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)):
            b = study.best_trial
            out[name] = {
                "value": b.value,
                "params": dict(b.params),
                "trial": b.user_attrs.get("trial", b.number),
            }
    return out


def summary_of(studies: Mapping[str | None, optuna.Study]) -> dict[str, Any]:
    """A study's JSON result: trials per state and the best per segment (``main`` if none)."""
    states: dict[str, int] = {}
    for study in studies.values():
        for t in study.get_trials(deepcopy=False):
            states[t.state.name.lower()] = states.get(t.state.name.lower(), 0) + 1
    return {"trials": states, "best": {(s or "main"): b for s, b in best_of(studies).items()}}
