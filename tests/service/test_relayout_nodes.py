"""Per-epoch secret re-layout through NodeA and NodeB (issue 12): after a gallery change the
slots B ranks hold other templates, answers stay right, and A's rows, A's blocks and B's copies
agree (also after a restart). Loopback, fast profile, random unit vectors."""

from __future__ import annotations

import random
from pathlib import Path

import numpy as np
import numpy.typing as npt
import pytest
from pura_client.encryptor import Encryptor

from pura.audit_log import AuditLog
from pura.crypto.encoding import load_shipped_pca
from pura.crypto.params import DLIB_FAST_PARAMETERS
from pura.errors import ProtocolError, PuraError
from pura.gallery.copies import CopyStore
from pura.gallery.store import GalleryStore
from pura.keys import generate_key_set, load_a_keys, load_b_keys, load_public_keys
from pura.pipeline import MemoryRecorder, SearchConfig
from pura.protocols.preselect import PreselectRequest
from pura.protocols.steps import Step
from pura.protocols.tickets import strip
from pura.service.nodes import NodeA, NodeB, QueryUpload, TemplateUpload, loopback

DIM = DLIB_FAST_PARAMETERS.encoding.dim
MODEL = DLIB_FAST_PARAMETERS.encoding.model_id
SEARCH = SearchConfig(top_k=3, view_k=16)


def _unit(rng: np.random.Generator, n: int) -> npt.NDArray[np.float64]:
    v = rng.standard_normal((n, DIM))
    out: npt.NDArray[np.float64] = v / np.linalg.norm(v, axis=1, keepdims=True)
    return out


def _node_a(root: Path, node_b: NodeB, recorder: MemoryRecorder) -> NodeA:
    return NodeA(load_a_keys(root / "k" / "a"), GalleryStore(root / "a.db"),
                 AuditLog(root / "audit.jsonl"), loopback(node_b), load_shipped_pca(),
                 search=SEARCH, recorder=recorder, rng=random.Random(3))


def _copies_agree(a: NodeA, b: NodeB) -> None:
    """B holds exactly one copy per template row, at the row's position, under the tag of the
    block's current layout epoch."""
    blocks = a._gallery("c").blocks
    want = {(r.block_no, r.slot): blocks[r.block_no].copy_tag(r.template_id)
            for r in a.store.all_templates("c")}
    held = {p: c.tag for p, c in b.candidates.copies.copies(a.namespace("c")).items()}
    assert held == want
    for r in a.store.all_templates("c"):
        assert blocks[r.block_no].live[r.slot] == int(r.template_id, 16)


def _told_positions(recorder: MemoryRecorder) -> tuple[tuple[int, ...], tuple[int, ...]]:
    served = [e for e in recorder.exchanges if e.step == Step.PRESELECT][-1]
    request = PreselectRequest.from_bytes(strip(served.request))
    return request.blocks, request.rotations


