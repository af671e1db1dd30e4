"""Model registry: pinned weights (SHA-256), model folder lookup, licences and the default."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest
from pura_client.embedding import registry
from pura_client.embedding.registry import (
    MODELS,
    SFACE_MODEL_ID,
    WeightFile,
    default_model,
    get_model,
    installed_models,
    models_dir,
    weight_path,
)

from pura.errors import ConfigError


def _weight(tmp_path: Path, content: bytes, pinned: bytes | None = None) -> WeightFile:
    (tmp_path / "w.bin").write_bytes(content)
    digest = hashlib.sha256(content if pinned is None else pinned).hexdigest()
    return WeightFile("w.bin", digest, len(content), "MIT", "test")


def test_weight_path_accepts_the_pinned_file(tmp_path: Path) -> None:
    weight = _weight(tmp_path, b"real weights")
    assert weight_path(weight, tmp_path) == tmp_path / "w.bin"


def test_weight_path_refuses_a_changed_file(tmp_path: Path) -> None:
    weight = _weight(tmp_path, b"swapped weights", pinned=b"real weights")
    with pytest.raises(ConfigError, match="sha256"):
        weight_path(weight, tmp_path)


def test_weight_path_names_a_missing_file(tmp_path: Path) -> None:
    weight = WeightFile("absent.onnx", "0" * 64, 1, "MIT", "test")
    with pytest.raises(ConfigError, match=r"absent\.onnx.*PURA_MODELS_DIR"):
        weight_path(weight, tmp_path)


def test_models_dir_prefers_the_environment(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(registry.ENV_VAR, str(tmp_path))
    assert models_dir() == tmp_path
    assert installed_models() == [get_model(registry.DLIB_MODEL_ID)]  # no weights there


def test_default_is_the_any_use_sface_and_never_non_commercial() -> None:
    assert default_model().model_id == SFACE_MODEL_ID
    assert default_model().any_use
    for spec in MODELS.values():
        if "NC" in spec.licence:
            assert not spec.any_use


def test_unknown_model_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match="unknown face model"):
        get_model("facenet")


def test_registry_pins_every_shared_weight_file() -> None:
    """The pinned hashes are those of shared/models/README.md, and the files there match."""
    folder = models_dir()
    if not folder.is_dir():
        pytest.skip("shared/models not present")
    readme = (folder / "README.md").read_text()
    for spec in MODELS.values():
        for weight in spec.files:
            assert weight.sha256 in readme
            assert weight_path(weight).stat().st_size == weight.size
    assert {s.model_id for s in installed_models()} == set(MODELS)


def test_an_uncalibrated_threshold_is_an_error_not_a_guess() -> None:
    import dataclasses

    spec = dataclasses.replace(get_model(SFACE_MODEL_ID), calibration=registry.Calibration())
    with pytest.raises(ConfigError, match="not calibrated"):
        _ = spec.default_threshold


def test_calibrated_models_ship_their_pca_rotation() -> None:
    from pura.crypto.encoding import load_shipped_pca

    for spec in MODELS.values():
        if spec.pca_file:
            assert spec.pca_file == f"pca-{spec.model_id}.npz"
            assert load_shipped_pca(spec.model_id).dim == spec.dim
        if spec.calibration.verification is not None:
            thresholds = [spec.calibration.fpir[n] for n in sorted(spec.calibration.fpir)]
            assert thresholds == sorted(thresholds)  # bigger gallery, stricter threshold
            assert spec.calibration.resolved_up_to in spec.calibration.fpir
