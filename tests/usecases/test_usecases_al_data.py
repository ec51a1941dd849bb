"""Active learning of an excursion set, the data carousel and Rubin-like DAGs on a real server."""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pytest

from idds_jupyter.al import ActiveLearning
from idds_jupyter.client import Client
from idds_jupyter.data import TapeStaging, rubin_dag, run_carousel
from idds_jupyter.kernel.widgets import ActiveLearningWidget
from idds_jupyter.model import Workflow

THRESHOLD = 0.5


def bumps(x: float, y: float) -> float:
    return math.sin(3 * x) * math.cos(2 * y) + 0.5 * x


def misclassified(mu: Any, sigma: Any, X: Any) -> float:
    truth = np.array([bumps(a, b) for a, b in X]) > THRESHOLD
    return float(np.mean((mu > THRESHOLD) != truth))


def test_active_learning_excursion_set(client: Client) -> None:
    al = ActiveLearning(
        bumps,
        bounds=[(0, 2), (0, 2)],
        batch_size=6,
        initial=12,
        max_iterations=6,
        acquisition="straddle",
        threshold=THRESHOLD,
        metric=misclassified,
        until=lambda s: s["metric"] < 0.02,
        n_candidates=1500,
        seed=0,
    )
    result = al.run(timeout=300)
    print(
        f"\nmisclassified per iteration: {[round(m, 4) for m in result.metrics]}, "
        f"{len(result.y)} evaluations, converged={result.converged}"
    )
    assert result.metrics[-1] < 0.05 and result.metrics[-1] < result.metrics[0]
    assert len(result.y) == len(result.X) == 12 + 6 * (len(result.history) - 1)
    names = [w["name"] for w in client.status(result.run_id)["works"]]
    assert [n for n in names if n.startswith("iteration_")] == [
        f"iteration_{i}" for i in range(len(result.history))
    ]
    assert all(f"evaluate_{i}" in names for i in range(len(result.history)))
    view = ActiveLearningWidget(client, result.run_id)  # the iterations as the AL view sees them
    view.stop()
    assert [p[0] for p in view.points] == list(range(len(result.history)))
    assert [p[1] for p in view.points] == pytest.approx(result.metrics)


def test_carousel_file_level_vs_dataset_level(client: Client) -> None:
    tape = TapeStaging(latency_s=0.2, throughput=15.0)
    files = [f"run_{i:03d}.root" for i in range(45)]
    by_file = run_carousel(client, files, tape, mode="file", process_s=0.05)
    by_dataset = run_carousel(client, files, tape, mode="dataset", process_s=0.05)
    print("\n", by_file.as_dict(), "\n", by_dataset.as_dict())
    assert by_dataset.time_to_first_job >= 5 * by_file.time_to_first_job
    assert by_file.peak_unprocessed < by_dataset.peak_unprocessed == len(files)
    assert by_file.total_time <= by_dataset.total_time + 0.5
    assert by_file.timeline[-1][1] == by_dataset.timeline[-1][1] == 0


@pytest.mark.parametrize("n", [100, 1000, 10_000])
def test_rubin_dag_shape(n: int) -> None:
    wf = rubin_dag(n)
    assert sum(w.n_jobs or 0 for w in wf.works) == n
    Workflow.from_dict(wf.to_dict())  # a valid template
    for w in wf.works:
        for dep in w.job_deps:
            parent = next(p for p in wf.works if p.name == dep.work)
            edges = list(dep.edges(w.n_jobs or 0, parent.n_jobs or 0))
            assert {c for _, c in edges} == set(range(w.n_jobs or 0))  # every job has parents
    assert sum(w.n_jobs or 0 for w in rubin_dag(n, shape="layered").works) == n


def test_rubin_dag_runs(client: Client) -> None:
    wid = client.submit(rubin_dag(2000).to_dict())
    assert client.wait_workflow(wid, 300) == "finished"
    st = client.status(wid)
    assert sum(w["jobs"].get("finished", 0) for w in st["works"]) == 2000
    assert len(client.dag(wid)["nodes"]) == 7
