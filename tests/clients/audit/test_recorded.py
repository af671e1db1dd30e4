"""Loading a ``pura-audit views`` run: the run's sizes, from ``config.json`` or, for runs made
before that file existed, from ``views.json`` (fast: no servers)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from pura_client.audit.metrics import AuditError
from pura_client.audit.recorded import RecordedRun, read_config, write_config
from pura_client.audit.views import ViewsConfig


def test_config_round_trip(tmp_path: Path) -> None:
    (tmp_path / "work").mkdir()
    config = ViewsConfig(people=40, epochs=2, mated_per_epoch=3, nonmated_per_epoch=7,
                         profile="dlib-fast", seed=4)
    write_config(tmp_path, config)
    assert read_config(tmp_path) == config


def test_config_of_an_older_run_from_views_json(tmp_path: Path) -> None:
    settings = {"people": 300, "epochs": [100, 200, 300], "probes": 150, "mated": 60,
                "profile": "fast", "seed": 0}
    (tmp_path / "views.json").write_text(json.dumps({"settings": settings}))
    config = read_config(tmp_path)
    assert (config.people, config.epochs, config.nonmated_per_epoch, config.seed) == (
        300, 3, 30, 0)


def test_a_folder_without_a_run_is_refused(tmp_path: Path) -> None:
    with pytest.raises(AuditError, match="no `pura-audit views` run"):
        RecordedRun(tmp_path)
    (tmp_path / "work").mkdir()
    (tmp_path / "work" / "run.json").write_text("{}")
    with pytest.raises(AuditError, match=r"views\.json"):
        RecordedRun(tmp_path)
