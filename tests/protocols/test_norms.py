"""Server-computed norms: bounds (KAT + property on real quantisation), both rounds against
plaintext, B's slot checks, per-item rejection, re-randomisation, messages and bad inputs."""

from __future__ import annotations

import random
from dataclasses import replace

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pura.crypto.encoding import l2_normalize, quantize
from pura.crypto.paillier import (
    KeyShare,
    PublicKey,
    RandomnessPool,
    decrypt_with_shares,
    generate_keypair,
)
from pura.crypto.params import PAILLIER_2048_FAST
from pura.errors import EmbeddingRangeError, KeyMismatchError, ParameterError, ProtocolError
from pura.protocols.enroll import TemplateLayout, encrypt_query, encrypt_template
from pura.protocols.messages import NormCheckReply, NormCheckRequest, NormReply, NormRequest
from pura.protocols.norms import (
    NormBounds,
    NormLayout,
    NormServerB,
    admit_query,
    admit_templates,
    finish_norm_check,
    finish_norms,
    helper_norm_check,
    helper_norms,
    start_norm_check,
    start_norms,
)

Keys = tuple[PublicKey, KeyShare, KeyShare]
S = 11
DIM = 40  # one full ciphertext (38 slots at 2048 bits) plus a 2-slot tail: both code paths
PROPS = settings(max_examples=10, deadline=None,
                 suppress_health_check=[HealthCheck.function_scoped_fixture])


def _unit_q(rng: np.random.Generator, dim: int = DIM, s: int = S) -> list[int]:
    v = l2_normalize(rng.normal(size=dim), dim=dim)
    return [int(c) for c in quantize(v, s)]


class _Recorder:
    """B, plus a record of its replies (to check what A derived from them)."""

    def __init__(self, b: NormServerB) -> None:
        self.b = b
        self.replies: list[NormReply] = []

    def norm_square(self, request: NormRequest) -> NormReply:
        reply = NormReply.from_bytes(self.b.share.public_key,
                                     self.b.norm_square(NormRequest.from_bytes(
                                         self.b.share.public_key, request.to_bytes())).to_bytes())
        self.replies.append(reply)
        return reply

    def norm_check(self, request: NormCheckRequest) -> NormCheckReply:
        key = self.b.share.public_key
        raw = self.b.norm_check(NormCheckRequest.from_bytes(key, request.to_bytes())).to_bytes()
        return NormCheckReply.from_bytes(key, raw)


def _setup(keys: Keys, seed: int, dim: int = DIM) -> tuple[NormLayout, RandomnessPool, _Recorder]:
    pk, _, s2 = keys
    layout = NormLayout.for_key(pk, TemplateLayout.for_key(pk, dim, S))
    b = NormServerB(s2, layout, RandomnessPool(pk, rng=random.Random(seed + 1)))
    return layout, RandomnessPool(pk, rng=random.Random(seed)), _Recorder(b)


# -- bounds -----------------------------------------------------------------------------------


def test_bounds_known_answer() -> None:
    b = NormBounds.for_encoding(128, 11)
    # 4^11 = 4194304; isqrt(128·4^11) + 1 = 23171; d/4 = 32; slack 1
    assert (b.low, b.high, b.unit) == (4194304 - 23171 - 1, 4194304 + 23171 + 32 + 1, 4194304)
    assert 0.0055 < b.epsilon < 0.0056
    assert b.contains(b.low) and b.contains(b.high)
    assert not b.contains(b.low - 1) and not b.contains(b.high + 1)
    with pytest.raises(ParameterError):
        NormBounds.for_encoding(128, 3)  # 2^3 < √128: rounding noise could cancel the norm
    with pytest.raises(ParameterError):
        NormBounds(10, 5, 7)


@settings(max_examples=200, deadline=None)
@given(dim=st.integers(min_value=1, max_value=160), s=st.integers(min_value=6, max_value=20),
       seed=st.integers(min_value=0, max_value=1 << 30),
       kind=st.sampled_from(["normal", "sparse", "uniform", "equal"]))
