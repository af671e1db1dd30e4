"""Split large payloads into pura.v1.Chunk messages and reassemble them, with limits.

Why chunking rather than one huge message: gRPC's default receive limit is 4 MB, the public CKKS
context with Galois keys and the masked scores of a large gallery are far bigger, and raising the
per-message limit to "whatever it takes" would let any caller make the server allocate that much
per message. Chunks keep every message small and the *total* is capped separately
(``max_total``), checked while receiving, before anything is deserialised (threat T10/T21).
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Iterator

from pura.errors import ProtocolError
from pura.service._proto.pura.v1 import common_pb2

DEFAULT_CHUNK = 1 << 20


def split(payload: bytes, chunk_size: int = DEFAULT_CHUNK) -> Iterator[common_pb2.Chunk]:
    """Chunks of ``payload``; an empty payload is one empty final chunk."""
    if chunk_size <= 0:
        raise ValueError("chunk_size must be positive")
    digest = hashlib.sha256(payload).digest()
    count = max(1, -(-len(payload) // chunk_size))
    for index in range(count):
        last = index == count - 1
        yield common_pb2.Chunk(
            index=index,
            data=payload[index * chunk_size:(index + 1) * chunk_size],
            last=last,
            sha256=digest if last else b"",
        )


def join(chunks: Iterable[common_pb2.Chunk], *, max_total: int) -> bytes:
    """Reassemble; refuses gaps, reordering, overflow of ``max_total`` and digest mismatch."""
    parts: list[bytes] = []
    total = 0
    for expected, chunk in enumerate(chunks):
        if chunk.index != expected:
            raise ProtocolError(f"chunk {chunk.index} arrived where {expected} was expected")
        total += len(chunk.data)
        if total > max_total:
            raise ProtocolError(f"payload exceeds the limit of {max_total} bytes")
        parts.append(chunk.data)
        if chunk.last:
            payload = b"".join(parts)
            if hashlib.sha256(payload).digest() != chunk.sha256:
                raise ProtocolError("payload digest mismatch after reassembly")
            return payload
    raise ProtocolError("stream ended before the final chunk")


__all__ = ["DEFAULT_CHUNK", "join", "split"]
