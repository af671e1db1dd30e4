"""The pura-audit command line."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from pura_client.audit.cli import app
from typer.testing import CliRunner


def test_help_lists_every_evaluation() -> None:
    result = CliRunner().invoke(app, ["--help"])
    assert result.exit_code == 0
    for name in (
        "all",
        "inversion",
        "linkability",
        "probing",
        "impersonation",
        "parity",
        "leakage",
    ):
        assert name in result.output


@pytest.mark.lfw
def test_probing_command_writes_report(tmp_path: Path, lfw_identification_set: object) -> None:
    out = tmp_path / "report"
    result = CliRunner().invoke(app, ["probing", "--out", str(out)])
    assert result.exit_code == 0, result.output
    data = json.loads((out / "results.json").read_text())
    assert [e["key"] for e in data["evaluations"]] == ["probing"]
    assert (out / "index.html").exists() and (out / "probing.png").exists()
