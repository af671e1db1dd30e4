"""Every A→B helper step by name, in one place.

Why one enum: the servicer's dispatch table, the recording channel, B's request log and quotas
and the audit all key on the step; a step spelt twice is a step one of them silently misses.
"""

from __future__ import annotations

from enum import StrEnum


class Step(StrEnum):
    """Name of one A→B request (the ``step`` field of a helper call)."""

    BLINDED_PRODUCT = "paillier.blinded_product"
    COMPARE = "paillier.compare_select"
    THRESHOLD = "paillier.threshold"
    NORM_SQUARE = "paillier.norm_square"
    NORM_CHECK = "paillier.norm_check"
    #: Sealed admission of enrolment uploads (:mod:`pura.protocols.sealed`).
    SEALED_ADMIT = "paillier.sealed_admit"
    #: Sealed admission of a query (:mod:`pura.protocols.sealed_query`).
    SEALED_QUERY = "paillier.sealed_query"
    ARGMIN = "paillier.argmin"
    REFRESH = "ckks.refresh"
    #: B encrypts the heads of sealed uploads it admitted (:mod:`pura.protocols.derived_heads`).
    DERIVE_HEADS = "ckks.derive_heads"
    #: Per-epoch secret re-layout of a block (issue 12): B lifts A's masked rows a level up.
    RELAYOUT = "ckks.relayout"
    #: Preselection: B ranks its view and serves re-randomised candidate copies.
    PRESELECT = "ckks.preselect"
    #: Candidate copies at B (issue 11): forwarded at enrolment, erased at deletion,
    #: reconciled at A's start-up; the winner's label opened after a match.
    COPY_PUT = "copies.put"
    COPY_ERASE = "copies.erase"
    COPY_SYNC = "copies.sync"
    OPEN_LABEL = "paillier.open_label"
    #: A opens a per-query ticket at B (:mod:`pura.protocols.tickets`).
    TICKET = "b.ticket"


__all__ = ["Step"]
