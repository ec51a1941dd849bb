"""Malformed templates are refused with a message naming the work and field; nothing is stored."""

from __future__ import annotations

from pathlib import Path

import pytest
from sqlalchemy import func, select

from idds_jupyter.config import Config
from idds_jupyter.core import Orchestrator
from idds_jupyter.model import TemplateError
from idds_jupyter.store.tables import job_deps, jobs, workflows, works

NOOP = "idds_jupyter.worker.job:noop"

MALFORMED = {
    "unknown dependency": (
        {
            "name": "w",
            "works": [
                {"name": "a", "function": NOOP},
                {"name": "b", "function": NOOP, "depends_on": ["nope"]},
            ],
        },
        ("'b'", "depends_on", "nope"),
    ),
    "duplicate name": (
        {"name": "w", "works": [{"name": "a", "function": NOOP}, {"name": "a", "function": NOOP}]},
        ("'a'", "name", "duplicate"),
    ),
    "cycle outside a loop": (
        {
            "name": "w",
            "works": [
                {"name": "a", "function": NOOP, "depends_on": ["b"]},
                {"name": "b", "function": NOOP, "depends_on": ["a"]},
            ],
        },
        ("depends_on", "cycle"),
    ),
    "unbound parameter": (
        {"name": "w", "works": [{"name": "a", "command": "echo {seed}"}]},
        ("'a'", "command", "seed"),
    ),
    "malformed condition": (
        {
            "name": "w",
            "works": [{"name": "a", "function": NOOP}, {"name": "b", "function": NOOP}],
            "conditions": [{"name": "c", "expr": "a.result.loss <", "true": ["b"], "false": []}],
        },
        ("'c'", "expr"),
    ),
    "unsafe condition": (
        {
            "name": "w",
            "works": [{"name": "a", "function": NOOP}, {"name": "b", "function": NOOP}],
            "conditions": [{"name": "c", "expr": "a.__class__", "true": ["b"], "false": []}],
        },
        ("'c'", "expr"),
    ),
    "bad type": (
        {"name": "w", "works": [{"name": "a", "function": NOOP, "retries": "three"}]},
        ("'a'", "retries"),
    ),
    "no command or function": ({"name": "w", "works": [{"name": "a"}]}, ("'a'",)),
}


@pytest.mark.parametrize("case", sorted(MALFORMED))
def test_malformed_template_is_refused_and_nothing_stored(
    case: str, tmp_path: Path, db_url: str
) -> None:
    template, words = MALFORMED[case]
    orch = Orchestrator(Config.load(None, home=tmp_path / "home", db_url=db_url))
    ok = orch.submit({"name": "fine", "works": [{"name": "x", "function": NOOP}]})

    def counts() -> list[int]:
        with orch.engine.begin() as conn:
            return [
                conn.execute(select(func.count()).select_from(t)).scalar() or 0
                for t in (workflows, works, jobs, job_deps)
            ]

    before = counts()
    ok_status = orch.status(ok)["status"]
    with pytest.raises(TemplateError) as err:
        orch.submit(template)
    message = str(err.value)
    for word in words:
        assert word in message, f"{case}: {word!r} not in {message!r}"
    assert counts() == before
    assert orch.status(ok)["status"] == ok_status == "running"  # submitted runs start planned
