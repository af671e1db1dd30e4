"""The report writer: JSON + HTML, escaping, non-finite numbers."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from matplotlib.figure import Figure
from pura_client.audit.report import EvaluationResult, save_figure, write_report


def _result(tmp_path: Path) -> EvaluationResult:
    fig = Figure()
    fig.add_subplot().plot([0, 1], [1, 0])
    return EvaluationResult(
        key="demo",
        title="Demo <b>evaluation</b>",
        summary="a <script>alert(1)</script> summary",
        metrics={"rate": np.float64(0.25), "inf": float("inf"), "arr": np.arange(3)},
        passed=np.bool_(False),  # type: ignore[arg-type]
        figures=[save_figure(fig, tmp_path, "demo.png")],
        tables={"rows": [{"name": "x<y", "value": 1.5}]},
        notes=["note & more"],
    )


def test_write_report_json_and_html(tmp_path: Path) -> None:
    index = write_report(tmp_path, [_result(tmp_path)], settings={"size": "small"})
    assert index == tmp_path / "index.html"
    data = json.loads((tmp_path / "results.json").read_text())
    ev = data["evaluations"][0]
    assert ev["metrics"] == {"rate": 0.25, "inf": "inf", "arr": [0, 1, 2]}
    assert ev["passed"] is False and data["settings"] == {"size": "small"}
    page = index.read_text()
    assert "<script>alert" not in page and "&lt;script&gt;" in page
    assert "Demo &lt;b&gt;evaluation&lt;/b&gt;" in page
    assert 'src="demo.png"' in page and (tmp_path / "demo.png").stat().st_size > 1000
    assert "FAIL" in page and "x&lt;y" in page
