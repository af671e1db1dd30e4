"""The share-based exact stage prototype (issue 16): answers, correlations, wire discipline."""

from __future__ import annotations

import random
from typing import Any

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bench.online_exact import (
    Prototype,
    Today,
    lfw_case,
    lfw_dealer,
    lfw_paillier,
    synthetic,
)
from bench.online_exact_offline import (
    ConversionPlan,
    convert_query_open,
    convert_query_request,
    prepare_norms,
    template_shares_a,
)
from bench.online_exact_shares import (
    MOD,
    Loopback,
    OnlineA,
    OnlineB,
    Outcome,
    Shape,
    deal,
    decode,
    encode,
    plaintext_answer,
    run_online,
    share_inputs,
    signed,
)
from pura.crypto.paillier import KeyShare, PublicKey, RandomnessPool
from pura.errors import ProtocolError
from pura.protocols.enroll import TemplateLayout, encrypt_query
from pura.protocols.identify import ExactConfig

Keys = tuple[PublicKey, KeyShare, KeyShare]
BOUND = 1 << 11


def _online(q: list[int], ys: list[list[int]], tau: int, seed: int) -> tuple[Outcome, Any]:
    rng = random.Random(seed)
    shape = Shape(len(ys), len(q))
    in_a, in_b = share_inputs(q, ys, rng)
    ca, cb = deal(shape, rng)
    return run_online(OnlineA(shape, in_a, ca, tau), OnlineB(shape, in_b, cb))


@st.composite
def _case(draw: st.DrawFn) -> tuple[list[int], list[list[int]], int]:
    """Random query and candidates in the encoder's range, with ties, mates and a threshold
    on, next to or far from the nearest distance."""
    dim = draw(st.integers(1, 24))
    k = draw(st.integers(1, 8))
    coord = st.integers(-BOUND, BOUND)
    q = draw(st.lists(coord, min_size=dim, max_size=dim))
    ys = [draw(st.lists(coord, min_size=dim, max_size=dim)) for _ in range(k)]
    if draw(st.booleans()):  # a near-mate
        j = draw(st.integers(0, k - 1))
        ys[j] = [max(-BOUND, min(BOUND, v + draw(st.integers(-3, 3)))) for v in q]
    if k > 1 and draw(st.booleans()):  # an exact tie (the lower position must win)
        ys[k - 1] = list(ys[0])
    nearest = min(sum((a - b) ** 2 for a, b in zip(q, y, strict=True)) for y in ys)
    tau = max(0, nearest + draw(st.sampled_from([-1, 0, 1, -(1 << 20), 1 << 20])))
    return q, ys, tau


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(case=_case(), seed=st.integers(0, 2**32))
def test_online_phase_equals_plaintext(case: tuple[list[int], list[list[int]], int],
                                       seed: int) -> None:
    q, ys, tau = case
    got, stats = _online(q, ys, tau, seed)
    assert got == plaintext_answer(q, ys, tau)
    assert stats.round_trips == 3


def test_full_size_random_queries_equal_plaintext() -> None:
    """k = 6, d = 128 as the product runs it: mates, strangers, ties and borderline τ."""
    rng = random.Random(5)
    for trial in range(40):
        q = [rng.randint(-BOUND, BOUND) for _ in range(128)]
        ys = [[rng.randint(-BOUND, BOUND) for _ in range(128)] for _ in range(6)]
        if trial % 2:
            ys[rng.randrange(6)] = [max(-BOUND, min(BOUND, v + rng.randint(-40, 40))) for v in q]
        if trial % 5 == 0:
            ys[3] = list(ys[1])
        nearest = min(sum((a - b) ** 2 for a, b in zip(q, y, strict=True)) for y in ys)
        tau = nearest + rng.choice([-1, 0, 1])
        got, _ = _online(q, ys, tau, trial)
        assert got == plaintext_answer(q, ys, tau), trial


def test_messages_do_not_depend_on_the_inputs_or_the_decision() -> None:
    """Every message has a fixed size for (k, d): neither bytes nor rounds tell an observer of
    the link whether the query matched."""
    rng = random.Random(1)
    q = [rng.randint(-BOUND, BOUND) for _ in range(16)]
    ys = [[rng.randint(-BOUND, BOUND) for _ in range(16)] for _ in range(4)]
    sizes = set()
    for tau in (0, 1 << 40):
        got, stats = _online(q, ys, tau, 3)
        assert got.matched == (tau > 0)
        sizes.add((stats.bytes_a_to_b, stats.bytes_b_to_a, stats.round_trips))
    assert len(sizes) == 1


