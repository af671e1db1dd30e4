"""CKKS for preselection and gallery heads: the ONLY module that imports TenSEAL.

We use ``tenseal.sealapi`` (raw Microsoft SEAL bindings) rather than TenSEAL's vector API because
the protocol needs what that API hides: lazy relinearisation/rescale (one per block of ``m``
ct×ct products, ×6 faster than TenSEAL's automatic mode), rotations by arbitrary steps with
only the Galois keys we choose, integer plaintext multiplication at scale 1, and explicit levels.

Block layout (diagonal). A block is ``m = head_dim`` ciphertexts over ``n`` slots (``m`` divides
``n``); ciphertext ``r`` holds, in slot ``s``, coordinate ``(s + r) mod m`` of the head in slot
``s`` (:func:`diagonal_rows`). The client uploads ONE query ciphertext ``P`` with the head
repeated across the slots, ``P[j] = x_(j mod m)`` (:meth:`CKKSContext.encrypt_query`), and A
expands it with ``m − 1`` single-step rotations (:meth:`CKKSContext.expand_query`):
``rot(P, r)[s] = x_((s + r) mod m)``, so ``Σ_r rot(P, r) ⊙ G_r`` is, in slot ``s``, the inner
product of the query with the head in slot ``s``. Why: the older layout (ciphertext ``i`` holds
coordinate ``i`` of every head) needed ``m`` broadcast query ciphertexts, 15 MB per query at
``m = 64``; this one uploads 235 KB and costs A ``m − 1`` rotations once per query (~0.13 s
here), not per block, and no extra level. Rejected: expanding a periodic query into broadcasts
by masking and rotate-and-sum (one more level, ``m·log m`` rotations), and seed-compressed
public-key ciphertexts (SEAL compresses only symmetric encryptions, which need the secret key).

Levels. ``CKKS_8192`` has data primes (60, 40, 40) and a 60-bit special prime. Heads, gallery
blocks and queries live at the *work level* (60, 40): encrypted at the top and
mod-switched down once, which cuts every stored and transmitted ciphertext by a third. A block
score is ``Σ_i Q_i·G_i`` (no relinearisation inside the sum), then one relinearisation and one
rescale by the 40-bit prime, leaving the *score level* (one 60-bit prime, scale ≈ 2^40). The
affine mask ``a·S + c`` then needs ``|a·S + c|·2^40 < 2^59``: with ``|S| ≤ 1`` (unit vectors)
``a < 2^17`` and ``|c| < 2^17`` are safe (see :meth:`CKKSContext.mask_bounds`).

Block refresh masks values with ``|R| ≤ 2^40`` at the work level: ``2^40·2^40 = 2^80 < 2^99``.

Serialization. ``sealapi`` only saves to and loads from file paths, so bytes go through a
private temporary directory (``/dev/shm`` when present, i.e. RAM, mode 0700) and each file is
removed at once. Every ciphertext carries a header with the parameter digest and the key id, so
material from another parameter set (:class:`ParameterError`) or another key
(:class:`KeyMismatchError`) is rejected by name instead of decrypting to garbage. SEAL's own
exceptions are translated into :mod:`pura.errors` here and nowhere else.
"""

from __future__ import annotations

import atexit
import contextlib
import hashlib
import json
import os
import random
import shutil
import struct
import tempfile
import threading
from collections.abc import Iterator, Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import tenseal.sealapi as seal

from pura import wire
from pura.errors import (
    ConfigError,
    DimensionError,
    InvalidCiphertextError,
    KeyMismatchError,
    ParameterError,
)

from .params import CKKSParams

FloatArray = npt.NDArray[np.float64]

_CTX_MAGIC = b"PURA-CKKS-CTX\x01"
_CT_MAGIC = b"PCKKS\x01"
_KEY_ID_LEN = 16
_PARAMS_DIGEST_LEN = 8
_CT_HEADER = len(_CT_MAGIC) + _PARAMS_DIGEST_LEN + _KEY_ID_LEN + 1
_LEVEL_WORK = 1  # byte tag in the ciphertext header
_LEVEL_SCORE = 2
_LEVEL_HEAD = 3  # top level: enrolment heads, one level above the work level for placement
_LEVEL_NAMES = {_LEVEL_WORK: "work", _LEVEL_SCORE: "score", _LEVEL_HEAD: "head"}
_SEAL_ERRORS = (RuntimeError, ValueError, TypeError, OverflowError)
#: Mask bits used by the block refresh (statistical hiding 2^-40 of values |y| ≤ 1).
REFRESH_MASK_BITS = 40


def params_digest(params: CKKSParams) -> bytes:
    """Digest of the CKKS parameters (not of any key); tags every ciphertext."""
    blob = json.dumps(asdict(params), sort_keys=True).encode()
    return hashlib.sha256(blob).digest()[:_PARAMS_DIGEST_LEN]


def default_rotation_steps(slot_count: int) -> tuple[int, ...]:
    """Powers of two below ``slot_count``: any cyclic rotation is a sum of these (≤ log2 steps).

    These are the only Galois keys the public context carries; no conjugation key, no other
    steps, which keeps the public context at ~8 MiB instead of ~30 MiB for SEAL's default set.
    """
    steps, step = [], 1
    while step < slot_count:
        steps.append(step)
        step <<= 1
    return tuple(steps)


