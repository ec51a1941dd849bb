"""Samplers of parallel studies: TPE with Optuna's ``constant_liar`` when trials run together."""

from __future__ import annotations

import itertools
import statistics

import optuna
import pytest

from idds_jupyter.hpo import Study, make_sampler, uniform

optuna.logging.set_verbosity(optuna.logging.WARNING)
SPACE = {"x": uniform(0, 1), "y": uniform(0, 1)}


def _liar(sampler: optuna.samplers.BaseSampler) -> bool:
    return bool(sampler._constant_liar)  # type: ignore[attr-defined]


def test_tpe_lies_only_when_trials_run_together() -> None:
    # (Optuna >= 5 lies by default; Optuna 4, which the hpo extra allows, does not)
    assert _liar(make_sampler("tpe", 1, SPACE, parallel=8))
    # the user's word wins, either way
    assert not _liar(make_sampler("tpe", 1, SPACE, {"constant_liar": False}, parallel=8))
    assert _liar(make_sampler("tpe", 1, SPACE, {"constant_liar": True}, parallel=1))


@pytest.mark.parametrize(
    ("parallel", "prefetch", "options", "liar"),
    [(1, 2, None, True), (8, 0, None, True), (8, 0, {"constant_liar": False}, False)],
)
def test_study_builds_its_sampler_for_the_trials_in_flight(
    parallel: int, prefetch: int, options: dict[str, bool] | None, liar: bool
) -> None:
    study = Study(
        lambda x, y: x + y,
        SPACE,
        parallel=parallel,
        prefetch=prefetch,
        sampler="tpe",
        sampler_options=options,
        seed=0,
        steer="client",
    )
    assert _liar(study.segments[None].study.sampler) is liar


def _spread(liar: bool, seed: int) -> float:
    """Mean distance between 8 points asked together after 20 told trials."""
    st = optuna.create_study(
        sampler=make_sampler("tpe", seed, SPACE, {"constant_liar": liar}, parallel=8)
    )
    for _ in range(20):
        t = st.ask(SPACE)
        st.tell(t, (t.params["x"] - 0.3) ** 2 + (t.params["y"] - 0.6) ** 2)
    pts = [st.ask(SPACE).params for _ in range(8)]
    return statistics.mean(
        ((a["x"] - b["x"]) ** 2 + (a["y"] - b["y"]) ** 2) ** 0.5
        for a, b in itertools.combinations(pts, 2)
    )


def test_constant_liar_spreads_points_asked_together() -> None:
    # without it, 8 trials asked before any of them ends crowd around the best point so far
    seeds = range(5)
    lying = statistics.mean(_spread(True, s) for s in seeds)
    honest = statistics.mean(_spread(False, s) for s in seeds)
    print(
        f"\nmean distance of 8 points asked together: constant_liar {lying:.3f}, without {honest:.3f}"
    )
    assert lying > honest
