"""Sealed admission (pura.protocols.sealed): exact results, and every way to cheat is refused.

Honest uploads must be admitted to exactly what the joint-decryption admission stores (the
canonical packing of ``q(y) + 2^s`` and ``‖q(y)‖²``) and must match like any template. Then each
attack a client can mount on the new upload is shown refused, per item, without costing the
honest items of its batch: a mask ciphertext of another value (the only way to forge a norm),
a box A swapped between uploads, a box with a coordinate out of range, a norm outside the
unit-vector bounds, a wolf at the population mean, a box sealed to another key, and mask
randomness outside the subgroup (isolated by NodeA's bisection; here: the batch fails loudly).
"""

from __future__ import annotations

import dataclasses
import random
from collections.abc import Sequence

import numpy as np
import pytest

from pura.crypto.encoding import l2_normalize, quantize
from pura.crypto.paillier import (
    Ciphertext,
    KeyShare,
    PublicKey,
    RandomnessPool,
    decrypt_with_shares,
    encrypt_derived,
)
from pura.crypto.seal import SealPrivateKey
from pura.errors import DecryptionError, EmbeddingRangeError, SealError
from pura.protocols.identify import BytesChannel, ExactConfig, MatchResult, ServerA, ServerB
from pura.protocols.messages import (
    AdmittedTemplate,
    SealedAdmitReply,
    SealedAdmitRequest,
    SealedTemplate,
)
from pura.protocols.norms import MeanBound
from pura.protocols.sealed import (
    SEED_BYTES,
    SealedLayout,
    box_context,
    check_masks,
    derive_masks,
    seal_template,
)

Keys = tuple[PublicKey, KeyShare, KeyShare]
S = 11
DIM = 128


def _unit(rng: np.random.Generator) -> np.ndarray:
    return l2_normalize(rng.normal(size=DIM))


def _q(v: np.ndarray) -> list[int]:
    return [int(x) for x in quantize(v, S)]


class World:
    """A (with the wolf check on a random mean direction) and B over the bytes encoding."""

    def __init__(self, keys: Keys, seed: int = 7) -> None:
        pk, s1, s2 = keys
        self.keys = keys
        self.seal = SealPrivateKey.generate()
        config = ExactConfig.for_key(pk, DIM, S)
        self.mean_dir = _unit(np.random.default_rng(99))
        mean = MeanBound.for_direction(self.mean_dir, S, 0.8, "test")
        a_config = dataclasses.replace(config, norms=config.norms.with_mean(mean))
        self.b = ServerB(s2, config, RandomnessPool(pk, rng=random.Random(seed + 1)),
                         seal=self.seal)
        self.a = ServerA(s1, a_config, BytesChannel.loopback(self.b), rng=random.Random(seed))
        self.layout = a_config.template

    def upload(self, y: Sequence[int], seal: SealPrivateKey | None = None) -> SealedTemplate:
        return seal_template(y, self.layout, self.keys[0], (seal or self.seal).public,
                             random.Random(len(y) + int(y[0])))

    def decrypt(self, ct: Ciphertext) -> int:
        _, s1, s2 = self.keys
        return decrypt_with_shares(s1, s2, ct)


@pytest.fixture(scope="module")
def world(paillier_fast_keys: Keys) -> World:
    return World(paillier_fast_keys)


def _stored_vector(world: World, t: AdmittedTemplate) -> list[int]:
    lay = world.layout
    out: list[int] = []
    for i, ct in enumerate(t.packed):
        count = min(lay.slots_per_ct, DIM - i * lay.slots_per_ct)
        out += [v - lay.bound for v in lay.packed.unpack_raw(world.decrypt(ct), count)]
    return out


def test_honest_uploads_are_admitted_exactly(world: World) -> None:
    rng = np.random.default_rng(1)
    ys = [_q(_unit(rng)) for _ in range(5)]
    results = world.a.admit([world.upload(y) for y in ys])
    for y, r in zip(ys, results, strict=True):
        assert isinstance(r, AdmittedTemplate)
        assert _stored_vector(world, r) == y
        assert world.decrypt(r.norm) == sum(v * v for v in y)


