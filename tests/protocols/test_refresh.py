"""B-assisted block refresh: inserts land, deletes erase, B only sees masked values."""

from __future__ import annotations

import random

import numpy as np
import pytest

from pura.crypto.ckks import CKKSContext, heads_from_rows
from pura.crypto.params import CKKS_8192
from pura.errors import NotFoundError, ProtocolError
from pura.gallery.packing import BlockLayout, HeadBlock
from pura.protocols.refresh import (
    RefreshRequest,
    RefreshResponse,
    answer_refresh,
    finish_refresh,
    prepare_refresh,
    refresh_block,
)

M = 4
SLOTS = CKKS_8192.slot_count
#: Written slots pass once through B's decoding of values near 2^40 (ulp 2^-12).
WRITE_TOL = 2e-3


class Decoys:
    """Deterministic decoy source that remembers what it produced."""

    def __init__(self) -> None:
        self.rng = np.random.default_rng(7)
        self.made: list[np.ndarray] = []

    def __call__(self, n: int) -> np.ndarray:
        x = self.rng.normal(size=(n, M))
        out: np.ndarray = x / np.linalg.norm(x, axis=1, keepdims=True)
        self.made.append(out)
        return out


def _values(secret: CKKSContext, block: HeadBlock) -> np.ndarray:
    """``(head_dim, slots)``, row ``i`` = coordinate ``i`` (the diagonal layout undone)."""
    rows = np.stack([secret.decrypt(secret.ciphertext_from_bytes(c)) for c in block.ciphertexts])
    out: np.ndarray = heads_from_rows(rows).T
    return out


def _enrol(public: CKKSContext, layout: BlockLayout, heads: dict[int, bytes], t: int) -> np.ndarray:
    y = np.random.default_rng(1000 + t).normal(size=M)
    y /= np.linalg.norm(y)
    heads[t] = public.ciphertext_to_bytes(public.encrypt_head(y))
    layout.assign(t)
    return y


def test_insert_then_delete(secret: CKKSContext, public: CKKSContext) -> None:
    decoys = Decoys()
    layout = BlockLayout(public, M, decoys)
    heads: dict[int, bytes] = {}
    truth = {t: _enrol(public, layout, heads, t) for t in range(3)}
    block = layout.blocks[0]
    before = _values(secret, block)
    refresh_block(public, secret, block, heads, decoys, random.Random(1))
    after = _values(secret, block)
    assert block.live == {0: 0, 1: 1, 2: 2} and not block.needs_refresh
    for slot, t in block.live.items():
        assert np.max(np.abs(after[:, slot] - truth[t])) < WRITE_TOL
    assert np.max(np.abs(after[:, 3:] - before[:, 3:])) < 1e-4  # untouched decoys kept

    layout.remove(1)
    refresh_block(public, secret, block, heads, decoys, random.Random(2))
    erased = _values(secret, block)[:, 1]
    assert np.min(np.abs(erased - truth[1])) > 1e-2  # the deleted head is gone ...
    assert np.max(np.abs(erased - decoys.made[-1][0])) < WRITE_TOL  # ... replaced by a decoy
    assert block.template_at(1) is None and block.version == 2


def test_batched_insert_and_slot_reuse(secret: CKKSContext, public: CKKSContext) -> None:
    decoys = Decoys()
    layout = BlockLayout(public, M, decoys)
    heads: dict[int, bytes] = {}
    truth = {t: _enrol(public, layout, heads, t) for t in range(20)}
    block = layout.blocks[0]
    refresh_block(public, secret, block, heads, decoys, random.Random(3))
    layout.remove(5)
    truth[50] = _enrol(public, layout, heads, 50)  # reuses slot 5 before any refresh
    assert layout.locate(50) == (0, 5)
    refresh_block(public, secret, block, heads, decoys, random.Random(4))
    values = _values(secret, block)
    assert block.live[5] == 50 and 5 not in block.clearing
    for slot, t in block.live.items():
        assert np.max(np.abs(values[:, slot] - truth[t])) < WRITE_TOL


def test_b_sees_only_masked_values(secret: CKKSContext, public: CKKSContext) -> None:
    decoys = Decoys()
    layout = BlockLayout(public, M, decoys)
    heads: dict[int, bytes] = {}
    _enrol(public, layout, heads, 0)
    request, _ = prepare_refresh(public, layout.blocks[0], heads, decoys, random.Random(5))
    seen = np.concatenate(
        [secret.decrypt(secret.ciphertext_from_bytes(c)) for c in (*request.block, *request.heads)]
    )
    # Real values are ≤ 1 in magnitude; what B decrypts is spread over ±2^40.
    assert np.mean(np.abs(seen) < 1e3) < 1e-6
    assert np.std(seen) > 0.4 * 2.0**40


