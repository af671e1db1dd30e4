"""Secure argmin tournament and threshold: equal to plaintext, B's bits are flipped, bad input."""

from __future__ import annotations

import random
from dataclasses import replace

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pura.crypto.paillier import (
    KeyShare,
    PublicKey,
    RandomnessPool,
    combine,
    decrypt_with_shares,
)
from pura.errors import ParameterError, ProtocolError
from pura.protocols.messages import CompareReply
from pura.protocols.secure_min import (
    ArgminA,
    CompareLayout,
    finish_threshold,
    helper_compare,
    helper_threshold,
    secure_argmin,
    start_threshold,
)

Keys = tuple[PublicKey, KeyShare, KeyShare]
DIST_BITS = 32
PROPS = settings(max_examples=12, deadline=None,
                 suppress_health_check=[HealthCheck.function_scoped_fixture])


def _layout(pk: PublicKey) -> CompareLayout:
    return CompareLayout.for_key(pk, DIST_BITS)


def _argmin(keys: Keys, ds: list[int], seed: int) -> tuple[int, int]:
    pk, s1, s2 = keys
    rng = random.Random(seed)
    pool_a, pool_b = RandomnessPool(pk, rng=rng), RandomnessPool(pk, rng=random.Random(seed + 1))
    layout = _layout(pk)
    entries = [(pk.encrypt(d, pool_a), pk.encrypt(i, pool_a)) for i, d in enumerate(ds)]
    d_min, i_min = secure_argmin(entries, layout, s1, pool_a,
                                 lambda r: helper_compare(r, layout, s2, pool_b), rng=rng)
    return decrypt_with_shares(s1, s2, d_min), decrypt_with_shares(s1, s2, i_min)


@PROPS
@given(ds=st.lists(st.integers(min_value=0, max_value=(1 << DIST_BITS) - 1), min_size=1,
                   max_size=9), seed=st.integers(min_value=0, max_value=1 << 30))
def test_argmin_equals_plaintext(paillier_fast_keys: Keys, ds: list[int], seed: int) -> None:
    d, i = _argmin(paillier_fast_keys, ds, seed)
    assert d == min(ds) and ds[i] == d


def test_argmin_extremes_and_ties(paillier_fast_keys: Keys) -> None:
    top = (1 << DIST_BITS) - 1
    for ds in ([top, 0], [0, top], [5, 5, 5], [top, top - 1, top], [7]):
        d, i = _argmin(paillier_fast_keys, ds, seed=len(ds))
        assert d == min(ds) and ds[i] == d


def test_rounds_and_request_sizes(paillier_fast_keys: Keys) -> None:
    pk, s1, s2 = paillier_fast_keys
    layout = _layout(pk)
    pool = RandomnessPool(pk, rng=random.Random(1))
    entries = [(pk.encrypt(d, pool), pk.encrypt(i, pool)) for i, d in enumerate(range(16, 0, -1))]
    t = ArgminA(entries, layout, s1, pool)
    sizes = []
    while not t.done:
        req = t.start_round()
        sizes.append((req.n_comparisons, len(req.packed)))
        with pytest.raises(ProtocolError):
            t.start_round()  # one round at a time
        t.finish_round(helper_compare(req, layout, s2, pool))
    assert sizes == [(8, 1), (4, 1), (2, 1), (1, 1)]  # all comparisons of a round in one ct
    assert decrypt_with_shares(s1, s2, t.result[1]) == 15


def test_b_sees_flipped_bits_only(paillier_fast_keys: Keys) -> None:
    """For the same comparison B's sign bit varies with A's flip; masked values vary too."""
    pk, s1, s2 = paillier_fast_keys
    layout = _layout(pk)
    pool = RandomnessPool(pk, rng=random.Random(2))
    a, b = (pk.encrypt(10, pool), pk.encrypt(0, pool)), (pk.encrypt(3, pool), pk.encrypt(1, pool))
    bits, ys = set(), set()
    for seed in range(12):
        t = ArgminA([a, b], layout, s1, pool, rng=random.Random(seed))
        req = t.start_round()
        plain = combine(req.partials[0], s2.partial_decrypt(req.packed[0]))
        w, y_d, _ = layout.packed.unpack_raw(plain, 3)
        bits.add(w > layout.w_offset)
        ys.add(y_d)
    assert bits == {True, False}
    assert len(ys) == 12


