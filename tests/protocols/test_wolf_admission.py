"""The wolf check at admission (issue 13, item 14): a template too close to the public population
mean is refused, computed on the encrypted template and decided with B's blinded comparison in
the same joint decryption as the norm check; real LFW templates are all admitted.

Fails on the code before the check: the unit-norm centroid is a unit vector and was admitted.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from pura_client.datasets.embedded import EmbeddedIdentificationSet

from pura.audit_log import AuditLog
from pura.crypto.encoding import PCARotation, l2_normalize, load_shipped_pca, quantize
from pura.crypto.paillier import KeyShare, PublicKey, RandomnessPool, decrypt_with_shares
from pura.errors import ConfigError, EmbeddingRangeError, HelperRefusedError
from pura.protocols.enroll import encrypt_template
from pura.protocols.helper_guard import HelperGuard, Quotas
from pura.protocols.identify import STEP_NORM_CHECK, BytesChannel, ExactConfig, ServerA, ServerB
from pura.protocols.messages import AdmittedTemplate, PaillierTemplate
from pura.protocols.norms import MeanBound, start_norm_check
from pura.protocols.population import PopulationMean, mean_bound
from pura.protocols.tickets import seal, unseal

Keys = tuple[PublicKey, KeyShare, KeyShare]
S = 11
DIM = 128
DLIB = "dlib_face_recognition_resnet_model_v1"
SFACE = "sface_2021dec_int8bq"


class Admission:
    """A (with the wolf check of the shipped dlib mean) and B over the bytes encoding."""

    def __init__(self, keys: Keys, pca: PCARotation) -> None:
        pk, s1, s2 = keys
        self.keys, self.pca = keys, pca
        base = ExactConfig.for_key(pk, DIM, S)
        self.bound = mean_bound(DLIB, pca, S)
        config = ExactConfig(base.template, base.compare, base.norms.with_mean(self.bound))
        b = ServerB(s2, base, RandomnessPool(pk, rng=random.Random(11)))  # B holds no mean
        self.a = ServerA(s1, config, BytesChannel.loopback(b), rng=random.Random(12))
        self.client = RandomnessPool(pk, rng=random.Random(13))

    def encode(self, x: np.ndarray) -> list[int]:
        return [int(v) for v in quantize(self.pca.apply(l2_normalize(x)), S)]

    def admit(self, vectors: list[np.ndarray]) -> list[AdmittedTemplate | EmbeddingRangeError]:
        uploads = [encrypt_template(self.encode(v), self.a.config.template, self.keys[0],
                                    self.client) for v in vectors]
        return self.a.admit(uploads)


@pytest.fixture(scope="module")
def admission(paillier_fast_keys: Keys) -> Admission:
    return Admission(paillier_fast_keys, load_shipped_pca(DLIB))


def _mean_direction(model_id: str) -> np.ndarray:
    return np.asarray(PopulationMean.load(model_id).direction)


def _faces(lfw: EmbeddedIdentificationSet) -> np.ndarray:
    return np.vstack([lfw.gallery, lfw.probes, lfw.non_enrolled])


def test_no_real_face_of_the_split_exceeds_the_bound_and_the_centroid_does(
        lfw_identification_set: EmbeddedIdentificationSet) -> None:
    """Plaintext calibration check on the test split's 1,475 dlib faces (the shipped bound was
    calibrated on every LFW face; see scripts/fit_population_mean.py)."""
    faces = _faces(lfw_identification_set)
    mu = _mean_direction(DLIB)
    bound = PopulationMean.load(DLIB).max_cosine
    cos = l2_normalize(faces) @ mu
    assert cos.max() < bound
    centroid = l2_normalize(faces.mean(axis=0))
    assert centroid @ mu > bound + 0.02


def test_centroid_wolf_is_rejected_and_real_templates_admitted(
        admission: Admission, lfw_identification_set: EmbeddedIdentificationSet) -> None:
    faces = _faces(lfw_identification_set)
    mu = _mean_direction(DLIB)
    cos = l2_normalize(faces) @ mu
    closest = faces[np.argsort(cos)[-6:]]  # the real faces nearest the mean: hardest to admit
    others = faces[np.random.default_rng(0).choice(len(faces), 4, replace=False)]
    wolf = faces.mean(axis=0)  # an attacker's centroid of public faces (not the shipped μ)
    batch = [closest[0], wolf, *closest[1:], *others, mu]
    results = admission.admit(batch)
    assert [isinstance(r, EmbeddingRangeError) for r in results] == \
        [False, True] + [False] * 9 + [True]
    for r in (results[1], results[-1]):
        assert "population mean" in str(r) and "wolf" in str(r)
    # admitted templates are the vectors uploaded (canonical packing; the check changed nothing)
    _, s1, s2 = admission.keys
    first = results[0]
    assert isinstance(first, AdmittedTemplate)
    assert decrypt_with_shares(s1, s2, first.norm) == sum(v * v
                                                         for v in admission.encode(closest[0]))


def test_bound_is_the_calibrated_cosine(admission: Admission) -> None:
    """Unit vectors just inside the bound are admitted, just outside refused: the integer limit
    is ``max_cosine`` plus at most the rounding slack ``√d·2^-s + d·4^(-s-1)`` (0.0055)."""
    raw_mu = _mean_direction(DLIB)
    c = admission.bound.max_cosine
    rng = np.random.default_rng(7)
    z = rng.normal(size=DIM)
    z -= (z @ raw_mu) * raw_mu
    z /= np.linalg.norm(z)
    inside = (c - 0.002) * raw_mu + np.sqrt(1 - (c - 0.002) ** 2) * z
    outside = (c + 0.008) * raw_mu + np.sqrt(1 - (c + 0.008) ** 2) * z
    results = admission.admit([inside, outside])
    assert isinstance(results[0], AdmittedTemplate)
    assert isinstance(results[1], EmbeddingRangeError)
    slack = (admission.bound.limit - c * 4 ** S) / 4 ** S
    assert 0 < slack < np.sqrt(DIM) * 2.0 ** -S + DIM * 4.0 ** (-S - 1) + 1e-6


def test_every_shipped_model_has_a_mean_and_unknown_models_fail_closed() -> None:
    for model in (DLIB, SFACE):
        mean = PopulationMean.load(model)
        assert 0.0 < mean.max_cosine < 0.99
    pca = load_shipped_pca(DLIB)
    with pytest.raises(ConfigError, match="no population mean"):
        mean_bound("arcface_r100", pca, S)
    bound = mean_bound(DLIB, pca, S)
    assert isinstance(bound, MeanBound) and bound.dim == DIM


def test_b_guard_answers_the_wolf_check_and_refuses_a_fourth_comparison(
        paillier_fast_keys: Keys, tmp_path: Path,
        lfw_identification_set: EmbeddedIdentificationSet) -> None:
    """Through B's guard (as NodeB runs it): an enrolment ticket gets its third comparison per
    template (the wolf check) answered, and nothing beyond: four comparisons for one template
    are refused before B decrypts anything."""
    pk, s1, s2 = paillier_fast_keys
    base = ExactConfig.for_key(pk, DIM, S)
    pca = load_shipped_pca(DLIB)
    config = ExactConfig(base.template, base.compare,
                         base.norms.with_mean(mean_bound(DLIB, pca, S)))
    b = ServerB(s2, base, RandomnessPool(pk, rng=random.Random(21)))
    guard = HelperGuard(b.handlers(), pk, Quotas(view_k=8), AuditLog(tmp_path / "b.log"),
                        ckks_slots=4096, rng=random.Random(22))
    handlers = guard.handlers()
    tamper: dict[str, Callable[[bytes], bytes]] = {}

    def call(step: str, payload: bytes) -> bytes:
        if step in tamper:
            payload = tamper[step](payload)
        return handlers[step](payload)

    a = ServerA(s1, config, BytesChannel(pk, call, ticketed=True), rng=random.Random(23))
    client = RandomnessPool(pk, rng=random.Random(24))
    faces = lfw_identification_set.gallery
    wolf = faces.mean(axis=0)

    def upload(x: np.ndarray) -> PaillierTemplate:
        return encrypt_template([int(v) for v in quantize(pca.apply(l2_normalize(x)), S)],
                                config.template, pk, client)

    out = a.admit([upload(faces[3]), upload(wolf)])
    assert isinstance(out[0], AdmittedTemplate) and isinstance(out[1], EmbeddingRangeError)
    assert guard.refusals_total == 0

    def four(sealed: bytes) -> bytes:
        ticket, _ = unseal(sealed)
        _, evil = start_norm_check([pk.encrypt(5, client)] * 2, config.norms, s1, client)
        return seal(ticket, evil.to_bytes())

    tamper[STEP_NORM_CHECK] = four
    with pytest.raises(HelperRefusedError, match="3 with an enrolment"):
        a.admit([upload(faces[4])])
    assert guard.refusals[STEP_NORM_CHECK] == 1
