"""CKKS contexts, encryption, lazy block scoring, rotation, affine mask and (de)serialisation."""

from __future__ import annotations

import pickle
import random

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pura.crypto.ckks import (
    CKKSContext,
    default_rotation_steps,
    diagonal_rows,
    slot_column,
    uniform_reals,
)
from pura.crypto.params import CKKS_4096, CKKS_8192, CKKSParams
from pura.errors import (
    ConfigError,
    DimensionError,
    InvalidCiphertextError,
    KeyMismatchError,
    ParameterError,
)

SLOTS = CKKS_8192.slot_count


@pytest.fixture(scope="module")
def secret() -> CKKSContext:
    return CKKSContext.generate(CKKS_8192)


@pytest.fixture(scope="module")
def public(secret: CKKSContext) -> CKKSContext:
    return CKKSContext.from_bytes(secret.public().to_bytes(), expect_secret=False)


def _unit_rows(n: int, m: int, seed: int) -> np.ndarray:
    x = np.random.default_rng(seed).normal(size=(n, m))
    out: np.ndarray = x / np.linalg.norm(x, axis=1, keepdims=True)
    return out


def test_parameters_outside_the_128_bit_table_are_refused() -> None:
    with pytest.raises(ParameterError):
        CKKSParams("too-big", 8192, (60, 60, 60, 60), 40)


def test_public_context_has_no_secret_key_and_cannot_decrypt(
    secret: CKKSContext, public: CKKSContext
) -> None:
    assert secret.is_private and not public.is_private
    assert public.key_id == secret.key_id
    assert public.rotation_steps == default_rotation_steps(SLOTS) == tuple(2**j for j in range(12))
    ct = public.encrypt_vector([0.5, -0.25])
    with pytest.raises(ConfigError, match="secret key"):
        public.decrypt(ct)
    assert np.allclose(secret.decrypt(ct)[:3], [0.5, -0.25, 0.0], atol=1e-7)


def test_loading_a_secret_context_where_a_public_one_is_expected_raises(
    secret: CKKSContext, public: CKKSContext
) -> None:
    with pytest.raises(ConfigError, match="SECRET"):
        CKKSContext.from_bytes(secret.to_bytes(), expect_secret=False)
    with pytest.raises(ConfigError, match="no secret key"):
        CKKSContext.from_bytes(public.to_bytes(), expect_secret=True)
    again = CKKSContext.from_bytes(secret.to_bytes(), expect_secret=True)
    assert again.is_private and again.key_id == secret.key_id


def test_context_bytes_validation(public: CKKSContext) -> None:
    blob = public.to_bytes()
    for bad in (b"", b"garbage" * 10, blob[:1000], blob + b"x"):
        with pytest.raises(ConfigError):
            CKKSContext.from_bytes(bad, expect_secret=False)
    with pytest.raises(ParameterError):
        CKKSContext.from_bytes(blob, expect_secret=False, params=CKKS_4096)


def test_pickle_ships_only_the_public_context(secret: CKKSContext) -> None:
    clone = pickle.loads(pickle.dumps(secret))
    assert not clone.is_private and clone.key_id == secret.key_id


def test_client_context_without_galois_keys_is_small_and_cannot_rotate(
    secret: CKKSContext,
) -> None:
    client = secret.public(with_galois_keys=False)
    assert len(client.to_bytes()) < len(secret.public().to_bytes()) / 4
    score = client.score_block([client.encrypt_query([1.0])], [client.encrypt_vector([1.0])])
    with pytest.raises(ConfigError, match="Galois"):
        client.rotate(score, 3)


@pytest.mark.parametrize("m", [16, 64])
def test_block_score_error_on_unit_vectors(
    secret: CKKSContext, public: CKKSContext, m: int
) -> None:
    heads = _unit_rows(SLOTS, m, m)
    query = _unit_rows(1, m, 100 + m)[0]
    block = [public.encrypt_vector(row) for row in diagonal_rows(heads)]
    score = public.score_block(public.expand_query(public.encrypt_query(query), m), block)
    err = np.max(np.abs(secret.decrypt(score) - heads @ query))
    # The expanded query carries m − 1 key switches of noise: ~1e-6 measured (2.4e-6 at m = 128,
    # bench/results/query_upload.json); B floods with σ/a ≥ 2^-10 ≈ 1e-3 in these units.
    assert err < 4e-6


