"""Threshold fast Paillier: keys, encryption, shares, homomorphic ops, errors, serialisation."""

from __future__ import annotations

import random

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pura.crypto.paillier import (
    Ciphertext,
    FixedBaseTable,
    KeyShare,
    MultiExp,
    PartialDecryption,
    PublicKey,
    RandomnessPool,
    combine,
    decrypt_with_shares,
    generate_factors,
    generate_keypair,
    multi_exp_batch,
    partial_decrypt_batch,
)
from pura.crypto.params import PAILLIER_2048_FAST, PAILLIER_3072
from pura.errors import (
    CryptoError,
    DecryptionError,
    InvalidCiphertextError,
    KeyMismatchError,
    PackingOverflowError,
    ParameterError,
)

Keys = tuple[PublicKey, KeyShare, KeyShare]
PROPS = settings(max_examples=25, deadline=None,
                 suppress_health_check=[HealthCheck.function_scoped_fixture])


@pytest.fixture
def pool(paillier_fast_keys: Keys) -> RandomnessPool:
    return RandomnessPool(paillier_fast_keys[0], 4, rng=random.Random(7))


def _signed(pk: PublicKey) -> st.SearchStrategy[int]:
    half = int(pk.n) // 2
    return st.integers(min_value=-half + 1, max_value=half - 1)


SMALL = st.integers(min_value=-(1 << 200), max_value=1 << 200)


# -- key generation -----------------------------------------------------------------------------


def test_factors_have_the_fast_paillier_structure() -> None:
    f = generate_factors(PAILLIER_2048_FAST, random.Random(11))
    for alpha in (f.alpha_p, f.alpha_q):
        assert alpha.bit_length() == PAILLIER_2048_FAST.alpha_bits // 2
    assert f.p.bit_length() == f.q.bit_length() == 1024
    assert (f.p - 1) % (2 * f.alpha_p) == 0 and (f.q - 1) % (2 * f.alpha_q) == 0
    assert repr(f) == "KeyFactors(<secret>)"


def test_keypair_structure(paillier_fast_keys: Keys) -> None:
    pk, s1, s2 = paillier_fast_keys
    assert pk.modulus_bits == 2048 and pk.randomness_bits == 448
    assert (s1.index, s2.index) == (1, 2)
    assert s1.public_key == s2.public_key == pk
    pk.check_params(PAILLIER_2048_FAST)
    with pytest.raises(ParameterError):
        pk.check_params(PAILLIER_3072)


def test_keygen_is_reproducible_with_injected_rng() -> None:
    a = generate_keypair(PAILLIER_2048_FAST, random.Random(5))[0]
    b = generate_keypair(PAILLIER_2048_FAST, random.Random(5))[0]
    c = generate_keypair(PAILLIER_2048_FAST, random.Random(6))[0]
    assert a == b and a != c


def test_default_preset_roundtrip(paillier_default_keys: Keys) -> None:
    pk, s1, s2 = paillier_default_keys
    assert pk.modulus_bits == 3072
    pool = RandomnessPool(pk, rng=random.Random(1))
    assert decrypt_with_shares(s1, s2, pk.encrypt(-123456789, pool), signed=True) == -123456789


def test_repr_reveals_no_secret(paillier_fast_keys: Keys) -> None:
    pk, s1, s2 = paillier_fast_keys
    for obj in (pk, s1, s2):
        text = repr(obj)
        assert pk.key_id in text
        assert str(int(pk.n))[:30] not in text
    assert format(int(s1._exponent), "x")[:20] not in repr(s1)


# -- encryption / decryption --------------------------------------------------------------------


@PROPS
@given(data=st.data())
def test_encrypt_decrypt_signed(paillier_fast_keys: Keys, pool: RandomnessPool,
                                data: st.DataObject) -> None:
    pk, s1, s2 = paillier_fast_keys
    m = data.draw(_signed(pk))
    assert decrypt_with_shares(s1, s2, pk.encrypt(m, pool), signed=True) == m


