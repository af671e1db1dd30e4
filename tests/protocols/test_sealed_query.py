"""Sealed query admission (pura.protocols.sealed_query): the same query as the legacy
admission, no threshold decryption in round 1, and every way to cheat refused.

An honest sealed probe must be admitted to exactly the query the joint-decryption admission
makes (``[u_i] = [q(x)_i]``, ``[‖u‖²]``) and must match like one. Then what a client or a
deviating A can do with the new upload: a box sealed to another key, a template's box replayed
as a query, a seed swapped under a box, out-of-range coordinates, a norm outside the unit-vector
bounds — each is a refusal (``EmbeddingRangeError``), never a match. B's guard admits a query's
vector once, by one admission or the other.
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
)
from pura.crypto.seal import SealPrivateKey
from pura.errors import EmbeddingRangeError, ProtocolError
from pura.protocols.enroll import encrypt_query, encrypt_template
from pura.protocols.identify import (
    BytesChannel,
    ExactConfig,
    MatchResult,
    ServerA,
    ServerB,
    threshold_units,
)
from pura.protocols.messages import (
    AdmittedTemplate,
    SealedQuery,
    SealedQueryRequest,
    query_upload_from_bytes,
)
from pura.protocols.sealed import SEED_BYTES, SealedLayout, derive_masks, seal_template
from pura.protocols.sealed_query import (
    QUERY_DIGEST,
    query_box_context,
    seal_query,
    start_sealed_query,
)

Keys = tuple[PublicKey, KeyShare, KeyShare]
S = 11
DIM = 128


def _unit(rng: np.random.Generator) -> np.ndarray:
    return l2_normalize(rng.normal(size=DIM))


def _q(v: np.ndarray) -> list[int]:
    return [int(x) for x in quantize(v, S)]


class World:
    """A and B over the bytes encoding; B holds a sealing key."""

    def __init__(self, keys: Keys, seed: int = 11) -> None:
        pk, s1, s2 = keys
        self.keys = keys
        self.seal = SealPrivateKey.generate()
        self.config = ExactConfig.for_key(pk, DIM, S)
        self.b = ServerB(s2, self.config, RandomnessPool(pk, rng=random.Random(seed + 1)),
                         seal=self.seal)
        self.a = ServerA(s1, self.config, BytesChannel.loopback(self.b),
                         rng=random.Random(seed))
        self.layout = self.config.template
        self.client = RandomnessPool(pk, rng=random.Random(seed + 2))

    def sealed(self, x: Sequence[int], seal: SealPrivateKey | None = None) -> SealedQuery:
        return seal_query(x, self.layout, self.keys[0], (seal or self.seal).public,
                          random.Random(sum(x)))

    def decrypt(self, ct: Ciphertext) -> int:
        _, s1, s2 = self.keys
        return decrypt_with_shares(s1, s2, ct)

    def signed(self, value: int) -> int:
        n = self.keys[0].n
        return value - n if value > n // 2 else value


@pytest.fixture(scope="module")
def world(paillier_fast_keys: Keys) -> World:
    return World(paillier_fast_keys)


def _box_with(world: World, values: Sequence[int], seed: bytes) -> SealedQuery:
    """A hand-made probe whose box holds ``values + c`` (no client-side range check)."""
    pk = world.keys[0]
    offsets, _ = derive_masks(seed, world.layout, pk)
    width = SealedLayout.for_norms(world.config.norms, pk).value_bytes
    plain = b"".join((v + c).to_bytes(width, "big") for v, c in zip(values, offsets, strict=True))
    return SealedQuery(pk, seed, world.seal.public.seal(plain, query_box_context(pk, world.layout)))


def test_a_sealed_probe_is_admitted_to_exactly_the_legacy_query(world: World) -> None:
    x = _q(_unit(np.random.default_rng(1)))
    sealed = world.a.check_query(world.sealed(x))
    legacy = world.a.check_query(encrypt_query(x, world.layout, world.keys[0], world.client))
    for checked in (sealed, legacy):
        assert [world.signed(world.decrypt(c)) for c in checked.dims] == x
        assert world.decrypt(checked.norm) == sum(v * v for v in x)


def test_sealed_probes_match_and_miss_like_legacy_ones(world: World) -> None:
    rng = np.random.default_rng(2)
    vecs = [_unit(rng) for _ in range(3)]
    pk = world.keys[0]
    stored = world.a.admit([encrypt_template(_q(v), world.layout, pk, world.client)
                            for v in vecs])
    gallery = [(f"s{i}", t) for i, t in enumerate(stored) if isinstance(t, AdmittedTemplate)]
    assert len(gallery) == 3
    tau = threshold_units(0.36, S)
    near = _q(l2_normalize(vecs[1] + 0.05 * rng.normal(size=DIM)))
    far = _q(_unit(rng))
    assert world.a.match(world.sealed(near), gallery, tau) == MatchResult(True, "s1")
    assert world.a.match(world.sealed(far), gallery, tau) == MatchResult(False)


def test_the_upload_is_small_and_round_trips(world: World) -> None:
    up = world.sealed(_q(_unit(np.random.default_rng(3))))
    raw = up.to_bytes()
    assert len(raw) < 1200  # three packed ciphertexts are ~2.3 kB at 2048 bits, 4.6 kB at 3072
    back = query_upload_from_bytes(world.keys[0], raw)
    assert isinstance(back, SealedQuery) and (back.seed, back.box) == (up.seed, up.box)
    legacy = encrypt_query([0] * DIM, world.layout, world.keys[0], world.client)
    assert not isinstance(query_upload_from_bytes(world.keys[0], legacy.to_bytes()), SealedQuery)
    assert "seed" not in repr(up) and up.seed.hex() not in repr(up)


def test_a_box_sealed_to_another_key_is_refused(world: World) -> None:
    x = _q(_unit(np.random.default_rng(4)))
    with pytest.raises(EmbeddingRangeError, match="could not open"):
        world.a.check_query(world.sealed(x, seal=SealPrivateKey.generate()))


def test_a_template_box_is_not_a_query_box(world: World) -> None:
    """A deviating A cannot replay an enrolment's box as a probe (the contexts differ)."""
    x = _q(_unit(np.random.default_rng(5)))
    up = seal_template(x, world.layout, world.keys[0], world.seal.public, random.Random(5))
    replay = SealedQuery(world.keys[0], up.seed, up.box)
    with pytest.raises(EmbeddingRangeError, match="could not open"):
        world.a.check_query(replay)


