"""A base install (no extras): what works without Optuna, Dask or psycopg, and the errors that
name the extra to install. Each case runs in a fresh interpreter where the optional package
cannot be imported (``sys.modules[name] = None``), as on a machine that never installed it.
(ci/install_check.sh checks the same from the built wheel in a clean venv.)"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def without(modules: list[str], code: str, tmp_path: Path) -> subprocess.CompletedProcess[str]:
    """Run ``code`` where ``modules`` are not installed; IDDS_HOME in ``tmp_path``."""
    prelude = "import sys\n" + "".join(f"sys.modules[{m!r}] = None\n" for m in modules)
    env = {k: v for k, v in os.environ.items() if not k.startswith("IDDS_")}
    env["IDDS_HOME"] = str(tmp_path / "home")
    return subprocess.run(
        [sys.executable, "-c", prelude + textwrap.dedent(code)],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_default_roles_run_a_workflow_without_optuna_and_skip_the_steerer(tmp_path: Path) -> None:
    res = without(
        ["optuna"],
        """
        from idds_jupyter.cli import main
        sys.exit(main(["run", "-q", "examples/branch_and_loop.yaml"]))
    """,
        tmp_path,
    )
    assert res.returncode == 0, res.stdout + res.stderr
    assert "'branch-and-loop': finished" in res.stdout
    assert "steerer role not started" in res.stderr
    assert "pip install 'idds-jupyter[hpo]'" in res.stderr


def test_steerer_asked_for_by_name_without_optuna_is_an_error(tmp_path: Path) -> None:
    res = without(
        ["optuna"],
        """
        from idds_jupyter.agents.runner import Runner
        from idds_jupyter.config import Config
        try:
            Runner(Config.load(), roles=["steerer"]).start()
        except ModuleNotFoundError as e:
            print("ERROR", e)
    """,
        tmp_path,
    )
    assert "ERROR the steerer role needs Optuna: pip install 'idds-jupyter[hpo]'" in res.stdout, (
        res.stderr
    )


def test_a_study_without_optuna_says_which_extra(tmp_path: Path) -> None:
    res = without(
        ["optuna"],
        """
        import idds_jupyter.model.space  # imports nothing optional
        for use in ("from idds_jupyter.hpo import Study", "idds_jupyter.model.space.uniform(0, 1)"):
            try:
                exec(use)
            except ModuleNotFoundError as e:
                print("ERROR", e)
    """,
        tmp_path,
    )
    hint = (
        "ERROR hyper-parameter optimisation needs Optuna, which is not installed: "
        "pip install 'idds-jupyter[hpo]'"
    )
    assert res.stdout.count(hint) == 2, res.stdout + res.stderr


def test_cli_names_the_extra_of_a_missing_backend_or_database_driver(tmp_path: Path) -> None:
    res = without(
        ["distributed", "psycopg"],
        """
        from idds_jupyter.cli import main
        print("EXIT", main(["run", "-q", "--backend", "dask", "examples/branch_and_loop.yaml"]))
        print("EXIT", main(["--db", "postgresql+psycopg://u@127.0.0.1:1/x", "runs"]))
    """,
        tmp_path,
    )
    assert res.stdout.count("EXIT 2") == 2, res.stdout + res.stderr
    assert (
        "the dask backend needs the 'distributed' package, which is not installed: "
        "pip install 'idds-jupyter[dask]'"
    ) in res.stderr
    assert (
        "needs the 'psycopg' package, which is not installed: pip install 'idds-jupyter[postgres]'"
        in res.stderr
    )
