"""Sealed boxes to server B: X25519 + HKDF-SHA256 + ChaCha20-Poly1305 (one message, one key).

Why: sealed admission (:mod:`pura.protocols.sealed`) lets an enrolling client hand B its
*masked* template directly, through A, instead of having both servers jointly decrypt packed
Paillier ciphertexts (six 3072-bit partial decryptions per template, the floor of the old
admission). A relays the box and cannot open it; B opens it and sees only the masked vector.

Construction (the shape of HPKE base mode, RFC 9180, with a fixed suite): the sender draws an
ephemeral X25519 key ``e``, computes ``Z = X25519(e, B_pub)`` and derives a 256-bit key
``K = HKDF-SHA256(salt = e_pub ‖ B_pub, ikm = Z, info = "pura-seal-v1" ‖ context)``; the box is
``e_pub ‖ ChaCha20-Poly1305(K, nonce = 0^12, plaintext, aad = context)``. A fixed nonce is safe
because every key ``K`` is used for exactly one message (fresh ``e`` per box). ``context`` binds a
box to what it belongs to (key id, template layout, the upload's mask commitment), so A cannot
move a box to another upload without B noticing. 128-bit security: X25519 (~2^128 work),
ChaCha20-Poly1305 with a 256-bit key.

The library does the cryptography (pyca/cryptography); this module only fixes the suite and
the encoding, and maps failures onto :class:`~pura.errors.SealError`.
"""

from __future__ import annotations

from dataclasses import dataclass

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey
from cryptography.hazmat.primitives.ciphers.aead import ChaCha20Poly1305
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from pura.errors import SealError

_INFO = b"pura-seal-v1"
_KEY_BYTES = 32
_NONCE = bytes(12)
#: Ephemeral public key + Poly1305 tag: what a box adds to its plaintext.
OVERHEAD = _KEY_BYTES + 16


def _derive(shared: bytes, ephemeral: bytes, recipient: bytes, context: bytes) -> bytes:
    return HKDF(hashes.SHA256(), _KEY_BYTES, salt=ephemeral + recipient,
                info=_INFO + context).derive(shared)


@dataclass(frozen=True)
class SealPublicKey:
    """B's public sealing key (32 bytes), distributed with the key set's public part."""

    raw: bytes

    def __post_init__(self) -> None:
        if len(self.raw) != _KEY_BYTES:
            raise SealError(f"a sealing public key has {_KEY_BYTES} bytes, got {len(self.raw)}")

    def seal(self, plaintext: bytes, context: bytes) -> bytes:
        """A box only the holder of the matching private key opens (fresh ephemeral key)."""
        ephemeral = X25519PrivateKey.generate()
        e_pub = ephemeral.public_key().public_bytes_raw()
        shared = ephemeral.exchange(X25519PublicKey.from_public_bytes(self.raw))
        key = _derive(shared, e_pub, self.raw, context)
        return e_pub + ChaCha20Poly1305(key).encrypt(_NONCE, plaintext, context)


class SealPrivateKey:
    """B's private sealing key. Never leaves B's key directory; kept out of ``repr``."""

    __slots__ = ("_key", "public")

    def __init__(self, key: X25519PrivateKey) -> None:
        self._key = key
        self.public = SealPublicKey(key.public_key().public_bytes_raw())

    def __repr__(self) -> str:
        return f"SealPrivateKey(public={self.public.raw.hex()[:16]}…)"

    @classmethod
    def generate(cls) -> SealPrivateKey:
        return cls(X25519PrivateKey.generate())

    @classmethod
    def from_bytes(cls, raw: bytes) -> SealPrivateKey:
        if len(raw) != _KEY_BYTES:
            raise SealError(f"a sealing private key has {_KEY_BYTES} bytes, got {len(raw)}")
        return cls(X25519PrivateKey.from_private_bytes(raw))

    def to_bytes(self) -> bytes:
        return self._key.private_bytes_raw()

    def open(self, box: bytes, context: bytes) -> bytes:
        """The plaintext of ``box``; :class:`SealError` if it was not sealed to this key under
        this ``context`` or was altered (one opaque error: no oracle on why)."""
        if len(box) < OVERHEAD:
            raise SealError("sealed box is too short")
        e_pub = box[:_KEY_BYTES]
        try:
            shared = self._key.exchange(X25519PublicKey.from_public_bytes(e_pub))
            key = _derive(shared, e_pub, self.public.raw, context)
            return ChaCha20Poly1305(key).decrypt(_NONCE, box[_KEY_BYTES:], context)
        except (InvalidTag, ValueError) as exc:
            raise SealError("sealed box does not open under B's key") from exc


__all__ = ["OVERHEAD", "SealPrivateKey", "SealPublicKey"]
