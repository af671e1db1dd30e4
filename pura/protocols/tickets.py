"""Per-query tickets between A and B: the envelope every ticketed A→B request travels in.

Why tickets exist: B's quotas are *per query* (one threshold opening, two norm comparisons,
one preselection of ``view_k``, … — :mod:`pura.protocols.helper_guard`), but A's requests carry
nothing that says which query they belong to, so B could only count per request, which a
deviating A evades by sending more requests. B therefore issues a random ticket when A opens a
query (or an enrolment batch) and every later step of that query presents it; B counts and
sequences the steps per ticket.

What a ticket tells B: that these requests belong together — which B could infer from timing
anyway. It carries no client, collection or subject: A opens it with the ticket kind only.

Wire form: ``MAGIC | ticket (16 B) | request bytes``. The request bytes are the step's own
message, unchanged, so protocol code and messages know nothing of tickets.
"""

from __future__ import annotations

from enum import StrEnum

from pura.errors import HelperRefusedError, ProtocolError
from pura.protocols.steps import Step

#: The step A calls to open a ticket (payload: the kind; reply: the ticket).
TICKET_STEP = Step.TICKET
TICKET_BYTES = 16
_MAGIC = b"PURA-TK1"


class TicketKind(StrEnum):
    """What a ticket may be used for (B allows a different set of steps for each)."""

    QUERY = "query"  # admission, preselection, the exact stage of one identification/verification
    ENROL = "enrol"  # admission of one enrolment batch


def seal(ticket: bytes, payload: bytes) -> bytes:
    """A: wrap one step's request bytes with its ticket."""
    if len(ticket) != TICKET_BYTES:
        raise ProtocolError(f"a ticket is {TICKET_BYTES} bytes, got {len(ticket)}")
    return _MAGIC + ticket + payload


def unseal(data: bytes) -> tuple[bytes, bytes]:
    """B: ``(ticket, request bytes)``; a request without an envelope is refused."""
    head = len(_MAGIC) + TICKET_BYTES
    if len(data) < head or not data.startswith(_MAGIC):
        raise HelperRefusedError("request carries no query ticket")
    return data[len(_MAGIC):head], data[head:]


def strip(data: bytes) -> bytes:
    """The request bytes of ``data`` with any envelope removed (recorders and audits read the
    step's own message; the ticket is B's bookkeeping)."""
    head = len(_MAGIC) + TICKET_BYTES
    return data[head:] if data.startswith(_MAGIC) and len(data) >= head else data


def parse_ticket(reply: bytes) -> bytes:
    """A: check B's answer to :data:`TICKET_STEP`."""
    if len(reply) != TICKET_BYTES:
        raise ProtocolError(f"B answered a ticket of {len(reply)} bytes")
    return reply


__all__ = ["TICKET_BYTES", "TICKET_STEP", "TicketKind", "parse_ticket", "seal", "strip",
           "unseal"]
