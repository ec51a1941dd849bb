"""Active learning as a workflow run.

Evaluate a batch of points (distributed), fit a Gaussian-process surrogate, propose the
next batch where it is most uncertain (or by your acquisition), until a condition or
the budget.

::

    from idds_jupyter.al import ActiveLearning

    al = ActiveLearning(f, bounds=[(0, 1), (0, 1)], batch_size=8, initial=16,
                        max_iterations=10, acquisition="straddle", threshold=0.5,
                        until=lambda s: s["metric"] < 0.02, seed=0)
    result = al.run()                 # result.X, result.y, result.history, result.run_id

Each iteration ``i`` is two Works of the run: ``evaluate_<i>`` (one job per point:
``f(*point)``) and ``iteration_<i>``, one job that fits the surrogate
(``sklearn.gaussian_process.GaussianProcessRegressor``) on all the points so
far, computes the metric and proposes the next batch. Its JSON result —
``{"iteration": i, "metric": m, "n_points": n, ...}`` — is what the
active-learning view plots.

Acquisitions: ``"uncertainty"`` (the predictive standard deviation),
``"straddle"`` (``1.96 σ − |μ − threshold|``, for excursion sets
``{x : f(x) > threshold}``), or any ``acquisition(mu, sigma, X) -> scores``.
The default metric is the mean predictive σ over the candidates; pass
``metric(mu, sigma, X) -> float`` for another. Both run in the fit job (so
they must be picklable).
"""

from __future__ import annotations

import threading
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from idds_jupyter.extras import needs_extras
from idds_jupyter.faat.results import router
from idds_jupyter.faat.work import WorkFunction
from idds_jupyter.faat.workflow import Run
from idds_jupyter.views import View

if TYPE_CHECKING:
    from idds_jupyter.client import Client

__all__ = ["ActiveLearning", "ALResult", "fit_and_propose", "ACQUISITIONS"]

ACQUISITIONS = ("uncertainty", "straddle")


def _scores(
    kind: str | Callable[..., Any], mu: Any, sigma: Any, X: Any, threshold: float | None
) -> Any:
    import numpy as np

    if callable(kind):
        return np.asarray(kind(mu, sigma, X), dtype=float)
    if kind == "uncertainty":
        return sigma
    if kind == "straddle":
        if threshold is None:
            raise ValueError("the straddle acquisition needs a threshold")
        return 1.96 * sigma - np.abs(mu - threshold)
    raise ValueError(
        f"unknown acquisition {kind!r}; use one of {', '.join(ACQUISITIONS)} or a function"
    )


def fit_and_propose(
    X: list[list[float]],
    y: list[float],
    bounds: list[tuple[float, float]],
    batch_size: int,
    acquisition: str | Callable[..., Any],
    metric: Callable[..., float] | None,
    threshold: float | None,
    iteration: int,
    n_candidates: int,
    seed: int | None,
    kernel: Any = None,
) -> dict[str, Any]:
    """Fit the surrogate on ``(X, y)``, score random candidates, pick the next batch (a job)."""
    with needs_extras("active learning (its surrogate)"):
        import numpy as np
        from sklearn.exceptions import ConvergenceWarning
        from sklearn.gaussian_process import GaussianProcessRegressor
        from sklearn.gaussian_process.kernels import RBF, ConstantKernel, WhiteKernel

    Xa = np.asarray(X, dtype=float)
    ya = np.asarray(y, dtype=float)
    lo = np.array([b[0] for b in bounds], dtype=float)
    hi = np.array([b[1] for b in bounds], dtype=float)
    if kernel is None:
        kernel = ConstantKernel(1.0) * RBF(length_scale=0.2 * (hi - lo)) + WhiteKernel(
            1e-5, (1e-9, 1e-1)
        )
    gp = GaussianProcessRegressor(
        kernel=kernel, normalize_y=True, n_restarts_optimizer=2, random_state=seed
    )
    with warnings.catch_warnings():  # hyper-parameters at their bounds: fine for this use
        warnings.simplefilter("ignore", ConvergenceWarning)
        gp.fit(Xa, ya)
    rng = np.random.default_rng(None if seed is None else seed + 7919 * iteration)
    cand = lo + (hi - lo) * rng.random((n_candidates, len(bounds)))
    mu, sigma = gp.predict(cand, return_std=True)
    scores = _scores(acquisition, mu, sigma, cand, threshold)
    picked: list[int] = []
    order = np.argsort(-scores)
    min_dist = 0.02 * float(np.linalg.norm(hi - lo))
    for idx in order:  # the best scores, not piled on one spot
        if all(np.linalg.norm(cand[idx] - cand[j]) > min_dist for j in picked):
            picked.append(int(idx))
        if len(picked) == batch_size:
            break
    value = float(metric(mu, sigma, cand)) if metric is not None else float(np.mean(sigma))
    return {
        "iteration": iteration,
        "metric": value,
        "n_points": len(ya),
        "mean_sigma": float(np.mean(sigma)),
        "max_score": float(scores[order[0]]),
        "proposal": [[float(v) for v in cand[i]] for i in picked],
        "kernel": str(gp.kernel_),
    }


class _NamedRun(Run):
    """A run whose works keep the names given (``evaluate_<i>``, ``iteration_<i>``)."""

    def next_work_name(self, base: str) -> str:
        return base


