"""Head-block bookkeeping: slot assignment, free-slot reuse, deletion, persistence records."""

from __future__ import annotations

import json
import random

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pura.crypto.ckks import CKKSContext, heads_from_rows
from pura.crypto.params import CKKS_8192
from pura.errors import (
    AlreadyExistsError,
    ConfigError,
    DimensionError,
    NotFoundError,
    StoreError,
)
from pura.gallery.packing import BlockLayout, HeadBlock, encrypt_block

M = 2
SLOTS = CKKS_8192.slot_count


def _coordinates(secret: CKKSContext, block: HeadBlock) -> np.ndarray:
    """Decrypted block as ``(head_dim, slots)``: row ``i`` = coordinate ``i`` of every slot's
    head (undoing the diagonal layout, so the tests read like the plaintext gallery)."""
    rows = np.stack([secret.decrypt(secret.ciphertext_from_bytes(c)) for c in block.ciphertexts])
    out: np.ndarray = heads_from_rows(rows).T
    return out


@pytest.fixture(scope="module")
def secret() -> CKKSContext:
    return CKKSContext.generate(CKKS_8192)


def _decoys(n: int) -> np.ndarray:
    rng = np.random.default_rng(n)
    x = rng.normal(size=(n, M))
    out: np.ndarray = x / np.linalg.norm(x, axis=1, keepdims=True)
    return out


def _layout(secret: CKKSContext) -> BlockLayout:
    return BlockLayout(secret.public(), M, _decoys)


def test_new_block_is_full_of_decoys(secret: CKKSContext) -> None:
    layout = _layout(secret)
    block = layout.new_block()
    values = _coordinates(secret, block)
    assert np.allclose(values.T, _decoys(SLOTS), atol=1e-6)
    assert block.template_at(0) is None and not block.live


def test_assign_fills_the_current_block_and_reuses_freed_slots(secret: CKKSContext) -> None:
    layout = _layout(secret)
    assert [layout.assign(t) for t in range(3)] == [(0, 0), (0, 1), (0, 2)]
    assert layout.remove(1) == (0, 1)
    assert layout.assign(10) == (0, 1)  # freed slot reused at once
    assert 1 not in layout and 10 in layout and len(layout) == 3
    with pytest.raises(AlreadyExistsError):
        layout.assign(10)
    with pytest.raises(NotFoundError):
        layout.remove(99)


def test_full_block_opens_a_new_one(secret: CKKSContext) -> None:
    layout = _layout(secret)
    block = layout.new_block()
    block.live = {s: 1000 + s for s in range(SLOTS)}
    layout2 = BlockLayout(layout.ctx, M, _decoys, [block])
    assert layout2.assign(7) == (1, 0)
    assert layout2.locate(1005) == (0, 5)


def test_delete_of_a_written_template_schedules_a_clear(secret: CKKSContext) -> None:
    layout = _layout(secret)
    layout.assign(1)
    block = layout.blocks[0]
    block.apply_refresh(list(block.ciphertexts), {0: 1}, [])
    assert block.live == {0: 1} and not block.needs_refresh and block.version == 1
    layout.remove(1)
    assert block.clearing == {0} and block.template_at(0) is None and block.needs_refresh


def test_delete_during_an_inflight_refresh_is_cleared_next_time(secret: CKKSContext) -> None:
    layout = _layout(secret)
    layout.assign(1)
    block = layout.blocks[0]
    written = dict(block.pending)
    layout.remove(1)  # deleted while the refresh that writes it is in flight
    block.apply_refresh(list(block.ciphertexts), written, [])
    assert not block.live and block.clearing == {0}


def test_metadata_round_trip(secret: CKKSContext) -> None:
    layout = _layout(secret)
    for t in range(5):
        layout.assign(t)
    block = layout.blocks[0]
    block.apply_refresh(list(block.ciphertexts), {0: 0, 1: 1}, [])
    layout.remove(0)
    back = HeadBlock.from_record(block.metadata_bytes(), block.ciphertexts)
    assert (back.live, back.pending, back.clearing, back.version) == (
        block.live, block.pending, block.clearing, block.version)
    with pytest.raises(StoreError):
        HeadBlock.from_record(b"{not json", block.ciphertexts)
    restored = BlockLayout(layout.ctx, M, _decoys, [back])
    assert restored.locate(3) == (0, 3) and 0 not in restored


def test_a_block_of_the_old_layout_is_refused_by_name(secret: CKKSContext) -> None:
    """A block stored before the diagonal layout (metadata v1) cannot be scored by one-ciphertext
    queries, and A dropped the heads once placed: the store says so and says what to do
    (A's recover() logs it per collection and keeps serving the others)."""
    layout = _layout(secret)
    layout.assign(0)
    block = layout.blocks[0]
    meta = json.loads(block.metadata_bytes())
    assert meta["v"] == 2
    meta["v"] = 1
    with pytest.raises(StoreError, match="re-enrol this collection"):
        HeadBlock.from_record(json.dumps(meta).encode(), block.ciphertexts)
    meta["v"] = 99
    with pytest.raises(StoreError, match="version 99"):
        HeadBlock.from_record(json.dumps(meta).encode(), block.ciphertexts)


def test_shape_errors(secret: CKKSContext) -> None:
    with pytest.raises(DimensionError):
        HeadBlock(0, SLOTS, 3, [b"x"])
    with pytest.raises(DimensionError):
        encrypt_block(secret, 0, np.zeros((10, M)))
    block = _layout(secret).new_block()
    with pytest.raises(DimensionError):
        BlockLayout(secret, M + 1, _decoys, [block])
    with pytest.raises(StoreError):
        block.reserve(SLOTS, 1)
    rng = random.Random(0)
    block.reserve(rng.randrange(SLOTS), 1)


