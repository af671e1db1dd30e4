"""(2,2)-threshold Paillier with fast encryption (Ma, Han, Lei 2021; share split as in SOCI/SOCI+).

This is the only module of Pura that imports :mod:`gmpy2`. Every other module sees
:class:`PublicKey`, :class:`KeyShare`, :class:`Ciphertext`, :class:`PartialDecryption`,
:class:`RandomnessPool`, :class:`PackedLayout` and :class:`MultiExp`.

Scheme (docs/architecture.md)::

    N = p q,   p = 2 α_p β_p + 1,   q = 2 α_q β_q + 1,   α = α_p α_q   (α_p, α_q short primes)
    h = −y^(2β) mod N  (β = β_p β_q, y random),   h_N = h^N mod N²      (order of h_N divides 2α)
    Enc(m; r) = (1 + N)^m · h_N^r = (1 + m N) · h_N^r  mod N²,   r short (``randomness_bits``)
    s = 2α · ((2α)^-1 mod N)          so s ≡ 0 (mod 2α) and s ≡ 1 (mod N)
    sk1 uniform of bitlen(2αN) + σ bits,   sk2 = s − sk1 + η·2αN > 0
    PDec_i(c) = c^(sk_i) mod N²,   TDec = L(PDec_1 · PDec_2 mod N²),   L(u) = (u − 1) / N

Why the fast variant: ``h_N^r`` with a 448/512-bit ``r`` replaces a full-size ``r^N``; the powers
of the fixed base ``h_N`` are precomputed (:class:`RandomnessPool`), so online encryption is one
modular multiplication. Security rests on the DSR assumption plus the small-subgroup assumption
on ⟨h⟩ (Ma–Han–Lei), which is why α and r are both ≥ 4κ bits in the 128-bit preset.

Why one share alone reveals nothing: ``sk1`` is σ = 128 bits longer than ``2αN`` so ``sk2`` (and
``sk1``) are each 2^-128-close to uniform over their ranges whatever ``s`` is.

Decryption redundancy (wrong share / tampered ciphertext detection). For a ciphertext in the
subgroup ⟨1+N⟩·⟨h_N⟩ (every ciphertext this module produces), ``c^(sk1+sk2) = (1+N)^m`` exactly,
so ``u = PDec_1·PDec_2`` satisfies ``u ≡ 1 (mod N)``. :func:`combine` checks this divisibility and
raises :class:`DecryptionError` when it fails. It fails with overwhelming probability when

* a share is wrong (corrupted, from another key, or the same share used twice): ``u = c^(s+δ)``
  leaves the factor ``c^δ`` whose randomness part is ≢ 1 mod N unless ``ord(h_N) | δ``;
* the ciphertext bytes were altered to any value outside the subgroup (random bit flips land
  outside with probability ≥ 1 − 2α/φ(N), i.e. always in practice).

What it can NOT detect, by nature of Paillier (malleable): replacing a ciphertext by another
*valid* ciphertext of the same key (e.g. ``c·(1+N)^δ``, ``c^k``, ``c·h_N^t``, a ciphertext of
another record). Integrity of stored ciphertexts is the job of the store and TLS layers, not of
the encryption. A trivial ciphertext (``c ≡ 1 mod N``, no randomness) would also defeat the
wrong-share check, so :meth:`Ciphertext.from_bytes` rejects it.
"""

from __future__ import annotations

import functools
import hashlib
import json
import random
import secrets
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import gmpy2

from pura.crypto.params import PaillierParams
from pura.errors import (
    CryptoError,
    DecryptionError,
    InvalidCiphertextError,
    KeyMismatchError,
    PackingOverflowError,
    ParameterError,
)

mpz = gmpy2.mpz

_PUBLIC_FORMAT = "pura-paillier-public"
_SHARE_FORMAT = "pura-paillier-share"
_FORMAT_VERSION = 1
_CT_MAGIC = b"PC\x01"
_FINGERPRINT_BYTES = 8
#: Miller–Rabin rounds for key generation (error ≤ 4^-40 per prime, after trial division).
_PRIME_ROUNDS = 40


def _default_rng(rng: random.Random | None) -> random.Random:
    """Key material and masks come from the OS CSPRNG unless a test injects a seeded rng."""
    return rng if rng is not None else secrets.SystemRandom()


def _random_bits_exact(rng: random.Random, bits: int) -> int:
    """Uniform integer with exactly ``bits`` bits (top bit set)."""
    return rng.getrandbits(bits - 1) | (1 << (bits - 1))


def _random_prime(rng: random.Random, bits: int) -> Any:
    while True:
        cand = mpz(_random_bits_exact(rng, bits) | 1)
        if gmpy2.is_prime(cand, _PRIME_ROUNDS):
            return cand


def powmod_unlocked(base: Any, exponent: Any, modulus: Any) -> Any:
    """``base^exponent mod modulus`` with Python's GIL released for the duration.

    Why: a 3072-bit partial decryption is ~35 ms of GMP work during which no Python object is
    touched, yet with the GIL held another thread of the same process waits: A's half of a
    step and B's half, in one process (the loopback the bench and tests use), or the concurrent
    requests of one server, would run one after the other on a multi-core machine. gmpy2 lets a
    context release the GIL around ``mpz_powm``; only here, because for the many small
    multiplications elsewhere releasing it costs ~10 % and buys nothing.
    """
    with gmpy2.context(gmpy2.get_context(), allow_release_gil=True):
        return gmpy2.powmod(base, exponent, modulus)


def _int_to_bytes(value: int, length: int) -> bytes:
    return int(value).to_bytes(length, "big")


# --------------------------------------------------------------------------------------------
# Keys
# --------------------------------------------------------------------------------------------


