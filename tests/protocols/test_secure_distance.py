"""Exact squared distance protocol: correctness on random integer vectors, layouts, bad inputs."""

from __future__ import annotations

import random
from dataclasses import replace

import pytest

from pura.crypto.paillier import (
    KeyShare,
    PartialPool,
    PublicKey,
    RandomnessPool,
    combine,
    decrypt_with_shares,
)
from pura.errors import DimensionError, PackingOverflowError, ProtocolError
from pura.protocols.enroll import TemplateLayout, encrypt_query, encrypt_template
from pura.protocols.messages import AdmittedTemplate, BlindedProductReply
from pura.protocols.norms import CheckedQuery
from pura.protocols.secure_distance import (
    assemble_vectors,
    draw_masks,
    finish_distance,
    helper_blinded_product,
    prepare_templates,
    slot_counts,
    start_distance,
    tails_per_ct,
)

Keys = tuple[PublicKey, KeyShare, KeyShare]


def _query(x: list[int], layout: TemplateLayout, pk: PublicKey,
           pool: RandomnessPool) -> CheckedQuery:
    """A query as admission leaves it; the norm is given here (admission: test_norms.py)."""
    layout.check_vector(x)
    return CheckedQuery(tuple(pk.encrypt(v, pool) for v in x),
                        pk.encrypt(sum(v * v for v in x), pool))


def _template(y: list[int], layout: TemplateLayout, pk: PublicKey,
              pool: RandomnessPool) -> AdmittedTemplate:
    """A template as admission stores it (norm given; admission: test_norms.py)."""
    return AdmittedTemplate(encrypt_template(y, layout, pk, pool).packed,
                            pk.encrypt(sum(v * v for v in y), pool))


def _vec(rng: random.Random, dim: int, s: int) -> list[int]:
    return [rng.randint(-(1 << s), 1 << s) for _ in range(dim)]


def _run(keys: Keys, dim: int, k: int, seed: int) -> tuple[list[int], list[int]]:
    pk, s1, s2 = keys
    rng = random.Random(seed)
    layout = TemplateLayout.for_key(pk, dim, 11)
    pool_a, pool_b = RandomnessPool(pk, rng=rng), RandomnessPool(pk, rng=random.Random(seed + 1))
    x = _vec(rng, dim, 11)
    ys = [_vec(rng, dim, 11) for _ in range(k)]
    ys[0] = [1 << 11] * dim  # extreme coordinates
    x[0] = -(1 << 11)
    query = _query(x, layout, pk, pool_a)
    temps = [_template(y, layout, pk, pool_a) for y in ys]
    state, request = start_distance(query, temps, layout, PartialPool(s1, rng=rng), rng=rng)
    reply = helper_blinded_product(request, layout, s2, pool_b)
    got = [decrypt_with_shares(s1, s2, c, signed=True) for c in finish_distance(state, reply)]
    return got, [sum((a - b) ** 2 for a, b in zip(x, y, strict=True)) for y in ys]


@pytest.mark.parametrize(("dim", "k"), [(128, 1), (128, 3), (7, 6), (76, 2), (40, 4)])
def test_encrypted_distances_equal_plaintext(paillier_fast_keys: Keys, dim: int, k: int) -> None:
    got, want = _run(paillier_fast_keys, dim, k, seed=dim * 100 + k)
    assert got == want


def test_slot_stream_layout(paillier_fast_keys: Keys) -> None:
    layout = TemplateLayout.for_key(paillier_fast_keys[0], 128, 11)
    assert (layout.slots_per_ct, layout.n_full, layout.tail) == (38, 3, 14)
    assert slot_counts(layout, 3) == [38] * 9 + [28, 14]
    stream = list(range(3 * 128))
    vecs = assemble_vectors(layout, 3, stream)
    assert vecs[1][:38] == list(range(114, 152)) and vecs[1][-14:] == list(range(356, 370))
    with pytest.raises(ProtocolError):
        assemble_vectors(layout, 3, stream[:-1])


