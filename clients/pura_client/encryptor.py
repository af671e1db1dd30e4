"""Client-side encryption: embedding -> (Paillier part, CKKS part) for enrolment and queries.

Pipeline (docs/architecture.md "Vectors and encodings"): L2-normalise, rotate with the shipped
PCA (distances preserved exactly), then

* exact part: quantise every rotated coordinate to ``s`` fixed-point bits and encrypt under the
  threshold Paillier public key (packed, for templates and queries alike);
* preselection part: the first ``m`` rotated coordinates under the public CKKS context (one
  ciphertext holding the head for templates; ``m`` broadcast ciphertexts for queries).

The client holds public keys only; nothing it sends can be decrypted without both servers.
Randomness: the Paillier pool takes an injectable ``random.Random`` (tests); the default is the
OS CSPRNG. SEAL draws its own encryption randomness from its CSPRNG.
"""

from __future__ import annotations

import random
import secrets
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from pura.crypto.encoding import PCARotation, l2_normalize, quantize
from pura.crypto.paillier import RandomnessPool
from pura.crypto.seal import SealPublicKey
from pura.errors import ConfigError
from pura.keys import PublicKeys
from pura.protocols.enroll import TemplateLayout, encrypt_query, encrypt_template
from pura.protocols.messages import PaillierQuery, SealedQuery
from pura.protocols.sealed import seal_template
from pura.protocols.sealed_query import seal_query
from pura.transport import pack_blobs


@dataclass(frozen=True)
class EncryptedParts:
    """What goes into an EncryptedTemplate / EncryptedQuery message."""

    paillier: bytes
    ckks_head: bytes

    def __repr__(self) -> str:
        return f"EncryptedParts(paillier={len(self.paillier)} B, ckks={len(self.ckks_head)} B)"


class Encryptor:
    """Encrypts embeddings for one collection's public keys."""

    def __init__(
        self, keys: PublicKeys, pca: PCARotation, *, rng: random.Random | None = None
    ) -> None:
        enc = keys.parameters.encoding
        if pca.model_id != enc.model_id or pca.dim != enc.dim:
            raise ConfigError(
                f"PCA rotation is for {pca.model_id}/{pca.dim}, keys for {enc.model_id}"
            )
        self.keys = keys
        self.pca = pca
        self.layout = TemplateLayout.for_key(keys.paillier, enc.dim, enc.scale_bits)
        self.pool = RandomnessPool(keys.paillier, rng=rng or secrets.SystemRandom())

    def __repr__(self) -> str:
        return f"Encryptor(key_id={self.keys.key_id})"

    def _rotate(self, embedding: npt.ArrayLike) -> npt.NDArray[np.float64]:
        unit = l2_normalize(embedding, dim=self.pca.dim)
        rotated: npt.NDArray[np.float64] = self.pca.apply(unit)
        return rotated

    def _fixed(self, rotated: npt.NDArray[np.float64]) -> list[int]:
        return [int(v) for v in quantize(rotated, self.keys.parameters.encoding.scale_bits)]

    def _sealing_key(self, sealed: bool | None) -> SealPublicKey | None:
        """B's sealing key when the upload is to be sealed: by default whenever the key set
        has one; ``sealed=True`` insists (an error for older key sets), ``False`` declines."""
        if sealed is False or (sealed is None and self.keys.seal is None):
            return None
        if self.keys.seal is None:
            raise ConfigError("these keys have no sealing key (made before sealed admission)")
        return self.keys.seal

    def template(self, embedding: npt.ArrayLike, *, sealed: bool | None = None) -> EncryptedParts:
        """Enrolment upload for one face.

        Key sets with B's sealing key get a sealed upload (:mod:`pura.protocols.sealed`: the
        masked vector sealed to B, the masks under the threshold key; ~100 kB and ~70 ms here)
        and no CKKS head: B derives it from the admitted vector
        (:mod:`pura.protocols.derived_heads`). Older key sets get the packed upload and a head;
        ``sealed=False`` asks for that upload under any key set (servers accept both)."""
        rotated = self._rotate(embedding)
        fixed = self._fixed(rotated)
        seal = self._sealing_key(sealed)
        if seal is not None:
            upload = seal_template(fixed, self.layout, self.keys.paillier, seal, self.pool.rng)
            return EncryptedParts(upload.to_bytes(), b"")  # B derives the CKKS head
        paillier = encrypt_template(fixed, self.layout, self.keys.paillier, self.pool)
        ctx = self.keys.ckks
        head = rotated[: self.keys.parameters.encoding.head_dim]
        return EncryptedParts(paillier.to_bytes(), ctx.ciphertext_to_bytes(ctx.encrypt_head(head)))

    def query(self, embedding: npt.ArrayLike, *, sealed: bool | None = None) -> EncryptedParts:
        """Identification / verification probe for one face.

        Key sets with B's sealing key get a sealed probe (:mod:`pura.protocols.sealed_query`:
        the masked vector sealed to B, ~1 kB, no Paillier ciphertext; the servers admit it
        with no threshold decryption in the first round). Older key sets get the packed
        ciphertexts; ``sealed=False`` asks for those under any key set (servers accept both)."""
        rotated = self._rotate(embedding)
        fixed = self._fixed(rotated)
        seal = self._sealing_key(sealed)
        if seal is not None:
            paillier: PaillierQuery | SealedQuery = seal_query(
                fixed, self.layout, self.keys.paillier, seal, self.pool.rng)
        else:
            paillier = encrypt_query(fixed, self.layout, self.keys.paillier, self.pool)
        ctx = self.keys.ckks
        head = rotated[: self.keys.parameters.encoding.head_dim]
        # ONE periodic ciphertext (235 KB), expanded by A: see pura.crypto.ckks, "Block layout".
        query = ctx.ciphertext_to_bytes(ctx.encrypt_query(head))
        return EncryptedParts(paillier.to_bytes(), pack_blobs([query]))


__all__ = ["EncryptedParts", "Encryptor"]