class PublicKey:
    """Paillier public key ``(N, h_N)`` plus the short-randomness length.

    Equality and :attr:`fingerprint` depend on ``N`` and ``h_N`` only; the fingerprint binds every
    ciphertext and share to its key so material of two keys is never mixed silently.
    """

    __slots__ = ("_fingerprint", "h_n", "modulus_bits", "n", "n_squared", "params_name",
                 "randomness_bits", "security_bits")

    def __init__(
        self,
        n: int,
        h_n: int,
        randomness_bits: int,
        *,
        params_name: str = "custom",
        security_bits: int = 0,
    ) -> None:
        self.n = mpz(n)
        self.n_squared = self.n * self.n
        self.h_n = mpz(h_n)
        self.randomness_bits = int(randomness_bits)
        self.modulus_bits = int(self.n.bit_length())
        self.params_name = params_name
        self.security_bits = security_bits
        self._validate()
        digest = hashlib.sha256(
            b"pura-paillier-key-v1" + _int_to_bytes(self.n, self.n_bytes)
            + _int_to_bytes(self.h_n, self.ciphertext_bytes)
        ).digest()
        self._fingerprint = digest[:_FINGERPRINT_BYTES]

    def _validate(self) -> None:
        if self.n < 15 or self.n % 2 == 0 or gmpy2.is_square(self.n):
            raise ParameterError("Paillier modulus must be an odd composite, not a square")
        if not 1 < self.h_n < self.n_squared or gmpy2.gcd(self.h_n, self.n) != 1:
            raise ParameterError("Paillier h_N is out of range or not a unit mod N²")
        if self.randomness_bits < 8:
            raise ParameterError(f"randomness_bits {self.randomness_bits} is too small")

    @property
    def n_bytes(self) -> int:
        return (self.modulus_bits + 7) // 8

    @property
    def ciphertext_bytes(self) -> int:
        """Fixed width of a serialised ciphertext value (``N²`` in bytes)."""
        return (int(self.n_squared.bit_length()) + 7) // 8

    @property
    def fingerprint(self) -> bytes:
        """8-byte key id (SHA-256 of ``N`` and ``h_N``)."""
        return self._fingerprint

    @property
    def key_id(self) -> str:
        return self._fingerprint.hex()

    @property
    def plaintext_bits(self) -> int:
        """Bits usable by a non-negative plaintext that must stay below ``N/2`` (signed-safe)."""
        return self.modulus_bits - 2

    def check_params(self, params: PaillierParams) -> None:
        """Raise :class:`ParameterError` unless this key was made for ``params``."""
        wanted = (params.modulus_bits, params.randomness_bits)
        if (self.modulus_bits, self.randomness_bits) != wanted:
            raise ParameterError(
                f"key {self.key_id} is {self.modulus_bits}-bit/r{self.randomness_bits}, "
                f"parameter set {params.name} wants {params.modulus_bits}/r{params.randomness_bits}"
            )

    def __eq__(self, other: object) -> bool:
        return isinstance(other, PublicKey) and self._fingerprint == other._fingerprint

    def __hash__(self) -> int:
        return hash(self._fingerprint)

    def __repr__(self) -> str:
        return f"PublicKey(id={self.key_id}, bits={self.modulus_bits}, params={self.params_name})"

    def __reduce__(self) -> tuple[Any, ...]:
        return (
            PublicKey,
            (int(self.n), int(self.h_n), self.randomness_bits),
            {"params_name": self.params_name, "security_bits": self.security_bits},
        )

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.params_name = state["params_name"]
        self.security_bits = state["security_bits"]

    def to_bytes(self) -> bytes:
        """Versioned JSON; see :func:`public_key_to_bytes`."""
        return public_key_to_bytes(self)

    @classmethod
    def from_bytes(cls, data: bytes) -> PublicKey:
        return public_key_from_bytes(data)

    # -- plaintext encoding ------------------------------------------------------------------

    def encode(self, value: int) -> Any:
        """Signed integer → residue mod N (−v ↔ N − v)."""
        if abs(value) >= self.n // 2:
            raise PackingOverflowError(
                f"plaintext of {abs(int(value)).bit_length()} bits does not fit a signed "
                f"{self.modulus_bits}-bit modulus"
            )
        return mpz(value) % self.n

    def decode_signed(self, residue: int) -> int:
        """Residue mod N → signed integer in (−N/2, N/2)."""
        r = int(residue)
        return r - int(self.n) if r > self.n // 2 else r

    # -- encryption and homomorphic operations -----------------------------------------------

    def encrypt(self, value: int, pool: RandomnessPool) -> Ciphertext:
        """``Enc(m) = (1 + mN) · h_N^r``: one multiplication online, ``h_N^r`` from the pool."""
        pool.check_key(self)
        m = self.encode(value)
        return Ciphertext(self, gmpy2.f_mod((1 + m * self.n) * pool.take(), self.n_squared))

    def encrypt_with_randomness(self, value: int, r: int) -> Ciphertext:
        """``(1 + mN) · h_N^r`` with an explicit ``r``: for known-answer vectors only.

        Reusing ``r`` for two plaintexts reveals their difference; protocol code always goes
        through a :class:`RandomnessPool`.
        """
        if not 0 <= r < 1 << self.randomness_bits:
            raise CryptoError(f"r must be in [0, 2^{self.randomness_bits})")
        m = self.encode(value)
        h_r = gmpy2.powmod(self.h_n, r, self.n_squared)
        return Ciphertext(self, gmpy2.f_mod((1 + m * self.n) * h_r, self.n_squared))

    def encrypt_many(self, values: Sequence[int], pool: RandomnessPool) -> list[Ciphertext]:
        return [self.encrypt(v, pool) for v in values]

    def ciphertext(self, value: int, *, unit_check: bool = True) -> Ciphertext:
        """Wrap a raw group element, validating it like :meth:`Ciphertext.from_bytes`.

        ``unit_check=False`` skips the gcd with ``N`` (~50 µs at 3072 bits) for values that a
        later check covers anyway: sealed admission's mask ciphertexts enter A's batch check
        (:mod:`pura.protocols.sealed`), whose product is a unit only if every factor is."""
        v = mpz(value)
        if not 0 < v < self.n_squared:
            raise InvalidCiphertextError("ciphertext value out of range (0, N²)")
        if unit_check and gmpy2.gcd(v, self.n) != 1:
            raise InvalidCiphertextError("ciphertext is not a unit mod N²")
        if v % self.n == 1:
            raise InvalidCiphertextError("ciphertext carries no randomness (c ≡ 1 mod N)")
        return Ciphertext(self, v)