def test_a_swapped_seed_never_matches(world: World) -> None:
    """Another seed under the box (a corrupted upload, or a deviating A) changes every mask:
    u = v − c' is far from a unit vector and round 2 refuses it."""
    x = _q(_unit(np.random.default_rng(6)))
    up = world.sealed(x)
    swapped = dataclasses.replace(up, seed=bytes(SEED_BYTES))
    with pytest.raises(EmbeddingRangeError, match="squared norm"):
        world.a.check_query(swapped)


def test_out_of_range_values_and_norms_are_refused(world: World) -> None:
    rng = np.random.default_rng(7)
    x = _q(_unit(rng))
    far = list(x)
    far[5] += 1 << 54  # beyond what a slot may hold (still fits the box's width)
    seeds = [bytes([i + 1]) * SEED_BYTES for i in range(4)]
    with pytest.raises(EmbeddingRangeError, match="could not open"):
        world.a.check_query(_box_with(world, far, seeds[0]))
    with pytest.raises(EmbeddingRangeError, match="squared norm"):
        world.a.check_query(_box_with(world, [2 * v for v in x], seeds[1]))
    with pytest.raises(EmbeddingRangeError, match="squared norm"):
        world.a.check_query(_box_with(world, [v // 2 for v in x], seeds[2]))
    assert world.a.check_query(_box_with(world, x, seeds[3])) is not None


def test_b_refuses_a_request_of_another_layout(world: World) -> None:
    x = _q(_unit(np.random.default_rng(8)))
    _, request = start_sealed_query(world.sealed(x), SealedLayout.for_norms(
        world.config.norms, world.keys[0]))
    other = dataclasses.replace(request, dim=DIM - 1)
    with pytest.raises(ProtocolError, match="layout"):
        world.b.sealed_query(SealedQueryRequest.from_bytes(world.keys[0], other.to_bytes()))


def test_a_b_without_a_sealing_key_says_so(world: World) -> None:
    _, _, s2 = world.keys
    plain_b = ServerB(s2, world.config, RandomnessPool(world.keys[0], rng=random.Random(9)))
    a = ServerA(world.keys[1], world.config, BytesChannel.loopback(plain_b),
                rng=random.Random(9))
    with pytest.raises(ProtocolError, match="no sealing key"):
        a.check_query(world.sealed(_q(_unit(np.random.default_rng(9)))))


def test_the_query_context_is_domain_separated(world: World) -> None:
    """A template's box context hashes its mask ciphertexts; a query's is a constant digest
    no mask list hashes to."""
    assert query_box_context(world.keys[0], world.layout).endswith(QUERY_DIGEST)