def test_sealed_templates_match_like_any_other(world: World) -> None:
    from pura.protocols.enroll import encrypt_query
    from pura.protocols.identify import threshold_units

    rng = np.random.default_rng(2)
    vecs = [_unit(rng) for _ in range(3)]
    stored = world.a.admit([world.upload(_q(v)) for v in vecs])
    gallery = [(f"s{i}", t) for i, t in enumerate(stored) if isinstance(t, AdmittedTemplate)]
    assert len(gallery) == 3
    z = l2_normalize(vecs[1] + 0.05 * rng.normal(size=DIM))
    client = RandomnessPool(world.keys[0], rng=random.Random(3))
    query = encrypt_query(_q(z), world.layout, world.keys[0], client)
    assert world.a.match(query, gallery, threshold_units(0.36, S)) == MatchResult(True, "s1")


def test_a_forged_mask_is_refused_and_costs_the_batch_nothing(world: World) -> None:
    """Encrypting c_0 − δ instead of c_0 would lower the norm by ~2δ·v_0: the batch check
    finds it (and only it)."""
    rng = np.random.default_rng(3)
    ys = [_q(_unit(rng)) for _ in range(4)]
    uploads = [world.upload(y) for y in ys]
    bad = uploads[2]
    offsets, rho = derive_masks(bad.seed, world.layout, world.keys[0])
    masks = list(bad.masks)
    masks[0] = encrypt_derived(world.keys[0], offsets[0] - (1 << 30), rho[0])
    forged = dataclasses.replace(bad, masks=tuple(masks))
    passed, _ = check_masks([*uploads[:2], forged, uploads[3]], world.layout, world.keys[0])
    assert passed == [True, True, False, True]
    results = world.a.admit([*uploads[:2], forged, uploads[3]])
    assert isinstance(results[2], EmbeddingRangeError)
    assert "mask ciphertexts" in str(results[2])
    assert all(isinstance(results[i], AdmittedTemplate) for i in (0, 1, 3))


def test_a_swapped_box_does_not_open(world: World) -> None:
    """Boxes are bound to their upload's masks: A cannot pair them otherwise."""
    rng = np.random.default_rng(4)
    u1, u2 = (world.upload(_q(_unit(rng))) for _ in range(2))
    swapped = dataclasses.replace(u1, box=u2.box)
    results = world.a.admit([swapped, u2])
    assert isinstance(results[0], EmbeddingRangeError)
    assert isinstance(results[1], AdmittedTemplate)
    with pytest.raises(SealError):
        world.seal.open(u2.box, box_context(world.keys[0], world.layout, u1.masks))


def test_a_box_for_another_key_is_refused(world: World) -> None:
    y = _q(_unit(np.random.default_rng(5)))
    results = world.a.admit([world.upload(y, seal=SealPrivateKey.generate())])
    assert isinstance(results[0], EmbeddingRangeError)


def _box_with(world: World, values: Sequence[int], seed: bytes) -> SealedTemplate:
    """A hand-made upload whose box holds ``values + c`` (no range check on the client)."""
    pk = world.keys[0]
    offsets, rho = derive_masks(seed, world.layout, pk)
    masks = tuple(encrypt_derived(pk, c, p) for c, p in zip(offsets, rho, strict=True))
    width = SealedLayout.for_norms(world.a.config.norms, pk).value_bytes
    plain = b"".join((v + c).to_bytes(width, "big") for v, c in zip(values, offsets, strict=True))
    box = world.seal.public.seal(plain, box_context(pk, world.layout, masks))
    return SealedTemplate(seed, box, masks)


