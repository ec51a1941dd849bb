"""docs/configuration.md is the reference generated from the settings' one definition."""

from __future__ import annotations

from pathlib import Path

import pytest
from idds_jupyter_server.reference import markdown

from idds_jupyter.config import Config, settings

DOC = Path(__file__).resolve().parents[2] / "docs" / "configuration.md"


def test_committed_reference_is_the_generated_one() -> None:
    assert DOC.read_text(encoding="utf-8") == markdown(), (
        "docs/configuration.md is out of date: python -m idds_jupyter_server.reference "
        "--markdown > docs/configuration.md"
    )


def test_every_setting_is_documented_and_given_every_way(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    from idds_jupyter_server.app import IddsExtension

    traits = IddsExtension.class_traits(config=True)
    for s in settings():
        assert s.help, f"Config.{s.name} has no help: declare it with setting(default, help)"
        assert s.name in traits, s.name
        assert s.env == f"IDDS_{s.name.upper()}"
    # the environment and the YAML file, typed by the field
    (tmp_path / "c.yaml").write_text("slurm_partition: short\nbatch: 50\n")
    monkeypatch.setenv("IDDS_NOTIFY_URLS", "http://a,http://b")
    monkeypatch.setenv("IDDS_BATCH_POLL_INTERVAL", "0.5")
    monkeypatch.setenv("IDDS_HOME", str(tmp_path))
    cfg = Config.load(tmp_path / "c.yaml")
    assert (cfg.slurm_partition, cfg.batch) == ("short", 50)
    assert cfg.notify_urls == ("http://a", "http://b")
    assert cfg.batch_poll_interval == 0.5
