"""The recorded in-process deployment: real encrypted identification, parity and leakage."""

from __future__ import annotations

import random
from pathlib import Path

import numpy as np
import pytest
from pura_client.audit.data import AuditData, LabelledEmbeddings, system_threshold
from pura_client.audit.harness import STEP_PRESELECT, EncryptedIdentification
from pura_client.audit.leakage import LeakageInputs, canary_patterns, run_leakage
from pura_client.audit.parity import run_parity, run_queries

from pura.crypto.encoding import PCARotation
from pura.crypto.params import DLIB_FAST_PARAMETERS
from pura.protocols.identify import STEP_BLINDED_PRODUCT


@pytest.mark.lfw
@pytest.mark.slow
def test_encrypted_identification_parity_and_leakage(audit_data: AuditData, tmp_path: Path) -> None:
    gallery = LabelledEmbeddings(audit_data.enrolled.vectors[:20], audit_data.enrolled.labels[:20])
    names = set(gallery.labels)
    idx = [i for i, lab in enumerate(audit_data.mated_probes.labels) if lab in names][:3]
    mated = LabelledEmbeddings(
        audit_data.mated_probes.vectors[idx], tuple(audit_data.mated_probes.labels[i] for i in idx)
    )
    nonmated = LabelledEmbeddings(audit_data.nonmated.vectors[:3], audit_data.nonmated.labels[:3])
    rotation = PCARotation.fit(audit_data.public.vectors, model_id="dlib")
    tau = -system_threshold(audit_data.public)
    system = EncryptedIdentification(
        DLIB_FAST_PARAMETERS, gallery, rotation, tau, top_k=4, view_k=64, rng=random.Random(5)
    )
    outcomes = run_queries(system, mated, nonmated)
    assert all(q.consistent for q in outcomes[0] + outcomes[1])
    assert all(q.b_position is not None and 0 <= q.b_position < q.b_slots for q in outcomes[0])
    assert all(len(q.candidates) <= 4 for q in outcomes[0] + outcomes[1])
    steps = {m.step for m in system.recorder.messages}
    assert {STEP_PRESELECT, STEP_BLINDED_PRODUCT} <= steps
    parity = run_parity(gallery, mated, nonmated, outcomes, tau, tmp_path)
    assert parity.metrics["decision_disagreements_with_exact_stage"] == 0
    patterns = canary_patterns(
        system.quantised_templates, np.vstack([gallery.vectors, mated.vectors])
    )
    inputs = LeakageInputs(outcomes[0], outcomes[1], system.recorder.messages, patterns, 11)
    leak = run_leakage(inputs, tmp_path)
    assert leak.metrics["canary_hits"] == 0
    masked = [v for q in outcomes[0] for v in q.b_masked_template_values]
    assert len(masked) >= 128 and min(masked) >= 0
    assert (tmp_path / "parity_det.png").exists() and (tmp_path / "leakage.png").exists()