def test_out_of_range_coordinates_and_norms_are_refused(world: World) -> None:
    rng = np.random.default_rng(6)
    y = _q(_unit(rng))
    far = list(y)
    far[3] += 1 << 54  # beyond what a slot may hold (still fits the box's width)
    scaled = [2 * v for v in y]  # a unit vector's double: norm 4× too large
    short = [v // 2 for v in y]  # a wolf's trick: a short vector is near everyone
    seeds = [bytes([i]) * SEED_BYTES for i in range(4)]
    results = world.a.admit([_box_with(world, far, seeds[0]), _box_with(world, scaled, seeds[1]),
                             _box_with(world, short, seeds[2]), _box_with(world, y, seeds[3])])
    assert [type(r) for r in results] == [EmbeddingRangeError] * 3 + [AdmittedTemplate]
    assert "squared norm" in str(results[1]) and "squared norm" in str(results[2])


def test_the_population_mean_itself_is_refused(world: World) -> None:
    results = world.a.admit([world.upload(_q(world.mean_dir))])
    assert isinstance(results[0], EmbeddingRangeError)
    assert "population mean" in str(results[0])


def test_malformed_mask_randomness_fails_loudly(world: World) -> None:
    """A mask ciphertext times an element of odd order outside ⟨h_N⟩ keeps its plaintext (the
    batch check may pass it) but must never reach a stored ciphertext: the joint decryption of
    the packed cross terms fails, and NodeA isolates the upload by bisection."""
    pk = world.keys[0]
    y = _q(_unit(np.random.default_rng(7)))
    up = world.upload(y)
    masks = list(up.masks)
    z = pow(3, int(pk.n), int(pk.n_squared))  # an N-th power: no plaintext change
    masks[5] = Ciphertext(pk, masks[5].value * z % pk.n_squared)
    dirty = SealedTemplate(up.seed, world.seal.public.seal(
        world.seal.open(up.box, box_context(pk, world.layout, up.masks)),
        box_context(pk, world.layout, masks)), tuple(masks))
    passed, _ = check_masks([dirty], world.layout, pk)
    if passed[0]:  # plaintexts are right; randomness is not
        with pytest.raises(DecryptionError):
            world.a.admit([dirty])
    else:
        assert isinstance(world.a.admit([dirty])[0], EmbeddingRangeError)


def test_wire_round_trip(world: World) -> None:
    pk = world.keys[0]
    up = world.upload(_q(_unit(np.random.default_rng(8))))
    assert SealedTemplate.from_bytes(pk, up.to_bytes()) == up
    req = SealedAdmitRequest(DIM, world.layout.slot_bits, tuple(range(-3, DIM - 3)), (up.box,),
                             up.masks)
    assert SealedAdmitRequest.from_bytes(pk, req.to_bytes()) == req
    reply = world.b.sealed_admit(req)
    assert SealedAdmitReply.from_bytes(pk, reply.to_bytes()) == reply
    assert reply.valid == (1,)


def test_derived_heads_are_the_admitted_vectors_first_coordinates(world: World) -> None:
    """B encrypts ``v/2^s`` of what it admitted, A removes ``c/2^s``: the head is the template's
    first coordinates (quantised), so it needs no range check and the client uploads none."""
    from pura.crypto.ckks import CKKSContext
    from pura.crypto.params import CKKS_8192
    from pura.protocols.derived_heads import (
        DeriveRequest,
        DeriveResponse,
        answer_derive,
        finish_derive,
    )
    from pura.protocols.sealed import derive_masks, mask_digest

    secret = CKKSContext.generate(CKKS_8192)
    public = secret.public()
    pk = world.keys[0]
    m = 64
    ys = [_q(_unit(np.random.default_rng(20 + i))) for i in range(2)]
    ups = [world.upload(y) for y in ys]
    bad = dataclasses.replace(ups[1], box=ups[0].box)  # a box bound to other masks
    request = DeriveRequest(m, tuple(mask_digest(u.masks) for u in (*ups, bad)),
                            tuple(u.box for u in (*ups, bad)))
    norms = world.a.config.norms
    reply = DeriveResponse.from_bytes(answer_derive(
        secret, world.seal, SealedLayout.for_norms(norms, pk),
        DeriveRequest.from_bytes(request.to_bytes())).to_bytes())
    offsets = [derive_masks(u.seed, world.layout, pk)[0] for u in (*ups, bad)]
    heads = finish_derive(public, reply, offsets, world.layout, m)
    assert heads[2] is None
    for y, raw in zip(ys, heads[:2], strict=True):
        assert raw is not None
        got = secret.decrypt(public.head_from_bytes(raw))[:m]
        assert np.max(np.abs(got - np.asarray(y[:m]) / (1 << S))) < 1e-3
