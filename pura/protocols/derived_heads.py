"""CKKS heads derived from sealed uploads: the preselection head made from the admitted vector.

Why. With the joint-decryption admission a client uploads its CKKS head separately (330 kB),
and A must range-check it with B before placing it (:mod:`pura.protocols.head_admission`:
three blinded comparisons per head, ~27 ms of A's CPU and ~1 MB A → B each, the largest cost
of enrolment left once sealed admission removed the partial decryptions). Nothing ties that
head to the Paillier template, so the check is the only thing that keeps a hostile head from
outranking every real face in preselection. Under sealed admission B already reads the masked
vector ``v = q(y) + c``; it can make the head itself, so there is nothing to check and nothing
to upload:

    A → B   the boxes of the admitted uploads, each with its mask digest   (DeriveRequest)
    B       opens each box (bound to the digest, as in sealed admission), range-checks it and
            encrypts ``(v_0 … v_{m−1}) / 2^s`` at the head level (top)        (DeriveResponse)
    A       head = that − ``(c_0 … c_{m−1}) / 2^s``  (a plaintext addition)  = ``q(y)_i / 2^s``

The head is then the first ``m`` coordinates of the *admitted* template, quantised like it
(|error| ≤ 2^-(s+1) from the quantisation, ~2^-12 from encoding values near 2^(s+1+κ−s) = 2^41
at a 2^40 scale in double precision — the same rounding the block refresh's 2^40 masks cause),
inside a unit vector's range because the template passed the norm check: no head check is
needed, and the refresh places it unchecked (:func:`pura.protocols.refresh.prepare_refresh`'s
``unchecked``).

What B learns: nothing new (it encrypts values it read in sealed admission; the step is logged,
not ticketed, and decrypts nothing). What A learns: ciphertexts. B knows the randomness of the
head it made and A does not re-randomise it: B only ever sees a head again inside a block
refresh, under A's fresh mask ``R'`` (|R'| ≤ 2^40), and what B could compute from knowing its
own ciphertext there is ``R' − c/2^s``, i.e. (knowing ``v``) ``R' + q(y)/2^s`` — exactly the
value it decrypts anyway.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from pura.crypto.ckks import CKKSContext
from pura.crypto.seal import SealPrivateKey
from pura.errors import ProtocolError
from pura.protocols import _wire
from pura.protocols.enroll import TemplateLayout
from pura.protocols.sealed import SealedLayout, open_box

_REQ_MAGIC = b"PURA-DHQ"
_RESP_MAGIC = b"PURA-DHP"
#: Most heads one request derives (a BulkEnroll batch is far smaller).
MAX_HEADS = 4096


@dataclass(frozen=True)
class DeriveRequest:
    """A → B: the boxes of admitted sealed uploads and their mask digests (SHA-256)."""

    head_dim: int
    digests: tuple[bytes, ...]
    boxes: tuple[bytes, ...]

    def __repr__(self) -> str:
        return f"DeriveRequest(heads={len(self.boxes)}, m={self.head_dim})"

    def to_bytes(self) -> bytes:
        header = {"m": self.head_dim, "digests": [d.hex() for d in self.digests]}
        return _wire.pack(_REQ_MAGIC, header, list(self.boxes))

    @classmethod
    def from_bytes(cls, data: bytes) -> DeriveRequest:
        header, boxes = _wire.unpack(_REQ_MAGIC, data)
        raw = _wire.field(header, "digests", list)
        if not all(isinstance(d, str) for d in raw):
            raise ProtocolError("derive request: digests must be hex strings")
        try:
            digests = tuple(bytes.fromhex(d) for d in raw)
        except ValueError as exc:
            raise ProtocolError("derive request: a digest is not hex") from exc
        if len(digests) != len(boxes) or not 0 < len(boxes) <= MAX_HEADS \
                or any(len(d) != 32 for d in digests):
            raise ProtocolError(f"derive request: {len(boxes)} boxes, {len(digests)} digests")
        return cls(_wire.field(header, "m", int), digests, tuple(boxes))


@dataclass(frozen=True)
class DeriveResponse:
    """B → A: one head-level ciphertext per box (empty where the box did not open)."""

    heads: tuple[bytes, ...]

    def to_bytes(self) -> bytes:
        return _wire.pack(_RESP_MAGIC, {"n": len(self.heads)}, list(self.heads))

    @classmethod
    def from_bytes(cls, data: bytes) -> DeriveResponse:
        header, heads = _wire.unpack(_RESP_MAGIC, data)
        if _wire.field(header, "n", int) != len(heads):
            raise ProtocolError("derive response: count does not match")
        return cls(tuple(heads))


def answer_derive(
    ctx: CKKSContext, seal: SealPrivateKey, layout: SealedLayout, request: DeriveRequest
) -> DeriveResponse:
    """B: ``Enc((v_0 … v_{m−1}) / 2^s)`` at the head level for every box that opens (read and
    range-checked as in sealed admission, :func:`pura.protocols.sealed.open_box`)."""
    m = request.head_dim
    t = layout.template
    if not 0 < m <= t.dim:
        raise ProtocolError(f"derive request: head of {m} coordinates, templates have {t.dim}")
    unit = float(t.bound)
    out: list[bytes] = []
    for digest, box in zip(request.digests, request.boxes, strict=True):
        values = open_box(box, digest, layout, seal)
        out.append(b"" if values is None else ctx.encrypt_head_level_bytes(
            np.asarray(values[:m], dtype=np.float64) / unit))
    return DeriveResponse(tuple(out))


def finish_derive(
    ctx: CKKSContext,
    response: DeriveResponse,
    offsets: Sequence[Sequence[int]],
    layout: TemplateLayout,
    head_dim: int,
) -> list[bytes | None]:
    """A: each head ``Enc(v/2^s) − c/2^s`` (serialised), or ``None`` where B made none."""
    if len(response.heads) != len(offsets):
        raise ProtocolError("derive response does not answer every box")
    unit = float(layout.bound)
    out: list[bytes | None] = []
    for raw, c in zip(response.heads, offsets, strict=True):
        if not raw:
            out.append(None)
            continue
        head = ctx.head_from_bytes(raw)
        shift = -np.asarray(c[:head_dim], dtype=np.float64) / unit
        out.append(ctx.ciphertext_to_bytes(ctx.add_plain(head, shift)))
    return out


__all__ = ["MAX_HEADS", "DeriveRequest", "DeriveResponse", "answer_derive", "finish_derive"]