def test_encryption_is_randomised(paillier_fast_keys: Keys, pool: RandomnessPool) -> None:
    pk = paillier_fast_keys[0]
    assert pk.encrypt(5, pool) != pk.encrypt(5, pool)


def test_pool_matches_direct_exponentiation(paillier_fast_keys: Keys) -> None:
    pk = paillier_fast_keys[0]
    rng = random.Random(3)
    table = FixedBaseTable(pk.h_n, pk.n_squared, pk.randomness_bits, window=5)
    for _ in range(5):
        r = rng.getrandbits(pk.randomness_bits)
        assert table.power(r) == pow(int(pk.h_n), r, int(pk.n_squared))
    with pytest.raises(CryptoError):
        table.power(1 << pk.randomness_bits)


def test_pool_refill_and_take(paillier_fast_keys: Keys) -> None:
    pool = RandomnessPool(paillier_fast_keys[0], 3, rng=random.Random(1))
    assert len(pool) == 3
    pool.take()
    assert len(pool) == 2
    pool.refill(5)
    assert len(pool) == 7
    assert "available=7" in repr(pool)


def test_plaintext_out_of_range(paillier_fast_keys: Keys, pool: RandomnessPool) -> None:
    pk = paillier_fast_keys[0]
    with pytest.raises(PackingOverflowError):
        pk.encrypt(int(pk.n) // 2, pool)


# -- threshold shares ---------------------------------------------------------------------------


@PROPS
@given(m=SMALL)
def test_partial_decryptions_combine_in_any_order(paillier_fast_keys: Keys, pool: RandomnessPool,
                                                  m: int) -> None:
    pk, s1, s2 = paillier_fast_keys
    c = pk.encrypt(m, pool)
    p1, p2 = s1.partial_decrypt(c), s2.partial_decrypt(c)
    assert combine(p1, p2, signed=True) == combine(p2, p1, signed=True) == m


def test_one_partial_decryption_alone_is_not_the_plaintext(paillier_fast_keys: Keys,
                                                           pool: RandomnessPool) -> None:
    pk, s1, _ = paillier_fast_keys
    c = pk.encrypt(42, pool)
    u = int(s1.partial_decrypt(c).value)
    assert (u - 1) % int(pk.n) != 0


def test_wrong_share_is_detected(paillier_fast_keys: Keys, pool: RandomnessPool) -> None:
    pk, s1, s2 = paillier_fast_keys
    c = pk.encrypt(99, pool)
    bad = KeyShare(pk, 2, int(s2._exponent) + 1)
    with pytest.raises(DecryptionError):
        combine(s1.partial_decrypt(c), bad.partial_decrypt(c))


def test_same_share_twice_is_refused(paillier_fast_keys: Keys, pool: RandomnessPool) -> None:
    pk, s1, _ = paillier_fast_keys
    c = pk.encrypt(1, pool)
    with pytest.raises(DecryptionError):
        combine(s1.partial_decrypt(c), s1.partial_decrypt(c))
    # Relabelling share 1 as share 2 does not help: the redundancy check catches it.
    fake = PartialDecryption(pk, 2, s1.partial_decrypt(c).value)
    with pytest.raises(DecryptionError):
        combine(s1.partial_decrypt(c), fake)


def test_share_of_another_key(paillier_fast_keys: Keys, pool: RandomnessPool) -> None:
    pk, s1, _ = paillier_fast_keys
    other_pk, _, other_s2 = generate_keypair(PAILLIER_2048_FAST, random.Random(99))
    c = pk.encrypt(3, pool)
    with pytest.raises(KeyMismatchError):
        other_s2.partial_decrypt(c)
    with pytest.raises(KeyMismatchError):
        combine(s1.partial_decrypt(c), other_s2.partial_decrypt(
            other_pk.encrypt(3, RandomnessPool(other_pk, rng=random.Random(1)))))


def test_parts_of_two_ciphertexts_do_not_combine(paillier_fast_keys: Keys,
                                                 pool: RandomnessPool) -> None:
    pk, s1, s2 = paillier_fast_keys
    a, b = pk.encrypt(1, pool), pk.encrypt(1, pool)
    with pytest.raises(DecryptionError):
        combine(s1.partial_decrypt(a), s2.partial_decrypt(b))


@settings(max_examples=10, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(position=st.integers(min_value=0, max_value=255 * 8 - 1))
def test_tampered_ciphertext_is_detected(paillier_fast_keys: Keys, pool: RandomnessPool,
                                         position: int) -> None:
    """Flipping any bit of a ciphertext gives an invalid-bytes or decryption error, never m'."""
    pk, s1, s2 = paillier_fast_keys
    c = pk.encrypt(7, pool)
    data = bytearray(c.to_bytes())
    byte = 11 + (position // 8) % pk.ciphertext_bytes
    data[byte] ^= 1 << (position % 8)
    with pytest.raises((InvalidCiphertextError, DecryptionError)):
        decrypt_with_shares(s1, s2, Ciphertext.from_bytes(pk, bytes(data)))


def test_partial_decrypt_batch(paillier_fast_keys: Keys, pool: RandomnessPool) -> None:
    pk, s1, s2 = paillier_fast_keys
    cts = [pk.encrypt(v, pool) for v in (1, 2, 3)]
    got = [combine(a, b) for a, b in zip(partial_decrypt_batch(s1, cts),
                                         partial_decrypt_batch(s2, cts), strict=True)]
    assert got == [1, 2, 3]


# -- homomorphic operations ---------------------------------------------------------------------


@PROPS
@given(a=SMALL, b=SMALL, k=st.integers(min_value=-(1 << 64), max_value=1 << 64))
def test_homomorphic_ops(paillier_fast_keys: Keys, pool: RandomnessPool, a: int, b: int,
                         k: int) -> None:
    pk, s1, s2 = paillier_fast_keys
    ca, cb = pk.encrypt(a, pool), pk.encrypt(b, pool)

    def dec(c: Ciphertext) -> int:
        return decrypt_with_shares(s1, s2, c, signed=True)

    assert dec(ca + cb) == a + b
    assert dec(ca - cb) == a - b
    assert dec(-ca) == -a
    assert dec(ca * k) == a * k
    assert dec(k * ca) == a * k
    assert dec(ca.add_plain(b)) == a + b
    rr = ca.rerandomize(pool)
    assert rr != ca and dec(rr) == a
    assert dec(ca.shift_slots(10)) == a * 1024


def test_mixing_keys_is_refused(paillier_fast_keys: Keys, pool: RandomnessPool) -> None:
    pk = paillier_fast_keys[0]
    other = generate_keypair(PAILLIER_2048_FAST, random.Random(98))[0]
    other_pool = RandomnessPool(other, rng=random.Random(2))
    with pytest.raises(KeyMismatchError):
        _ = pk.encrypt(1, pool) + other.encrypt(1, other_pool)
    with pytest.raises(KeyMismatchError):
        pk.encrypt(1, other_pool)


def test_multi_exp_matches_naive(paillier_fast_keys: Keys, pool: RandomnessPool) -> None:
    pk, s1, s2 = paillier_fast_keys
    rng = random.Random(4)
    xs = [rng.randint(-2048, 2048) for _ in range(9)]
    bases = [pk.encrypt(x, pool) for x in xs]
    for window in (1, 3, 4):
        table = MultiExp(bases, window)
        for _ in range(3):
            es = [rng.getrandbits(rng.choice([1, 20, 53])) for _ in xs]
            got = table.power_product(es)
            naive = int(pk.n_squared)
            acc = 1
            for b, e in zip(bases, es, strict=True):
                acc = acc * pow(int(b.value), e, naive) % naive
            assert int(got.value) == acc
            assert decrypt_with_shares(s1, s2, got, signed=True) == sum(
                x * e for x, e in zip(xs, es, strict=True))
    assert [c.value for c in multi_exp_batch(bases, [[0] * 8 + [1]])] == [bases[-1].value]
    with pytest.raises(CryptoError):
        table.power_product([1, 2])
    with pytest.raises(CryptoError):
        table.power_product([-1] * 9)
    with pytest.raises(CryptoError):
        MultiExp([])


# -- serialisation ------------------------------------------------------------------------------


def test_public_key_and_shares_roundtrip(paillier_fast_keys: Keys, pool: RandomnessPool) -> None:
    pk, s1, s2 = paillier_fast_keys
    pk2 = PublicKey.from_bytes(pk.to_bytes())
    assert pk2 == pk and pk2.params_name == pk.params_name
    t1, t2 = KeyShare.from_bytes(s1.to_bytes()), KeyShare.from_bytes(s2.to_bytes())
    assert (t1.index, t2.index) == (1, 2)
    c = pk.encrypt(-77, pool)
    assert decrypt_with_shares(t1, t2, c, signed=True) == -77
    assert format(int(s2._exponent), "x") not in s1.to_bytes().decode()


def test_share_and_key_parsing_errors(paillier_fast_keys: Keys) -> None:
    pk, s1, _ = paillier_fast_keys
    for bad in (b"not json", b"{}", pk.to_bytes().replace(b'"version": 1', b'"version": 9')):
        with pytest.raises(ParameterError):
            PublicKey.from_bytes(bad)
    with pytest.raises(ParameterError):
        KeyShare.from_bytes(pk.to_bytes())
    doctored = s1.to_bytes().replace(pk.key_id.encode(), b"0" * 16)
    with pytest.raises(KeyMismatchError):
        KeyShare.from_bytes(doctored)
    with pytest.raises(ParameterError):
        KeyShare(pk, 3, 5)


def test_ciphertext_bytes_roundtrip_and_validation(paillier_fast_keys: Keys,
                                                   pool: RandomnessPool) -> None:
    pk, _, _ = paillier_fast_keys
    c = pk.encrypt(12, pool)
    data = c.to_bytes()
    assert len(data) == 3 + 8 + pk.ciphertext_bytes
    assert Ciphertext.from_bytes(pk, data) == c
    assert Ciphertext.from_raw(pk, c.raw_bytes()) == c
    width = pk.ciphertext_bytes
    head = data[:11]
    cases = {
        "short": data[:-1],
        "zero": head + bytes(width),
        "too big": head + (int(pk.n_squared)).to_bytes(width, "big"),
        "not a unit": head + (int(pk.n) * 3).to_bytes(width, "big"),
        "trivial": head + (1 + 5 * int(pk.n)).to_bytes(width, "big"),
        "bad magic": b"XX\x01" + data[3:],
    }
    for name, blob in cases.items():
        with pytest.raises(InvalidCiphertextError):
            Ciphertext.from_bytes(pk, blob)
        assert name
    other = generate_keypair(PAILLIER_2048_FAST, random.Random(97))[0]
    with pytest.raises(KeyMismatchError):
        Ciphertext.from_bytes(other, data)


def test_partial_pool_gives_own_partial_decryption(paillier_fast_keys: Keys) -> None:
    """A's precomputed (mask, partial) pairs decrypt like a real partial decryption."""
    from pura.crypto.paillier import PartialPool

    pk, s1, s2 = paillier_fast_keys
    pool = PartialPool(s1, 2, rng=random.Random(8))
    assert len(pool) == 2 and "share=1" in repr(pool)
    for value in (0, 5, -9, 1 << 300):
        ct, pd = pool.encrypt_with_partial(value)
        assert pd == s1.partial_decrypt(ct)
        assert combine(pd, s2.partial_decrypt(ct), signed=True) == value
    a, b = pk.encrypt(3, RandomnessPool(pk, rng=random.Random(1))), pool.encrypt_with_partial(4)[0]
    merged = s1.partial_decrypt(a).times(s1.partial_decrypt(b))
    assert merged == s1.partial_decrypt(a + b)
    assert s1.partial_decrypt(a).shift_slots(7) == s1.partial_decrypt(a.shift_slots(7))
    with pytest.raises(KeyMismatchError):
        s1.partial_decrypt(a).times(s2.partial_decrypt(a))