def test_b_rejects_malformed_rounds(paillier_fast_keys: Keys) -> None:
    pk, s1, s2 = paillier_fast_keys
    layout = _layout(pk)
    pool = RandomnessPool(pk, rng=random.Random(3))
    entries = [(pk.encrypt(d, pool), pk.encrypt(d, pool)) for d in (1, 2, 3)]
    t = ArgminA(entries, layout, s1, pool)
    req = t.start_round()
    for bad in (replace(req, slot_bits=req.slot_bits + 1), replace(req, n_comparisons=0),
                replace(req, packed=req.packed * 2)):
        with pytest.raises(ProtocolError):
            helper_compare(bad, layout, s2, pool)
    zero = pk.encrypt(layout.w_offset, pool)  # w = 0 is not a valid blinded comparison
    with pytest.raises(ProtocolError):
        helper_compare(replace(req, packed=(zero,), partials=(s1.partial_decrypt(zero),)),
                       layout, s2, pool)
    reply = helper_compare(req, layout, s2, pool)
    with pytest.raises(ProtocolError):
        t.finish_round(CompareReply(reply.bits[:0], reply.sel_dist[:0], reply.sel_index[:0]))
    with pytest.raises(ProtocolError):
        ArgminA([], layout, s1, pool)
    with pytest.raises(ProtocolError):
        _ = t.result


def _threshold(keys: Keys, d: int, tau: int, seed: int) -> tuple[bool, int | None]:
    pk, s1, s2 = keys
    layout = _layout(pk)
    rng = random.Random(seed)
    pool = RandomnessPool(pk, rng=rng)
    state, req = start_threshold(pk.encrypt(d, pool), pk.encrypt(42, pool), tau, layout, s1,
                                 pool, rng, k=64)
    decision = finish_threshold(state, helper_threshold(req, layout, s2), s1)
    return decision.matched, decision.index


@PROPS
@given(d=st.integers(min_value=0, max_value=(1 << DIST_BITS) - 1),
       tau=st.integers(min_value=0, max_value=(1 << DIST_BITS) - 1),
       seed=st.integers(min_value=0, max_value=1 << 30))
def test_threshold_equals_plaintext(paillier_fast_keys: Keys, d: int, tau: int, seed: int) -> None:
    matched, index = _threshold(paillier_fast_keys, d, tau, seed)
    assert matched == (d <= tau)
    assert index == (42 if matched else None)


def test_threshold_boundaries(paillier_fast_keys: Keys) -> None:
    for seed in range(4):  # both flip values are exercised
        assert _threshold(paillier_fast_keys, 1000, 1000, seed) == (True, 42)
        assert _threshold(paillier_fast_keys, 1001, 1000, seed) == (False, None)
    pk, s1, _ = paillier_fast_keys
    pool = RandomnessPool(pk, rng=random.Random(0))
    with pytest.raises(ParameterError):
        start_threshold(pk.encrypt(0, pool), pk.encrypt(0, pool), 1 << DIST_BITS,
                        _layout(pk), s1, pool, k=1)


def test_no_match_does_not_open_the_index(paillier_fast_keys: Keys) -> None:
    """On no match, B's partial decryption is of A's random filler below k, never the index."""
    pk, s1, s2 = paillier_fast_keys
    layout = _layout(pk)
    fillers = set()
    for seed in range(8):
        rng = random.Random(seed)
        pool = RandomnessPool(pk, rng=rng)
        state, req = start_threshold(pk.encrypt(500, pool), pk.encrypt(7, pool), 10, layout, s1,
                                     pool, rng, k=8, labels=[7, 6, 5, 4, 3, 2, 1, 0])
        reply = helper_threshold(req, layout, s2)
        opened = combine(s1.partial_decrypt(req.choices[reply.bit]), reply.partial)
        assert 0 <= opened < 8 and req.choices[reply.bit] != req.choices[reply.bit ^ 1]
        fillers.add(opened)
        assert finish_threshold(state, reply, s1).matched is False
    assert len(fillers) > 1  # a uniform filler, not a constant B could recognise


def test_match_maps_the_opened_label_back(paillier_fast_keys: Keys) -> None:
    """A match opens σ(position); A maps it back, B saw only σ(position)."""
    pk, s1, s2 = paillier_fast_keys
    layout = _layout(pk)
    labels = [3, 0, 2, 1]
    for seed in range(4):
        rng = random.Random(seed)
        pool = RandomnessPool(pk, rng=rng)
        state, req = start_threshold(pk.encrypt(5, pool), pk.encrypt(labels[2], pool), 10,
                                     layout, s1, pool, rng, k=4, labels=labels)
        assert finish_threshold(state, helper_threshold(req, layout, s2), s1).index == 2
