"""Fixtures of the audit tests: the real LFW identification set split into audit roles."""

from __future__ import annotations

import numpy as np
import pytest
from pura_client.audit.data import AuditData
from pura_client.datasets.embedded import EmbeddedIdentificationSet


@pytest.fixture(scope="session")
def audit_data(lfw_identification_set: EmbeddedIdentificationSet) -> AuditData:
    """250 enrolled / 250 public people (seeded split) and 200 non-enrolled probes."""
    s = lfw_identification_set
    return AuditData.from_identification_set(
        s.gallery,
        s.gallery_labels,
        s.probes,
        s.probe_labels,
        s.non_enrolled,
        s.non_enrolled_labels,
        rng=np.random.default_rng(0),
    )
