"""HPO studies against a real server: Branin with seeded TPE, segments, pruning, samplers,
and a study that survives a server restart."""

from __future__ import annotations

import collections
import functools
import sys
import time
from pathlib import Path
from typing import Any

import optuna
import pytest
from usecase_helpers import BRANIN_MIN, branin, server_on, warm

from idds_jupyter.client import Client
from idds_jupyter.client.errors import IddsError
from idds_jupyter.hpo import Study, categorical, integer, loguniform, uniform
from idds_jupyter.kernel.widgets import trials_of
from idds_jupyter.model.space import parse_trial_work

optuna.logging.set_verbosity(optuna.logging.WARNING)
SPACE = {"x1": uniform(-5, 10), "x2": uniform(0, 15)}
SEED = 15  # default TPE reaches 1 % of Branin's minimum in <= 100 trials for 4 of seeds 10..39


@pytest.mark.parametrize("steer", ["client", "server"])
def test_branin_tpe_reaches_minimum_and_matches_optuna(client: Client, steer: str) -> None:
    warm(client)
    study = Study(
        branin,
        SPACE,
        max_trials=100,
        parallel=1,
        sampler="tpe",
        seed=SEED,
        name="branin",
        steer=steer,
    )
    df = study.optimize(timeout=300)
    values = df["value"].tolist()
    first = next(i + 1 for i, v in enumerate(values) if v <= BRANIN_MIN * 1.01)
    print(
        f"\nidds TPE seed {SEED}: best {study.best_value:.6f} (min {BRANIN_MIN}), "
        f"within 1 % at trial {first}"
    )
    assert len(df) == 100 and (df["state"] == "COMPLETE").all()
    assert study.best_value <= BRANIN_MIN * 1.01 and first <= 100

    direct = optuna.create_study(sampler=optuna.samplers.TPESampler(seed=SEED))
    direct.optimize(
        lambda t: branin(t.suggest_float("x1", -5, 10), t.suggest_float("x2", 0, 15)), n_trials=100
    )
    print(f"optuna direct: best {direct.best_value:.6f}")
    # sequential dispatch asks and tells exactly as optuna.optimize does: the same points
    assert [t.params for t in direct.trials] == [
        {"x1": r.params_x1, "x2": r.params_x2} for r in df.itertuples()
    ]
    assert study.best_value == pytest.approx(direct.best_value, rel=1e-12)

    # each trial is a job of the study's run, visible to the monitor and the DAG/HPO views
    # (steered by the server, one work holds them all: trial_0_99)
    dag = client.dag(study.run_id)
    covered: set[int] = set()
    for node in dag["nodes"]:
        parsed = parse_trial_work(node["name"])
        if parsed is not None:
            covered |= set(range(parsed[1], parsed[2] + 1))
    assert covered == set(range(100)), sorted(n["name"] for n in dag["nodes"])
    results = []
    for w in client.status(study.run_id)["works"]:
        results += client.work_results(study.run_id, w["name"])
    assert len(trials_of(results)) == 100
    assert client.status(study.run_id)["status"] == "finished"


def test_branin_parallel_async_within_noise(client: Client) -> None:
    study = Study(
        branin, SPACE, max_trials=100, parallel=4, sampler="tpe", seed=SEED, name="branin4"
    )
    df = study.optimize(timeout=300)
    # Optuna itself with 4 trials in flight (ask 4 ahead, tell the oldest, ask again):
    # the seed-to-seed noise of its TPE when it sees results 4 trials late.
    dists = {
        "x1": optuna.distributions.FloatDistribution(-5, 10),
        "x2": optuna.distributions.FloatDistribution(0, 15),
    }
    band = []
    for seed in range(SEED, SEED + 6):
        direct = optuna.create_study(sampler=optuna.samplers.TPESampler(seed=seed))
        in_flight: collections.deque[optuna.trial.Trial] = collections.deque()
        for n in range(100):
            while len(in_flight) < 4 and n + len(in_flight) < 100:
                in_flight.append(direct.ask(dists))
            t = in_flight.popleft()
            direct.tell(t, branin(**t.params))
        band.append(direct.best_value)
    print(
        f"\nparallel=4: best {study.best_value:.5f}; optuna 4 in flight over 6 seeds "
        f"{min(band):.5f} .. {max(band):.5f}"
    )
    assert len(df) == 100 and (df["state"] == "COMPLETE").all()
    # our asynchronous dispatch sees results in the order they arrive, not oldest first:
    # the same sampler on another path, an optimum within that spread (plus 5 %)
    assert study.best_value <= max(band) * 1.05


