"""Per-epoch secret re-layout of a block (issue 12): heads move, B sees only masked values."""

from __future__ import annotations

import random

import numpy as np
import pytest

from pura.crypto.ckks import CKKSContext, heads_from_rows
from pura.crypto.params import CKKS_8192
from pura.errors import ProtocolError, StoreError
from pura.gallery.packing import HeadBlock, copy_tag, encrypt_block
from pura.protocols.relayout import (
    RELAYOUT_MASK_BITS,
    RelayoutRequest,
    RelayoutResponse,
    answer_relayout,
    draw_source,
    finish_relayout,
    prepare_relayout,
)

M = 8
SLOTS = CKKS_8192.slot_count
#: One pass through B's decoding of values near 2^36 (ulp 2^-16): ~1e-5 rms measured.
ROUND_RMS = 3e-5
ROUND_TOL = 1e-4


def _heads(seed: int) -> np.ndarray:
    x = np.random.default_rng(seed).normal(size=(SLOTS, M))
    out: np.ndarray = x / np.linalg.norm(x, axis=1, keepdims=True)
    return out


def _decrypted(secret: CKKSContext, block: HeadBlock) -> np.ndarray:
    rows = np.stack([secret.decrypt(secret.ciphertext_from_bytes(c)) for c in block.ciphertexts])
    out: np.ndarray = heads_from_rows(rows)
    return out


def test_draw_source_permutes_within_residue_classes() -> None:
    rng = random.Random(1)
    a, b = draw_source(SLOTS, M, rng), draw_source(SLOTS, M, rng)
    for src in (a, b):
        assert sorted(src.tolist()) == list(range(SLOTS))
        assert np.all(src % M == np.arange(SLOTS) % M)
    # Two epochs' layouts agree on about 1/(SLOTS/M) of the slots, as two uniform shuffles do.
    assert np.mean(a == b) < 0.05
    assert np.mean(a == np.arange(SLOTS)) < 0.05


def test_relayout_moves_every_head_to_its_new_slot(secret: CKKSContext,
                                                    public: CKKSContext) -> None:
    heads = _heads(2)
    block = encrypt_block(public, 0, heads)
    block.live = {s: 1000 + s for s in range(0, SLOTS, 3)}
    request, state = prepare_relayout(public, block, random.Random(3))
    reply = answer_relayout(secret, RelayoutRequest.from_bytes(request.to_bytes()), M)
    old_live = dict(block.live)
    source = finish_relayout(public, block, state, RelayoutResponse.from_bytes(reply.to_bytes()))
    got = _decrypted(secret, block)
    err = got - heads[source]
    assert np.sqrt(np.mean(err**2)) < ROUND_RMS and np.abs(err).max() < ROUND_TOL
    assert block.live == {s: old_live[int(source[s])] for s in range(SLOTS)
                          if int(source[s]) in old_live}
    assert block.epoch == 1 and block.version == 1 and block.layout_salt
    # Queries still score the block: the ciphertexts are work-level rows again.
    assert all(public.ciphertext_from_bytes(c).level == "work" for c in block.ciphertexts)


def test_b_sees_only_masked_values(secret: CKKSContext, public: CKKSContext) -> None:
    heads = _heads(4)
    block = encrypt_block(public, 0, heads)
    request, _ = prepare_relayout(public, block, random.Random(5))
    seen = np.stack([secret.decrypt(secret.ciphertext_from_bytes(r)) for r in request.rows])
    truth = np.stack([secret.decrypt(secret.ciphertext_from_bytes(c)) for c in block.ciphertexts])
    assert np.all(np.abs(seen) <= 2.0**RELAYOUT_MASK_BITS + 2)
    assert np.median(np.abs(seen)) > 2.0**(RELAYOUT_MASK_BITS - 2)  # masks dominate
    assert abs(np.corrcoef(seen.ravel(), truth.ravel())[0, 1]) < 0.01
    assert b"slot" not in request.to_bytes()[:200]  # the header names no slots


def test_b_refuses_what_is_not_a_masked_block(secret: CKKSContext,
                                              public: CKKSContext) -> None:
    block = encrypt_block(public, 0, _heads(6))
    request, _ = prepare_relayout(public, block, random.Random(7))
    with pytest.raises(ProtocolError, match="rows"):
        answer_relayout(secret, request, M - 1)  # more rows than B's head_dim
    big = np.full(SLOTS, 2.0 ** (RELAYOUT_MASK_BITS + 2))
    huge = public.ciphertext_to_bytes(public.encrypt_vector(big))
    with pytest.raises(ProtocolError, match="range"):
        answer_relayout(secret, RelayoutRequest(request.request_id, request.key_id, (huge,)), M)
    with pytest.raises(ProtocolError, match="another CKKS key"):
        answer_relayout(secret, RelayoutRequest(request.request_id, b"\0" * 16, request.rows), M)


def test_relayout_needs_a_clean_block_and_matching_reply(secret: CKKSContext,
                                                         public: CKKSContext) -> None:
    block = encrypt_block(public, 0, _heads(8))
    block.pending[5] = 42
    with pytest.raises(ProtocolError, match="pending"):
        prepare_relayout(public, block, random.Random(9))
    del block.pending[5]
    request, state = prepare_relayout(public, block, random.Random(9))
    reply = answer_relayout(secret, request, M)
    block.version += 1  # the block changed meanwhile (a refresh)
    with pytest.raises(ProtocolError, match="changed"):
        finish_relayout(public, block, state, reply)
    block.version -= 1
    with pytest.raises(StoreError, match="pending"):
        block.pending[1] = 7
        block.apply_relayout(list(block.ciphertexts), np.arange(SLOTS), bytes(16))


def test_copy_tags_change_with_the_layout() -> None:
    assert copy_tag("ab" * 16, "") == "ab" * 16  # stores of earlier builds keep their tags
    one, two = copy_tag("ab" * 16, "01" * 16), copy_tag("ab" * 16, "02" * 16)
    assert one != two and len(one) == 32 and "ab" * 16 not in (one, two)
