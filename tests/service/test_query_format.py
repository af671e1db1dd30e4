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


def test_sealed_probes_over_rpc_and_hostile_ones_refused_by_name(deployment: Deployment) -> None:
    """The SDK seals probes to B (~1 kB instead of three ciphertexts); the servers answer them
    as they answer packed ones; a box that does not open, a truncated seed and a box of
    another length each get a clear error naming the problem, and the server is unharmed."""
    import dataclasses
    import secrets

    from pura.protocols.messages import SealedQuery

    key = deployment.a.node.keys.public.paillier
    probe = deployment.faces.gallery[0]
    with deployment.client("identifier") as client:
        enc = client.encryptor()
        sealed, packed = enc.query(probe), enc.query(probe, sealed=False)
        assert len(sealed.paillier) < 1500 < len(packed.paillier)
        up = SealedQuery.from_bytes(key, sealed.paillier)
        same = client.identify_encrypted(sealed).subject
        assert same == client.identify_encrypted(packed).subject
        garbage = dataclasses.replace(up, box=secrets.token_bytes(len(up.box)))
        short = dataclasses.replace(up, seed=up.seed[:-1])
        cut = dataclasses.replace(up, box=up.box[:-7])
        for bad, says in ((garbage, "could not open"), (short, "seed"), (cut, "could not open")):
            with pytest.raises(PuraError, match=says):
                client.identify_encrypted(EncryptedParts(bad.to_bytes(), sealed.ckks_head))
        with pytest.raises(PuraError, match="could not open"):
            client.verify_encrypted("anyone", EncryptedParts(garbage.to_bytes(),
                                                             sealed.ckks_head))
        assert client.identify_encrypted(sealed).subject == same  # unharmed, same answer