class KeyShare:
    """One party's decryption exponent (index 1 = server A, 2 = server B).

    ``repr`` shows the index and key id only: the exponent must never reach a log.
    """

    __slots__ = ("_exponent", "index", "public_key")

    def __init__(self, public_key: PublicKey, index: int, exponent: int) -> None:
        if index not in (1, 2):
            raise ParameterError(f"key share index must be 1 or 2, got {index}")
        if exponent <= 0:
            raise ParameterError("key share exponent must be positive")
        self.public_key = public_key
        self.index = index
        self._exponent = mpz(exponent)

    def __repr__(self) -> str:
        return f"KeyShare(index={self.index}, key={self.public_key.key_id})"

    def __reduce__(self) -> tuple[Any, ...]:
        return (KeyShare, (self.public_key, self.index, int(self._exponent)))

    def partial_decrypt(self, ct: Ciphertext) -> PartialDecryption:
        """``c^(sk_i) mod N²``. Reveals nothing on its own (the other share is uniform-looking)."""
        if ct.key != self.public_key:
            raise KeyMismatchError(
                f"ciphertext of key {ct.key.key_id} given to share of key {self.public_key.key_id}"
            )
        value = powmod_unlocked(ct.value, self._exponent, self.public_key.n_squared)
        return PartialDecryption(self.public_key, self.index, value)

    def to_bytes(self) -> bytes:
        """Versioned JSON holding the public key and this share's exponent only."""
        blob = {
            "format": _SHARE_FORMAT,
            "version": _FORMAT_VERSION,
            "index": self.index,
            "key_id": self.public_key.key_id,
            "public_key": json.loads(public_key_to_bytes(self.public_key)),
            "exponent": format(int(self._exponent), "x"),
        }
        return json.dumps(blob, sort_keys=True).encode()

    @classmethod
    def from_bytes(cls, data: bytes) -> KeyShare:
        raw = _load_json(data, _SHARE_FORMAT)
        try:
            pk = public_key_from_bytes(json.dumps(raw["public_key"]).encode())
            share = cls(pk, int(raw["index"]), int(raw["exponent"], 16))
            expected = str(raw["key_id"])
        except (KeyError, TypeError, ValueError) as exc:
            raise ParameterError(f"malformed key share: {type(exc).__name__}") from exc
        if pk.key_id != expected:
            raise KeyMismatchError("key share names a different public key than it embeds")
        return share


def _load_json(data: bytes, fmt: str) -> dict[str, Any]:
    try:
        raw = json.loads(data)
    except (ValueError, UnicodeDecodeError) as exc:
        raise ParameterError(f"{fmt}: not valid JSON") from exc
    if not isinstance(raw, dict) or raw.get("format") != fmt:
        raise ParameterError(f"expected a {fmt} document")
    if raw.get("version") != _FORMAT_VERSION:
        raise ParameterError(f"{fmt} version {raw.get('version')!r} is not supported")
    return raw


def public_key_to_bytes(pk: PublicKey) -> bytes:
    """Versioned JSON (hex integers): small, diffable, language-neutral."""
    blob = {
        "format": _PUBLIC_FORMAT,
        "version": _FORMAT_VERSION,
        "params": pk.params_name,
        "security_bits": pk.security_bits,
        "randomness_bits": pk.randomness_bits,
        "n": format(int(pk.n), "x"),
        "h_n": format(int(pk.h_n), "x"),
    }
    return json.dumps(blob, sort_keys=True).encode()


def public_key_from_bytes(data: bytes) -> PublicKey:
    raw = _load_json(data, _PUBLIC_FORMAT)
    try:
        return PublicKey(
            int(raw["n"], 16),
            int(raw["h_n"], 16),
            int(raw["randomness_bits"]),
            params_name=str(raw["params"]),
            security_bits=int(raw["security_bits"]),
        )
    except (KeyError, TypeError, ValueError) as exc:
        raise ParameterError(f"malformed public key: {type(exc).__name__}") from exc


@dataclass(frozen=True)
class KeyFactors:
    """The secret factorisation, kept by the key authority only during key generation."""

    alpha_p: int
    beta_p: int
    alpha_q: int
    beta_q: int

    def __repr__(self) -> str:
        return "KeyFactors(<secret>)"

    @property
    def p(self) -> int:
        return 2 * self.alpha_p * self.beta_p + 1

    @property
    def q(self) -> int:
        return 2 * self.alpha_q * self.beta_q + 1


