"""The product default and the per-model settings agree across server and client (issue 15).

The server cannot import the client registry, so a model's threshold, dimension and PCA file are
stated on both sides; these tests fail when one side changes without the other."""

from __future__ import annotations

import math

import pytest
from pura_client.embedding.registry import (
    DLIB_MODEL_ID,
    MODELS,
    SFACE_MODEL_ID,
    default_model,
)

from pura.crypto.encoding import load_shipped_pca, shipped_pca_path
from pura.crypto.params import (
    DEFAULT_PARAMETERS,
    FAST_PARAMETERS,
    PRESETS,
    get_preset,
    model_mismatch_message,
    presets_for_model,
)
from pura.pipeline.config import MODEL_THRESHOLD_SQ, SearchConfig


def test_the_default_is_the_registry_default_at_both_security_levels() -> None:
    assert DEFAULT_PARAMETERS.encoding.model_id == default_model().model_id == SFACE_MODEL_ID
    assert FAST_PARAMETERS.encoding == DEFAULT_PARAMETERS.encoding
    assert FAST_PARAMETERS.paillier.security_bits < 128 <= DEFAULT_PARAMETERS.paillier.security_bits
    assert get_preset("dlib").encoding.model_id == DLIB_MODEL_ID  # dlib stays selectable
    assert get_preset("sface") == DEFAULT_PARAMETERS


@pytest.mark.parametrize("name", list(PRESETS))
def test_every_preset_is_a_registered_model_with_its_pca_and_threshold(name: str) -> None:
    enc = PRESETS[name].encoding
    spec = MODELS[enc.model_id]
    assert enc.dim == spec.dim
    assert shipped_pca_path(enc.model_id).name == spec.pca_file
    assert load_shipped_pca(enc.model_id).dim == enc.dim
    assert SearchConfig.for_model(enc.model_id).tau == MODEL_THRESHOLD_SQ[enc.model_id]
    # the diagonal CKKS block layout needs head_dim | slots
    assert PRESETS[name].ckks.slot_count % enc.head_dim == 0


@pytest.mark.parametrize("model_id", [m for m in MODELS if m != DLIB_MODEL_ID])
def test_server_thresholds_are_the_registry_calibration(model_id: str) -> None:
    """2 − 2c of the DevTrain cosine threshold for FPIR 1 % at 1,000 enrolled (rounded)."""
    cosine = MODELS[model_id].calibration.fpir[1_000]
    assert math.isclose(MODEL_THRESHOLD_SQ[model_id], 2 - 2 * cosine, abs_tol=1e-3)


def test_only_any_use_models_are_defaults() -> None:
    for name in ("default", "fast"):
        assert MODELS[get_preset(name).encoding.model_id].any_use
    assert not MODELS["edgeface_xs_q"].any_use


def test_the_mismatch_message_names_both_models_and_re_enrolment() -> None:
    text = model_mismatch_message("staff", DLIB_MODEL_ID, SFACE_MODEL_ID, "enrolment")
    assert DLIB_MODEL_ID in text and SFACE_MODEL_ID in text and "'staff'" in text
    assert "re-enrol the collection under model 'sface_2021dec_int8bq'" in text
    assert "--profile default" in text and "this enrolment" in text
    assert presets_for_model(DLIB_MODEL_ID) == ["dlib", "dlib-fast"]
