"""Fixtures of the audit tests: the real LFW identification set split into audit roles, and a
small recorded run of real servers for the evaluations that read a server's view."""

from __future__ import annotations

import numpy as np
import pytest
from pura_client.audit.data import AuditData
from pura_client.audit.recorded import RecordedRun
from pura_client.datasets.embedded import EmbeddedIdentificationSet
from pura_client.datasets.lfw import LFWDataset


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


@pytest.fixture(scope="session")
def recorded_run(tmp_path_factory: pytest.TempPathFactory, lfw_dataset: LFWDataset) -> RecordedRun:
    """A small ``pura-audit views`` run: real ``pura serve`` A and B processes with
    ``--record`` (the views default profile, fast keys), 20 LFW people enrolled in two epochs,
    3 mated and 5 non-mated probes per epoch; the recordings, loaded (about two minutes on
    two busy cores, once per session)."""
    from pura_client.audit.views import ViewsConfig, run_views

    out = tmp_path_factory.mktemp("recorded-views")
    run_views(out, ViewsConfig(people=20, epochs=2, mated_per_epoch=3, nonmated_per_epoch=5),
              log=lambda _: None)
    return RecordedRun(out)
