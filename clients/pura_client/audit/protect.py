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
from pura.crypto.paillier import KeyShare, PublicKey, RandomnessPool, generate_keypair
from pura.crypto.params import ParameterSet
from pura.protocols.enroll import TemplateLayout, encrypt_query, encrypt_template
from pura.protocols.identify import (
    STEP_BLINDED_PRODUCT,
    BytesChannel,
    ExactConfig,
    ServerA,
    ServerB,
)
from pura.protocols.messages import PaillierTemplate
from pura_client.audit.harness import Recorder, helper_view
from pura_client.audit.metrics import FloatArray


@dataclass
class DeploymentKeys:
    """Public encryption material of one deployment (Paillier key + CKKS public context)."""

    params: ParameterSet
    paillier: PublicKey
    pool: RandomnessPool
    layout: TemplateLayout
    exact: ExactConfig
    ckks: CKKSContext | None
    rotation: PCARotation
    share_a: KeyShare
    share_b: KeyShare

    @classmethod
    def generate(
        cls,
        params: ParameterSet,
        rotation: PCARotation,
        rng: random.Random | None = None,
        with_ckks: bool = True,
    ) -> DeploymentKeys:
        """Fresh keys for one deployment; ``rng`` seeds Paillier (CKKS uses SEAL's CSPRNG)."""
        key, share_a, share_b = generate_keypair(params.paillier, rng)
        enc = params.encoding
        ckks = CKKSContext.generate(params.ckks).public() if with_ckks else None
        return cls(
            params=params,
            paillier=key,
            pool=RandomnessPool(key, rng=rng),
            layout=TemplateLayout.for_key(key, enc.dim, enc.scale_bits),
            exact=ExactConfig.for_key(key, enc.dim, enc.scale_bits),
            ckks=ckks,
            rotation=rotation,
            share_a=share_a,
            share_b=share_b,
        )

    def __repr__(self) -> str:
        return f"DeploymentKeys(paillier={self.paillier.key_id}, ckks={self.ckks is not None})"

    def rotated(self, vector: FloatArray) -> FloatArray:
        return self.rotation.apply(l2_normalize(vector, self.params.encoding.dim))

    def _quantised(self, vector: FloatArray) -> list[int]:
        return [int(v) for v in quantize(self.rotated(vector), self.params.encoding.scale_bits)]

    def template(self, vector: FloatArray) -> PaillierTemplate:
        """What the enrolling client uploads and A stores (Paillier part)."""
        return encrypt_template(self._quantised(vector), self.layout, self.paillier, self.pool)

    def paillier_record(self, vector: FloatArray) -> bytes:
        """Serialised :class:`PaillierTemplate` as A stores it."""
        return self.template(vector).to_bytes()

    def helper_view(self, query: FloatArray, candidate: FloatArray, copies: int) -> list[list[int]]:
        """What B decrypts when ``copies`` fresh encryptions of one template are the candidates.

        Runs a real :meth:`ServerA.match` against a :class:`ServerB` of this deployment over a
        recorded channel, then redoes B's decryption of the recorded blinded-product request
        (:func:`harness.helper_view`). One template per request, because A shuffles candidates
        and the order B sees must not matter to the measurement.
        """
        recorder = Recorder()
        channel = BytesChannel.loopback(ServerB(self.share_b, self.exact))
        channel.call = recorder.wrap(channel.call)
        server_a = ServerA(self.share_a, self.exact, channel, pool=self.pool)
        server_a.refill(copies)
        q = encrypt_query(self._quantised(query), self.layout, self.paillier, self.pool)
        candidates = [(str(i), self.template(candidate)) for i in range(copies)]
        server_a.match(q, candidates, 0)
        payload = next(
            m.payload
            for m in recorder.messages
            if m.step == STEP_BLINDED_PRODUCT and m.direction == "A->B"
        )
        return helper_view(payload, self.paillier, self.share_b, self.layout)

    def ckks_record(self, vector: FloatArray) -> bytes:
        """Serialised CKKS head ciphertext as A stores it (empty when built without CKKS)."""
        if self.ckks is None:
            return b""
        head = self.rotation.head(self.rotated(vector), self.params.encoding.head_dim)
        return self.ckks.ciphertext_to_bytes(self.ckks.encrypt_head(np.asarray(head)))


__all__ = ["DeploymentKeys"]
