"""NodeA and NodeB in one process (loopback, fast profile, random unit vectors): no LFW, no gRPC.

The fast tests of the module that changes most: enrolment, identification equal to plaintext,
verification, deletion, and the wire seen through the pipeline's one channel.
"""

from __future__ import annotations

import random
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt
import pytest
from pura_client.encryptor import Encryptor

from pura.audit_log import AuditLog
from pura.crypto.encoding import PCARotation, load_shipped_pca
from pura.crypto.params import FAST_PARAMETERS
from pura.gallery.copies import CopyStore
from pura.gallery.store import GalleryStore
from pura.keys import generate_key_set, load_a_keys, load_b_keys, load_public_keys
from pura.pipeline import MemoryRecorder, SearchConfig
from pura.protocols.steps import Step
from pura.service.nodes import NodeA, NodeB, QueryUpload, TemplateUpload, loopback

DIM = FAST_PARAMETERS.encoding.dim
MODEL = FAST_PARAMETERS.encoding.model_id


@dataclass
class Pair:
    a: NodeA
    b: NodeB
    enc: Encryptor
    recorder: MemoryRecorder
    gallery: npt.NDArray[np.float64]


def _unit(rng: np.random.Generator, n: int) -> npt.NDArray[np.float64]:
    v = rng.standard_normal((n, DIM))
    out: npt.NDArray[np.float64] = v / np.linalg.norm(v, axis=1, keepdims=True)
    return out


@pytest.fixture(scope="module")
def pair(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Pair]:
    root = tmp_path_factory.mktemp("nodes")
    generate_key_set(root / "k", FAST_PARAMETERS)
    pca: PCARotation = load_shipped_pca()
    node_b = NodeB(load_b_keys(root / "k" / "b"), CopyStore(root / "b" / "copies.db"),
                   search=SearchConfig(top_k=3, view_k=16))
    recorder = MemoryRecorder()
    node_a = NodeA(load_a_keys(root / "k" / "a"), GalleryStore(root / "a.db"),
                   AuditLog(root / "audit.jsonl"), loopback(node_b), pca,
                   search=SearchConfig(top_k=3, view_k=16), recorder=recorder,
                   rng=random.Random(7))
    node_a.create_collection("c")
    gallery = _unit(np.random.default_rng(1), 8)
    enc = Encryptor(load_public_keys(root / "k" / "public"), pca)
    items = [TemplateUpload(f"s{i}", f"r{i}", MODEL, DIM, p.paillier, p.ckks_head)
             for i, p in enumerate(enc.template(v) for v in gallery)]
    outcomes = node_a.enroll("c", items, "test")
    assert all(o.error is None for o in outcomes)
    yield Pair(node_a, node_b, enc, recorder, gallery)
    node_a.offline.stop()
    node_b.offline.stop()
    node_a.store.close()


def _query(pair: Pair, v: npt.NDArray[np.float64]) -> QueryUpload:
    q = pair.enc.query(v)
    return QueryUpload(MODEL, DIM, q.paillier, q.ckks_head)


def _plaintext(pair: Pair, v: npt.NDArray[np.float64]) -> str | None:
    d = np.sum((pair.gallery - v) ** 2, axis=1)
    best = int(np.argmin(d))
    return f"s{best}" if d[best] <= pair.a.search.tau else None


def test_identify_equals_plaintext(pair: Pair) -> None:
    rng = np.random.default_rng(2)
    probes = [*(pair.gallery[:3] + 0.05 * _unit(rng, 3)), *_unit(rng, 2)]
    for v in probes:
        v = v / np.linalg.norm(v)
        assert pair.a.identify("c", _query(pair, v), "test") == _plaintext(pair, v)


def test_every_helper_call_goes_through_the_one_channel(pair: Pair) -> None:
    pair.recorder.exchanges.clear()
    pair.a.identify("c", _query(pair, pair.gallery[0]), "test")
    steps = {e.step for e in pair.recorder.exchanges}
    assert Step.PRESELECT in steps and Step.BLINDED_PRODUCT in steps
    assert Step.THRESHOLD in steps
    assert pair.a.helper.per_step[Step.PRESELECT].rounds >= 1


def test_verify_and_delete(pair: Pair) -> None:
    v = pair.gallery[5]
    assert pair.a.verify("c", "s5", _query(pair, v), "test")
    assert not pair.a.verify("c", "s4", _query(pair, v), "test")
    receipt = pair.a.delete("c", "s5", "test")
    assert receipt.templates_removed == 1
    assert pair.a.identify("c", _query(pair, v), "test") is None
