"""The query head over RPC (issue 14): one periodic CKKS ciphertext; other shapes refused by name.

Against the session's real A and B (conftest): an older client's 64 broadcast ciphertexts, two
ciphertexts, and an enrolment-level head each get a clear INVALID_ARGUMENT that names the
problem, and the next well-formed query is answered exactly as before.
"""

from __future__ import annotations

import numpy as np
import pytest
from pura_client.encryptor import EncryptedParts

from pura.errors import PuraError
from pura.keys import load_public_keys
from pura.service.chunks import pack_blobs, unpack_blobs

from .conftest import Deployment


def test_only_one_periodic_query_ciphertext_is_accepted(deployment: Deployment) -> None:
    public = load_public_keys(deployment.keys / "public")
    ctx, m = public.ckks, public.parameters.encoding.head_dim
    probe = deployment.faces.gallery[0]
    with deployment.client("identifier") as client:
        good = client.encryptor().query(probe)
        assert len(unpack_blobs(good.ckks_head, what="query head")) == 1
        assert len(good.ckks_head) < 300_000  # was 15 MB as 64 broadcast ciphertexts
        broadcast = pack_blobs([ctx.ciphertext_to_bytes(ctx.encrypt_vector(np.full(
            ctx.slot_count, 0.1))) for _ in range(m)])
        two = pack_blobs(unpack_blobs(good.ckks_head, what="query head") * 2)
        enrol_head = pack_blobs([client.encryptor().template(probe, sealed=False).ckks_head])
        for bad, says in ((broadcast, "upgrade the client"), (two, "expected 1"),
                          (enrol_head, "work-level")):
            with pytest.raises(PuraError, match=says):
                client.identify_encrypted(EncryptedParts(good.paillier, bad))
        answer = client.identify_encrypted(good)  # the server is unharmed
        assert answer.budget_remaining >= 0