# ----------------------------------------------------------------------------------------------
# bytes <-> SEAL objects (sealapi only speaks file paths)


class _Scratch:
    """A private temporary directory for SEAL (de)serialisation, created lazily per process."""

    _lock = threading.Lock()
    _dir: Path | None = None
    _pid: int | None = None

    @classmethod
    def path(cls) -> Path:
        with cls._lock:
            if cls._dir is None or cls._pid != os.getpid() or not cls._dir.is_dir():
                base = "/dev/shm" if os.path.isdir("/dev/shm") else None
                cls._dir = Path(tempfile.mkdtemp(prefix="pura-ckks-", dir=base))
                cls._pid = os.getpid()
                atexit.register(scratch_cleanup)
            return cls._dir


@contextlib.contextmanager
def _temp_file(data: bytes | None = None) -> Iterator[str]:
    """A fresh 0600 file in the scratch directory, removed on exit (holds key material briefly)."""
    fd, name = tempfile.mkstemp(dir=_Scratch.path())
    try:
        with os.fdopen(fd, "wb") as handle:
            if data is not None:
                handle.write(data)
        yield name
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(name)


def _save(obj: Any) -> bytes:
    with _temp_file() as name:
        obj.save(name)
        return Path(name).read_bytes()


def _load(obj: Any, seal_ctx: Any, data: bytes, what: str) -> Any:
    with _temp_file(data) as name:
        try:
            obj.load(seal_ctx, name)
        except _SEAL_ERRORS as exc:
            msg = f"{what}: SEAL rejected {len(data)} bytes ({exc})"
            raise InvalidCiphertextError(msg) from exc
    return obj


#: SEAL's serialization header: magic, header size, version (2), compression, reserved, and
#: the total size in bytes of the serialized object, header included.
_SEAL_HEADER = struct.Struct("<HBBBBHQ")
_SEAL_MAGIC = 0xA15E


def _check_seal_length(body: bytes) -> None:
    """The serialized object must be exactly as long as its SEAL header says.

    Why: SEAL's ``load`` stops after the object and ignores whatever follows, so without this
    check a client could append megabytes to a head and A would store them (issue 13, item 8:
    40 MiB of trailing bytes accepted, ``gallery.db`` grew from 17 to 55 MiB)."""
    if len(body) < _SEAL_HEADER.size:
        raise InvalidCiphertextError(f"ciphertext body of {len(body)} bytes has no SEAL header")
    magic, header_size, _, _, _, _, size = _SEAL_HEADER.unpack_from(body)
    if magic != _SEAL_MAGIC or header_size != _SEAL_HEADER.size or size != len(body):
        raise InvalidCiphertextError(
            f"ciphertext body is {len(body)} bytes but its SEAL header announces {size}")


def _frame(*parts: bytes) -> bytes:
    """Context files are ``part*`` of :mod:`pura.wire` (the bytes existing key directories hold)."""
    return wire.pack_parts(parts)


def _unframe(data: bytes, count: int) -> list[bytes]:
    return wire.unpack_parts(data, count, what="CKKS context bytes", error=ConfigError)


def _seal_context(params: CKKSParams) -> Any:
    parms = seal.EncryptionParameters(seal.SCHEME_TYPE.CKKS)
    parms.set_poly_modulus_degree(params.poly_modulus_degree)
    parms.set_coeff_modulus(
        seal.CoeffModulus.Create(params.poly_modulus_degree, list(params.coeff_mod_bit_sizes))
    )
    # TC128 makes SEAL itself refuse moduli above the HomomorphicEncryption.org 128-bit bound.
    ctx = seal.SEALContext(parms, True, seal.SEC_LEVEL_TYPE.TC128)
    if not ctx.parameters_set():
        raise ParameterError(f"SEAL rejected {params.name}: {ctx.parameters_error_message()}")
    if len(params.coeff_mod_bit_sizes) < 4:
        raise ParameterError(f"{params.name}: need ≥ 3 data primes plus the special prime")
    return ctx


# ----------------------------------------------------------------------------------------------


class CKKSCiphertext:
    """Opaque handle on one SEAL ciphertext of a given :class:`CKKSContext`."""

    __slots__ = ("_ct", "_level")

    def __init__(self, ct: Any, level: int) -> None:
        self._ct = ct
        self._level = level

    @property
    def level(self) -> str:
        """``"head"`` (top level), ``"work"`` (blocks, queries) or ``"score"``."""
        return _LEVEL_NAMES[self._level]

    def __repr__(self) -> str:
        name = _LEVEL_NAMES[self._level]
        return f"CKKSCiphertext(level={name}, size={self._ct.size()})"