def test_every_quantised_unit_vector_is_inside(dim: int, s: int, seed: int, kind: str) -> None:
    """The real encoder's output (l2_normalize → quantize) always passes, including vectors
    whose rounding errors all point the same way ("equal": every coordinate 1/√d)."""
    if (1 << s) <= int(dim ** 0.5) + 2:
        return
    rng = np.random.default_rng(seed)
    if kind == "normal":
        raw = rng.normal(size=dim)
    elif kind == "sparse":
        raw = rng.normal(size=dim) * (rng.random(dim) < 0.1)
    elif kind == "uniform":
        raw = rng.uniform(-1.0, 1.0, size=dim)
    else:
        raw = np.ones(dim)
    if not np.any(raw):
        raw[0] = 1.0
    q = quantize(l2_normalize(raw, dim=dim), s)
    assert NormBounds.for_encoding(dim, s).contains(int((q.astype(object) ** 2).sum()))


def test_scaled_vectors_fall_outside() -> None:
    """Scaling by 1 ± 1 % (twice ε) always leaves the interval: the bound is tight enough to
    stop the scaled-query / scaled-template attacks."""
    rng = np.random.default_rng(3)
    b = NormBounds.for_encoding(128, S)
    for _ in range(50):
        v = l2_normalize(rng.normal(size=128))
        for f in (0.99, 1.01):
            q = np.rint(v * f * (1 << S)).astype(np.int64)
            assert not b.contains(int((q * q).sum()))


# -- round 1 + round 2 against plaintext ---------------------------------------------------


def test_admit_query_equals_plaintext_and_hides_b_randomness(paillier_fast_keys: Keys) -> None:
    pk, s1, s2 = paillier_fast_keys
    layout, pool, helper = _setup(paillier_fast_keys, 1)
    x = _unit_q(np.random.default_rng(1))
    q = encrypt_query(x, layout.template, pk, pool)
    got = admit_query(q.packed, layout, s1, pool, helper, rng=random.Random(2))
    assert decrypt_with_shares(s1, s2, got.norm) == sum(v * v for v in x)
    assert [decrypt_with_shares(s1, s2, c, signed=True) for c in got.dims] == x
    # A's [u_i] are not B's [v_i] shifted by a public constant: B could otherwise divide out
    # (1+N)^(-c_i), learn A's offset c_i and hence u_i = v_i - c_i.
    (reply,) = helper.replies
    for u_ct, v_ct in zip(got.dims[:4], reply.dims[:4], strict=True):
        c_i = decrypt_with_shares(s1, s2, v_ct) - decrypt_with_shares(s1, s2, u_ct, signed=True)
        assert u_ct != v_ct.add_plain(-c_i)
    assert len(q.packed) == layout.template.cts_per_template < len(got.dims)
    assert "dims=40" in repr(got)


def test_admit_templates_canonical_and_per_item_errors(paillier_fast_keys: Keys) -> None:
    pk, s1, s2 = paillier_fast_keys
    layout, pool, helper = _setup(paillier_fast_keys, 4)
    t = layout.template
    rng = np.random.default_rng(4)
    good = [_unit_q(rng) for _ in range(2)]
    long = [round(v * 1.02) for v in _unit_q(rng)]  # |y| = 1.02: norm too large
    honest = [encrypt_template(y, t, pk, pool) for y in (*good, long)]
    slot_high = list(honest[0].packed)  # an out-of-range slot content (≥ 2^(s+1), masked)
    slot_high[0] = pk.encrypt(t.packed.pack_raw([(1 << t.mask_bits) + 2 * t.bound]), pool)
    tail_junk = list(honest[1].packed)  # something above the tail's last used slot
    tail_junk[-1] = pk.encrypt(t.packed.pack_raw([t.bound] * (t.tail + 1)), pool)
    wrapped = list(honest[1].packed)  # a "negative" packing wraps mod N
    wrapped[0] = pk.encrypt(-1, pool)
    uploads = [honest[0].packed, slot_high, honest[1].packed, tail_junk, honest[2].packed,
               wrapped]
    out = admit_templates(uploads, layout, s1, pool, helper, rng=random.Random(5))
    assert [type(r).__name__ for r in out] == [
        "AdmittedTemplate", "EmbeddingRangeError", "AdmittedTemplate", "EmbeddingRangeError",
        "EmbeddingRangeError", "EmbeddingRangeError"]
    assert "squared norm lies outside" in str(out[4]) and "coordinate" in str(out[1])
    assert str(out[1]).startswith("template ")
    for r, y in ((out[0], good[0]), (out[2], good[1])):
        assert not isinstance(r, EmbeddingRangeError)
        assert decrypt_with_shares(s1, s2, r.norm) == sum(v * v for v in y)
        pts = [decrypt_with_shares(s1, s2, c) for c in r.packed]
        assert [v for p, n in zip(pts, layout.slot_counts(), strict=True)
                for v in t.packed.unpack(p, n)] == y
        assert pts[-1] < 1 << (t.tail * t.slot_bits)  # canonical: nothing above the tail