def test_b_learns_masked_values_only(paillier_fast_keys: Keys) -> None:
    """The same template sent twice gives B two unrelated slot vectors (fresh masks)."""
    pk, s1, s2 = paillier_fast_keys
    rng = random.Random(1)
    layout = TemplateLayout.for_key(pk, 16, 11)
    pool = RandomnessPool(pk, rng=rng)
    temp = _template([5] * 16, layout, pk, pool)
    query = _query([1] * 16, layout, pk, pool)
    seen = []
    for _ in range(2):
        _, req = start_distance(query, [temp], layout, PartialPool(s1), rng=rng)
        contents = layout.packed.unpack_raw(
            combine(req.partials[0], s2.partial_decrypt(req.masked[0])), 16)
        assert all(c >= 5 + layout.bound for c in contents)
        assert all(c < 1 << layout.slot_bits for c in contents)
        seen.append(contents)
    assert seen[0] != seen[1]
    assert len(set(seen[0])) > 1


def test_b_rejects_foreign_layouts_and_shapes(paillier_fast_keys: Keys) -> None:
    pk, s1, s2 = paillier_fast_keys
    rng = random.Random(2)
    layout = TemplateLayout.for_key(pk, 16, 11)
    pool = RandomnessPool(pk, rng=rng)
    temp = _template([1] * 16, layout, pk, pool)
    query = _query([1] * 16, layout, pk, pool)
    state, req = start_distance(query, [temp, temp], layout, PartialPool(s1), rng=rng)
    bad_requests = [
        replace(req, slot_bits=req.slot_bits - 1),
        replace(req, n_candidates=3),
        replace(req, n_candidates=0),
        replace(req, masked=req.masked * 2),
        replace(req, query=req.query[:-1]),
    ]
    for bad in bad_requests:
        with pytest.raises(ProtocolError):
            helper_blinded_product(bad, layout, s2, pool)
    # A plaintext that overflows the agreed layout (here: an unmasked huge value) is refused.
    huge = pk.encrypt(1 << (layout.packed.total_bits + 1), pool)
    overflow = replace(req, masked=(huge,), partials=(s1.partial_decrypt(huge),),
                       n_candidates=1)
    with pytest.raises(ProtocolError):
        helper_blinded_product(overflow, layout, s2, pool)
    with pytest.raises(ProtocolError):
        finish_distance(state, BlindedProductReply(req.masked[:1]))


def test_client_side_bounds(paillier_fast_keys: Keys) -> None:
    pk = paillier_fast_keys[0]
    layout = TemplateLayout.for_key(pk, 4, 11)
    pool = RandomnessPool(pk, rng=random.Random(3))
    with pytest.raises(DimensionError):
        encrypt_template([0] * 5, layout, pk, pool)
    with pytest.raises(PackingOverflowError):
        encrypt_query([0, 0, 0, (1 << 11) + 1], layout, pk, pool)
    assert layout.dist_bits == (4 * (1 << 12) ** 2).bit_length()


def test_prepared_and_unprepared_candidates_give_the_same_distances(
    paillier_fast_keys: Keys,
) -> None:
    """Unprepared candidates (B's served copies) take the merged-stream path: tails merged
    before A's partial decryption, fewer exponentiations; mixing prepared ones takes the
    other. Both answer exactly."""
    pk, s1, s2 = paillier_fast_keys
    rng = random.Random(77)
    layout = TemplateLayout.for_key(pk, 128, 11)
    assert layout.tail and tails_per_ct(layout) > 1  # the merge has something to save
    pool = RandomnessPool(pk, rng=rng)
    x = _vec(rng, 128, 11)
    ys = [_vec(rng, 128, 11) for _ in range(5)]
    query = _query(x, layout, pk, pool)
    temps = [_template(y, layout, pk, pool) for y in ys]
    prepared = prepare_templates(temps[:2], s1)
    want = [sum((a - b) ** 2 for a, b in zip(x, y, strict=True)) for y in ys]
    for candidates in (temps, [*prepared, *temps[2:]]):
        state, request = start_distance(query, candidates, layout, PartialPool(s1, rng=rng),
                                        rng=rng)
        assert len(request.partials) == len(slot_counts(layout, 5))
        reply = helper_blinded_product(request, layout, s2, pool)
        assert [decrypt_with_shares(s1, s2, c, signed=True)
                for c in finish_distance(state, reply)] == want


