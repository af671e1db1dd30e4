"""One deployment's key set, producing exactly what server A stores for an enrolled template.

The linkability and inversion audits need "what the attacker gets" from a Pura deployment. That
is the enrolment record A keeps: the packed threshold-Paillier template ``[q(y) + 2^s]`` with
``[‖q(y)‖²]`` (:func:`pura.protocols.enroll.encrypt_template`) and the CKKS head ciphertext
(:meth:`pura.crypto.ckks.CKKSContext.encrypt_head`) of the PCA-rotated embedding. Each deployment
generates its own keys, as the architecture requires, so two protectors model two deployments.
Only public-key material is used to build records; the secret material stays inside this object
and is never part of its ``repr``.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

import numpy as np

from pura.crypto.ckks import CKKSContext
from pura.crypto.encoding import PCARotation, l2_normalize, quantize
from pura.crypto.paillier import PublicKey, RandomnessPool, generate_keypair
from pura.crypto.params import ParameterSet
from pura.protocols.enroll import TemplateLayout, encrypt_template
from pura_client.audit.metrics import FloatArray


@dataclass
class DeploymentKeys:
    """Public encryption material of one deployment (Paillier key + CKKS public context)."""

    params: ParameterSet
    paillier: PublicKey
    pool: RandomnessPool
    layout: TemplateLayout
    ckks: CKKSContext | None
    rotation: PCARotation

    @classmethod
    def generate(
        cls,
        params: ParameterSet,
        rotation: PCARotation,
        rng: random.Random | None = None,
        with_ckks: bool = True,
    ) -> DeploymentKeys:
        """Fresh keys for one deployment; ``rng`` seeds Paillier (CKKS uses SEAL's CSPRNG)."""
        key, _, _ = generate_keypair(params.paillier, rng)
        enc = params.encoding
        ckks = CKKSContext.generate(params.ckks).public() if with_ckks else None
        return cls(
            params=params,
            paillier=key,
            pool=RandomnessPool(key, rng=rng),
            layout=TemplateLayout.for_key(key, enc.dim, enc.scale_bits),
            ckks=ckks,
            rotation=rotation,
        )

    def __repr__(self) -> str:
        return f"DeploymentKeys(paillier={self.paillier.key_id}, ckks={self.ckks is not None})"

    def rotated(self, vector: FloatArray) -> FloatArray:
        return self.rotation.apply(l2_normalize(vector, self.params.encoding.dim))

    def paillier_record(self, vector: FloatArray) -> bytes:
        """Serialised :class:`PaillierTemplate` as A stores it."""
        q = quantize(self.rotated(vector), self.params.encoding.scale_bits)
        template = encrypt_template([int(v) for v in q], self.layout, self.paillier, self.pool)
        return template.to_bytes()

    def ckks_record(self, vector: FloatArray) -> bytes:
        """Serialised CKKS head ciphertext as A stores it (empty when built without CKKS)."""
        if self.ckks is None:
            return b""
        head = self.rotation.head(self.rotated(vector), self.params.encoding.head_dim)
        return self.ckks.ciphertext_to_bytes(self.ckks.encrypt_head(np.asarray(head)))


__all__ = ["DeploymentKeys"]
