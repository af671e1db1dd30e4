"""One PNG for issue 16: query-path latency and CPU per query, today's exact stage vs the
share-based prototype, from ``bench/results/online_exact.json``."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")  # files only
import matplotlib.pyplot as plt


def _cpu(row: dict[str, Any]) -> tuple[float, float]:
    return float(row["cpu_a_s"]), float(row["cpu_b_s"])


def plot(result: dict[str, Any], path: Path) -> Path:
    """Left: wall time on the query path (log). Right: CPU seconds per query at A and at B,
    split into online and offline work."""
    syn = result["synthetic"]
    fig, (left, right) = plt.subplots(1, 2, figsize=(10, 4.2))
    labels = ["today: exact stage", "prototype: online", "prototype: query conversion"]
    walls = [syn["today_exact"]["wall_s"], syn["online"]["wall_s"],
             syn["query_conversion"]["wall_s"]]
    left.bar(labels, walls, color=["tab:gray", "tab:green", "tab:orange"])
    left.axhline(0.030, color="tab:red", linestyle="--", label="target 30 ms")
    left.set_yscale("log")
    left.set_ylabel("wall seconds per query (median)")
    left.tick_params(axis="x", labelsize=7)
    left.legend(fontsize=8)
    parts = {
        "today online (exact stage)": [_cpu(syn["today_exact"])],
        "prototype": [_cpu(syn["online"]), _cpu(syn["offline_correlations"]),
                      _cpu(syn["template_conversion"])],
    }
    names = ["online", "offline: correlations", "offline: template conversion"]
    colours = ["tab:green", "tab:blue", "tab:purple"]
    xs = ["today A", "today B", "prototype A", "prototype B"]
    today_a, today_b = parts["today online (exact stage)"][0]
    right.bar(xs[:2], [today_a, today_b], color="tab:gray", label="today: online")
    bottom = [0.0, 0.0]
    for (cpu_a, cpu_b), name, colour in zip(parts["prototype"], names, colours, strict=True):
        right.bar(xs[2:], [cpu_a, cpu_b], bottom=bottom, color=colour, label=f"prototype: {name}")
        bottom = [bottom[0] + cpu_a, bottom[1] + cpu_b]
    right.set_ylabel("CPU seconds per query")
    right.legend(fontsize=7)
    fig.suptitle(f"k = {syn['k']}, d = {syn['dim']}, {result['paillier']['name']}", fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path