class CKKSContext:
    """SEAL context + keys. Secret at B (and the key authority); public at A and clients.

    Build with :meth:`generate` (secret), derive :meth:`public`, move with :meth:`to_bytes` /
    :meth:`from_bytes`. The compact (seed-compressed) key blobs are kept so that re-serialising a
    loaded context neither doubles its size nor changes its key id.
    """

    def __init__(self, params: CKKSParams, blobs: dict[str, bytes], steps: Sequence[int]) -> None:
        self.params = params
        self._blobs = dict(blobs)
        self.rotation_steps = tuple(sorted(steps))
        self._ctx = _seal_context(params)
        self._work = self._ctx.first_context_data().next_context_data().parms_id()
        self._score = self._ctx.last_parms_id()
        self._encoder = seal.CKKSEncoder(self._ctx)
        self._evaluator = seal.Evaluator(self._ctx)
        self._public_key = _load(seal.PublicKey(), self._ctx, blobs["public_key"], "public key")
        self._relin = _load(seal.RelinKeys(), self._ctx, blobs["relin_keys"], "relin keys")
        self._galois = (
            _load(seal.GaloisKeys(), self._ctx, blobs["galois_keys"], "Galois keys")
            if blobs.get("galois_keys")
            else None
        )
        self._encryptor = seal.Encryptor(self._ctx, self._public_key)
        self._decryptor: Any = None
        if blobs.get("secret_key"):
            secret = _load(seal.SecretKey(), self._ctx, blobs["secret_key"], "secret key")
            self._decryptor = seal.Decryptor(self._ctx, secret)
            self._encryptor.set_secret_key(secret)
        self.key_id = hashlib.sha256(blobs["public_key"]).digest()[:_KEY_ID_LEN]
        self._digest = params_digest(params)

    def __repr__(self) -> str:
        kind = "secret" if self.is_private else "public"
        return f"CKKSContext({self.params.name}, {kind}, key_id={self.key_id.hex()[:12]})"

    def __reduce__(self) -> tuple[Any, ...]:
        # Pickling (process pools) ships the public material only, never the secret key.
        return (_public_from_bytes, (self.public().to_bytes(),))

    # -- construction ------------------------------------------------------------------------

    @classmethod
    def generate(
        cls, params: CKKSParams, rotation_steps: Sequence[int] | None = None
    ) -> CKKSContext:
        """Fresh keys (SEAL's CSPRNG). Galois keys only for ``rotation_steps`` (default: 2^j)."""
        seal_ctx = _seal_context(params)
        steps = tuple(rotation_steps or default_rotation_steps(params.slot_count))
        two_n = 2 * params.poly_modulus_degree
        if any(not 0 < s < params.slot_count for s in steps):
            raise ParameterError(f"rotation steps must be in 1..{params.slot_count - 1}")
        keygen = seal.KeyGenerator(seal_ctx)
        public_key = seal.PublicKey()
        keygen.create_public_key(public_key)
        blobs = {
            "public_key": _save(public_key),
            "relin_keys": _save(keygen.create_relin_keys()),  # seed-compressed form
            "galois_keys": _save(keygen.create_galois_keys([pow(3, s, two_n) for s in steps])),
            "secret_key": _save(keygen.secret_key()),
        }
        return cls(params, blobs, steps)

    @property
    def is_private(self) -> bool:
        return self._decryptor is not None

    @property
    def slot_count(self) -> int:
        return self.params.slot_count

    def public(self, *, with_galois_keys: bool = True) -> CKKSContext:
        """Same keys without the secret key (clients may drop the Galois keys they never use)."""
        blobs = {k: v for k, v in self._blobs.items() if k != "secret_key"}
        if not with_galois_keys:
            blobs["galois_keys"] = b""
        return CKKSContext(self.params, blobs, self.rotation_steps if with_galois_keys else ())

    def to_bytes(self) -> bytes:
        """Header + key blobs; includes the secret key iff this context is private."""
        header = json.dumps(
            {
                "params": asdict(self.params),
                "steps": list(self.rotation_steps),
                "secret": self.is_private,
            },
            sort_keys=True,
        ).encode()
        names = ("public_key", "relin_keys", "galois_keys", "secret_key")
        return _CTX_MAGIC + _frame(header, *(self._blobs.get(n, b"") for n in names))

    @classmethod
    def from_bytes(
        cls, data: bytes, *, expect_secret: bool, params: CKKSParams | None = None
    ) -> CKKSContext:
        """Load a context; ``expect_secret=False`` refuses one that carries a secret key.

        Why refuse: server A and clients must never hold the CKKS secret key (A plus the key
        decrypts every gallery head); a deployment that hands A the secret file is misconfigured
        and must stop, not silently run with more power than the protocol assumes.
        """
        if not data.startswith(_CTX_MAGIC):
            raise ConfigError("not a Pura CKKS context (bad magic)")
        header, pk, rk, gk, sk = _unframe(data[len(_CTX_MAGIC) :], 5)
        try:
            meta = json.loads(header)
            raw = meta["params"]
            stored = CKKSParams(**{**raw, "coeff_mod_bit_sizes": tuple(raw["coeff_mod_bit_sizes"])})
            steps = [int(s) for s in meta["steps"]]
        except (KeyError, TypeError, ValueError) as exc:
            raise ConfigError(f"malformed CKKS context header: {exc}") from exc
        if params is not None and stored != params:
            raise ParameterError(f"context is for {stored.name}, expected {params.name}")
        if sk and not expect_secret:
            raise ConfigError(
                "this CKKS context contains the SECRET key; only server B may load it "
                "(give server A and clients the public context)"
            )
        if expect_secret and not sk:
            raise ConfigError("this CKKS context has no secret key; server B needs the secret one")
        blobs = {"public_key": pk, "relin_keys": rk, "galois_keys": gk, "secret_key": sk}
        try:
            return cls(stored, blobs, steps)
        except InvalidCiphertextError as exc:
            raise ConfigError(f"corrupt CKKS context: {exc}") from exc

    # -- (de)serialisation of ciphertexts ----------------------------------------------------

    def ciphertext_to_bytes(self, ct: CKKSCiphertext) -> bytes:
        header = _CT_MAGIC + self._digest + self.key_id + bytes([ct._level])
        return header + _save(ct._ct)

    def ciphertext_from_bytes(self, data: bytes, *, score: bool = False) -> CKKSCiphertext:
        """Parse and validate: parameter set, key, level, size and scale must all be ours."""
        if len(data) <= _CT_HEADER or not data.startswith(_CT_MAGIC):
            raise InvalidCiphertextError(f"not a Pura CKKS ciphertext ({len(data)} bytes)")
        pos = len(_CT_MAGIC)
        if data[pos : pos + _PARAMS_DIGEST_LEN] != self._digest:
            raise ParameterError(f"ciphertext was made under another CKKS parameter set "
                                 f"(expected {self.params.name})")
        pos += _PARAMS_DIGEST_LEN
        if data[pos : pos + _KEY_ID_LEN] != self.key_id:
            raise KeyMismatchError("ciphertext was encrypted under another CKKS key")
        level = data[pos + _KEY_ID_LEN]
        allowed = (_LEVEL_SCORE,) if score else (_LEVEL_WORK, _LEVEL_HEAD)
        if level not in allowed:
            raise InvalidCiphertextError(f"ciphertext level tag {level}, expected {allowed}")
        want = level
        body = data[_CT_HEADER:]
        _check_seal_length(body)
        ct = _load(seal.Ciphertext(self._ctx), self._ctx, body, "ciphertext")
        self._check(ct, want)
        return CKKSCiphertext(ct, want)

    def head_from_bytes(self, data: bytes) -> CKKSCiphertext:
        """Parse an enrolment head: like :meth:`ciphertext_from_bytes`, and it must be a head
        (top level). A work-level ciphertext would pass the generic check and then fail the
        block refresh of every later enrolment (issue 13, item 8)."""
        ct = self.ciphertext_from_bytes(data)
        if ct._level != _LEVEL_HEAD:
            raise InvalidCiphertextError(
                f"enrolment head must be a head-level ciphertext, got {ct.level}")
        return ct

    def _check(self, ct: Any, level: int) -> None:
        parms = {_LEVEL_WORK: self._work, _LEVEL_SCORE: self._score}.get(
            level, self._ctx.first_parms_id()
        )
        if list(ct.parms_id()) != list(parms) or ct.size() != 2 or ct.is_ntt_form() is False:
            raise InvalidCiphertextError("ciphertext has the wrong level, size or form")
        expected = 2.0**self.params.scale_bits
        if not 0.5 * expected < ct.scale < 2.0 * expected:
            raise InvalidCiphertextError(f"ciphertext scale 2^{np.log2(ct.scale):.1f} unexpected")

    # -- encryption / decryption -------------------------------------------------------------

    def _encode(self, values: FloatArray | float, parms: Any, scale: float) -> Any:
        plain = seal.Plaintext()
        try:
            if isinstance(values, float):
                self._encoder.encode(values, parms, scale, plain)
            else:
                self._encoder.encode(values.tolist(), parms, scale, plain)
        except _SEAL_ERRORS as exc:
            raise DimensionError(f"cannot encode values into CKKS: {exc}") from exc
        return plain

    def _encrypt_plain(self, plain: Any, level: int = _LEVEL_WORK) -> CKKSCiphertext:
        # Public-key encryption directly at the plaintext's level: no mod-switch needed.
        ct = seal.Ciphertext()
        self._encryptor.encrypt(plain, ct)
        return CKKSCiphertext(ct, level)

    def _vector(self, values: npt.ArrayLike) -> FloatArray:
        arr = np.asarray(values, dtype=np.float64)
        if arr.ndim != 1 or not 0 < arr.size <= self.slot_count:
            raise DimensionError(f"expected 1..{self.slot_count} values, got shape {arr.shape}")
        if not np.all(np.isfinite(arr)):
            raise DimensionError("values to encrypt must be finite")
        return arr

    def encrypt_vector(self, values: npt.ArrayLike) -> CKKSCiphertext:
        """Values in slots 0..len-1 (zeros after), public-key encryption, work level."""
        arr = self._vector(values)
        return self._encrypt_plain(self._encode(arr, self._work, self._scale()))

    def encrypt_vector_bytes(self, values: npt.ArrayLike) -> bytes:
        """Serialized encryption of ``values``; seed-compressed (half size) when private.

        B holds the secret key, so its fresh encryptions (refresh deltas) can be *symmetric*:
        SEAL then stores the uniform half of the ciphertext as a PRNG seed, which halves B→A
        traffic and is as secure (RLWE, fresh randomness from SEAL's CSPRNG).
        """
        if self._decryptor is None:
            return self.ciphertext_to_bytes(self.encrypt_vector(values))
        plain = self._encode(self._vector(values), self._work, self._scale())
        header = _CT_MAGIC + self._digest + self.key_id + bytes([_LEVEL_WORK])
        return header + _save(self._encryptor.encrypt_symmetric(plain))

    def encrypt_head(self, head: npt.ArrayLike) -> CKKSCiphertext:
        """Enrolment: the whole head ``y'_0..y'_{m-1}`` in slots ``0..m-1`` of ONE ciphertext.

        Encrypted at the *top* level (one level above blocks and queries) so that A alone can
        move it into a block slot with one masking multiplication (:meth:`place_head`).
        """
        arr = self._vector(head)
        plain = self._encode(arr, self._ctx.first_parms_id(), self._scale())
        return self._encrypt_plain(plain, _LEVEL_HEAD)

    def place_head(self, head: CKKSCiphertext, slot: int, head_dim: int) -> list[CKKSCiphertext]:
        """``head_dim`` work-level ciphertexts: number ``i`` holds ``y_i`` at ``slot``, 0 elsewhere.

        Ciphertext ``r`` of the result is row ``r`` of the diagonal layout (module docstring):
        it holds ``y_((slot + r) mod head_dim)`` at ``slot``.

        A alone (public keys only): rotate the head right by ``slot`` (``y_0`` lands on ``slot``),
        then left by one per coordinate (``y_i`` lands on ``slot``), keep that one slot with a
        one-hot plaintext whose scale is the prime the rescale removes (so the result has exactly
        the block scale), and rescale to the work level. ``head_dim − 1`` single-step rotations plus
        one arbitrary rotation in all. Every step is deterministic, so placing the same head bytes
        again gives the *same* ciphertexts: deleting is an exact subtraction. Slots other than
        ``0..head_dim−1`` of a client's head are multiplied by 0, so junk there cannot leak in.
        """
        if head._level != _LEVEL_HEAD:
            raise InvalidCiphertextError("place_head needs a head ciphertext (top level)")
        if not 0 <= slot < self.slot_count:
            raise DimensionError(f"slot {slot} out of range")
        check_head_dim(head_dim, self.slot_count)
        n = self.slot_count
        top = self._ctx.first_context_data()
        prime = float(top.parms().coeff_modulus()[-1].value())
        onehot = np.zeros(n)
        onehot[slot] = 1.0
        mask = self._encode(onehot, top.parms_id(), prime)
        current = self.rotate(head, (n - slot) % n)
        placed = []
        for i in range(head_dim):
            if i:
                current = self.rotate(current, 1)
            ct = seal.Ciphertext()
            self._evaluator.multiply_plain(current._ct, mask, ct)
            self._evaluator.rescale_to_next_inplace(ct)
            placed.append(CKKSCiphertext(ct, _LEVEL_WORK))  # y_i at slot
        return [placed[(slot + r) % head_dim] for r in range(head_dim)]  # row r: y_(slot+r)

    def sub(self, x: CKKSCiphertext, y: CKKSCiphertext) -> CKKSCiphertext:
        """``x − y`` (same level and scale)."""
        out = seal.Ciphertext()
        try:
            self._evaluator.sub(x._ct, y._ct, out)
        except _SEAL_ERRORS as exc:
            raise InvalidCiphertextError(f"cannot subtract ciphertexts: {exc}") from exc
        return CKKSCiphertext(out, x._level)

    def encrypt_query(self, head: npt.ArrayLike) -> CKKSCiphertext:
        """Query: ONE work-level ciphertext, the head repeated over every slot (``x_(j mod m)``).

        A turns it into the ``m`` rows the diagonal block layout needs with
        :meth:`expand_query`; see the module docstring for why this layout."""
        arr = self._vector(head)
        check_head_dim(arr.size, self.slot_count)
        periodic = np.tile(arr, self.slot_count // arr.size)
        return self._encrypt_plain(self._encode(periodic, self._work, self._scale()))

    def expand_query(self, query: CKKSCiphertext, head_dim: int) -> list[CKKSCiphertext]:
        """A: the ``head_dim`` rotations ``rot(P, r)``, ``r = 0..head_dim − 1``, of a query.

        Row ``r`` holds ``x_((s + r) mod m)`` in slot ``s``, lining up with row ``r`` of every
        block. ``head_dim − 1`` single-step rotations (one key switch each), once per query;
        rotations keep the level, so scoring is unchanged. What a client put in the query's
        slots is its own business: a query that is not periodic only scores itself wrong."""
        if query._level != _LEVEL_WORK:
            raise InvalidCiphertextError("a query is one work-level ciphertext (encrypt_query)")
        check_head_dim(head_dim, self.slot_count)
        rows = [query]
        for _ in range(head_dim - 1):
            rows.append(self.rotate(rows[-1], 1))
        return rows

    def decrypt(self, ct: CKKSCiphertext) -> FloatArray:
        """All slots of ``ct`` (B only). CKKS decryptions must never leave B (Li–Micciancio)."""
        if self._decryptor is None:
            raise ConfigError("decryption needs the CKKS secret key (this is a public context)")
        plain = seal.Plaintext()
        try:
            self._decryptor.decrypt(ct._ct, plain)
            values = self._encoder.decode_double(plain)
        except _SEAL_ERRORS as exc:
            raise InvalidCiphertextError(f"cannot decrypt ciphertext: {exc}") from exc
        return np.asarray(values, dtype=np.float64)

    def _scale(self) -> float:
        return float(2.0**self.params.scale_bits)

    # -- homomorphic operations (A) ----------------------------------------------------------

    def score_block(
        self, query: Sequence[CKKSCiphertext], block: Sequence[CKKSCiphertext]
    ) -> CKKSCiphertext:
        """``Σ_i query_i ⊙ block_i`` with ONE relinearisation and ONE rescale (lazy).

        The m products stay 3-component ciphertexts while summed: relinearising the sum instead
        of every product is the largest single speed lever measured (×6–7).
        """
        if len(query) != len(block) or not query:
            raise DimensionError(f"query has {len(query)} ciphertexts, block has {len(block)}")
        ev = self._evaluator
        acc = seal.Ciphertext()
        tmp = seal.Ciphertext()
        try:
            ev.multiply(query[0]._ct, block[0]._ct, acc)
            for q, g in zip(query[1:], block[1:], strict=True):
                ev.multiply(q._ct, g._ct, tmp)
                ev.add_inplace(acc, tmp)
            ev.relinearize_inplace(acc, self._relin)
            ev.rescale_to_next_inplace(acc)
        except _SEAL_ERRORS as exc:
            raise InvalidCiphertextError(f"block scoring failed: {exc}") from exc
        return CKKSCiphertext(acc, _LEVEL_SCORE)

    def rotate(self, ct: CKKSCiphertext, steps: int) -> CKKSCiphertext:
        """Cyclic left rotation by ``steps`` (0 ≤ steps < slots), as a sum of keyed steps.

        ``out[j] = in[(j + steps) mod slots]``. Decomposed greedily over the available Galois
        keys (powers of two by default: at most log2(slots) key switches, ~1 ms each here).
        """
        if not 0 <= steps < self.slot_count:
            raise DimensionError(f"rotation must be in 0..{self.slot_count - 1}, got {steps}")
        if self._galois is None:
            raise ConfigError("this CKKS context carries no Galois keys (rotation impossible)")
        plan = self._rotation_plan(steps)
        cur = ct._ct
        for step in plan:
            out = seal.Ciphertext()
            self._evaluator.rotate_vector(cur, step, self._galois, out)
            cur = out
        return CKKSCiphertext(cur, ct._level)

    def _rotation_plan(self, steps: int) -> list[int]:
        plan, rest = [], steps
        for key in sorted(self.rotation_steps, reverse=True):
            while rest >= key:
                plan.append(key)
                rest -= key
        if rest:
            raise ParameterError(f"rotation by {steps} not expressible with the Galois keys held")
        return plan

    def mask_bounds(self) -> tuple[int, int]:
        """``(a_bits, c_bits)``: ``a < 2^a_bits``, ``|c| < 2^c_bits`` keep ``a·S+c`` decodable.

        The score level keeps one prime ``q0``; decryption is correct while
        ``|a·S + c|·scale < q0/2``. With ``|S| ≤ 1``: ``a + |c| < 2^(bits(q0) − 1 − scale_bits)``.
        """
        q0_bits = self.params.coeff_mod_bit_sizes[0]
        room = q0_bits - 1 - self.params.scale_bits
        if room < 4:
            raise ParameterError(f"{self.params.name} leaves no room for the affine mask")
        return room - 2, room - 2

    def weighted_head(
        self, head: CKKSCiphertext, weights: FloatArray, offsets: FloatArray
    ) -> CKKSCiphertext:
        """``weights ⊙ head + offsets`` slot-wise, at the work level (head admission).

        One plaintext multiplication whose scale is the prime the rescale removes (as in
        :meth:`place_head`), so the result keeps the block scale; slots with weight 0 carry
        only the offset, whatever junk the client put there."""
        if head._level != _LEVEL_HEAD:
            raise InvalidCiphertextError("weighted_head needs a head ciphertext (top level)")
        top = self._ctx.first_context_data()
        prime = float(top.parms().coeff_modulus()[-1].value())
        out = seal.Ciphertext()
        try:
            self._evaluator.multiply_plain(
                head._ct, self._encode(self._vector(weights), top.parms_id(), prime), out)
            self._evaluator.rescale_to_next_inplace(out)
            self._evaluator.add_plain_inplace(
                out, self._encode(self._vector(offsets), out.parms_id(), out.scale))
        except _SEAL_ERRORS as exc:
            raise InvalidCiphertextError(f"head check failed: {exc}") from exc
        return CKKSCiphertext(out, _LEVEL_WORK)

    def head_norm(
        self, head: CKKSCiphertext, head_dim: int, weight: float, offset: float
    ) -> CKKSCiphertext:
        """Slot 0: ``weight · Σ_{i<head_dim} y_i² + offset``; other slots ~0 (score level).

        Square (relinearise, rescale), sum slots ``0..head_dim−1`` into slot 0 with
        ``log2(head_dim)`` rotations, then keep slot 0 times ``weight`` with a one-hot
        plaintext (rescale). ``head_dim`` must be a power of two: the rotation sum covers
        exactly the first ``head_dim`` slots."""
        if head._level != _LEVEL_HEAD:
            raise InvalidCiphertextError("head_norm needs a head ciphertext (top level)")
        if head_dim < 1 or head_dim & (head_dim - 1):
            raise DimensionError(f"head_dim must be a power of two, got {head_dim}")
        ev = self._evaluator
        sq = seal.Ciphertext()
        try:
            ev.square(head._ct, sq)
            ev.relinearize_inplace(sq, self._relin)
            ev.rescale_to_next_inplace(sq)
        except _SEAL_ERRORS as exc:
            raise InvalidCiphertextError(f"head check failed: {exc}") from exc
        acc = CKKSCiphertext(sq, _LEVEL_WORK)
        step = 1
        while step < head_dim:
            acc = self.add(acc, self.rotate(acc, step))
            step <<= 1
        onehot = np.zeros(self.slot_count)
        onehot[0] = weight
        level = self._ctx.get_context_data(acc._ct.parms_id())
        prime = float(level.parms().coeff_modulus()[-1].value())
        out = seal.Ciphertext()
        try:
            ev.multiply_plain(acc._ct, self._encode(onehot, acc._ct.parms_id(), prime), out)
            ev.rescale_to_next_inplace(out)
            shift = np.zeros(self.slot_count)
            shift[0] = offset
            ev.add_plain_inplace(out, self._encode(shift, out.parms_id(), out.scale))
        except _SEAL_ERRORS as exc:
            raise InvalidCiphertextError(f"head check failed: {exc}") from exc
        return CKKSCiphertext(out, _LEVEL_SCORE)

    def encrypt_head_level_bytes(self, values: npt.ArrayLike) -> bytes:
        """B: a fresh *head-level* (top) encryption of ``values``, seed-compressed.

        The block re-layout (:mod:`pura.protocols.relayout`) lifts masked block rows back to
        the top level so that A can spend one level on a secret slot permutation and still
        leave the blocks at the work level the scoring needs. Symmetric, as
        :meth:`encrypt_vector_bytes`: only the secret-key holder calls it."""
        if self._decryptor is None:
            raise ConfigError("head-level re-encryption is B's (it needs the CKKS secret key)")
        plain = self._encode(self._vector(values), self._ctx.first_parms_id(), self._scale())
        header = _CT_MAGIC + self._digest + self.key_id + bytes([_LEVEL_HEAD])
        return header + _save(self._encryptor.encrypt_symmetric(plain))

    def permute_residues(
        self, rows: Sequence[CKKSCiphertext], source: npt.ArrayLike, stride: int
    ) -> list[CKKSCiphertext]:
        """A: ``out[s] = in[source[s]]`` in every row, for a permutation ``source`` that keeps
        each slot's residue modulo ``stride`` (head-level in, work-level out).

        Why residues: in the diagonal block layout row ``r`` holds coordinate
        ``(s + r) mod m`` at slot ``s``; moving a head between slots of the same residue mod
        ``m`` keeps every coordinate in its row, so the rows stay a valid block. Such a
        permutation is a sum of ``T = slots/stride`` masked rotations by multiples of
        ``stride``: ``out = Σ_j D_j ⊙ rot(in, j·stride)``, with ``D_j`` the 0/1 diagonal of
        the slots whose source lies ``j·stride`` ahead. Evaluated baby-step/giant-step
        (Halevi–Shoup): ``b`` baby rotations ``rot(in, i·stride)`` shared by all diagonals,
        ``T/b`` giant rotations of partial sums, the diagonals pre-rotated in plaintext; about
        ``2·sqrt(T)`` key switches and ``T`` plaintext products per row, one rescale. The
        diagonals' scale is the prime the rescale removes (as in :meth:`place_head`), so the
        result has exactly the block scale."""
        n = self.slot_count
        src = np.asarray(source, dtype=np.int64)
        check_head_dim(stride, n)
        if src.shape != (n,) or sorted(src.tolist()) != list(range(n)) \
                or np.any(src % stride != np.arange(n) % stride):
            raise DimensionError("source must be a permutation of the slots keeping residues "
                                 f"mod {stride}")
        if any(r._level != _LEVEL_HEAD for r in rows):
            raise InvalidCiphertextError("permute_residues needs head-level (top) rows")
        steps = n // stride
        shift = ((src - np.arange(n)) // stride) % steps  # row of the diagonal per output slot
        baby = 1 << max(0, (steps.bit_length() - 1) // 2)  # b ≈ sqrt(T), a power of two
        giants = -(-steps // baby)
        top = self._ctx.first_context_data()
        prime = float(top.parms().coeff_modulus()[-1].value())
        plans: dict[tuple[int, int], Any] = {}
        for g in range(giants):
            for i in range(baby):
                j = g * baby + i
                if j >= steps or not np.any(shift == j):
                    continue
                diag = (shift == j).astype(np.float64)
                # rot(D ⊙ x, k) = rot(D, k) ⊙ rot(x, k): pre-rotate D right by the giant step.
                plans[(g, i)] = self._encode(np.roll(diag, g * baby * stride), top.parms_id(),
                                             prime)
        return [self._permute_row(row, plans, baby, giants, stride) for row in rows]

    def _permute_row(
        self, row: CKKSCiphertext, plans: dict[tuple[int, int], Any], baby: int, giants: int,
        stride: int,
    ) -> CKKSCiphertext:
        ev = self._evaluator
        babies = [row]
        for _ in range(1, baby):
            babies.append(self.rotate(babies[-1], stride))
        total: Any = None
        for g in range(giants):
            acc: Any = None
            for i in range(baby):
                plain = plans.get((g, i))
                if plain is None:
                    continue
                term = seal.Ciphertext()
                ev.multiply_plain(babies[i]._ct, plain, term)
                if acc is None:
                    acc = term
                else:
                    ev.add_inplace(acc, term)
            if acc is None:
                continue
            if g:
                acc = self.rotate(CKKSCiphertext(acc, _LEVEL_HEAD), g * baby * stride)._ct
            if total is None:
                total = acc
            else:
                ev.add_inplace(total, acc)
        ev.rescale_to_next_inplace(total)
        return CKKSCiphertext(total, _LEVEL_WORK)

    def affine_mask(self, ct: CKKSCiphertext, a: int, c: float) -> CKKSCiphertext:
        """``a·S + c`` on a score ciphertext: ``a`` is an integer plaintext at scale 1, so the
        product keeps the score's scale and needs no rescale (no level is consumed)."""
        a_bits, c_bits = self.mask_bounds()
        if not 0 < a < 2**a_bits or not abs(c) < 2**c_bits:
            raise ParameterError(f"mask out of range: need 0 < a < 2^{a_bits}, |c| < 2^{c_bits}")
        out = seal.Ciphertext()
        parms = ct._ct.parms_id()
        self._evaluator.multiply_plain(ct._ct, self._encode(float(a), parms, 1.0), out)
        self._evaluator.add_plain_inplace(out, self._encode(float(c), parms, out.scale))
        return CKKSCiphertext(out, ct._level)

    def add_plain(self, ct: CKKSCiphertext, values: npt.ArrayLike) -> CKKSCiphertext:
        """``ct + values`` slot-wise (values padded with zeros), same level and scale."""
        arr = self._vector(values)
        out = seal.Ciphertext()
        plain = self._encode(arr, ct._ct.parms_id(), ct._ct.scale)
        self._evaluator.add_plain(ct._ct, plain, out)
        return CKKSCiphertext(out, ct._level)

    def add(self, x: CKKSCiphertext, y: CKKSCiphertext) -> CKKSCiphertext:
        """``x + y`` (same level and scale, e.g. a block plus a refresh delta)."""
        out = seal.Ciphertext()
        try:
            self._evaluator.add(x._ct, y._ct, out)
        except _SEAL_ERRORS as exc:
            raise InvalidCiphertextError(f"cannot add ciphertexts: {exc}") from exc
        return CKKSCiphertext(out, x._level)

    def random_mask_vector(self, rng: random.Random, bits: int = REFRESH_MASK_BITS) -> FloatArray:
        """``slot_count`` uniform reals in ``[−2^bits, 2^bits]``, 53 random bits each.

        Drawn from ``rng.randbytes`` so that ``random.SystemRandom`` (the production default)
        gives OS-CSPRNG masks; a seeded ``random.Random`` makes tests reproducible.
        """
        return uniform_reals(rng, self.slot_count, bits)


def check_head_dim(head_dim: int, slot_count: int) -> None:
    """The diagonal layout needs ``head_dim`` to divide the slot count (periodic queries)."""
    if not 0 < head_dim <= slot_count or slot_count % head_dim:
        raise DimensionError(
            f"head_dim {head_dim} must divide the CKKS slot count {slot_count} (diagonal layout)")


def diagonal_rows(heads: npt.ArrayLike) -> FloatArray:
    """``(slots, m)`` heads, one per slot → the ``(m, slots)`` plaintext rows of a block.

    Row ``r``, slot ``s`` holds ``heads[s, (s + r) mod m]`` (module docstring: the layout
    :meth:`CKKSContext.expand_query` lines up with)."""
    arr = np.asarray(heads, dtype=np.float64)
    n, m = arr.shape
    check_head_dim(m, n)
    s = np.arange(n)
    out: FloatArray = np.stack([arr[s, (s + r) % m] for r in range(m)])
    return out


def heads_from_rows(rows: npt.ArrayLike) -> FloatArray:
    """Inverse of :func:`diagonal_rows`: ``(m, slots)`` decrypted rows → ``(slots, m)`` heads."""
    arr = np.asarray(rows, dtype=np.float64)
    m, n = arr.shape
    check_head_dim(m, n)
    s = np.arange(n)
    out = np.empty((n, m))
    for r in range(m):
        out[s, (s + r) % m] = arr[r]
    return out


def slot_column(head: npt.ArrayLike, slot: int) -> FloatArray:
    """The ``m`` values rows ``0..m−1`` of a block hold at ``slot`` for ``head``:
    ``head[(slot + r) mod m]`` (one column of :func:`diagonal_rows`)."""
    arr = np.asarray(head, dtype=np.float64)
    out: FloatArray = np.roll(arr, -(slot % arr.size))
    return out


def uniform_reals(rng: random.Random, n: int, bits: int) -> FloatArray:
    """``n`` uniform reals in ``[−2^bits, 2^bits)``, 53-bit resolution, from ``rng.randbytes``."""
    words = np.frombuffer(rng.randbytes(8 * n), dtype=np.uint64) >> np.uint64(11)
    unit = words.astype(np.float64) * 2.0**-53
    out: FloatArray = (2.0 * unit - 1.0) * 2.0**bits
    return out


def _public_from_bytes(data: bytes) -> CKKSContext:
    return CKKSContext.from_bytes(data, expect_secret=False)


def scratch_cleanup() -> None:
    """Remove this process's scratch directory (tests, shutdown hooks)."""
    with _Scratch._lock:
        if _Scratch._dir is not None and _Scratch._pid == os.getpid():
            shutil.rmtree(_Scratch._dir, ignore_errors=True)
            _Scratch._dir = None


__all__ = [
    "REFRESH_MASK_BITS",
    "CKKSCiphertext",
    "CKKSContext",
    "check_head_dim",
    "default_rotation_steps",
    "diagonal_rows",
    "heads_from_rows",
    "params_digest",
    "scratch_cleanup",
    "slot_column",
    "uniform_reals",
]
