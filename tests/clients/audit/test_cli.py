"""The pura-audit command line."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from pura_client.audit.cli import app
from pura_client.audit.recorded import RecordedRun
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
@pytest.mark.slow
def test_probing_command_reads_the_recordings(tmp_path: Path, recorded_run: RecordedRun) -> None:
    out = tmp_path / "report"
    result = CliRunner().invoke(app, ["probing", "--out", str(out), "--recordings",
                                      str(recorded_run.out)])
    assert result.exit_code == 0, result.output
    data = json.loads((out / "results.json").read_text())
    assert [e["key"] for e in data["evaluations"]] == ["probing"]
    assert data["settings"]["recordings"] == str(recorded_run.out)
    assert (out / "index.html").exists() and (out / "probing.png").exists()
    assert not (out / "views").exists()  # the given recordings were read, no new run made


@pytest.mark.lfw
@pytest.mark.slow
def test_views_section_shows_every_key_with_target_and_verdict(
    recorded_run: RecordedRun, tmp_path: Path
) -> None:
    from pura_client.audit.cli import eval_views
    from pura_client.audit.report import write_report
    from pura_client.audit.views import TARGETS

    section = eval_views(recorded_run)
    rows = section.tables["targets"]
    assert [r["key"] for r in rows] == list(TARGETS)
    assert all(r["verdict"] in ("PASS", "FAIL", "no ground truth") and r["target"] for r in rows)
    html = write_report(tmp_path, [section]).read_text()
    assert all(key in html for key in TARGETS)
