"""pura-eval: the 10-fold protocol and rank-1 / FNIR statistics on known answers, then both
commands end to end on (small) real LFW sets."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from pura_client.datasets.lfw import LFWDataset
from pura_client.evaluate import (
    app,
    best_threshold,
    floor_missing,
    search_outcomes,
    ten_fold_accuracy,
)
from typer.testing import CliRunner


def test_best_threshold_separates_perfectly() -> None:
    scores = np.array([0.0, 1.0, 2.0, 3.0, 4.0, 5.0])
    same = np.array([False, False, False, True, True, True])
    assert best_threshold(scores, same) == 2.5


def test_best_threshold_trades_errors() -> None:
    scores = np.array([0.0, 1.0, 4.0, 2.0, 3.0, 5.0])
    same = np.array([False, False, False, True, True, True])
    tau = best_threshold(scores, same)
    assert tau == 1.5  # accepts 2,3,4,5: one impostor error, no genuine error (5/6 correct)
    assert np.mean((scores >= tau) == same) == pytest.approx(5 / 6)


def test_ten_fold_uses_held_out_thresholds() -> None:
    rng = np.random.default_rng(0)
    folds = np.repeat(np.arange(10), 20)
    same = np.tile(np.r_[np.ones(10, bool), np.zeros(10, bool)], 10)
    scores = np.where(same, rng.uniform(1, 2, 200), rng.uniform(-2, -1, 200))
    scores[0] = -5.0  # one genuine pair of fold 0 that no threshold can accept
    results = ten_fold_accuracy(scores, same, folds)
    assert [r.fold for r in results] == list(range(10))
    assert results[0].accuracy == pytest.approx(19 / 20)
    assert all(r.accuracy == 1.0 for r in results[1:])
    assert all(-1 < r.threshold < 1 for r in results)


def test_floor_missing_puts_no_face_below_everything() -> None:
    out = floor_missing(np.array([-0.5, -np.inf, -0.2, np.nan]))
    assert out.tolist() == [-0.5, -1.5, -0.2, -1.5]
    assert floor_missing(np.array([np.nan])).tolist() == [-1.0]


def test_search_outcomes_known_answer() -> None:
    gallery = np.array([[0.0, 0.0], [10.0, 0.0]])
    probes = np.array([[1.0, 0.0], [9.0, 0.0], [4.0, 0.0], [np.nan, np.nan]])
    outcomes = search_outcomes(
        probes, ["a", "b", "b", "a"], gallery, ["a", "b"], np.array([[5.0, 5.0]])
    )
    assert outcomes.mated_correct.tolist() == [True, True, False, False]
    assert outcomes.mated_best[:3].tolist() == [-1.0, -1.0, -4.0]
    assert outcomes.mated_best[3] < -np.sqrt(50)  # no face: below every real score
    assert outcomes.nonmated_best.tolist() == pytest.approx([-np.sqrt(50)])


@pytest.mark.lfw
def test_identification_command(tmp_path: Path, lfw_dataset: LFWDataset) -> None:
    result = CliRunner().invoke(
        app,
        ["identification", "--out", str(tmp_path), "--n-identities", "40",
         "--n-non-enrolled", "40", "--max-probes-per-identity", "1", "--device", "cpu",
         "--lfw-dir", str(lfw_dataset.root)],
    )
    assert result.exit_code == 0, result.output
    figures = json.loads((tmp_path / "identification.json").read_text())
    assert figures["gallery"] == 40 and figures["mated_probes"] == 40
    assert figures["rank1"] >= 0.9
    assert 0.0 <= figures["fnir_at_fpir"] <= 0.5
    assert (tmp_path / "identification-det.png").stat().st_size > 1000


@pytest.mark.lfw
def test_lfw_command_on_a_small_view2(tmp_path: Path, lfw_dataset: LFWDataset) -> None:
    """Real images, real protocol code, 10 folds of 2 pairs (the full run is in the report)."""
    small = tmp_path / "lfw"
    small.mkdir()
    (small / "lfw-deepfunneled").symlink_to(lfw_dataset.root / "lfw-deepfunneled")
    lines = ["10\t1"]
    for fold in lfw_dataset.pairs():
        same = next(p for p in fold if p.same)
        diff = next(p for p in fold if not p.same)
        lines.append(f"{same.first.label}\t{same.first.index}\t{same.second.index}")
        lines.append(f"{diff.first.label}\t{diff.first.index}\t{diff.second.label}\t"
                     f"{diff.second.index}")
    (small / "pairs.txt").write_text("\n".join(lines) + "\n")
    out = tmp_path / "out"
    result = CliRunner().invoke(
        app, ["lfw", "--out", str(out), "--device", "cpu", "--lfw-dir", str(small)]
    )
    assert result.exit_code == 0, result.output
    figures = json.loads((out / "lfw.json").read_text())
    assert figures["pairs"] == 20 and len(figures["folds"]) == 10
    assert figures["accuracy_mean"] >= 0.8
    assert (out / "lfw-det.png").stat().st_size > 1000


@pytest.mark.lfw
def test_throughput_command(tmp_path: Path, lfw_dataset: LFWDataset) -> None:
    out = tmp_path / "throughput.json"
    result = CliRunner().invoke(
        app,
        ["throughput", "--n-images", "6", "--batch-size", "3", "--device", "cpu",
         "--lfw-dir", str(lfw_dataset.root), "--out", str(out)],
    )
    assert result.exit_code == 0, result.output
    figures = json.loads(out.read_text())
    assert figures["device"] == "cpu" and figures["images"] == 6
    assert figures["faces"] >= 5
    assert figures["network_faces_per_s"] > 0 and figures["pipeline_faces_per_s"] > 0
