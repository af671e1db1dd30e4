"""One-round argmin (all pairs, under A's shuffle): equal to plaintext including ties and the
extremes, what B sees, the tournament/one-round switch, and bad requests."""

from __future__ import annotations

import random
from dataclasses import replace

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pura.crypto.paillier import KeyShare, PublicKey, RandomnessPool, decrypt_with_shares
from pura.engine.local import SERIAL
from pura.errors import ProtocolError
from pura.protocols.messages import ArgminReply, ArgminRequest
from pura.protocols.secure_min import (
    CompareLayout,
    _open_slots,
    _pack_and_open,
    finish_argmin,
    helper_argmin,
    one_round_argmin,
    one_round_cts,
    pairs,
    prefer_one_round,
    start_argmin,
)

Keys = tuple[PublicKey, KeyShare, KeyShare]
DIST_BITS = 32
PROPS = settings(max_examples=12, deadline=None,
                 suppress_health_check=[HealthCheck.function_scoped_fixture])


def _layout(pk: PublicKey) -> CompareLayout:
    return CompareLayout.for_key(pk, DIST_BITS)


def _run(keys: Keys, ds: list[int], seed: int) -> tuple[int, int]:
    pk, s1, s2 = keys
    pool_a = RandomnessPool(pk, rng=random.Random(seed))
    pool_b = RandomnessPool(pk, rng=random.Random(seed + 1))
    layout = _layout(pk)
    cts = [pk.encrypt(d, pool_a) for d in ds]
    d_min, i_min = one_round_argmin(cts, layout, s1, pool_a,
                                    lambda r: helper_argmin(r, layout, s2, pool_b),
                                    rng=random.Random(seed + 2))
    return decrypt_with_shares(s1, s2, d_min), decrypt_with_shares(s1, s2, i_min)


@PROPS
@given(ds=st.lists(st.integers(min_value=0, max_value=(1 << DIST_BITS) - 1), min_size=1,
                   max_size=10), seed=st.integers(min_value=0, max_value=1 << 30))
def test_one_round_argmin_equals_plaintext(paillier_fast_keys: Keys, ds: list[int],
                                           seed: int) -> None:
    d, i = _run(paillier_fast_keys, ds, seed)
    assert d == min(ds) and i == ds.index(min(ds))  # ties go to the first position


def test_extremes_and_ties(paillier_fast_keys: Keys) -> None:
    top = (1 << DIST_BITS) - 1
    assert _run(paillier_fast_keys, [top, 0, top, 0], 1) == (0, 1)
    assert _run(paillier_fast_keys, [5, 5, 5], 2) == (5, 0)
    assert _run(paillier_fast_keys, [top], 3) == (top, 0)
    assert _run(paillier_fast_keys, [top, top - 1], 4) == (top - 1, 1)


def test_b_sees_masked_distances_and_unflipped_ranking_only(paillier_fast_keys: Keys) -> None:
    """B's decrypted slots: one signed comparison per pair (sign = true order, magnitude
    blinded by r1 ∈ [2^κ, 2^(κ+1))), then each distance plus a κ-bit-wider mask."""
    pk, s1, s2 = paillier_fast_keys
    layout = _layout(pk)
    pool = RandomnessPool(pk, rng=random.Random(5))
    ds = [900, 100, 400, 100_000]
    state, req = start_argmin([pk.encrypt(d, pool) for d in ds], layout, s1, pool,
                              rng=random.Random(6))
    slots = _open_slots(req.packed, req.partials, len(pairs(4)) + 4, layout, s2, SERIAL)
    for (a, b), w in zip(pairs(4), slots[:len(pairs(4))], strict=True):
        e = 2 * (ds[a] - ds[b]) - 1
        value = w - layout.w_offset
        assert (value > 0) == (e > 0)
        assert abs(e) << layout.kappa <= abs(value) < (abs(e) + 1) << (layout.kappa + 1)
    for d, y, rho in zip(ds, slots[len(pairs(4)):], state.rho, strict=True):
        assert y == d + rho and rho < 1 << (layout.mask_bits - 1)
    assert "rho" not in repr(state) and str(state.rho[0]) not in repr(state)


def test_b_refuses_inconsistent_or_mismatched_requests(paillier_fast_keys: Keys) -> None:
    pk, s1, s2 = paillier_fast_keys
    layout = _layout(pk)
    pool = RandomnessPool(pk, rng=random.Random(7))
    cts = [pk.encrypt(d, pool) for d in (3, 1, 2)]
    state, req = start_argmin(cts, layout, s1, pool, rng=random.Random(8))
    assert ArgminRequest.from_bytes(pk, req.to_bytes()) == req
    reply = helper_argmin(req, layout, s2, pool)
    assert ArgminReply.from_bytes(pk, reply.to_bytes()) == reply
    too_many = 2 * layout.slots_per_ct  # needs more ciphertexts than the request carries
    for bad in (replace(req, slot_bits=req.slot_bits - 1), replace(req, n_comparisons=too_many),
                replace(req, n_comparisons=0)):
        with pytest.raises(ProtocolError):
            helper_argmin(bad, layout, s2, pool)
    with pytest.raises(ProtocolError):
        finish_argmin(state, replace(reply, onehot=reply.onehot[:2]))
    # A cycle — pairs (0,1), (0,2), (1,2): 1 beats 0, 0 beats 2, 2 beats 1 — leaves no
    # undefeated position: B refuses instead of guessing.
    w_b_wins, w_a_wins = pk.encrypt(5, pool), pk.encrypt(-5, pool)
    packed, partials = _pack_and_open([w_b_wins, w_a_wins, w_b_wins, *cts],
                                      [layout.w_offset] * 3 + [0] * 3, layout, s1, pool, SERIAL)
    cyclic = ArgminRequest(layout.slot_bits, 3, tuple(packed), tuple(partials))
    with pytest.raises(ProtocolError, match="consistent"):
        helper_argmin(cyclic, layout, s2, pool)


def test_switch_between_one_round_and_tournament(paillier_fast_keys: Keys) -> None:
    layout = _layout(paillier_fast_keys[0])
    assert not prefer_one_round(layout, 1)
    assert prefer_one_round(layout, 8)  # 28 + 8 values: one ciphertext vs three rounds
    big = 64
    assert one_round_cts(layout, big) > (big - 1).bit_length()
    assert not prefer_one_round(layout, big)