@settings(max_examples=8, deadline=None)
@given(st.integers(0, SLOTS - 1), st.integers(1, 2**16 - 1), st.floats(-6e4, 6e4))
def test_rotation_and_affine_mask(
    secret: CKKSContext, public: CKKSContext, steps: int, a: int, c: float
) -> None:
    values = _unit_rows(1, SLOTS, steps)[0] * 30  # |v| ≤ 1 per slot, varied
    values = np.clip(values, -1, 1)
    score = public.score_block([public.encrypt_query([1.0])], [public.encrypt_vector(values)])
    masked = public.affine_mask(public.rotate(score, steps), a, c)
    expected = a * np.roll(values, -steps) + c
    assert np.max(np.abs(secret.decrypt(masked) - expected)) / a < 1e-4


def test_mask_bounds_are_enforced(public: CKKSContext) -> None:
    a_bits, c_bits = public.mask_bounds()
    assert (a_bits, c_bits) == (17, 17)
    score = public.score_block([public.encrypt_query([1.0])], [public.encrypt_vector([1.0])])
    for a, c in ((0, 0.0), (2**a_bits, 0.0), (1, 2.0**c_bits)):
        with pytest.raises(ParameterError):
            public.affine_mask(score, a, c)
    with pytest.raises(DimensionError):
        public.rotate(score, SLOTS)


def test_ciphertext_round_trip_and_sizes(secret: CKKSContext, public: CKKSContext) -> None:
    ct = public.encrypt_vector([0.1, 0.2, 0.3])
    raw = public.ciphertext_to_bytes(ct)
    assert 200_000 < len(raw) < 270_000  # two 8192-coefficient RNS limbs, 2 polynomials
    back = secret.ciphertext_from_bytes(raw)
    assert back.level == "work"
    assert np.allclose(secret.decrypt(back)[:4], [0.1, 0.2, 0.3, 0.0], atol=1e-7)
    head = public.ciphertext_to_bytes(public.encrypt_head([0.1, 0.2, 0.3]))
    assert 300_000 < len(head) < 360_000  # one level higher: three limbs
    assert secret.ciphertext_from_bytes(head).level == "head"


def test_place_head_moves_the_head_into_one_slot(secret: CKKSContext, public: CKKSContext) -> None:
    y = _unit_rows(1, 8, 3)[0]
    head = public.encrypt_head(y)
    placed = public.place_head(head, 4003, 8)
    values = np.stack([secret.decrypt(c) for c in placed])
    expected = np.zeros_like(values)
    expected[:, 4003] = slot_column(y, 4003)  # diagonal layout: row r holds y[(4003 + r) % 8]
    assert np.allclose(expected[:, 4003], np.roll(y, -3))
    assert np.max(np.abs(values - expected)) < 1e-5
    again = public.place_head(head, 4003, 8)
    assert [public.ciphertext_to_bytes(c) for c in again] == [
        public.ciphertext_to_bytes(c) for c in placed
    ]  # deterministic: deletion can subtract the identical ciphertexts
    with pytest.raises(InvalidCiphertextError):
        public.place_head(public.encrypt_vector(y), 0, 8)
    with pytest.raises(DimensionError):
        public.place_head(head, SLOTS, 8)


def test_bad_ciphertext_bytes_raise_named_errors(secret: CKKSContext, public: CKKSContext) -> None:
    raw = public.ciphertext_to_bytes(public.encrypt_vector([0.5]))
    with pytest.raises(InvalidCiphertextError):
        public.ciphertext_from_bytes(b"")
    with pytest.raises(InvalidCiphertextError):
        public.ciphertext_from_bytes(b"\x00" * 1000)
    with pytest.raises(InvalidCiphertextError):
        public.ciphertext_from_bytes(raw[:-5000])
    tampered = bytearray(raw)
    tampered[40:60] = b"\xff" * 20  # inside SEAL's header
    with pytest.raises(InvalidCiphertextError):
        public.ciphertext_from_bytes(bytes(tampered))
    with pytest.raises(InvalidCiphertextError):  # a work-level ct is not a score ct
        public.ciphertext_from_bytes(raw, score=True)


def test_ciphertext_from_another_key_or_parameter_set(public: CKKSContext) -> None:
    other = CKKSContext.generate(CKKS_8192)
    with pytest.raises(KeyMismatchError):
        public.ciphertext_from_bytes(other.ciphertext_to_bytes(other.encrypt_vector([1.0])))
    small = CKKSContext.generate(CKKS_4096)
    with pytest.raises(ParameterError):
        public.ciphertext_from_bytes(small.ciphertext_to_bytes(small.encrypt_vector([1.0])))


@pytest.mark.parametrize("bad", [[], np.zeros(SLOTS + 1), [np.nan], np.zeros((2, 2))])
def test_encrypt_rejects_bad_vectors(public: CKKSContext, bad: object) -> None:
    with pytest.raises(DimensionError):
        public.encrypt_vector(bad)  # type: ignore[arg-type]