def test_query_coordinates_outside_the_slot_range_are_rejected(paillier_fast_keys: Keys) -> None:
    pk, s1, _ = paillier_fast_keys
    layout, pool, helper = _setup(paillier_fast_keys, 6)
    t = layout.template
    x = _unit_q(np.random.default_rng(6))
    honest = [v + t.bound for v in x]
    s, last = t.slots_per_ct, t.cts_per_template - 1

    def packed(contents: list[int]) -> list[int]:
        return [t.packed.pack_raw(contents[i:i + s]) for i in range(0, t.dim, s)]

    too_big = list(honest)
    too_big[3] = (1 << t.mask_bits) + 2 * t.bound  # a slot no honest client can fill
    beyond = packed(honest)
    beyond[last] += 1 << (t.slot_bits * (t.dim - last * s))  # a value above the last used slot
    for plaintexts in (packed(too_big), beyond):
        bad = [pk.encrypt(p, pool) for p in plaintexts]
        with pytest.raises(EmbeddingRangeError, match=r"^query .*coordinate"):
            admit_query(bad, layout, s1, pool, helper)
    # N − 1 ("−1") wraps to mask − 1 once A adds its mask: in range slot by slot, but the
    # decoded vector is far from unit length, so the norm check refuses it
    wrapped = [pk.encrypt(p, pool) for p in packed(honest)]
    wrapped[0] = pk.encrypt(-1, pool)
    with pytest.raises(EmbeddingRangeError, match=r"^query .*squared norm"):
        admit_query(wrapped, layout, s1, pool, helper)


