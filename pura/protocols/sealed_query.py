"""Sealed query admission: a probe admitted without any threshold decryption in round 1.

Why. The joint-decryption admission of a query (:func:`pura.protocols.norms.admit_query`) has
both servers partially decrypt the client's three packed ciphertexts so that B can read the
masked vector: six 3072-bit partial decryptions (~35–45 ms each) on every identification's
path, about two thirds of the query's admission CPU. It runs beside preselection, but on two
cores the two compete (issue 11's latency). As for templates (:mod:`pura.protocols.sealed`),
the masked vector does not have to travel as a Paillier ciphertext: the client masks it with
masks A derives from a seed and seals it to B.

A query needs even less than a template: B re-encrypts every coordinate it checks anyway (the
exact stage needs a per-dimension ``[u_i]``), so A computes the norm's cross term from B's
fresh ``[v_i]`` itself and the client uploads no ciphertext at all::

    client:  σ (32 random bytes) → c_i = 2^s + r_i (derive_masks, as for templates)
             v_i = q(x)_i + c_i;   box = Seal_B(v; context = key ‖ layout ‖ H("query"))
             upload SealedQuery(σ, box)                            (~1 kB instead of 3 ciphertexts)
    A → B:   SealedQueryRequest(box)
    B:       opens the box, range-checks every v_i (the legacy admission's check), returns
             fresh [S = Σ v_i²] and [v_i]                           → NormReply, as legacy
    A:       [u_i] = [v_i] − c_i,  [‖u‖²] = [S] − 2·Π_i [v_i]^(c_i) + ‖c‖²,
             all re-randomised (B knows the randomness of what it made)  (= finish_norms)
    round 2: the norm-range check, unchanged (:func:`pura.protocols.norms.check_normed`)

What each party learns (the same as the legacy admission; argued, and tested for the refusals):
B reads ``v = q(x) + c`` with ``c_i`` uniform over ``2^(s+1+κ)`` values (2^-κ-close to
independent of ``q(x)`` per coordinate); the legacy admission showed it ``q(x) + 2^s + r`` with
``r`` A's, of the same distribution. A reads only ciphertexts and the validity bit. The masks now
come from the client's seed rather than from A's generator: a client who picks its seed knows
``c``, but it knows ``q(x)`` anyway; whatever it seals, B's range check bounds every ``v_i`` and
the seed fixes every ``c_i`` to the honest range, so ``u = v − c`` is bounded exactly as the
legacy path's decoded vector is, and round 2 refuses any ``u`` that is not a unit vector.

Why the context differs from a template's box: a box sealed for enrolment must never be accepted
as a query (or the other way round) by a deviating A; the constant digest below separates the two
uses, since a template's box is bound to the SHA-256 of its mask ciphertexts.
"""

from __future__ import annotations

import hashlib
import random
import secrets
from collections.abc import Sequence
from typing import Protocol

from pura.crypto.paillier import KeyShare, PublicKey, RandomnessPool
from pura.crypto.seal import SealPrivateKey, SealPublicKey
from pura.engine.local import SERIAL, LocalEngine
from pura.errors import EmbeddingRangeError, KeyMismatchError, ProtocolError
from pura.protocols.enroll import TemplateLayout
from pura.protocols.messages import NormReply, SealedQuery, SealedQueryRequest
from pura.protocols.norms import (
    CheckedQuery,
    NormHelper,
    NormLayout,
    NormState,
    check_normed,
    finish_norms,
    fresh_vector,
)
from pura.protocols.sealed import (
    SEED_BYTES,
    SealedLayout,
    box_context_from_digest,
    derive_masks,
    open_box,
)

#: What a query's box is bound to in place of a template's mask digest.
QUERY_DIGEST = hashlib.sha256(b"pura-sealed-query-v1").digest()

#: Largest box B opens for a query (``dim`` values of a few bytes, the AEAD's overhead).
MAX_BOX_BYTES = 1 << 16

_UNOPENED = ("was refused at admission: B could not open its sealed vector, or a "
             "coordinate lies far outside ±2^s")


def query_box_context(key: PublicKey, layout: TemplateLayout) -> bytes:
    """The AEAD context of a query's box (module docstring: why it differs from a template's)."""
    return box_context_from_digest(key, layout, QUERY_DIGEST)


# --- client ---------------------------------------------------------------------------------