def test_messages_round_trip_and_reject_garbage(secret: CKKSContext, public: CKKSContext) -> None:
    decoys = Decoys()
    layout = BlockLayout(public, M, decoys)
    heads: dict[int, bytes] = {}
    _enrol(public, layout, heads, 0)
    request, state = prepare_refresh(public, layout.blocks[0], heads, decoys, random.Random(6))
    assert RefreshRequest.from_bytes(request.to_bytes()) == request
    response = answer_refresh(secret, request)
    assert RefreshResponse.from_bytes(response.to_bytes()) == response
    for bad in (b"", b"PURA-RFQ" + b"\x00" * 3, request.to_bytes()[:-10], b"x" * 100):
        with pytest.raises(ProtocolError):
            RefreshRequest.from_bytes(bad)
    wrong = RefreshResponse(b"\x00" * 16, response.deltas)
    with pytest.raises(ProtocolError):
        finish_refresh(public, layout.blocks[0], state, wrong)


def test_b_rejects_malformed_requests(secret: CKKSContext, public: CKKSContext) -> None:
    decoys = Decoys()
    layout = BlockLayout(public, M, decoys)
    heads: dict[int, bytes] = {}
    _enrol(public, layout, heads, 0)
    request, _ = prepare_refresh(public, layout.blocks[0], heads, decoys, random.Random(8))
    dup = RefreshRequest(request.request_id, request.key_id, request.block, request.heads,
                         request.write_slots, (0,))
    with pytest.raises(ProtocolError):
        answer_refresh(secret, dup)
    out_of_range = RefreshRequest(request.request_id, request.key_id, request.block,
                                  request.heads, (SLOTS,), ())
    with pytest.raises(ProtocolError):
        answer_refresh(secret, out_of_range)
    other_key = RefreshRequest(request.request_id, b"\x01" * 16, request.block, request.heads,
                               request.write_slots, ())
    with pytest.raises(ProtocolError):
        answer_refresh(secret, other_key)


def test_block_changed_during_refresh_and_missing_head(
    secret: CKKSContext, public: CKKSContext
) -> None:
    decoys = Decoys()
    layout = BlockLayout(public, M, decoys)
    heads: dict[int, bytes] = {}
    _enrol(public, layout, heads, 0)
    block = layout.blocks[0]
    request, state = prepare_refresh(public, block, heads, decoys, random.Random(9))
    response = answer_refresh(secret, request)
    refresh_block(public, secret, block, heads, decoys, random.Random(10))  # interleaved
    with pytest.raises(ProtocolError, match="changed"):
        finish_refresh(public, block, state, response)
    layout.assign(77)
    with pytest.raises(NotFoundError):
        prepare_refresh(public, block, heads, decoys, random.Random(11))


def test_unchecked_heads_carry_no_comparisons_and_checked_ones_still_do(
    secret: CKKSContext, public: CKKSContext
) -> None:
    """Heads B derived (sealed uploads) are placed without a range check; the request names the
    checked heads, B answers exactly their comparisons, and a bad checked head still fails."""
    decoys = Decoys()
    layout = BlockLayout(public, M, decoys)
    heads: dict[int, bytes] = {}
    y0 = _enrol(public, layout, heads, 0)
    y1 = _enrol(public, layout, heads, 1)
    request, state = prepare_refresh(public, layout.blocks[0], heads, decoys, random.Random(9),
                                     unchecked=frozenset({1}))
    assert request.checked == (0,) and len(request.checks) == 3
    assert RefreshRequest.from_bytes(request.to_bytes()) == request
    response = answer_refresh(secret, request)
    assert len(response.bits) == 2 * M + 1
    finish_refresh(public, layout.blocks[0], state, response)
    got = _values(secret, layout.blocks[0])
    for slot, y in ((layout.locate(0)[1], y0), (layout.locate(1)[1], y1)):
        assert np.max(np.abs(got[:, slot] - y)) < WRITE_TOL
    lying = RefreshRequest(request.request_id, request.key_id, request.block, request.heads,
                           request.write_slots, request.clear_slots, request.checks, (0, 5))
    with pytest.raises(ProtocolError):
        answer_refresh(secret, lying)