def keys_from_factors(
    factors: KeyFactors,
    y: int,
    sk1: int,
    randomness_bits: int,
    *,
    params_name: str = "custom",
    security_bits: int = 0,
) -> tuple[PublicKey, KeyShare, KeyShare]:
    """Deterministic key assembly from explicit secrets.

    Used by :func:`generate_keypair` and by the known-answer vectors (which use deliberately
    tiny, insecure factors; they are test data, never a preset).
    """
    p, q = mpz(factors.p), mpz(factors.q)
    n = p * q
    alpha = mpz(factors.alpha_p) * factors.alpha_q
    beta = mpz(factors.beta_p) * factors.beta_q
    if not (gmpy2.is_prime(p) and gmpy2.is_prime(q)) or p == q:
        raise ParameterError("p and q must be distinct primes")
    if gmpy2.gcd(n, (p - 1) * (q - 1)) != 1 or gmpy2.gcd(alpha, beta) != 1:
        raise ParameterError("factors violate gcd(N, φ(N)) = 1 or gcd(α, β) = 1")
    h = (-gmpy2.powmod(y, 2 * beta, n)) % n
    if gmpy2.powmod(h, 2 * alpha, n) != 1 or any(
        gmpy2.powmod(h, 2 * alpha // a, n) == 1 for a in (factors.alpha_p, factors.alpha_q)
    ):
        raise ParameterError("h does not generate the full order-α subgroup; pick another y")
    pk = PublicKey(
        n, gmpy2.powmod(h, n, n * n), randomness_bits,
        params_name=params_name, security_bits=security_bits,
    )
    two_alpha = 2 * alpha
    s = two_alpha * gmpy2.invert(two_alpha, n)
    period = two_alpha * n
    eta = gmpy2.c_div(mpz(sk1) - s + 1, period) if sk1 >= s else mpz(0)
    sk2 = s - sk1 + eta * period
    return pk, KeyShare(pk, 1, sk1), KeyShare(pk, 2, int(sk2))


def generate_factors(params: PaillierParams, rng: random.Random | None = None) -> KeyFactors:
    """Primes ``p = 2 α_p β_p + 1`` of exactly ``modulus_bits/2`` bits with ``α_p`` prime.

    β_p is random (not necessarily prime) as in Ma–Han–Lei; we require the α's and β's pairwise
    coprime. About ``modulus_bits/2 · ln 2 / 2`` candidates per prime (cheap trial division first).
    """
    rng = _default_rng(rng)
    half = params.modulus_bits // 2
    alpha_half = params.alpha_bits // 2
    while True:
        a_p = _random_prime(rng, alpha_half)
        a_q = _random_prime(rng, alpha_half)
        if a_p == a_q:
            continue
        b_p = _beta_for(rng, a_p, half, alpha_half)
        b_q = _beta_for(rng, a_q, half, alpha_half)
        if gmpy2.gcd(a_p * b_p, a_q * b_q) == 1 and gmpy2.gcd(a_p * a_q, b_p * b_q) == 1:
            return KeyFactors(int(a_p), int(b_p), int(a_q), int(b_q))


def _beta_for(rng: random.Random, alpha: Any, half: int, alpha_half: int) -> Any:
    beta_bits = half - alpha_half - 1
    while True:
        beta = mpz(_random_bits_exact(rng, beta_bits))
        p = 2 * alpha * beta + 1
        if p.bit_length() == half and gmpy2.is_prime(p, _PRIME_ROUNDS):
            return beta


def generate_keypair(
    params: PaillierParams, rng: random.Random | None = None
) -> tuple[PublicKey, KeyShare, KeyShare]:
    """Key authority: fresh key for ``params``; returns (public key, share for A, share for B)."""
    rng = _default_rng(rng)
    while True:
        factors = generate_factors(params, rng)
        n = factors.p * factors.q
        if n.bit_length() != params.modulus_bits:
            continue
        two_alpha_n = 2 * factors.alpha_p * factors.alpha_q * n
        sk1 = _random_bits_exact(rng, two_alpha_n.bit_length() + params.share_extra_bits)
        y = rng.randrange(2, n - 1)
        try:
            return keys_from_factors(
                factors, y, sk1, params.randomness_bits,
                params_name=params.name, security_bits=params.security_bits,
            )
        except ParameterError:
            continue  # unlucky y (h of small order): probability ~1/α_p, just retry


# --------------------------------------------------------------------------------------------
# Ciphertexts
# --------------------------------------------------------------------------------------------


class Ciphertext:
    """An element of Z*_{N²} bound to its :class:`PublicKey`.

    Operators: ``a + b`` (plaintext add), ``a - b``, ``-a``, ``a * k`` (scalar, signed ``k``),
    ``a.add_plain(m)``. Results carry no fresh randomness: call :meth:`rerandomize` before
    handing a ciphertext to a party that must not link it to its inputs.
    """

    __slots__ = ("key", "value")

    def __init__(self, key: PublicKey, value: Any) -> None:
        self.key = key
        self.value = value

    def _same_key(self, other: Ciphertext) -> None:
        if other.key != self.key:
            raise KeyMismatchError(
                f"ciphertexts of keys {self.key.key_id} and {other.key.key_id} cannot be combined"
            )

    def __add__(self, other: Ciphertext) -> Ciphertext:
        self._same_key(other)
        return Ciphertext(self.key, gmpy2.f_mod(self.value * other.value, self.key.n_squared))

    def __neg__(self) -> Ciphertext:
        return Ciphertext(self.key, gmpy2.invert(self.value, self.key.n_squared))

    def __sub__(self, other: Ciphertext) -> Ciphertext:
        return self + (-other)

    def __mul__(self, scalar: int) -> Ciphertext:
        k = int(scalar)
        base = self.value if k >= 0 else gmpy2.invert(self.value, self.key.n_squared)
        return Ciphertext(self.key, powmod_unlocked(base, abs(k), self.key.n_squared))

    __rmul__ = __mul__

    def shift_slots(self, bits: int) -> Ciphertext:
        """Multiply the plaintext by ``2^bits`` (``bits`` squarings): used to merge packings."""
        return Ciphertext(self.key, powmod_unlocked(self.value, mpz(1) << bits, self.key.n_squared))

    def add_plain(self, value: int) -> Ciphertext:
        m = self.key.encode(value)
        return Ciphertext(
            self.key, gmpy2.f_mod(self.value * (1 + m * self.key.n), self.key.n_squared)
        )

    def rerandomize(self, pool: RandomnessPool) -> Ciphertext:
        """Multiply by a fresh ``h_N^r``: same plaintext, unlinkable to the input."""
        pool.check_key(self.key)
        return Ciphertext(self.key, gmpy2.f_mod(self.value * pool.take(), self.key.n_squared))

    def __eq__(self, other: object) -> bool:
        return (
            isinstance(other, Ciphertext) and other.key == self.key and other.value == self.value
        )

    def __hash__(self) -> int:
        return hash((self.key, int(self.value)))

    def __repr__(self) -> str:
        return f"Ciphertext(key={self.key.key_id})"

    def raw_bytes(self) -> bytes:
        """Fixed-width big-endian value without header (for messages that carry the key id once)."""
        return _int_to_bytes(self.value, self.key.ciphertext_bytes)

    def to_bytes(self) -> bytes:
        """``b'PC\\x01' + key fingerprint (8 B) + value (fixed width)``."""
        return _CT_MAGIC + self.key.fingerprint + self.raw_bytes()

    @classmethod
    def from_bytes(cls, key: PublicKey, data: bytes) -> Ciphertext:
        """Parse and validate: header, key binding, ``0 < c < N²``, ``gcd(c, N) = 1``, c ≢ 1 mod N.

        Raises :class:`KeyMismatchError` for a ciphertext of another key and
        :class:`InvalidCiphertextError` for anything malformed.
        """
        head = len(_CT_MAGIC) + _FINGERPRINT_BYTES
        if len(data) != head + key.ciphertext_bytes or not data.startswith(_CT_MAGIC):
            raise InvalidCiphertextError(
                f"ciphertext must be {head + key.ciphertext_bytes} bytes with a PC v1 header, "
                f"got {len(data)}"
            )
        if data[len(_CT_MAGIC):head] != key.fingerprint:
            raise KeyMismatchError(
                f"ciphertext of key {data[len(_CT_MAGIC):head].hex()}, expected {key.key_id}"
            )
        return cls.from_raw(key, data[head:])

    @classmethod
    def from_raw(cls, key: PublicKey, data: bytes, *, unit_check: bool = True) -> Ciphertext:
        if len(data) != key.ciphertext_bytes:
            raise InvalidCiphertextError(
                f"raw ciphertext must be {key.ciphertext_bytes} bytes, got {len(data)}"
            )
        return key.ciphertext(int.from_bytes(data, "big"), unit_check=unit_check)


class PartialDecryption:
    """``c^(sk_i) mod N²`` tagged with the share index and key."""

    __slots__ = ("index", "key", "value")

    def __init__(self, key: PublicKey, index: int, value: Any) -> None:
        self.key = key
        self.index = index
        self.value = mpz(value)

    def __repr__(self) -> str:
        return f"PartialDecryption(index={self.index}, key={self.key.key_id})"

    def __eq__(self, other: object) -> bool:
        return (
            isinstance(other, PartialDecryption)
            and (other.key, other.index, other.value) == (self.key, self.index, self.value)
        )

    def __hash__(self) -> int:
        return hash((self.key, self.index, int(self.value)))

    def raw_bytes(self) -> bytes:
        return _int_to_bytes(self.value, self.key.ciphertext_bytes)

    def times(self, other: PartialDecryption) -> PartialDecryption:
        """Partial decryption of ``c1 + c2`` from those of ``c1`` and ``c2`` (``(c1 c2)^sk``)."""
        if (other.key, other.index) != (self.key, self.index):
            raise KeyMismatchError("partial decryptions of different shares cannot be merged")
        return PartialDecryption(
            self.key, self.index, gmpy2.f_mod(self.value * other.value, self.key.n_squared)
        )

    def shift_slots(self, bits: int) -> PartialDecryption:
        """Partial decryption of ``c.shift_slots(bits)``: ``(c^(2^bits))^sk = (c^sk)^(2^bits)``."""
        return PartialDecryption(
            self.key, self.index, powmod_unlocked(self.value, mpz(1) << bits, self.key.n_squared)
        )

    @classmethod
    def from_raw(cls, key: PublicKey, index: int, data: bytes) -> PartialDecryption:
        if len(data) != key.ciphertext_bytes:
            raise InvalidCiphertextError("partial decryption has the wrong width")
        value = int.from_bytes(data, "big")
        if not 0 < value < key.n_squared:
            raise InvalidCiphertextError("partial decryption out of range (0, N²)")
        return cls(key, index, value)


def combine(a: PartialDecryption, b: PartialDecryption, *, signed: bool = False) -> int:
    """Threshold decryption ``L(PDec_1 · PDec_2)`` with the redundancy check ``u ≡ 1 (mod N)``.

    Raises :class:`KeyMismatchError` if the parts belong to different keys and
    :class:`DecryptionError` (opaque on purpose) if both come from the same share index or the
    product fails the divisibility check (wrong share, tampered ciphertext, parts of two
    different ciphertexts).
    """
    if a.key != b.key:
        raise KeyMismatchError("partial decryptions of two different keys")
    if {a.index, b.index} != {1, 2}:
        raise DecryptionError("decryption needs one part from each share")
    key = a.key
    u = gmpy2.f_mod(a.value * b.value, key.n_squared)
    if (u - 1) % key.n != 0:
        raise DecryptionError("partial decryptions do not combine to a valid plaintext")
    m = (u - 1) // key.n
    return key.decode_signed(m) if signed else int(m)


def partial_decrypt_batch(share: KeyShare, cts: Sequence[Ciphertext]) -> list[PartialDecryption]:
    """Module-level (picklable) batch entry point for process pools."""
    return [share.partial_decrypt(c) for c in cts]


def decrypt_with_shares(
    share_a: KeyShare, share_b: KeyShare, ct: Ciphertext, *, signed: bool = False
) -> int:
    """Both parts in one place: for tests, tools and the key authority's self-check only."""
    return combine(share_a.partial_decrypt(ct), share_b.partial_decrypt(ct), signed=signed)


# --------------------------------------------------------------------------------------------
# Randomness pool (fixed-base precomputation of h_N^r)
# --------------------------------------------------------------------------------------------


class FixedBaseTable:
    """Window table ``T[i][d] = g^(d · 2^(w·i))``: ``g^r`` costs ⌈bits/w⌉ multiplications.

    For a 512-bit r and w = 4: 128 multiplications instead of ~768 for square-and-multiply.
    """

    def __init__(self, base: Any, modulus: Any, exponent_bits: int, window: int = 4) -> None:
        if not 1 <= window <= 8:
            raise CryptoError(f"window must be in 1..8, got {window}")
        self.modulus = modulus
        self.window = window
        self.exponent_bits = exponent_bits
        self.table: list[list[Any]] = []
        g = mpz(base)
        for _ in range((exponent_bits + window - 1) // window):
            row = [mpz(1), g]
            for _ in range(2, 1 << window):
                row.append(gmpy2.f_mod(row[-1] * g, modulus))
            self.table.append(row)
            g = gmpy2.f_mod(row[-1] * g, modulus)  # g^(2^w)

    def power(self, exponent: int) -> Any:
        if exponent < 0 or exponent.bit_length() > self.exponent_bits:
            raise CryptoError(f"exponent must be in [0, 2^{self.exponent_bits})")
        acc = mpz(1)
        mask = (1 << self.window) - 1
        i = 0
        while exponent:
            digit = exponent & mask
            if digit:
                acc = gmpy2.f_mod(acc * self.table[i][digit], self.modulus)
            exponent >>= self.window
            i += 1
        return acc


def pool_window(key: PublicKey) -> int:
    """Window of a pool's fixed-base table for ``key``.

    Why it depends on the key size: a window of 8 halves the multiplications of each ``h_N^r``
    (64 instead of 128 for a 512-bit r) but its table holds ``2^8·r/8`` entries (12.6 MB, ~1 s to
    build at 3072 bits). The 3072-bit servers draw hundreds of thousands of values (B re-encrypts
    every coordinate of every enrolled template) and build the table once per process
    (:func:`_shared_table`); the 2048-bit fast profile is for tests and demos that start many
    short-lived keys, where the build would cost more than it saves.
    """
    return 8 if key.modulus_bits >= 3072 else 4


@functools.lru_cache(maxsize=4)
def _shared_table(base: Any, modulus: Any, exponent_bits: int, window: int) -> FixedBaseTable:
    """One table per (base, modulus, bits, window) and process: every pool of a key shares it
    (a table holds public values only; each pool keeps its own random source)."""
    return FixedBaseTable(base, modulus, exponent_bits, window)


class RandomnessPool:
    """Offline pool of ``h_N^r`` values with short uniform ``r`` (``randomness_bits`` bits).

    Encryption and re-randomisation take one pooled value each, so online work is one modular
    multiplication. :meth:`refill` is the offline step (run it between queries); an empty pool
    computes on demand (still cheap thanks to the fixed-base table). Each value is used once.
    """

    def __init__(
        self,
        key: PublicKey,
        size: int = 0,
        *,
        rng: random.Random | None = None,
        window: int | None = None,
    ) -> None:
        self.key = key
        self._rng = _default_rng(rng)
        w = pool_window(key) if window is None else window
        self._table = _shared_table(key.h_n, key.n_squared, key.randomness_bits, w)
        self._values: deque[Any] = deque()
        self.refill(size)

    def __repr__(self) -> str:
        return f"RandomnessPool(key={self.key.key_id}, available={len(self._values)})"

    def __len__(self) -> int:
        return len(self._values)

    def check_key(self, key: PublicKey) -> None:
        if key != self.key:
            raise KeyMismatchError(f"pool of key {self.key.key_id} used with key {key.key_id}")

    def fresh(self) -> Any:
        """Compute one ``h_N^r`` now."""
        return self._table.power(self._rng.getrandbits(self.key.randomness_bits))

    def refill(self, count: int) -> None:
        for _ in range(count):
            self._values.append(self.fresh())

    def take(self) -> Any:
        return self._values.popleft() if self._values else self.fresh()

    @property
    def rng(self) -> random.Random:
        """The pool's random source, shared with protocol masks so one seed fixes a test run."""
        return self._rng


class PartialPool:
    """A share holder's offline pool of pairs ``(h_N^ρ, (h_N^ρ)^sk)`` for *self-decrypted* masks.

    Why: in the distance protocol A encrypts a mask and must send its own partial decryption of
    ``template + mask``. The template part ``c^sk`` is precomputed once per stored template and
    the mask part is ``Enc(r)^sk = (1 + (r·sk mod N)·N) · (h_N^sk)^ρ``; with fixed-base tables for
    ``h_N`` and ``h_N^sk`` both halves come from this pool, so A's online partial decryption of a
    masked ciphertext costs a few multiplications instead of a ~|2αN|-bit exponentiation. The
    pool holds secret-derived values: it lives and dies with the party that owns the share.
    """

    def __init__(
        self, share: KeyShare, size: int = 0, *, rng: random.Random | None = None, window: int = 4
    ) -> None:
        key = share.public_key
        self.share = share
        self._rng = _default_rng(rng)
        self._h = FixedBaseTable(key.h_n, key.n_squared, key.randomness_bits, window)
        h_sk = gmpy2.powmod(key.h_n, share._exponent, key.n_squared)
        self._h_sk = FixedBaseTable(h_sk, key.n_squared, key.randomness_bits, window)
        self._sk_mod_n = share._exponent % key.n
        self._values: deque[tuple[Any, Any]] = deque()
        self.refill(size)

    def __repr__(self) -> str:
        return f"PartialPool(share={self.share.index}, available={len(self._values)})"

    def __len__(self) -> int:
        return len(self._values)

    def _fresh(self) -> tuple[Any, Any]:
        rho = self._rng.getrandbits(self.share.public_key.randomness_bits)
        return self._h.power(rho), self._h_sk.power(rho)

    def refill(self, count: int) -> None:
        for _ in range(count):
            self._values.append(self._fresh())

    def encrypt_with_partial(self, value: int) -> tuple[Ciphertext, PartialDecryption]:
        """Fresh ``Enc(value)`` and this share's partial decryption of it."""
        key = self.share.public_key
        h_r, h_r_sk = self._values.popleft() if self._values else self._fresh()
        m = key.encode(value)
        ct = Ciphertext(key, gmpy2.f_mod((1 + m * key.n) * h_r, key.n_squared))
        m_sk = gmpy2.f_mod(m * self._sk_mod_n, key.n)
        pd = gmpy2.f_mod((1 + m_sk * key.n) * h_r_sk, key.n_squared)
        return ct, PartialDecryption(key, self.share.index, pd)


# --------------------------------------------------------------------------------------------
# Multi-exponentiation with shared bases (Straus, fixed windows)
# --------------------------------------------------------------------------------------------


class MultiExp:
    """``Π_i c_i^(e_i) mod N²`` for many exponent vectors over the same bases.

    The per-base window tables (``2^w − 1`` entries each) are built once and shared by every
    product; each product then costs ``max_bits`` squarings (shared by all bases: Straus) plus
    one multiplication per non-zero window digit. In the distance protocol the bases are the
    admitted query's 128 per-dimension ciphertexts and the exponents the k candidates' masked
    vectors.
    """

    def __init__(self, bases: Sequence[Ciphertext], window: int = 4) -> None:
        if not bases:
            raise CryptoError("multi-exponentiation needs at least one base")
        if not 1 <= window <= 8:
            raise CryptoError(f"window must be in 1..8, got {window}")
        self.key = bases[0].key
        for b in bases:
            b._same_key(bases[0])
        self.window = window
        mod = self.key.n_squared
        self._tables: list[list[Any]] = []
        for b in bases:
            row = [mpz(1), b.value]
            for _ in range(2, 1 << window):
                row.append(gmpy2.f_mod(row[-1] * b.value, mod))
            self._tables.append(row)

    def __len__(self) -> int:
        return len(self._tables)

    def power_product(self, exponents: Sequence[int]) -> Ciphertext:
        if len(exponents) != len(self._tables):
            raise CryptoError(f"expected {len(self._tables)} exponents, got {len(exponents)}")
        if any(e < 0 for e in exponents):
            raise CryptoError("multi-exponentiation exponents must be non-negative")
        mod = self.key.n_squared
        w = self.window
        mask = (1 << w) - 1
        top = max(int(e).bit_length() for e in exponents)
        acc = mpz(1)
        for shift in range(((top + w - 1) // w - 1) * w, -1, -w):
            if shift != ((top + w - 1) // w - 1) * w:
                for _ in range(w):
                    acc = gmpy2.f_mod(acc * acc, mod)
            for row, e in zip(self._tables, exponents, strict=True):
                digit = (int(e) >> shift) & mask
                if digit:
                    acc = gmpy2.f_mod(acc * row[digit], mod)
        return Ciphertext(self.key, acc)


def bucket_power_product(bases: Sequence[Ciphertext], exponents: Sequence[int]) -> Ciphertext:
    """``Π b_i^(e_i)`` by the bucket method (Pippenger): for many bases, fewer multiplications.

    Why beside :class:`MultiExp`: Straus pays a ``2^w``-entry table per base and one
    multiplication per base and window; buckets pay one multiplication per base and window plus
    ``2^(c+1)`` per window, shared by all bases. For 128 bases of 54-bit exponents that is
    ~2,100 multiplications instead of ~3,600, and for the thousands of bases of a batch check
    with 40-bit exponents about a fifth of Straus's (sealed admission,
    :mod:`pura.protocols.sealed`). Exponents must be non-negative.
    """
    if not bases or len(bases) != len(exponents):
        raise CryptoError("bucket product needs one exponent per base (at least one base)")
    key = bases[0].key
    for b in bases:
        b._same_key(bases[0])
    if any(e < 0 for e in exponents):
        raise CryptoError("multi-exponentiation exponents must be non-negative")
    mod = key.n_squared
    top = max(int(e).bit_length() for e in exponents)
    n = len(bases)
    # window minimising ⌈top/c⌉·(n + 2^(c+1)) multiplications (bucket fills + running sums)
    c = min(range(2, 13), key=lambda w: -(-top // w) * (n + (2 << w)))
    mask = (1 << c) - 1
    values = [b.value for b in bases]
    ints = [int(e) for e in exponents]
    acc = mpz(1)
    for shift in range(((top + c - 1) // c - 1) * c, -1, -c):
        for _ in range(c if acc != 1 else 0):
            acc = gmpy2.f_mod(acc * acc, mod)
        buckets: list[Any] = [None] * (1 << c)
        for v, e in zip(values, ints, strict=True):
            d = (e >> shift) & mask
            if d:
                cur = buckets[d]
                buckets[d] = v if cur is None else gmpy2.f_mod(cur * v, mod)
        running: Any = None
        total: Any = None
        for d in range(mask, 0, -1):
            if buckets[d] is not None:
                running = buckets[d] if running is None else gmpy2.f_mod(running * buckets[d], mod)
            if running is not None:
                total = running if total is None else gmpy2.f_mod(total * running, mod)
        if total is not None:
            acc = gmpy2.f_mod(acc * total, mod)
    return Ciphertext(key, acc)


def h_power(key: PublicKey, exponent: int) -> Any:
    """``h_N^e mod N²`` for an exponent of any length (a batch check's combined randomness)."""
    if exponent < 0:
        raise CryptoError("exponent must be non-negative")
    return gmpy2.powmod(key.h_n, exponent, key.n_squared)


def encrypt_derived(key: PublicKey, value: int, r: int, window: int | None = None) -> Ciphertext:
    """``(1 + mN)·h_N^r`` for an ``r`` the caller derives (sealed admission's mask
    ciphertexts, whose randomness A re-derives to check them): the fixed-base table of
    :class:`RandomnessPool`, shared per process."""
    table = _shared_table(key.h_n, key.n_squared, key.randomness_bits,
                          pool_window(key) if window is None else window)
    m = key.encode(value)
    return Ciphertext(key, gmpy2.f_mod((1 + m * key.n) * table.power(r), key.n_squared))


def multi_exp_batch(
    bases: Sequence[Ciphertext], exponent_vectors: Sequence[Sequence[int]], window: int = 4
) -> list[Ciphertext]:
    """Module-level (picklable) entry point: one table, many products."""
    table = MultiExp(bases, window)
    return [table.power_product(e) for e in exponent_vectors]


# --------------------------------------------------------------------------------------------
# Packing several fixed-point values in one plaintext
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class PackedLayout:
    """``n_slots`` slots of ``slot_bits`` bits; slot i holds ``v_i + offset`` at bit i·slot_bits.

    Bounds (all checked, :class:`PackingOverflowError` otherwise):

    * :meth:`pack`: every value in ``[−offset, offset]``, so a slot holds ``[0, 2·offset]``.
    * :meth:`pack_raw`: every slot content in ``[0, 2^slot_bits)``.
    * Homomorphic sums of packed plaintexts stay exact (no carry between slots) as long as every
      slot's *sum of contents* stays below ``2^slot_bits``; :attr:`headroom` is what can be added
      to a slot packed by :meth:`pack`. The protocols size ``slot_bits`` from this rule.
    * The whole packing uses ``n_slots · slot_bits ≤ bitlen(N) − 2`` bits (:meth:`check_fits`), so
      the plaintext stays below ``N/2``: no wrap-around mod N and no sign ambiguity.
    """

    slot_bits: int
    n_slots: int
    offset: int = 0

    def __post_init__(self) -> None:
        if self.slot_bits < 2 or self.n_slots < 1 or self.offset < 0:
            raise PackingOverflowError(f"invalid packed layout {self}")
        if 2 * self.offset >= 1 << self.slot_bits:
            raise PackingOverflowError(
                f"offset {self.offset} needs more than {self.slot_bits}-bit slots"
            )

    @property
    def total_bits(self) -> int:
        return self.slot_bits * self.n_slots

    @property
    def headroom(self) -> int:
        """Largest amount that may be added to every slot of a :meth:`pack`-ed plaintext."""
        return (1 << self.slot_bits) - 1 - 2 * self.offset

    @staticmethod
    def max_slots(key: PublicKey, slot_bits: int) -> int:
        return key.plaintext_bits // slot_bits

    def check_fits(self, key: PublicKey) -> None:
        if self.total_bits > key.plaintext_bits:
            raise PackingOverflowError(
                f"{self.n_slots} slots of {self.slot_bits} bits exceed the "
                f"{key.plaintext_bits}-bit plaintext space of a {key.modulus_bits}-bit key"
            )

    def pack(self, values: Sequence[int]) -> int:
        if len(values) > self.n_slots:
            raise PackingOverflowError(f"{len(values)} values for {self.n_slots} slots")
        for v in values:
            if not -self.offset <= v <= self.offset:
                raise PackingOverflowError(
                    f"value of {abs(int(v)).bit_length()} bits outside ±{self.offset}"
                )
        return self.pack_raw([int(v) + self.offset for v in values])

    def pack_raw(self, contents: Sequence[int]) -> int:
        if len(contents) > self.n_slots:
            raise PackingOverflowError(f"{len(contents)} values for {self.n_slots} slots")
        out = 0
        limit = 1 << self.slot_bits
        for i, c in enumerate(contents):
            if not 0 <= c < limit:
                raise PackingOverflowError(f"slot content outside [0, 2^{self.slot_bits})")
            out |= int(c) << (i * self.slot_bits)
        return out

    def unpack_raw(self, plaintext: int, count: int | None = None) -> list[int]:
        """The first ``count`` slot contents (all slots by default).

        Raises if the plaintext does not fit those ``count`` slots: a carry out of the last used
        slot, data in slots the caller does not expect, or a negative residue that wrapped mod N.
        """
        n = self.n_slots if count is None else count
        if not 0 <= n <= self.n_slots:
            raise PackingOverflowError(f"cannot unpack {n} of {self.n_slots} slots")
        if not 0 <= plaintext < 1 << (n * self.slot_bits):
            raise PackingOverflowError("packed plaintext exceeds its layout (overflow)")
        mask = (1 << self.slot_bits) - 1
        return [(plaintext >> (i * self.slot_bits)) & mask for i in range(n)]

    def unpack(self, plaintext: int, count: int | None = None) -> list[int]:
        """Signed values; raises if any slot lies outside ``[0, 2·offset]`` (overflowed)."""
        out = []
        for c in self.unpack_raw(plaintext, count):
            if c > 2 * self.offset:
                raise PackingOverflowError("packed slot outside its stated bound")
            out.append(c - self.offset)
        return out


__all__ = [
    "Ciphertext",
    "FixedBaseTable",
    "KeyFactors",
    "KeyShare",
    "MultiExp",
    "PackedLayout",
    "PartialDecryption",
    "PartialPool",
    "PublicKey",
    "RandomnessPool",
    "bucket_power_product",
    "combine",
    "decrypt_with_shares",
    "encrypt_derived",
    "generate_factors",
    "generate_keypair",
    "h_power",
    "keys_from_factors",
    "multi_exp_batch",
    "partial_decrypt_batch",
    "powmod_unlocked",
    "public_key_from_bytes",
    "public_key_to_bytes",
]