def test_a_opens_the_index_only_on_a_match() -> None:
    """The value A opens is ``(j*+1)·decision``: on no match it is 0 whatever the winner."""
    rng = random.Random(2)
    q = [rng.randint(-BOUND, BOUND) for _ in range(8)]
    ys = [[rng.randint(-BOUND, BOUND) for _ in range(8)] for _ in range(5)]
    for seed in range(12):  # both flip bits π occur
        got, _ = _online(q, ys, 0, seed)
        assert got == Outcome(False)


def test_b_reads_exactly_todays_blinded_values() -> None:
    """What B reconstructs per pair is ``r1·E + r2`` with today's ranges (no flip)."""
    rng = random.Random(4)
    shape = Shape(3, 4)
    q, ys = [5, -3, 9, 0], [[1, 2, 3, 4], [5, -3, 9, 1], [0, 0, 0, 0]]
    in_a, in_b = share_inputs(q, ys, rng)
    ca, cb = deal(shape, rng)
    a, b = OnlineA(shape, in_a, ca, 10), OnlineB(shape, in_b, cb)
    m3 = a.blind_pairs(b.open_triples(a.open_triples()))
    (omega,) = decode(m3, [(shape.n_pairs,)])
    w = [signed(v) for v in (omega + cb.t) % MOD]
    dist = [sum((x - y) ** 2 for x, y in zip(q, row, strict=True)) for row in ys]
    for (i, j), value, r1, r2 in zip([(0, 1), (0, 2), (1, 2)], w, ca.r1, ca.r2, strict=True):
        assert 1 << 40 <= r1 < 1 << 41 and 0 <= r2 < r1
        assert value == r1 * (2 * (dist[i] - dist[j]) - 1) + r2


def test_wire_refuses_other_shapes() -> None:
    msg = encode(np.arange(4, dtype=object), 7)
    assert [list(np.ravel(g)) for g in decode(msg, [(4,), ()])] == [[0, 1, 2, 3], [7]]
    with pytest.raises(ProtocolError):
        decode(msg, [(5,), ()])
    with pytest.raises(ProtocolError):
        decode(msg + b"\x00", [(4,), ()])
    with pytest.raises(ProtocolError):
        decode(msg, [(4,)])


def test_two_winners_are_refused() -> None:
    """B refuses a ranking with no single undefeated position (a malformed ω)."""
    rng = random.Random(6)
    shape = Shape(3, 2)
    in_a, in_b = share_inputs([1, 1], [[0, 0], [1, 1], [2, 2]], rng)
    ca, cb = deal(shape, rng)
    b = OnlineB(shape, in_b, cb)
    b.open_triples(OnlineA(shape, in_a, ca, 5).open_triples())
    # a cycle: (0,1) -> 1 beaten, (0,2) -> 0 beaten, (1,2) -> 2 beaten: nobody undefeated
    w = [-(1 << 50), 1 << 50, -(1 << 50)]
    omega = [(v - int(t)) % MOD for v, t in zip(w, cb.t, strict=True)]
    with pytest.raises(ProtocolError):
        b.rank(encode(np.array(omega, dtype=object)))


# --------------------------------------------------------------------------------------------
# the dealer-free threshold-Paillier offline phase (fast key)
# --------------------------------------------------------------------------------------------


def test_paillier_correlations_satisfy_their_identities(paillier_fast_keys: Keys) -> None:
    config = ExactConfig.for_key(paillier_fast_keys[0])
    proto = Prototype(paillier_fast_keys, config, random.Random(8))
    shape = proto.shape(4)
    ca, cb, stats = proto.correlations(shape)
    a, b = ca.a + cb.a, ca.b + cb.b
    assert list((ca.c + cb.c) % MOD) == list((b @ a) % MOD)
    assert (ca.c0 + cb.c0) % MOD == int(a @ a) % MOD
    assert list((ca.t + cb.t) % MOD) == list((ca.r1 * cb.u) % MOD)
    assert list((ca.thr_t + cb.thr_t) % MOD) == list((ca.rho * cb.thr_u) % MOD)
    assert (ca.idx_t + cb.idx_t) % MOD == (ca.pi * cb.idx_u) % MOD
    assert cb.ot_key == ca.ot_masks[cb.ot_choice]
    assert max(int(v) for v in a) < 1 << (shape.triple_bits + 1)
    assert stats.round_trips == 2 and stats.cpu_a > 0 and stats.cpu_b > 0


