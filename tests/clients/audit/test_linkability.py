"""Linkability: key-free linkage functions and a small run with real Paillier key sets."""

from __future__ import annotations

import random
from pathlib import Path

import numpy as np
import pytest
from pura_client.audit.data import AuditData
from pura_client.audit.linkability import (
    LinkabilityConfig,
    TwoApplications,
    bit_similarity,
    byte_correlation,
    byte_equality,
    mated_nonmated,
    run_linkability,
    size_similarity,
)
from pura_client.audit.protect import DeploymentKeys

from pura.crypto.encoding import PCARotation
from pura.crypto.params import DLIB_FAST_PARAMETERS


def test_linkage_functions_known_answers() -> None:
    a = [bytes([1, 2, 3, 4]), bytes([0, 0, 0, 0])]
    b = [bytes([1, 2, 3, 4]), bytes([255, 255, 255, 255]), bytes([1, 2])]
    eq = byte_equality(a, b)
    assert eq[0, 0] == 1.0 and eq[1, 1] == 0.0 and eq[0, 2] == 0.5
    bits = bit_similarity(a, b)
    assert bits[0, 0] == 1.0 and bits[1, 1] == 0.0
    assert byte_correlation(a, b)[0, 0] == pytest.approx(1.0)
    assert size_similarity(a, b).tolist() == [[0.0, 0.0, -2.0], [0.0, 0.0, -2.0]]


def test_mated_split_is_the_diagonal() -> None:
    mated, nonmated = mated_nonmated(np.arange(9.0).reshape(3, 3))
    assert mated.tolist() == [0.0, 4.0, 8.0] and nonmated.size == 6


@pytest.mark.lfw
def test_linkability_plaintext_vs_pura(audit_data: AuditData, tmp_path: Path) -> None:
    data = audit_data.enrolled_with_probes()
    apps = TwoApplications.from_embeddings(data, 80)
    assert len(apps.labels) == 80
    rotation = PCARotation.fit(audit_data.public.vectors, model_id="dlib")
    one = DeploymentKeys.generate(DLIB_FAST_PARAMETERS, rotation, random.Random(1))
    two = DeploymentKeys.generate(DLIB_FAST_PARAMETERS, rotation, random.Random(2))
    protected = {
        "Paillier template": (one.paillier_record, two.paillier_record),
        "CKKS head": (one.ckks_record, two.ckks_record),
    }
    config = LinkabilityConfig(people=80, bootstrap_rounds=30, max_record_bytes=2048)
    result = run_linkability(data, protected, tmp_path, config)
    assert result.metrics["plaintext_d_sys"] > 0.8
    rows = result.tables["D↔sys per linkage function"]
    assert rows[0]["linkable"] is True
    assert not any(r["linkable"] for r in rows[1:])
    assert result.passed is True
