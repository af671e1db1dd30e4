"""Audit results and the report writer (JSON + one static HTML page with PNG plots).

Every evaluation returns an :class:`EvaluationResult`: headline figures (JSON-serialisable), a
verdict against the project bar it tests, the figures it drew, and plain-language notes saying
what the number means for the threat model. The HTML is produced from plain string templates with
every dynamic value escaped, so an embedding label or file name can never inject markup into a
report that auditors open in a browser.
"""

from __future__ import annotations

import html
import json
import math
import platform
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
from matplotlib.figure import Figure

JsonValue = Any  # what json.dumps accepts after _jsonable


@dataclass
class EvaluationResult:
    """Outcome of one evaluation.

    ``passed`` is ``None`` when the evaluation only measures (no bar applies), else whether the
    protection held. ``figures`` are PNG file names relative to the report folder.
    """

    key: str
    title: str
    summary: str
    metrics: dict[str, JsonValue]
    passed: bool | None = None
    figures: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    tables: dict[str, list[dict[str, JsonValue]]] = field(default_factory=dict)
    seconds: float = 0.0

    def __post_init__(self) -> None:
        if self.passed is not None:
            self.passed = bool(self.passed)  # numpy bools from comparisons → plain bool

    def to_json(self) -> dict[str, JsonValue]:
        return {
            "key": self.key,
            "title": self.title,
            "summary": self.summary,
            "passed": None if self.passed is None else bool(self.passed),
            "metrics": _jsonable(self.metrics),
            "tables": _jsonable(self.tables),
            "figures": list(self.figures),
            "notes": list(self.notes),
            "seconds": round(self.seconds, 3),
        }


def _jsonable(value: JsonValue) -> JsonValue:
    """Numpy scalars/arrays → Python; non-finite floats → strings (JSON has no inf/nan)."""
    if isinstance(value, Mapping):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if hasattr(value, "tolist"):
        return _jsonable(value.tolist())
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    return value


def save_figure(fig: Figure, out_dir: Path, name: str) -> str:
    """Write ``fig`` as ``out_dir/name`` (PNG) and return the relative name for the report."""
    out_dir.mkdir(parents=True, exist_ok=True)
    fig.savefig(out_dir / name, dpi=110, bbox_inches="tight")
    return name


_PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8">
<title>{title}</title>
<style>
body {{ font-family: system-ui, sans-serif; max-width: 1100px; margin: 2em auto; color: #222; }}
h1 {{ border-bottom: 2px solid #444; }}
section {{ border-top: 1px solid #ccc; margin-top: 2em; padding-top: .5em; }}
table {{ border-collapse: collapse; margin: .5em 0; }}
td, th {{ border: 1px solid #bbb; padding: 3px 8px; text-align: left; font-size: 90%; }}
.pass {{ color: #0a6b1f; font-weight: bold; }} .fail {{ color: #b00020; font-weight: bold; }}
.info {{ color: #555; font-weight: bold; }}
img {{ max-width: 100%; border: 1px solid #ddd; margin: .3em 0; }}
code {{ background: #f3f3f3; padding: 0 3px; }}
</style></head><body>
<h1>{title}</h1>
<p>Generated {when} on {machine}.
Machine-readable results: <a href="results.json">results.json</a>.</p>
<table><tr><th>evaluation</th><th>verdict</th><th>headline</th><th>seconds</th></tr>
{overview}</table>
{sections}
</body></html>
"""


def _verdict(passed: bool | None) -> str:
    if passed is None:  # numpy bools are accepted too (truthiness below)
        return '<span class="info">measured</span>'
    return '<span class="pass">PASS</span>' if passed else '<span class="fail">FAIL</span>'


def _fmt(value: JsonValue) -> str:
    if isinstance(value, float):
        return f"{value:.6g}"
    if isinstance(value, (dict, list)):
        return html.escape(json.dumps(_jsonable(value))[:300])
    return html.escape(str(value))


def _kv_table(items: Mapping[str, JsonValue]) -> str:
    rows = "".join(
        f"<tr><td>{html.escape(k)}</td><td>{_fmt(v)}</td></tr>" for k, v in items.items()
    )
    return f"<table>{rows}</table>"


def _rows_table(rows: Sequence[Mapping[str, JsonValue]]) -> str:
    if not rows:
        return ""
    cols = list(rows[0].keys())
    head = "".join(f"<th>{html.escape(c)}</th>" for c in cols)
    body = "".join(
        "<tr>" + "".join(f"<td>{_fmt(r.get(c, ''))}</td>" for c in cols) + "</tr>" for r in rows
    )
    return f"<table><tr>{head}</tr>{body}</table>"


def _section(result: EvaluationResult) -> str:
    parts = [
        f'<section id="{html.escape(result.key)}"><h2>{html.escape(result.title)} '
        f"{_verdict(result.passed)}</h2>",
        f"<p>{html.escape(result.summary)}</p>",
        _kv_table(result.metrics),
    ]
    for name, rows in result.tables.items():
        parts.append(f"<h3>{html.escape(name)}</h3>{_rows_table(rows)}")
    parts.extend(f'<img src="{html.escape(f)}" alt="{html.escape(f)}">' for f in result.figures)
    if result.notes:
        items = "".join(f"<li>{html.escape(n)}</li>" for n in result.notes)
        parts.append(f"<ul>{items}</ul>")
    parts.append("</section>")
    return "\n".join(parts)


def _overview_row(result: EvaluationResult) -> str:
    return (
        f'<tr><td><a href="#{html.escape(result.key)}">{html.escape(result.title)}</a></td>'
        f"<td>{_verdict(result.passed)}</td><td>{html.escape(result.summary)}</td>"
        f"<td>{result.seconds:.1f}</td></tr>"
    )


def write_report(
    out_dir: Path,
    results: Sequence[EvaluationResult],
    title: str = "Pura privacy audit",
    settings: Mapping[str, JsonValue] | None = None,
) -> Path:
    """Write ``results.json`` and ``index.html`` into ``out_dir``; return the HTML path."""
    out_dir.mkdir(parents=True, exist_ok=True)
    machine = (
        f"{platform.node() or 'host'} ({platform.machine()}, Python {platform.python_version()})"
    )
    when = time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime())
    payload = {
        "title": title,
        "generated": when,
        "machine": machine,
        "settings": _jsonable(dict(settings or {})),
        "evaluations": [r.to_json() for r in results],
    }
    (out_dir / "results.json").write_text(json.dumps(payload, indent=2, allow_nan=False))
    page = _PAGE.format(
        title=html.escape(title),
        when=html.escape(when),
        machine=html.escape(machine),
        overview="\n".join(_overview_row(r) for r in results),
        sections="\n".join(_section(r) for r in results),
    )
    index = out_dir / "index.html"
    index.write_text(page, encoding="utf-8")
    return index


__all__ = ["EvaluationResult", "save_figure", "write_report"]