@pytest.mark.slow
def test_gallery_change_starts_a_new_secret_layout(tmp_path: Path) -> None:
    generate_key_set(tmp_path / "k", DLIB_FAST_PARAMETERS)
    node_b = NodeB(load_b_keys(tmp_path / "k" / "b"), CopyStore(tmp_path / "b" / "copies.db"),
                   search=SEARCH)
    recorder = MemoryRecorder()
    a = _node_a(tmp_path, node_b, recorder)
    a.create_collection("c")
    enc = Encryptor(load_public_keys(tmp_path / "k" / "public"), load_shipped_pca())
    gallery = _unit(np.random.default_rng(1), 10)

    def enrol(rows: range) -> None:
        items = [TemplateUpload(f"s{i}", f"r{i}", MODEL, DIM, p.paillier, p.ckks_head)
                 for i, p in ((i, enc.template(gallery[i])) for i in rows)]
        assert all(o.error is None for o in a.enroll("c", items, "test"))

    def identify(v: npt.NDArray[np.float64]) -> str | None:
        q = enc.query(v)
        return a.identify("c", QueryUpload(MODEL, DIM, q.paillier, q.ckks_head), "test")

    enrol(range(6))
    assert identify(gallery[2]) == "s2"
    block = a._gallery("c").blocks[0]
    first_epoch, first_live = block.epoch, dict(block.live)
    assert first_epoch == 1  # re-laid out before the first query
    _copies_agree(a, node_b)
    assert identify(gallery[4]) == "s4"
    assert block.epoch == first_epoch  # no change, no new epoch

    enrol(range(6, 10))  # a gallery change: the next query runs on a fresh secret layout
    assert identify(gallery[8]) == "s8"
    block = a._gallery("c").blocks[0]
    assert block.epoch == first_epoch + 1
    moved = sum(1 for s, t in first_live.items() if block.live.get(s) != t)
    assert moved >= len(first_live) - 1  # slots B saw before now hold other templates
    _copies_agree(a, node_b)
    blocks, _ = _told_positions(recorder)
    assert blocks == (0,)

    a.delete("c", "s8", "test")
    assert identify(gallery[8]) is None and block is not None
    assert a._gallery("c").blocks[0].epoch == first_epoch + 2
    _copies_agree(a, node_b)

    # A re-layout that fails does not take the collection down: the query runs on the
    # current layout and the next one re-lays out.
    relayout = a.enroller.relayout

    def broken(block: object, namespace: str = "") -> object:
        raise ProtocolError("simulated re-layout failure")

    a.enroller.relayout = broken  # type: ignore[method-assign,assignment]
    a.delete("c", "s7", "test")
    epoch = a._gallery("c").blocks[0].epoch
    assert identify(gallery[1]) == "s1"
    assert a._gallery("c").blocks[0].epoch == epoch
    a.enroller.relayout = relayout  # type: ignore[method-assign]
    assert identify(gallery[3]) == "s3"
    assert a._gallery("c").blocks[0].epoch == epoch + 1
    _copies_agree(a, node_b)

    # A restart reads the re-laid-out blocks and rows back; they agree with B's copies.
    a.offline.stop()
    a.store.close()
    restarted = _node_a(tmp_path, node_b, MemoryRecorder())
    restarted.recover()
    try:
        _copies_agree(restarted, node_b)
        q = enc.query(gallery[1])
        assert restarted.identify("c", QueryUpload(MODEL, DIM, q.paillier, q.ckks_head),
                                  "test") == "s1"
    finally:
        restarted.offline.stop()
        restarted.store.close()
        node_b.offline.stop()


@pytest.mark.slow
def test_epoch_query_bound_relays_out_and_b_enforces_it(tmp_path: Path) -> None:
    """With ``epoch_queries`` A re-lays out after that many identifications without any gallery
    change, and B refuses a preselection over a block whose epoch is used up."""
    search = SearchConfig(top_k=3, view_k=16, epoch_queries=2)
    generate_key_set(tmp_path / "k", DLIB_FAST_PARAMETERS)
    node_b = NodeB(load_b_keys(tmp_path / "k" / "b"), CopyStore(tmp_path / "b" / "copies.db"),
                   search=search)
    a = NodeA(load_a_keys(tmp_path / "k" / "a"), GalleryStore(tmp_path / "a.db"),
              AuditLog(tmp_path / "audit.jsonl"), loopback(node_b), load_shipped_pca(),
              search=search, rng=random.Random(3))
    try:
        a.create_collection("c")
        enc = Encryptor(load_public_keys(tmp_path / "k" / "public"), load_shipped_pca())
        gallery = _unit(np.random.default_rng(2), 4)
        items = [TemplateUpload(f"s{i}", f"r{i}", MODEL, DIM, p.paillier, p.ckks_head)
                 for i, p in ((i, enc.template(gallery[i])) for i in range(4))]
        assert all(o.error is None for o in a.enroll("c", items, "test"))
        epochs = []
        for i in range(5):
            q = enc.query(gallery[i % 4])
            assert a.identify("c", QueryUpload(MODEL, DIM, q.paillier, q.ckks_head),
                              "test") == f"s{i % 4}"
            epochs.append(a._gallery("c").blocks[0].epoch)
        assert epochs == [1, 1, 2, 2, 3]
        _copies_agree(a, node_b)
        # The fifth query opened epoch 3; A "forgets" it: B answers one more, then refuses.
        a._epoch_count["c"] = 0
        q = enc.query(gallery[1])
        assert a.identify("c", QueryUpload(MODEL, DIM, q.paillier, q.ckks_head), "test") == "s1"
        q = enc.query(gallery[2])
        with pytest.raises(PuraError, match="re-lay it out"):
            a.identify("c", QueryUpload(MODEL, DIM, q.paillier, q.ckks_head), "test")
        assert node_b.guard.refusals[Step.PRESELECT] == 1
    finally:
        a.offline.stop()
        node_b.offline.stop()
        a.store.close()