def _two_models(
    segment: str, budget: float, x: float, n: int = 1, kind: str = "a"
) -> dict[str, Any]:
    base = (x - 0.3) ** 2 if segment == "quad" else abs(x - 0.7)
    return {"loss": base + 1.0 / budget + 0.01 * n, "budget_seen": budget}


def test_segments_pruning_dataframe(client: Client) -> None:
    study = Study(
        _two_models,
        {"x": uniform(0, 1)},
        max_trials=10,
        parallel=4,
        sampler="tpe",
        seed=3,
        name="seg",
        segments={"quad": {"n": integer(1, 3)}, "absv": {"kind": categorical(["a", "b"])}},
        budgets=[1, 2, 4],
        pruner=optuna.pruners.MedianPruner(n_startup_trials=2),
    )
    df = study.optimize(timeout=300)
    assert set(df["segment"]) == {"quad", "absv"}
    assert (df.groupby("segment").size() == 10).all()
    assert "params_n" in df and "params_kind" in df
    assert set(df["state"]) <= {"COMPLETE", "PRUNED"} and (df["state"] == "COMPLETE").sum() >= 2
    best = study.best()
    assert set(best) == {"quad", "absv"}
    assert study.best_value == min(b["value"] for b in best.values())
    works = {w["name"] for w in client.status(study.run_id)["works"]}
    assert any(n.startswith("quad_trial_") for n in works) and any(n.endswith("_r2") for n in works)
    print("\n", df[["segment", "trial", "state", "value"]].to_string())


def _square(x: float) -> float:
    return (x - 2) ** 2


@pytest.mark.parametrize("sampler", ["random", "cmaes", "grid", "gp"])
def test_samplers(client: Client, sampler: str) -> None:
    space = {"x": uniform(0, 4, step=0.5)} if sampler == "grid" else {"x": uniform(0, 4)}
    study = Study(_square, space, max_trials=12, parallel=3, sampler=sampler, seed=0, name=sampler)
    df = study.optimize(timeout=300)
    assert (df["state"] == "COMPLETE").all()
    if sampler == "grid":  # the grid has 9 points: every one once
        assert sorted(df["params_x"]) == [i * 0.5 for i in range(9)]
    assert study.best_value < 1.0


def test_command_objective(client: Client) -> None:
    """A shell command template as the objective: its last line of output is the value."""
    study = Study(
        f"{sys.executable} -c 'print(2 * {{lr}})'",
        {"lr": loguniform(1e-4, 1e-1)},
        max_trials=4,
        parallel=2,
        sampler="random",
        seed=1,
        name="cmd",
    )
    df = study.optimize(timeout=300)
    assert (df["state"] == "COMPLETE").all(), study.errors
    assert df["value"].tolist() == pytest.approx([2 * x for x in df["params_lr"]])


# ------------------------------------------------------------------ restart


def _slow_objective(log: str, x: float) -> float:
    with open(log, "a") as fh:
        fh.write(f"{x!r}\n")
    time.sleep(0.3)
    return (x - 0.5) ** 2


@pytest.mark.parametrize("steer", ["client", "server"])
def test_study_resumes_after_server_restart(tmp_path: Path, steer: str) -> None:
    log = tmp_path / "calls.txt"
    objective = functools.partial(_slow_objective, str(log))
    handle = server_on(tmp_path, workers=2)
    client = Client(handle.url, handle.token)
    try:
        warm(client)
        study = Study(
            objective,
            {"x": uniform(0, 1)},
            max_trials=12,
            parallel=2,
            sampler="tpe",
            seed=7,
            name="restart",
            client=client,
            steer=steer,
        )
        study.start()
        run_id = study.run_id
        assert run_id is not None
        deadline = time.time() + 120
        while (
            time.time() < deadline
            and sum(t.state.name == "COMPLETE" for t in study.segments[None].study.trials) < 4
        ):
            time.sleep(0.05)
        study.stop(abandon=True)  # the notebook's kernel goes away with the server
    finally:
        client.shutdown()
        handle.stop()  # the server stops with trials in flight
    done_before = {
        t.params["x"] for t in study.segments[None].study.trials if t.state.name == "COMPLETE"
    }
    assert len(done_before) >= 4

    handle = server_on(tmp_path, workers=2)  # same store, a new port
    client = Client(handle.url, handle.token)
    try:
        resumed = Study.load(run_id, objective, client=client)
        assert resumed.steer == steer
        assert resumed.resumed_trials >= len(done_before)
        df = resumed.optimize(timeout=300)
    finally:
        client.shutdown()
        handle.stop()
    calls = [float(line) for line in log.read_text().split()]
    print(
        f"\nbefore the restart {len(done_before)} trials finished; after it {len(df)} trials, "
        f"{len(calls)} objective calls (jobs in flight at the stop may run again)"
    )
    assert len(df) == 12 and (df["state"] == "COMPLETE").all()
    assert sorted(df["trial"]) == list(range(12))
    for x in done_before:  # finished trials never ran again
        assert calls.count(x) == 1, x
    assert len(calls) <= 12 + 2  # at most the 2 in flight at the stop ran twice