def _model(n: int, rng: random.Random) -> np.ndarray:
    x = np.random.default_rng(rng.getrandbits(64)).normal(size=(n, M))
    out: np.ndarray = x / np.linalg.norm(x, axis=1, keepdims=True)
    return out


def _seeded(secret: CKKSContext) -> BlockLayout:
    return BlockLayout(secret.public(), M, _decoys, decoy_model=_model, decoy_seed=b"s" * 32)


def _head(secret: CKKSContext, seed: int) -> tuple[np.ndarray, bytes]:
    y = np.random.default_rng(seed).normal(size=M)
    y /= np.linalg.norm(y)
    return y, secret.ciphertext_to_bytes(secret.public().encrypt_head(y))


def test_a_only_insert_writes_the_head_and_keeps_other_slots(secret: CKKSContext) -> None:
    layout = _seeded(secret)
    block = layout.new_block()
    assert block.seeded and np.array_equal(layout.block_decoys(0), layout.block_decoys(0))
    before = _coordinates(secret, block)
    assert np.allclose(before.T, layout.block_decoys(0), atol=1e-6)
    ys = {t: _head(secret, t) for t in range(3)}
    placed = layout.insert_many([(t, raw) for t, (_, raw) in ys.items()])
    assert placed == [(0, 0), (0, 1), (0, 2)] and block.live == {0: 0, 1: 1, 2: 2}
    after = _coordinates(secret, block)
    for t, (y, _) in ys.items():
        assert np.max(np.abs(after[:, t] - y)) < 1e-5
    assert np.max(np.abs(after[:, 3:] - before[:, 3:])) < 1e-5
    assert not block.needs_refresh and block.version == 1


def test_a_only_delete_restores_the_block_bit_for_bit(secret: CKKSContext) -> None:
    layout = _seeded(secret)
    _, first = _head(secret, 1)
    layout.insert(1, first)
    snapshot = list(layout.blocks[0].ciphertexts)
    _, second = _head(secret, 2)
    layout.insert(2, second)
    assert layout.blocks[0].ciphertexts != snapshot
    assert layout.delete(2, second) == (0, 1)
    assert layout.blocks[0].ciphertexts == snapshot  # no residue of template 2 at all
    assert 2 not in layout and layout.blocks[0].template_at(1) is None
    with pytest.raises(NotFoundError):
        layout.delete(2, second)


def test_a_only_insert_rejects_bad_heads_and_unseeded_blocks(secret: CKKSContext) -> None:
    layout = _seeded(secret)
    with pytest.raises(Exception, match="ciphertext"):
        layout.insert(1, b"garbage")
    assert 1 not in layout
    work = secret.ciphertext_to_bytes(secret.encrypt_vector(np.ones(M)))
    with pytest.raises(Exception, match="head"):
        layout.insert(2, work)  # a work-level vector is not a head
    assert 2 not in layout and all(not b.pending for b in layout.blocks.values())
    plain = _layout(secret)
    with pytest.raises(Exception, match="seeded"):
        plain.insert(3, _head(secret, 3)[1])
    with pytest.raises(Exception, match="together"):
        BlockLayout(secret, M, _decoys, decoy_model=_model)


@settings(max_examples=60, deadline=None)
@given(st.lists(st.tuples(st.sampled_from(["add", "del", "refresh"]), st.integers(0, 30)),
                max_size=80))
def test_bookkeeping_invariants_under_random_operations(
    secret: CKKSContext, ops: list[tuple[str, int]]
) -> None:
    """Slots are never shared, freed slots are reused, the index agrees with the tables."""
    block = HeadBlock(0, SLOTS, M, [b"ct"] * M)  # bookkeeping only: ciphertexts are opaque
    layout = BlockLayout(secret, M, _decoys, [block])
    for op, template in ops:
        if op == "add" and template not in layout:
            layout.assign(template)
        elif op == "del" and template in layout:
            layout.remove(template)
        elif op == "refresh":
            block.apply_refresh(list(block.ciphertexts), dict(block.pending), set(block.clearing))
        assert not block.live.keys() & block.pending.keys()
        owners = {**block.live, **block.pending}
        assert len(owners) == len(layout)
        for slot, t in owners.items():
            assert layout.locate(t) == (0, slot)
        assert not block.live.keys() & block.clearing
        assert block.free_slot() == next(s for s in range(SLOTS) if s not in owners)


def test_relayout_moves_the_slot_table_and_persists_its_epoch() -> None:
    """Issue 12: ``apply_relayout`` moves live templates with their slots, draws a fresh layout
    salt (new copy tags), and both survive the store round trip; seeded blocks refuse."""
    from pura.gallery.packing import HeadBlock

    block = HeadBlock(3, 8, 2, [b"r0", b"r1"], live={0: 10, 5: 11})
    old_tag = block.copy_tag("ab" * 16)
    source = [2, 1, 0, 7, 4, 5, 6, 3]  # new slot s holds old slot source[s]
    block.apply_relayout([b"n0", b"n1"], source, salt=bytes(16))
    assert block.live == {2: 10, 5: 11} and block.epoch == 1 and block.version == 1
    assert block.copy_tag("ab" * 16) != old_tag
    back = HeadBlock.from_record(block.metadata_bytes(), block.ciphertexts)
    assert (back.live, back.layout_salt, back.epoch) == (block.live, block.layout_salt, 1)
    seeded = HeadBlock(4, 8, 2, [b"r0", b"r1"], seeded=True)
    with pytest.raises(ConfigError, match="seeded"):
        seeded.apply_relayout([b"n0", b"n1"], source, bytes(16))