def test_score_block_rejects_mismatched_lengths(public: CKKSContext) -> None:
    q = public.expand_query(public.encrypt_query([0.1, 0.2]), 2)
    with pytest.raises(DimensionError):
        public.score_block(q, [public.encrypt_vector([1.0])])


def test_uniform_reals_range_and_reproducibility() -> None:
    a = uniform_reals(random.Random(5), 10_000, 40)
    b = uniform_reals(random.Random(5), 10_000, 40)
    assert np.array_equal(a, b)
    assert np.all(np.abs(a) <= 2.0**40)
    assert np.std(a) > 0.5 * 2.0**40 / np.sqrt(3)
    assert uniform_reals(random.SystemRandom(), 4, 40).shape == (4,)


def test_secret_side_encryptions_are_seed_compressed(
    secret: CKKSContext, public: CKKSContext
) -> None:
    compact = secret.encrypt_vector_bytes([0.25, -0.5])
    full = public.encrypt_vector_bytes([0.25, -0.5])
    assert len(compact) < 0.6 * len(full)
    for raw in (compact, full):
        values = secret.decrypt(public.ciphertext_from_bytes(raw))
        assert np.allclose(values[:3], [0.25, -0.5, 0.0], atol=1e-7)


def test_trailing_bytes_and_work_level_heads_are_refused(
    secret: CKKSContext, public: CKKSContext
) -> None:
    """Parsing is strict (issue 13, item 8): the SEAL body must be exactly as long as its
    header says (SEAL itself ignores what follows), and an enrolment head must be a head."""
    head = public.ciphertext_to_bytes(public.encrypt_head(np.zeros(4)))
    assert public.head_from_bytes(head).level == "head"
    for extra in (b"\x00", b"x" * 4096):
        with pytest.raises(InvalidCiphertextError, match="SEAL header announces"):
            public.ciphertext_from_bytes(head + extra)
    with pytest.raises(InvalidCiphertextError, match="SEAL header announces"):
        public.ciphertext_from_bytes(head[:-1])
    work = public.ciphertext_to_bytes(public.encrypt_vector(np.zeros(4)))
    assert public.ciphertext_from_bytes(work).level == "work"
    with pytest.raises(InvalidCiphertextError, match="head-level"):
        public.head_from_bytes(work)
    compressed = secret.encrypt_vector_bytes(np.zeros(4))  # seed-compressed: still exact
    assert public.ciphertext_from_bytes(compressed).level == "work"


def test_diagonal_rows_known_answer() -> None:
    heads = np.arange(8.0).reshape(4, 2)  # slot s holds [2s, 2s + 1]
    assert diagonal_rows(heads).tolist() == [[0, 3, 4, 7], [1, 2, 5, 6]]
    assert slot_column([10.0, 11.0, 12.0], 4).tolist() == [11.0, 12.0, 10.0]
    with pytest.raises(DimensionError):
        diagonal_rows(np.zeros((4, 3)))  # 3 does not divide 4 slots


def test_expanded_query_rows_are_rotations_of_one_periodic_ciphertext(
    secret: CKKSContext, public: CKKSContext
) -> None:
    x = _unit_rows(1, 8, 9)[0]
    query = public.encrypt_query(x)
    assert np.allclose(secret.decrypt(query), np.tile(x, SLOTS // 8), atol=1e-6)
    rows = public.expand_query(query, 8)
    assert len(rows) == 8
    for r, row in enumerate(rows):
        assert np.allclose(secret.decrypt(row)[:16], np.roll(np.tile(x, 2), -r), atol=1e-5)
    with pytest.raises(DimensionError):
        public.encrypt_query(np.ones(3))  # 3 does not divide the slot count
    with pytest.raises(InvalidCiphertextError):
        public.expand_query(public.encrypt_head(x), 8)  # a head is not a query


def test_placed_heads_score_like_plaintext_against_expanded_queries(
    secret: CKKSContext, public: CKKSContext
) -> None:
    """place_head (A alone, enrolment) and expand_query (A, per query) agree on the layout."""
    m = 8
    heads = _unit_rows(3, m, 21)
    x = _unit_rows(1, m, 22)[0]
    block = [public.encrypt_vector(np.zeros(SLOTS)) for _ in range(m)]
    for head, slot in zip(heads, (0, 1234, SLOTS - 1), strict=True):
        placed = public.place_head(public.encrypt_head(head), slot, m)
        block = [public.add(ct, part) for ct, part in zip(block, placed, strict=True)]
    score = secret.decrypt(public.score_block(public.expand_query(public.encrypt_query(x), m),
                                              block))
    assert np.allclose(score[[0, 1234, SLOTS - 1]], heads @ x, atol=1e-5)
    assert np.max(np.abs(np.delete(score, [0, 1234, SLOTS - 1]))) < 1e-5