def seal_query(
    values: Sequence[int],
    layout: TemplateLayout,
    key: PublicKey,
    seal: SealPublicKey,
    rng: random.Random | None = None,
) -> SealedQuery:
    """Client side (module docstring). ``values``: the quantised probe ``q(x)``; ``rng`` draws
    the seed (OS CSPRNG unless a test seeds it); the box's ephemeral key comes from the OS."""
    layout.check_vector(values)
    layout.check_key(key)
    seed = (rng if rng is not None else secrets.SystemRandom()).randbytes(SEED_BYTES)
    offsets, _ = derive_masks(seed, layout, key)
    width = _layout(layout, key).value_bytes
    plain = b"".join((int(q) + c).to_bytes(width, "big")
                     for q, c in zip(values, offsets, strict=True))
    return SealedQuery(key, seed, seal.seal(plain, query_box_context(key, layout)))


def _layout(layout: TemplateLayout, key: PublicKey) -> SealedLayout:
    return SealedLayout.for_norms(NormLayout.for_key(key, layout), key)


# --- A --------------------------------------------------------------------------------------


def check_query_shape(upload: SealedQuery, key: PublicKey) -> None:
    """A's checks before anything is sent to B (the values are hidden)."""
    if upload.key != key:
        raise KeyMismatchError("sealed query was made under another key")
    if len(upload.seed) != SEED_BYTES:
        raise ProtocolError(f"a sealed query's seed has {SEED_BYTES} bytes, got "
                            f"{len(upload.seed)}")
    if not 0 < len(upload.box) <= MAX_BOX_BYTES:
        raise ProtocolError(f"a sealed query's box has 1..{MAX_BOX_BYTES} bytes, got "
                            f"{len(upload.box)}")


def start_sealed_query(
    upload: SealedQuery, layout: SealedLayout
) -> tuple[NormState, SealedQueryRequest]:
    """A: the masks its seed stands for (kept as a legacy round-1 state, so that
    :func:`~pura.protocols.norms.finish_norms` finishes both admissions) and B's request."""
    check_query_shape(upload, layout.key)
    t = layout.template
    offsets, _ = derive_masks(upload.seed, t, layout.key)
    state = NormState(repack=False, masks=[[[c - t.bound for c in offsets]]])
    return state, SealedQueryRequest(layout.key, t.dim, t.slot_bits, upload.box)


# --- B --------------------------------------------------------------------------------------


def helper_sealed_query(
    request: SealedQueryRequest,
    layout: SealedLayout,
    seal: SealPrivateKey,
    pool: RandomnessPool,
) -> NormReply:
    """B: open the box, range-check, and answer fresh ``[S]`` and ``[v_i]``; a box that does
    not open or holds an out-of-range value is answered ``valid = 0`` and nothing else."""
    t, key = layout.template, layout.key
    if (request.dim, request.slot_bits) != (t.dim, t.slot_bits):
        raise ProtocolError(f"sealed query layout dim={request.dim}/slot={request.slot_bits} "
                            f"differs from B's {t.dim}/{t.slot_bits}")
    if not 0 < len(request.box) <= MAX_BOX_BYTES:
        raise ProtocolError(f"a sealed query's box has 1..{MAX_BOX_BYTES} bytes")
    values = open_box(request.box, QUERY_DIGEST, layout, seal)
    if values is None:
        return NormReply(key, (0,), (), (), ())
    total, dims, _ = fresh_vector(values, t, key, pool, repack=False)
    return NormReply(key, (1,), (total,), dims, ())


# --- entry point ----------------------------------------------------------------------------


class SealedQueryHelper(NormHelper, Protocol):
    """What A asks of B to admit a sealed query (round 2 is :class:`NormHelper`'s)."""

    def sealed_query(self, request: SealedQueryRequest) -> NormReply: ...


def admit_sealed_query(
    upload: SealedQuery,
    layout: SealedLayout,
    share_a: KeyShare,
    pool: RandomnessPool,
    helper: SealedQueryHelper,
    engine: LocalEngine = SERIAL,
    rng: random.Random | None = None,
) -> CheckedQuery:
    """A, before the exact stage: one round with B plus the norm check; raises
    :class:`~pura.errors.EmbeddingRangeError` for anything that is not a unit vector's
    encoding, exactly as :func:`~pura.protocols.norms.admit_query` does."""
    state, request = start_sealed_query(upload, layout)
    normed = finish_norms(state, helper.sealed_query(request), layout.norms, pool, engine)
    (result,) = check_normed(normed, layout.norms, share_a, pool, helper, wolf=False,
                             engine=engine, rng=rng, unvalid=_UNOPENED)
    if isinstance(result, EmbeddingRangeError):
        raise EmbeddingRangeError("query " + str(result))
    return CheckedQuery(result.dims, result.norm)


__all__ = [
    "MAX_BOX_BYTES",
    "QUERY_DIGEST",
    "SealedQueryHelper",
    "admit_sealed_query",
    "check_query_shape",
    "helper_sealed_query",
    "query_box_context",
    "seal_query",
    "start_sealed_query",
]