def test_query_norm_outside_bounds_is_rejected(paillier_fast_keys: Keys) -> None:
    pk, s1, _ = paillier_fast_keys
    layout, pool, helper = _setup(paillier_fast_keys, 7)
    x = _unit_q(np.random.default_rng(7))
    for scaled in ([v // 2 for v in x], [0] * DIM, [1 << S] * DIM):
        q = encrypt_query(scaled, layout.template, pk, pool)
        with pytest.raises(EmbeddingRangeError, match="squared norm lies outside"):
            admit_query(q.packed, layout, s1, pool, helper)


@PROPS
@given(delta=st.integers(min_value=-3, max_value=3), upper=st.booleans(),
       seed=st.integers(min_value=0, max_value=1 << 30))
def test_norm_check_at_the_edges(paillier_fast_keys: Keys, delta: int, upper: bool,
                                 seed: int) -> None:
    pk, s1, s2 = paillier_fast_keys
    layout, pool, _ = _setup(paillier_fast_keys, seed)
    b = layout.bounds
    n = (b.high if upper else b.low) + delta
    state, req = start_norm_check([pk.encrypt(n, pool)], layout, s1, pool,
                                  rng=random.Random(seed))
    assert finish_norm_check(state, helper_norm_check(req, layout, s2)) == [b.contains(n)]


def test_norm_check_batch_extremes_and_flipped_bits(paillier_fast_keys: Keys) -> None:
    pk, s1, s2 = paillier_fast_keys
    layout, pool, _ = _setup(paillier_fast_keys, 8)
    top = (1 << layout.compare.dist_bits) - 1  # the largest norm a checked vector can have
    norms = [0, layout.bounds.unit, top] + [layout.bounds.unit] * 8
    state, req = start_norm_check([pk.encrypt(v, pool) for v in norms], layout, s1, pool,
                                  rng=random.Random(8))
    reply = helper_norm_check(req, layout, s2)
    assert finish_norm_check(state, reply) == [False, True, False] + [True] * 8
    # every comparison of an in-range norm is true, yet B's bits are flipped by A: B sees both
    assert set(reply.bits[6:]) == {0, 1}
    assert "comparisons=22" in repr(state) and "flips" not in repr(state)


# -- messages and bad inputs ------------------------------------------------------------------


def test_messages_round_trip_and_reject_garbage(paillier_fast_keys: Keys) -> None:
    pk, s1, s2 = paillier_fast_keys
    layout, pool, helper = _setup(paillier_fast_keys, 9)
    x = _unit_q(np.random.default_rng(9))
    state, req = start_norms([encrypt_query(x, layout.template, pk, pool).packed],
                             layout, s1, pool, repack=False, rng=random.Random(9))
    assert NormRequest.from_bytes(pk, req.to_bytes()) == req
    reply = helper_norms(req, layout, s2, pool)
    assert NormReply.from_bytes(pk, reply.to_bytes()) == reply
    _, c_req = start_norm_check([reply.sums[0]], layout, s1, pool)
    assert NormCheckRequest.from_bytes(pk, c_req.to_bytes()) == c_req
    c_reply = helper_norm_check(c_req, layout, s2)
    assert NormCheckReply.from_bytes(pk, c_reply.to_bytes()) == c_reply
    data = req.to_bytes()
    with pytest.raises(ProtocolError):
        NormRequest.from_bytes(pk, data[:-5])
    with pytest.raises(ProtocolError):
        NormReply.from_bytes(pk, data)  # wrong kind
    with pytest.raises(ProtocolError, match="repack"):
        NormRequest.from_bytes(pk, data[:24] + (2).to_bytes(4, "big") + data[28:])
    bad_bit = NormCheckReply(pk, (0, 1)).to_bytes()[:-1] + b"\x02"
    with pytest.raises(ProtocolError, match="bit"):
        NormCheckReply.from_bytes(pk, bad_bit)
    with pytest.raises(ProtocolError):
        NormCheckReply.from_bytes(pk, NormCheckReply(pk, (0,)).to_bytes()[:-1])
    with pytest.raises(ProtocolError):
        NormRequest(1, 1, 1, False, (), ()).to_bytes()
    assert "masks" not in repr(state) and "vectors=1" in repr(state)
    assert "NormServerB" in repr(helper.b)


def test_wrong_key_is_refused(paillier_fast_keys: Keys) -> None:
    pk, s1, _ = paillier_fast_keys
    other = generate_keypair(PAILLIER_2048_FAST, random.Random(99))[0]
    layout, pool, _ = _setup(paillier_fast_keys, 10)
    foreign = [other.encrypt(1, RandomnessPool(other))] * layout.template.cts_per_template
    with pytest.raises(KeyMismatchError):
        start_norms([foreign], layout, s1, pool, repack=True)
    req_bytes = NormCheckReply(pk, (1,)).to_bytes()
    with pytest.raises(KeyMismatchError):
        NormCheckReply.from_bytes(other, req_bytes)


def test_b_and_a_refuse_malformed_rounds(paillier_fast_keys: Keys) -> None:
    pk, s1, s2 = paillier_fast_keys
    layout, pool, _ = _setup(paillier_fast_keys, 11)
    t = layout.template
    y = _unit_q(np.random.default_rng(11))
    packed = encrypt_template(y, t, pk, pool).packed
    state, req = start_norms([packed, packed], layout, s1, pool, repack=True)
    with pytest.raises(ProtocolError, match="layout"):
        helper_norms(replace(req, slot_bits=req.slot_bits - 1), layout, s2, pool)
    with pytest.raises(ProtocolError, match="vectors"):
        helper_norms(replace(req, n_vectors=3), layout, s2, pool)
    with pytest.raises(ProtocolError, match="vectors"):
        helper_norms(replace(req, partials=req.partials[:-1]), layout, s2, pool)
    reply = helper_norms(req, layout, s2, pool)
    for broken in (replace(reply, dims=reply.dims[:-1]), replace(reply, valid=(1,)),
                   replace(reply, packed=())):
        with pytest.raises(ProtocolError, match="norm reply"):
            finish_norms(state, broken, layout, pool)
    with pytest.raises(ProtocolError):
        start_norms([packed[:-1]], layout, s1, pool, repack=True)
    with pytest.raises(ProtocolError):
        start_norms([], layout, s1, pool, repack=True)
    c_state, c_req = start_norm_check([pk.encrypt(5, pool)] * 2, layout, s1, pool)
    with pytest.raises(ProtocolError):
        helper_norm_check(replace(c_req, n_comparisons=3), layout, s2)
    with pytest.raises(ProtocolError):
        helper_norm_check(replace(c_req, slot_bits=7), layout, s2)
    with pytest.raises(ProtocolError):
        finish_norm_check(c_state, NormCheckReply(pk, (1, 0)))
    with pytest.raises(ProtocolError):
        start_norm_check([], layout, s1, pool)
    with pytest.raises(ParameterError):
        NormServerB(s1, layout)