def test_masks_drawn_ahead_give_exact_distances_once(paillier_fast_keys: Keys) -> None:
    """Masks and corrections drawn before the candidates (beside preselection) give the same
    exact distances as drawing them in the round; a set masks one request only, and only for
    the query and k it was drawn for."""
    pk, s1, s2 = paillier_fast_keys
    rng = random.Random(91)
    layout = TemplateLayout.for_key(pk, 128, 11)
    pool = RandomnessPool(pk, rng=rng)
    for k in (1, 5):
        x = _vec(rng, 128, 11)
        ys = [_vec(rng, 128, 11) for _ in range(k)]
        query = _query(x, layout, pk, pool)
        temps = [_template(y, layout, pk, pool) for y in ys]
        ahead = draw_masks(query, layout, k, rng=rng)
        state, request = start_distance(query, temps, layout, PartialPool(s1, rng=rng),
                                        rng=rng, ahead=ahead)
        assert ahead.used and "values" not in repr(ahead)
        reply = helper_blinded_product(request, layout, s2, pool)
        assert [decrypt_with_shares(s1, s2, c, signed=True)
                for c in finish_distance(state, reply)] == [
            sum((a - b) ** 2 for a, b in zip(x, y, strict=True)) for y in ys]
        with pytest.raises(ProtocolError, match="used before"):
            start_distance(query, temps, layout, PartialPool(s1), rng=rng, ahead=ahead)
        other = _query(x, layout, pk, pool)
        for wrong in (draw_masks(other, layout, k, rng=rng),
                      draw_masks(query, layout, k + 1, rng=rng)):
            with pytest.raises(ProtocolError, match="another request"):
                start_distance(query, temps, layout, PartialPool(s1), rng=rng, ahead=wrong)


def test_served_copies_carry_the_mask_in_a_partial(paillier_fast_keys: Keys) -> None:
    """B's served copies go back to B as they are, in order, with A's mask multiplied into A's
    partial decryption; B still only ever combines the masked plaintext, and B's own partials
    of them computed ahead (``known``) give the same exact distances and are used once."""
    pk, s1, s2 = paillier_fast_keys
    rng = random.Random(93)
    layout = TemplateLayout.for_key(pk, 128, 11)
    pool = RandomnessPool(pk, rng=rng)
    x = _vec(rng, 128, 11)
    ys = [_vec(rng, 128, 11) for _ in range(5)]
    query = _query(x, layout, pk, pool)
    temps = [_template(y, layout, pk, pool) for y in ys]
    want = [sum((a - b) ** 2 for a, b in zip(x, y, strict=True)) for y in ys]
    state, request = start_distance(query, temps, layout, PartialPool(s1, rng=rng), rng=rng)
    full = [c for t in temps for c in t.packed[:layout.n_full]]
    assert list(request.masked[:len(full)]) == full  # B can tell its copies (it served them)
    # What B combines is the masked plaintext, never a template coordinate.
    for pa, c, n in zip(request.partials, request.masked, slot_counts(layout, 5), strict=True):
        masked = layout.packed.unpack_raw(combine(pa, s2.partial_decrypt(c)), n)
        assert all(v >= 1 << (layout.scale_bits + 2) for v in masked[:3])
    known = {int(c.value): s2.partial_decrypt(c) for c in request.masked}
    reply = helper_blinded_product(request, layout, s2, pool, known=known)
    assert not known
    assert [decrypt_with_shares(s1, s2, c, signed=True)
            for c in finish_distance(state, reply)] == want
    with pytest.raises(ProtocolError, match="another share"):
        helper_blinded_product(request, layout, s2, pool,
                               known={int(request.masked[0].value): s1.partial_decrypt(
                                   request.masked[0])})
