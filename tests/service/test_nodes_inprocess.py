"""NodeA and NodeB in one process (loopback, fast profile, random unit vectors): no LFW, no gRPC.

The fast tests of the module that changes most: enrolment, identification equal to plaintext,
verification, deletion, and the wire seen through the pipeline's one channel.
"""

from __future__ import annotations

import dataclasses
import random
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import numpy.typing as npt
import pytest
from pura_client.encryptor import Encryptor

from pura.audit_log import AuditLog
from pura.crypto.encoding import PCARotation, load_shipped_pca
from pura.crypto.params import DLIB_FAST_PARAMETERS
from pura.errors import ProtocolError
from pura.gallery.copies import Copy, CopyStore
from pura.gallery.store import GalleryStore
from pura.keys import generate_key_set, load_a_keys, load_b_keys, load_public_keys
from pura.pipeline import MemoryRecorder, SearchConfig
from pura.protocols import candidates as cand
from pura.protocols.identify import BytesChannel
from pura.protocols.messages import AdmittedTemplate
from pura.protocols.steps import Step
from pura.protocols.tickets import TicketKind, seal
from pura.service.chunks import unpack_blobs
from pura.service.nodes import NodeA, NodeB, QueryUpload, TemplateUpload, loopback

DIM = DLIB_FAST_PARAMETERS.encoding.dim
MODEL = DLIB_FAST_PARAMETERS.encoding.model_id


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
    generate_key_set(root / "k", DLIB_FAST_PARAMETERS)
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


# --- oblivious candidates (issue 11) ------------------------------------------------------


def _stored_ciphertexts(pair: Pair) -> set[bytes]:
    """Every Paillier ciphertext A stores (raw bytes), to look for in what A received."""
    key = pair.a.keys.public.paillier
    out: set[bytes] = set()
    for r in pair.a.store.all_templates("c"):
        t = AdmittedTemplate.from_bytes(key, r.paillier)
        out |= {c.raw_bytes() for c in (*t.packed, t.norm)}
    return out


def test_a_receives_no_stored_template_for_a_non_match(pair: Pair) -> None:
    pair.recorder.exchanges.clear()
    probe = _unit(np.random.default_rng(11), 1)[0]
    assert pair.a.identify("c", _query(pair, probe), "test") is None
    steps = [e.step for e in pair.recorder.exchanges]
    assert Step.OPEN_LABEL not in steps  # nothing opened on no match
    served = [e for e in pair.recorder.exchanges if e.step == Step.PRESELECT]
    assert len(served) == 1
    key = pair.a.keys.public.paillier
    reply = cand.CandidatesReply.from_bytes(served[0].reply)
    received = {c.raw_bytes() for t in reply.templates
                for c in (*AdmittedTemplate.from_bytes(key, t).packed,
                          AdmittedTemplate.from_bytes(key, t).norm)}
    assert len(reply.templates) == pair.a.search.top_k
    assert not received & _stored_ciphertexts(pair)  # fresh ciphertexts, unlinkable by bytes


def test_a_match_opens_only_the_winner_once(pair: Pair) -> None:
    pair.recorder.exchanges.clear()
    assert pair.a.identify("c", _query(pair, pair.gallery[1]), "test") == "s1"
    opened = [e for e in pair.recorder.exchanges if e.step == Step.OPEN_LABEL]
    assert len(opened) == 1
    # B opens one label per query: asking again (another index) is refused — by B's guard
    # before the candidate server is reached (the query's ticket is closed, and a request
    # without a ticket is refused outright).
    again = cand.LabelOpenRequest.from_bytes(opened[0].request)
    with pytest.raises(ProtocolError, match=r"one label per query|query ticket"):
        pair.a.helper(Step.OPEN_LABEL, cand.LabelOpenRequest(again.request_id, 0).to_bytes())


def test_b_refuses_a_wider_view_or_more_candidates(pair: Pair) -> None:
    gallery = pair.a._gallery("c")
    head = unpack_blobs(pair.enc.query(pair.gallery[0]).ckks_head, what="head")
    request, _ = gallery.preselect.request(head, pair.a.search.view_k * 2)
    wide = dataclasses.replace(request, namespace=pair.a.namespace("c"),
                               top_k=pair.a.search.top_k)
    session = pair.a.server_a.session(TicketKind.QUERY)
    assert isinstance(session, BytesChannel) and session.ticket
    with pytest.raises(ProtocolError, match="view_k"):
        pair.a.helper(Step.PRESELECT, seal(session.ticket, wide.to_bytes()))


def test_b_copies_are_durable_and_reconciled(tmp_path: Path, pair: Pair) -> None:
    ns = pair.a.namespace("c")
    store = pair.b.candidates.copies
    assert isinstance(store, CopyStore)
    held = dict(store.copies(ns))
    assert len(held) == len(pair.a.store.all_templates("c"))
    reopened = CopyStore(store.path)  # what a restarted B reads (WAL, synchronous=FULL)
    assert set(reopened.copies(ns)) == set(held)
    # B lost one copy and holds a stale one: A's start-up sync repairs both.
    lost = next(iter(held))
    store.erase(ns, [lost])
    store.put(ns, [Copy(99, 0, "stale", held[lost].template, held[lost].label)])
    assert pair.a.sync_copies("c") == 1
    assert set(store.copies(ns)) == set(held)
