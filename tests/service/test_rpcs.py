"""Every RPC of server A over real mTLS, with real LFW descriptors and real cryptography.

The encrypted answers are compared with plaintext 1:N on the same fixed-point vectors and the
collection's threshold, so a wrong protocol answer fails the test (not only a crash).
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import numpy as np
import numpy.typing as npt
import pytest
from pura_client.client import PuraClient

from pura.crypto.encoding import l2_normalize, quantize
from pura.crypto.params import DLIB_FAST_PARAMETERS
from pura.errors import NotFoundError
from pura.pipeline.config import DEFAULT_THRESHOLD_SQ
from pura.protocols.identify import threshold_units

from .conftest import Deployment

N_ENROLLED = 12  # > top_k (8): preselection runs
Vector = npt.NDArray[np.float64]


def _fixed(dep: Deployment, v: Vector) -> npt.NDArray[np.int64]:
    return quantize(dep.pca.apply(l2_normalize(v)), DLIB_FAST_PARAMETERS.encoding.scale_bits)


def plaintext_identify(
    dep: Deployment, labels: list[str], gallery: list[Vector], v: Vector
) -> str | None:
    tau = threshold_units(DEFAULT_THRESHOLD_SQ, DLIB_FAST_PARAMETERS.encoding.scale_bits)
    g = np.stack([_fixed(dep, x) for x in gallery])
    d = ((g - _fixed(dep, v)) ** 2).sum(axis=1)
    best = int(np.argmin(d))
    return labels[best] if int(d[best]) <= tau else None


@pytest.fixture(scope="module")
def enrolled(deployment: Deployment) -> Iterator[tuple[list[str], list[Vector]]]:
    """12 LFW people: 1 through Enroll, 11 through BulkEnroll (batches of 5)."""
    faces = deployment.faces
    labels = list(faces.gallery_labels[:N_ENROLLED])
    vectors = [faces.gallery[i] for i in range(N_ENROLLED)]
    with deployment.client("enroller") as enroller:
        enroller.enroll(labels[0], vectors[0], request_id="first")
        items = [(lab, v, f"bulk-{lab}") for lab, v in zip(labels[1:], vectors[1:], strict=True)]
        statuses = enroller.bulk_enroll(items)
    assert [s.code for s in statuses] == ["enrolled"] * (N_ENROLLED - 1)
    yield labels, vectors


def test_parameters_and_chunked_public_keys(deployment: Deployment) -> None:
    with deployment.client("identifier") as client:
        info = client.parameters()
        assert info.parameter_set_id == DLIB_FAST_PARAMETERS.id and info.fast_profile
        keys = client.public_keys()
        assert keys.key_id == info.key_id == deployment.a.node.keys.public.key_id
        assert not keys.ckks.is_private
        assert info.public_keys_size > 1 << 20  # more than one chunk


def test_identify_equals_plaintext(
    deployment: Deployment, enrolled: tuple[list[str], list[Vector]]
) -> None:
    labels, gallery = enrolled
    faces = deployment.faces
    mated = [j for j, lab in enumerate(faces.probe_labels) if lab in labels][:4]
    probes = [faces.probes[j] for j in mated] + [faces.non_enrolled[0], faces.non_enrolled[1]]
    with deployment.client("identifier") as client:
        answers = [client.identify(v) for v in probes]
    expected = [plaintext_identify(deployment, labels, gallery, v) for v in probes]
    assert [a.subject for a in answers] == expected
    assert any(e is not None for e in expected)  # the check covers matches, not only "no match"
    assert answers[-1].budget_remaining < answers[0].budget_remaining


def test_verify_true_and_false(
    deployment: Deployment, enrolled: tuple[list[str], list[Vector]]
) -> None:
    labels, gallery = enrolled
    with deployment.client("identifier") as client:
        assert client.verify(labels[2], gallery[2]) is True  # the enrolled image itself
        assert client.verify(labels[3], gallery[2]) is False
        # an unknown subject is a non-match, not NOT_FOUND (issue 13, item 13)
        assert client.verify("nobody-of-that-name", gallery[2]) is False


def test_bulk_enroll_is_resumable_with_per_item_status(
    deployment: Deployment, enrolled: tuple[list[str], list[Vector]]
) -> None:
    labels, gallery = enrolled
    with deployment.client("enroller") as enroller:
        enc = enroller.encryptor()
        good = enc.template(gallery[1])
        broken = type(good)(b"not a ciphertext", good.ckks_head)
        items = [
            (labels[1], good, f"bulk-{labels[1]}"),  # already committed earlier
            ("new-person", broken, uuid.uuid4().hex),  # rejected, stream continues
        ]
        statuses = list(enroller.bulk_enroll_encrypted(iter(items)))
    assert [s.code for s in statuses] == ["already-enrolled", "rejected"]
    assert "ProtocolError" in statuses[1].message or "Ciphertext" in statuses[1].message


def test_admin_views_and_paging(
    deployment: Deployment, enrolled: tuple[list[str], list[Vector]]
) -> None:
    labels, _ = enrolled
    with deployment.client("admin") as admin:
        subjects = admin.list_subjects(page_size=5)
        assert set(labels) <= set(subjects) and subjects == sorted(subjects)
        stats = admin.stats()
        assert stats.templates >= N_ENROLLED and stats.blocks == 1
        assert stats.pending_templates == 0
        assert admin.verify_audit_log().intact
    with deployment.client("auditor") as auditor:
        assert auditor.stats().subjects >= N_ENROLLED


def test_delete_removes_subject_and_returns_receipt(
    deployment: Deployment, enrolled: tuple[list[str], list[Vector]]
) -> None:
    labels, gallery = enrolled
    victim = labels[-1]
    with deployment.client("admin") as admin:
        receipt = admin.delete(victim)
        assert (receipt.subject_id, receipt.templates_removed, receipt.blocks_refreshed) == (
            victim, 1, 1,
        )
        assert victim not in admin.list_subjects()
        entries = deployment.a.node.audit.entries()
        assert entries[-1]["hash"] == receipt.audit_entry_hash
        assert entries[-1]["action"] == "delete" and entries[-1]["target"] == victim
    with deployment.client("identifier") as client:
        assert client.identify(gallery[-1]).subject != victim
        assert client.verify(victim, gallery[-1]) is False  # as for any unknown subject
    with deployment.client("admin") as admin, pytest.raises(NotFoundError):
        admin.delete(victim)


def test_client_class_roundtrip_types(deployment: Deployment) -> None:
    client: PuraClient = deployment.client("identifier")
    assert "lfw" in repr(client)
    client.close()