@dataclass
class ALResult:
    """The outcome of a loop: the points evaluated (``X``, ``y``), one record per iteration."""

    run_id: int
    X: list[list[float]]
    y: list[float]
    history: list[dict[str, Any]] = field(default_factory=list)  # the iteration results
    converged: bool = False

    @property
    def metrics(self) -> list[float]:
        """The metric of each iteration, in order."""
        return [h["metric"] for h in self.history]


class ActiveLearning:
    """An active-learning loop as a workflow run (see the module documentation)."""

    def __init__(
        self,
        function: Callable[..., Any],
        bounds: Sequence[tuple[float, float]],
        batch_size: int = 8,
        initial: int = 16,
        max_iterations: int = 10,
        acquisition: str | Callable[..., Any] = "uncertainty",
        metric: Callable[..., float] | None = None,
        threshold: float | None = None,
        until: Callable[[dict[str, Any]], bool] | None = None,
        max_evaluations: int | None = None,
        n_candidates: int = 2000,
        seed: int | None = None,
        kernel: Any = None,
        name: str = "active_learning",
        client: Client | None = None,
    ) -> None:
        if isinstance(function, WorkFunction):
            function = function.fn
        if not callable(function):
            raise TypeError("function must be callable (or a @work function)")
        if not bounds or any(len(b) != 2 or b[0] >= b[1] for b in bounds):
            raise ValueError(
                f"bounds must be a list of (low, high) with low < high, got {bounds!r}"
            )
        if isinstance(acquisition, str) and acquisition not in ACQUISITIONS:
            raise ValueError(
                f"unknown acquisition {acquisition!r}; use one of "
                f"{', '.join(ACQUISITIONS)} or a function"
            )
        if acquisition == "straddle" and threshold is None:
            raise ValueError("the straddle acquisition needs a threshold")
        self.function = function
        self.bounds = [(float(lo), float(hi)) for lo, hi in bounds]
        self.batch_size = int(batch_size)
        self.initial = int(initial)
        self.max_iterations = int(max_iterations)
        self.acquisition = acquisition
        self.metric = metric
        self.threshold = threshold
        self.until = until
        self.max_evaluations = max_evaluations
        self.n_candidates = int(n_candidates)
        self.seed = seed
        self.kernel = kernel
        self.name = name
        self.client = client
        self.run_obj: Run | None = None
        self._stop = threading.Event()

    def stop(self) -> None:
        """End after the current iteration."""
        self._stop.set()

    def submit(self) -> Run:
        """Start the loop as a run (its body runs in a thread here); returns the run at once."""
        client = self.client
        if client is None:
            from idds_jupyter.client import get_client

            client = get_client()
        router(client)  # the push channel is up before anything can end
        params = {
            "active_learning": {
                "bounds": self.bounds,
                "batch_size": self.batch_size,
                "initial": self.initial,
                "max_iterations": self.max_iterations,
                "acquisition": self.acquisition
                if isinstance(self.acquisition, str)
                else getattr(self.acquisition, "__name__", "custom"),
                "threshold": self.threshold,
                "seed": self.seed,
            }
        }
        wid = client.submit({"name": self.name, "works": []}, params, open=True)
        run = _NamedRun(client, wid, self.name)
        run._start_body(self._body, (), {})
        self.run_obj = run
        return run

    def run(self, timeout: float | None = None) -> ALResult:
        """Submit the loop and wait for its :class:`ALResult` (``timeout`` in seconds)."""
        run = self.submit()
        out = run.result(timeout)
        assert isinstance(out, ALResult)
        return out

    def _body(self) -> ALResult:
        import numpy as np

        from idds_jupyter.faat.context import current_run

        run = current_run()
        assert run is not None
        rng = np.random.default_rng(self.seed)
        lo = np.array([b[0] for b in self.bounds])
        hi = np.array([b[1] for b in self.bounds])
        batch = (lo + (hi - lo) * rng.random((self.initial, len(self.bounds)))).tolist()
        X: list[list[float]] = []
        y: list[float] = []
        history: list[dict[str, Any]] = []
        converged = False
        for it in range(self.max_iterations):
            evaluate = WorkFunction(self.function, name=f"evaluate_{it}")
            values = evaluate.map(*zip(*batch, strict=True))
            X += batch
            y += [float(v) for v in values]
            fit = WorkFunction(fit_and_propose, name=f"iteration_{it}")
            res = fit(
                X,
                y,
                self.bounds,
                self.batch_size,
                self.acquisition,
                self.metric,
                self.threshold,
                it,
                self.n_candidates,
                self.seed,
                self.kernel,
            )
            history.append(res)
            state = {**res, "X": X, "y": y}
            if self.until is not None and self.until(state):
                converged = True
                break
            if self._stop.is_set():
                break
            if self.max_evaluations is not None and len(y) >= self.max_evaluations:
                break
            batch = res["proposal"]
            if self.max_evaluations is not None:
                batch = batch[: self.max_evaluations - len(y)]
        return ALResult(run_id=run.id, X=X, y=y, history=history, converged=converged)

    def widget(self) -> View:
        """A live view of the running loop (its metric per iteration, its proposals).

        A notebook displays it as a widget (:mod:`idds_jupyter.views`).
        """
        if self.run_obj is None:
            raise RuntimeError("the loop has not started: call submit() or run()")
        return View("al", self.run_obj.client, self.run_obj.id)