# ------------------------------------------------------------ steered by the server


def _flaky(x: float) -> float:
    if x > 0.5:
        raise ValueError(f"diverged at {x}")
    return (x - 0.4) ** 2


def test_server_steered_segments_failures_and_metrics(client: Client) -> None:
    """The server's Steerer runs segments side by side; failed trials are told as failed
    (with their parameters), metrics reach the DataFrame, the run ends with the summary."""
    study = Study(
        {"a": _flaky, "b": _square},
        {"x": uniform(0, 1)},
        max_trials=12,
        parallel=3,
        sampler="random",
        seed=2,
        name="steered",
        segments=["a", "b"],
        steer="server",
    )
    df = study.optimize(timeout=300)
    assert study.steer == "server"
    assert (df.groupby("segment").size() == 12).all()
    failed = df[df["state"] == "FAIL"]
    assert len(failed) > 0 and (failed["segment"] == "a").all()
    assert (failed["params_x"] > 0.5).all()  # the server said which points failed
    assert (df[df["state"] == "COMPLETE"]["segment"] == "a").sum() == 12 - len(failed)
    info = client.status(study.run_id)
    body = {**info, **(info.get("body") or {})}
    assert body["result"]["trials"] == {"complete": 24 - len(failed), "fail": len(failed)}
    assert set(body["result"]["best"]) == {"a", "b"}
    assert study.best_value == min(b["value"] for b in study.best().values())
    works = {w["name"] for w in info["works"]}
    assert any(n.startswith("a_trial_") for n in works) and any(
        n.startswith("b_trial_") for n in works
    )


def test_server_steered_max_failures_fails_the_study(client: Client) -> None:
    def always(x: float) -> float:
        raise RuntimeError("no")

    study = Study(
        always,
        {"x": uniform(0, 1)},
        max_trials=20,
        parallel=2,
        sampler="random",
        seed=0,
        name="fails",
        max_failures=1,
        steer="server",
    )
    with pytest.raises(RuntimeError, match="2 trials failed"):
        study.optimize(timeout=300)
    assert client.status(study.run_id)["status"] == "failed"
    assert len(client.status(study.run_id)["works"]) < 20  # it stopped asking


def test_server_steered_stop_finishes_the_trials_in_flight(client: Client) -> None:
    study = Study(
        functools.partial(_sleepy, 0.2),
        {"x": uniform(0, 1)},
        max_trials=50,
        parallel=2,
        sampler="random",
        seed=0,
        name="stopped",
        steer="server",
    )
    study.start()
    deadline = time.time() + 60
    while time.time() < deadline and len(study.dataframe()) < 2:
        time.sleep(0.05)
    study.stop()
    study.wait(120)
    df = study.dataframe()
    assert 2 <= len(df) < 50 and (df["state"] == "COMPLETE").all()
    assert client.status(study.run_id)["status"] == "finished"


def _sleepy(seconds: float, x: float) -> float:
    time.sleep(seconds)
    return x


def test_steer_choices_are_checked() -> None:
    with pytest.raises(ValueError, match="steer must be"):
        Study(_square, {"x": uniform(0, 1)}, steer="cloud")
    with pytest.raises(ValueError, match="prunes trials"):
        Study(_square, {"x": uniform(0, 1)}, budgets=[1, 2], steer="server")
    with pytest.raises(ValueError, match="by name"):
        Study(
            _square, {"x": uniform(0, 1)}, sampler=optuna.samplers.RandomSampler(), steer="server"
        )
    assert Study(_square, {"x": uniform(0, 1)}, steer="auto").steer == "server"
    assert Study(_square, {"x": uniform(0, 1)}, budgets=[1, 2], steer="auto").steer == "client"