@given(slots=st.integers(2, 70), dim=st.integers(1, 300), k=st.integers(1, 12))
def test_conversion_plan_never_overlaps(slots: int, dim: int, k: int) -> None:
    """Every coordinate slot and every two-slot norm lies inside its ciphertext, no overlap."""
    layout = TemplateLayout(dim, 11, slots)
    plan = ConversionPlan.for_k(layout, k)
    taken: set[tuple[int, int]] = set()
    for m, c in enumerate(plan.counts):
        taken |= {(m, i) for i in range(c)}
    assert sum(plan.counts) == dim * k
    for m, first in plan.norms:
        cells = {(m, first), (m, first + 1)}
        assert first + 1 < slots and m < plan.n_cts and not cells & taken
        taken |= cells
    assert len(plan.norms) == k


def test_conversions_give_shares_of_the_admitted_vectors(paillier_fast_keys: Keys) -> None:
    """Templates (offline, merged tails + norms) and the admitted query become shares of
    exactly the integers the product matches on."""
    pk, s1, s2 = paillier_fast_keys
    rng = random.Random(11)
    today = Today.build(paillier_fast_keys, rng)
    proto = Prototype(paillier_fast_keys, today.config, random.Random(12))
    client = RandomnessPool(pk, rng=random.Random(13))
    nrng = np.random.default_rng(0)
    vectors = []
    for _ in range(5):
        v = nrng.normal(size=128)
        vectors.append([int(x) for x in np.round(v / np.linalg.norm(v) * BOUND)])
    prepared = today.admit(vectors, client)
    state, (y_b, n_b), stats = proto.convert_templates(prepared, prepare_norms(prepared, s1))
    y_a, n_a = template_shares_a(state)
    assert [[signed(v) for v in row] for row in (y_a + y_b) % MOD] == vectors
    assert [signed(v) for v in (n_a + n_b) % MOD] == [sum(x * x for x in v) for v in vectors]
    assert stats.round_trips == 1
    layout = today.config.template
    checked = today.server_a.check_query(encrypt_query(vectors[0], layout, pk, client))
    masks, msg = convert_query_request(checked, layout, s1, proto.pool_a, rng)
    u_b = convert_query_open(msg, layout, s2)
    assert [signed(-m + int(v)) for m, v in zip(masks, u_b, strict=True)] == vectors[0]


@pytest.mark.slow
def test_synthetic_run_today_and_prototype_agree(paillier_fast_keys: Keys) -> None:
    """Admission, conversions, offline and online phases end to end beside ServerA.match."""
    out = synthetic(paillier_fast_keys, 6, 2, seed=3)
    assert out["answers_equal_plaintext"] == 2
    assert out["online"]["round_trips"] == 3
    assert out["today_exact"]["round_trips"] == 3


@pytest.mark.slow
@pytest.mark.lfw
def test_lfw_500_identities_equal_plaintext(paillier_fast_keys: Keys,
                                            lfw_identification_set: object) -> None:
    """Every probe of the 500-identity set (online phase, dealer correlations) and a few
    through the whole dealer-free path: the answer of a plaintext full-gallery search."""
    case = lfw_case(6)
    sweep = lfw_dealer(case, 6, seed=0)
    assert sweep["probes"] >= 900
    assert sweep["equal_plaintext_same_candidates"] == sweep["probes"]
    assert sweep["equal_plaintext_full_gallery"] == sweep["probes"]
    full = lfw_paillier(case, paillier_fast_keys, 6, 4, seed=1)
    assert full["equal_plaintext_full_gallery"] == full["probes"] == 4


def test_loopback_counts_both_directions() -> None:
    ch = Loopback()
    reply = ch.ask_b(lambda m: m + b"!", b"abc")
    assert reply == b"abc!"
    assert (ch.stats.bytes_a_to_b, ch.stats.bytes_b_to_a, ch.stats.round_trips) == (3, 4, 1)
