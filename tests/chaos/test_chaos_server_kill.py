"""SIGKILL the standalone server (``idds-jupyter serve``) at random points while a job-level
DAG, a FaaT ``.map`` and a server-steered HPO study run; restart it each time.

At the end every job succeeded once and was released once (from the store's audit
counters), every DAG job ran (only jobs in flight at a kill may have run twice), the
``.map`` returned every value in order, the study completed all its trials, and no
process of the test is left. CI size: 3 kills, 1,000 DAG jobs; ``IDDS_SOAK=1``: 10 kills,
10,000 jobs.
"""

from __future__ import annotations

import importlib.util
import json
import random
import subprocess
import sys
import textwrap
import time
import uuid
from pathlib import Path

import pytest
from chaos_helpers import (
    MAP_SCRIPT,
    ROOT,
    STUDY_SCRIPT,
    audit,
    chaos_env,
    cli,
    executions,
    free_port,
    in_flight_ids,
    no_orphans,
    serve,
    size,
)

from idds_jupyter.client import Client
from idds_jupyter.model.generators import layered_dag
from idds_jupyter.store.engine import make_engine

KILLS = size(3, 10)
DAG_JOBS = size(1_000, 10_000)
MAP_ITEMS = size(200, 1_000)
TRIALS = size(12, 40)
HAVE_OPTUNA = importlib.util.find_spec("optuna") is not None

pytestmark = pytest.mark.timeout(size(600, 3600))


def _script(tmp: Path, name: str, source: str, env: dict[str, str]) -> subprocess.Popen[str]:
    path = tmp / f"{name}.py"
    path.write_text(textwrap.dedent(source))
    return subprocess.Popen(
        [sys.executable, str(path)],
        env=env,
        cwd=tmp,
        text=True,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        start_new_session=True,
    )


def test_sigkill_server_at_random_points_every_job_once(tmp_path: Path) -> None:
    rng = random.Random(int(time.time()))
    seed_note = f"(random seed {rng.random():.6f})"
    home = tmp_path / "home"
    db_url = f"sqlite:///{tmp_path / 'idds.db'}"
    mark = uuid.uuid4().hex
    env = chaos_env(home, db_url, mark)
    assert cli(env, "db", "upgrade").returncode == 0
    port = free_port()
    log = tmp_path / "serve.log"
    server = serve(env, port, log)
    url = f"http://127.0.0.1:{port}/"
    token = (home / "serve-token").read_text().strip()
    client = Client(url, token)
    engine = make_engine(db_url)
    record = tmp_path / "executions.txt"
    t0 = time.monotonic()
    try:
        wid = client.submit(
            layered_dag(
                DAG_JOBS,
                function="chaosfuncs:record",
                parameters={"path": str(record), "delay": 0.015},
            ).to_dict()
        )
        user_env = dict(env, IDDS_URL=url, IDDS_TOKEN=token)
        scripts = {
            "map": _script(
                tmp_path, "faat_map", MAP_SCRIPT.format(n=MAP_ITEMS, timeout=500), user_env
            )
        }
        if HAVE_OPTUNA:
            scripts["hpo"] = _script(
                tmp_path, "hpo_study", STUDY_SCRIPT.format(n=TRIALS, timeout=500), user_env
            )
        may_repeat: set[str] = set()
        done_at_kill = []
        for _ in range(KILLS):
            time.sleep(rng.uniform(0.5, 3.0))
            server.kill()
            may_repeat |= in_flight_ids(engine)
            done_at_kill.append(audit(engine, wid)["finished"])
            server = serve(env, port, log)
        assert done_at_kill[0] < DAG_JOBS, f"the DAG ended before the first kill {seed_note}"

        outs = {}
        for name, proc in scripts.items():
            out, err = proc.communicate(timeout=size(500, 3000))
            assert proc.returncode == 0, f"{name} script failed {seed_note}:\n{out}\n{err[-4000:]}"
            outs[name] = json.loads(out.strip().splitlines()[-1])
        assert client.wait_workflow(wid, timeout=size(300, 2400)) == "finished", seed_note
    finally:
        client.shutdown()
        rc = server.stop()
    elapsed = time.monotonic() - t0
    assert rc == 0, log.read_text()[-3000:]

    assert outs["map"] == [x * x for x in range(MAP_ITEMS)]
    dag = audit(engine, wid)
    ran = executions(record)
    twice = {j for j, n in ran.items() if n > 1}
    print(
        f"\nchaos: {KILLS} SIGKILLs of the server at DAG progress {done_at_kill} of {DAG_JOBS} "
        f"jobs; {len(may_repeat)} jobs in flight at a kill, {len(twice)} ran twice; "
        f"FaaT map of {MAP_ITEMS}; HPO {outs.get('hpo')}; {elapsed:.1f} s {seed_note}"
    )
    assert dag == {
        "jobs": DAG_JOBS,
        "successes": DAG_JOBS,
        "min_success": 1,
        "max_success": 1,
        "min_release": 1,
        "max_release": 1,
        "finished": DAG_JOBS,
    }, dag
    assert len(ran) == DAG_JOBS, "a job never ran"
    assert twice <= may_repeat, (
        f"jobs not in flight at a kill ran twice: {sorted(twice - may_repeat)}"
    )
    if HAVE_OPTUNA:
        hpo = outs["hpo"]
        assert hpo["n"] == TRIALS and hpo["complete"] == TRIALS, hpo
        study = audit(engine, hpo["run"])
        assert study["max_success"] == 1 and study["max_release"] <= 1, study
    # every run of the store ended, each map/study job succeeded at most once
    with engine.begin() as conn:
        from sqlalchemy import func, select

        from idds_jupyter.store.tables import jobs, workflows

        assert conn.execute(select(func.max(jobs.c.success_count))).scalar() == 1
        statuses = dict(conn.execute(select(workflows.c.id, workflows.c.status)).all())
    assert set(statuses.values()) == {"finished"}, statuses
    no_orphans(mark, home)
    assert ROOT.is_dir()
