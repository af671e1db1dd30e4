"""PNG plots of a results dict: latency vs gallery size (log–log) and speed-up bars."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")  # files only: no display on servers and CI
import matplotlib.pyplot as plt


def _save(fig: Any, ax: Any, path: Path) -> Path:
    """Legend, layout, PNG, and free the figure (every plot ends the same way)."""
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def _latency_series(result: dict[str, Any]) -> dict[str, tuple[list[int], list[float]]]:
    sizes = sorted(int(n) for n in result["sizes"])
    pura = [result["sizes"][str(n)]["pura"]["stages_median_s"]["total"] for n in sizes]
    faiss = [result["sizes"][str(n)]["faiss"]["timing"]["median_s"] for n in sizes]
    return {
        "Pura (end to end)": (sizes, pura),
        "baseline 2: unpacked threshold Paillier (extrapolated)":
            (sizes, [result["baseline2"]["total_s"][str(n)] for n in sizes]),
        "baseline 3: per-template CKKS (extrapolated)":
            (sizes, [result["baseline3"]["total_s"][str(n)] for n in sizes]),
        "plaintext FAISS IndexFlatIP": (sizes, faiss),
    }


def plot_latency(result: dict[str, Any], path: Path) -> Path:
    fig, ax = plt.subplots(figsize=(7, 4.5))
    for label, (xs, ys) in _latency_series(result).items():
        ax.loglog(xs, ys, marker="o", label=label)
    ax.axhline(0.060, color="grey", linestyle=":", linewidth=1)
    ax.text(min(int(n) for n in result["sizes"]), 0.060, " 60 ms target (1K)", va="bottom",
            fontsize=8, color="grey")
    ax.set_xlabel("gallery size (templates)")
    ax.set_ylabel("seconds per identification (median)")
    ax.set_title("1:N identification latency (2 shared cores)")
    ax.grid(True, which="both", alpha=0.3)
    return _save(fig, ax, path)


def plot_speedups(result: dict[str, Any], path: Path) -> Path:
    sizes = sorted(result["ratios"], key=int)
    b2 = [result["ratios"][n]["speedup_vs_baseline2"] for n in sizes]
    b3 = [result["ratios"][n]["speedup_vs_baseline3"] for n in sizes]
    fig, ax = plt.subplots(figsize=(7, 4.5))
    width = 0.38
    xs = range(len(sizes))
    bars2 = ax.bar([x - width / 2 for x in xs], b2, width, label="vs baseline 2 (target 16×)")
    bars3 = ax.bar([x + width / 2 for x in xs], b3, width, label="vs baseline 3 (target 50×)")
    ax.bar_label(bars2, fmt="%.0f×", fontsize=8)
    ax.bar_label(bars3, fmt="%.0f×", fontsize=8)
    ax.axhline(16, color="C0", linestyle=":", linewidth=1)
    ax.axhline(50, color="C1", linestyle=":", linewidth=1)
    ax.set_yscale("log")
    ax.set_xticks(list(xs), [f"{int(n):,}" for n in sizes])
    ax.set_xlabel("gallery size (templates)")
    ax.set_ylabel("Pura speed-up (×, log scale)")
    ax.set_title("Pura speed-up over the baselines (same run, same gallery)")
    return _save(fig, ax, path)


def plot_stages(result: dict[str, Any], path: Path) -> Path:
    sizes = sorted(result["sizes"], key=int)
    stages = ("client_encrypt", "preselect_a", "preselect_b", "admit_query", "exact", "total")
    fig, ax = plt.subplots(figsize=(8, 4.5))
    width = 0.8 / len(stages)
    for i, stage in enumerate(stages):
        vals = [result["sizes"][n]["pura"]["stages_median_s"].get(stage, 0.0) for n in sizes]
        xs = [j + (i - (len(stages) - 1) / 2) * width for j in range(len(sizes))]
        ax.bar(xs, vals, width, label=stage)
    ax.set_xticks(range(len(sizes)), [f"{int(n):,}" for n in sizes])
    ax.set_xlabel("gallery size (templates)")
    ax.set_ylabel("seconds (median)")
    ax.set_title("Pura per-stage latency (admit_query overlaps preselection)")
    return _save(fig, ax, path)


def write_plots(result: dict[str, Any], out: Path) -> list[Path]:
    out.mkdir(parents=True, exist_ok=True)
    return [
        plot_latency(result, out / "latency_vs_size.png"),
        plot_speedups(result, out / "speedups.png"),
        plot_stages(result, out / "stages.png"),
    ]
