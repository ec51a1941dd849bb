"""Backend policy: short functions stay local while the rest goes to the default backend."""

from __future__ import annotations

from pathlib import Path

import pytest
from helpers import config
from sqlalchemy import select

from idds_jupyter.agents.runner import Runner
from idds_jupyter.config import Config
from idds_jupyter.core import Orchestrator
from idds_jupyter.store.engine import make_engine
from idds_jupyter.store.function_stats import mean_wall, record_durations
from idds_jupyter.store.migrate import upgrade
from idds_jupyter.store.tables import jobs

ECHO = "idds_jupyter.worker.job:echo"
SHORT_STAY_LOCAL = [{"when": "kind == 'function' and mean_wall_s < 1", "backend": "local"}]


def test_run_times_are_folded_into_a_mean(db_url: str) -> None:
    engine = make_engine(db_url)
    upgrade(engine)
    with engine.begin() as conn:
        assert mean_wall(conn, "m:f") == (None, 0)
        record_durations(conn, {"m:f": [1.0, 3.0], "m:g": [0.5]})
        record_durations(conn, {"m:f": [5.0]})
        assert mean_wall(conn, "m:f") == (pytest.approx(3.0), 3)
        assert mean_wall(conn, "m:g") == (pytest.approx(0.5), 1)


@pytest.mark.parametrize(
    "rules, words",
    [
        (
            [{"when": "speed > 1", "backend": "local"}],
            "backend_policy[0].when: unknown name 'speed'",
        ),
        ([{"when": "cores >", "backend": "local"}], "backend_policy[0].when"),
        (
            [{"when": "cores > 1"}],
            "backend_policy[0]: a rule is a mapping with exactly 'when' and 'backend'",
        ),
    ],
)
def test_a_bad_rule_is_refused_by_name(
    tmp_path: Path, rules: list[dict[str, str]], words: str
) -> None:
    with pytest.raises(ValueError) as err:
        Config.load(None, home=tmp_path, backend_policy=rules)
    assert words in str(err.value)


def test_policy_from_the_environment_adds_its_backends(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("IDDS_BACKEND_POLICY", '[{"when": "cores >= 16", "backend": "dask"}]')
    cfg = Config.load(None, home=tmp_path)
    assert cfg.policy.choose({"cores": 32}) == "dask" and cfg.policy.choose({"cores": 2}) is None
    assert "dask" in cfg.backends


def test_short_functions_stay_local_once_measured(tmp_path: Path) -> None:
    from distributed import LocalCluster

    with LocalCluster(
        n_workers=1, threads_per_worker=1, processes=True, dashboard_address=None
    ) as cluster:
        cfg = config(
            tmp_path,
            f"sqlite:///{tmp_path / 'idds.db'}",
            backend="dask",
            dask_address=cluster.scheduler_address,
            backend_policy=SHORT_STAY_LOCAL,
        )
        assert set(cfg.backends) == {"dask", "local"}
        tmpl = {
            "name": "echo",
            "works": [{"name": "e", "function": ECHO, "parameters": {"x": 1}, "n_jobs": 3}],
        }
        with Runner(cfg) as runner:
            orch = Orchestrator(cfg, engine=runner.engine, bus=runner.bus, dispatch=runner.dispatch)
            first = orch.submit(tmpl)  # never measured: the default backend
            assert orch.wait(first, timeout=120) == "finished"
            second = orch.submit(tmpl)  # measured well under 1 s: stays local
            assert orch.wait(second, timeout=120) == "finished"
            pinned = orch.submit({**tmpl, "works": [{**tmpl["works"][0], "backend": "dask"}]})
            assert orch.wait(pinned, timeout=120) == "finished"  # a work's own setting wins
        with orch.engine.begin() as conn:
            by_run = {
                wid: {
                    r[0]
                    for r in conn.execute(select(jobs.c.backend).where(jobs.c.workflow_id == wid))
                }
                for wid in (first, second, pinned)
            }
    assert by_run == {first: {"dask"}, second: {"local"}, pinned: {"dask"}}