def test_a_study_for_a_server_without_steerer_says_so(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from idds_jupyter.hpo import study as study_module

    monkeypatch.setattr(study_module, "STEERER_WAIT_S", 2.0)
    handle = server_on(tmp_path, roles=("clerk", "transformer", "carrier"))
    client = Client(handle.url, handle.token)
    try:
        study = Study(
            _square,
            {"x": uniform(0, 4)},
            max_trials=4,
            parallel=2,
            sampler="random",
            seed=0,
            name="nosteerer",
            client=client,
            steer="server",
        )
        with pytest.raises(RuntimeError, match="is a Steerer running"):
            study.optimize(timeout=60)
        assert client.wait_workflow(study.run_id, 30) == "failed"
    finally:
        client.shutdown()
        handle.stop()


def test_dataframe_is_optunas_trials_dataframe_per_segment() -> None:
    """The frame :meth:`Study.dataframe` builds itself has what Optuna's ``trials_dataframe``
    gives, segment by segment: complete, failed, pruned and running trials, metrics."""
    import pandas as pd

    from idds_jupyter.model.space import frozen_trial

    study = Study(
        _two_models,
        {"x": uniform(0, 1)},
        max_trials=10,
        name="frame",
        segments={"quad": {"n": integer(1, 3)}, "absv": {"kind": categorical(["a", "b"])}},
    )
    for i, seg in enumerate(study.segments.values()):
        for n in range(4):
            params = {
                "x": n / 4,
                **({"n": n % 3 + 1} if seg.name == "quad" else {"kind": "ab"[n % 2]}),
            }
            value = None if n in (1, 2) else float(n + i)
            extra = {"metric_loss": n / 2} if n == 3 else {}
            seg.study.add_trial(
                frozen_trial(
                    seg.space,
                    params,
                    value,
                    n,
                    f"{seg.name}_trial_0_3",
                    intermediates={0: 1.0} if n == 2 and i else None,
                    **extra,
                )
            )
        seg.study.ask(seg.space).set_user_attr("trial", 4)  # running
    frames = []
    for seg in study.segments.values():
        df = seg.study.trials_dataframe().rename(
            columns={"user_attrs_trial": "trial", "user_attrs_work": "work"}
        )
        df.insert(0, "segment", seg.name)
        frames.append(df)
    optunas = (
        pd.concat(frames, ignore_index=True)
        .sort_values(["segment", "trial"], na_position="first", kind="stable")
        .reset_index(drop=True)
    )
    ours = study.dataframe()
    assert set(ours["state"]) == {"COMPLETE", "FAIL", "PRUNED", "RUNNING"}
    # the same columns; each segment's own parameters are not moved to the end here
    assert sorted(ours.columns) == sorted(optunas.columns)
    pd.testing.assert_frame_equal(ours, optunas[list(ours.columns)])


def test_dataframe_of_one_segment_is_in_trial_order() -> None:
    """Trials told out of order (as a parallel study's end) come out sorted by trial."""
    import pandas as pd

    from idds_jupyter.model.space import frozen_trial

    study = Study(_square, {"x": uniform(0, 4)}, max_trials=6, name="order")
    seg = study.segments[None]
    for n in (2, 0, 1, 5, 3, 4):
        seg.study.add_trial(frozen_trial(seg.space, {"x": n / 2}, (n / 2 - 2) ** 2, n, "trial_0_5"))
    df = study.dataframe()
    assert df["trial"].tolist() == [0, 1, 2, 3, 4, 5]
    assert df["params_x"].tolist() == [0.0, 0.5, 1.0, 1.5, 2.0, 2.5]
    optunas = (
        seg.study.trials_dataframe()
        .rename(columns={"user_attrs_trial": "trial", "user_attrs_work": "work"})
        .sort_values("trial")
        .reset_index(drop=True)
    )
    optunas.insert(0, "segment", None)
    pd.testing.assert_frame_equal(df, optunas[list(df.columns)])


def _slow_square(x: float) -> float:
    time.sleep(0.15)
    return (x - 2) ** 2


def test_client_steered_trials_join_declared_works_and_move_on_when_one_is_aborted(
    client: Client,
) -> None:
    """Steered from here, a segment's trials are the jobs of a work declared with a few
    rounds of them (each next trial one small request; 16 rounds of 2 slots, all 16
    trials, here); aborted alone,
    that work gives way to a new one for the trials still to come, and the study ends
    with all its trials."""
    study = Study(
        _slow_square,
        {"x": uniform(0, 4)},
        max_trials=16,
        parallel=2,
        sampler="random",
        seed=0,
        name="declared",
        steer="client",
    )
    run = study.start()
    first = "trial_0_15"

    def finished() -> int:
        try:
            rows = client.work_results(run.id, first)
        except IddsError as exc:  # the study's thread has not added it yet
            assert exc.status == 404, exc
            return 0
        return sum(1 for r in rows if r["status"] == "finished")

    deadline = time.time() + 60
    while finished() < 4:
        assert time.time() < deadline, "4 trials of the declared work did not finish in 60 s"
        time.sleep(0.05)
    client._json("POST", f"requests/{run.id}/abort", {"work": first})
    study.wait(120)
    df = study.dataframe()
    assert len(df) == 16 and sorted(df["trial"]) == list(range(16))
    assert (df["state"] == "COMPLETE").sum() >= 12, df[["trial", "state", "work"]]
    works = [w["name"] for w in client.status(run.id)["works"]]
    blocks = [parse_trial_work(w) for w in works]
    assert works[0] == first and all(b is not None for b in blocks), works
    assert 2 <= len(works) <= 4 and blocks[-1][2] == 15, works
    for name, block in zip(works, blocks, strict=True):  # trial first + i is job i
        trials = sorted(df[df["work"] == name]["trial"])
        assert block is not None and trials == list(range(block[1], block[1] + len(trials)))
    assert set(df["work"]) == set(works)
    assert client.status(run.id)["status"] in ("finished", "subfinished")


def test_client_steered_study_within_a_small_active_jobs_quota(tmp_path: Path) -> None:
    """The jobs a declared work will get count toward the user's active-jobs quota at once:
    under a quota smaller than its rounds, the study declares each batch alone and runs."""
    from idds_jupyter.api.server import start_server
    from idds_jupyter.config import Config

    cfg = Config.load(
        None,
        home=tmp_path / "home",
        db_url=f"sqlite:///{tmp_path / 'idds.db'}",
        workers=2,
        poll_interval=0.3,
        max_active_jobs_per_user=5,
    )
    handle = start_server(cfg)
    admin = Client(handle.url, handle.token)
    token = admin._json("POST", "auth/tokens", {"name": "t", "user": "erin"})["token"]
    erin = Client(handle.url, token)
    try:
        study = Study(  # trials of 0.15 s: each is recorded (30 ms) long before the next ends
            _slow_square,
            {"x": uniform(0, 4)},
            max_trials=8,
            parallel=2,
            sampler="random",
            seed=1,
            name="quota",
            steer="client",
            client=erin,
        )
        df = study.optimize(timeout=120)
        assert len(df) == 8 and (df["state"] == "COMPLETE").all(), df
        works = [w["name"] for w in erin.status(study.run_id)["works"]]
        # 8 (all the trials) would be over the quota: each work holds its own trials
        assert works[0] == "trial_0_1" and all(parse_trial_work(w) for w in works), works
        assert len(works) >= 4, works  # one 429 only: then each batch declares itself
    finally:
        erin.shutdown()
        admin.shutdown()
        handle.stop()


def _length(s: str) -> float:
    return float(len(s))


def test_server_steered_choices_with_braces_are_data(client: Client) -> None:
    """A trial's parameters reach the objective as they were asked, braces included (a
    work's kwargs are a template: the Steerer escapes them). A choice "b}" used to fail
    the study with "single '}' (write '}}' for a literal brace)"."""
    from idds_jupyter.model.parameter import literal, substitute

    value = {"s": ["{a}", "b}", "{{c", 1.5, None], "m": {"k": "{x}"}}
    assert substitute(literal(value), {}) == value
    study = Study(
        _length,
        {"s": categorical(["{a}", "b}", "c"])},
        max_trials=6,
        parallel=2,
        sampler="random",
        seed=0,
        name="braces",
        steer="server",
    )
    df = study.optimize(timeout=120)
    assert (df["state"] == "COMPLETE").all(), df
    assert set(df["params_s"]) <= {"{a}", "b}", "c"} and len(df) == 6
    assert all(v == len(s) for s, v in zip(df["params_s"], df["value"], strict=True))
