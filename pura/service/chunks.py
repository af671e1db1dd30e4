"""Split large payloads into pura.v1.Chunk messages and reassemble them, with limits.

Why chunking rather than one huge message: gRPC's default receive limit is 4 MB, the public CKKS
context with Galois keys and the masked scores of a large gallery are far bigger, and raising the
per-message limit to "whatever it takes" would let any caller make the server allocate that much
per message. Chunks keep every message small and the *total* is capped separately
(``max_total``), checked while receiving, before anything is deserialised (threat T10/T21).
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Iterator, Sequence

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


def pack_blobs(parts: Sequence[bytes]) -> bytes:
    """Length-prefixed list of byte strings (block records, broadcast query heads)."""
    out = bytearray(len(parts).to_bytes(4, "big"))
    for part in parts:
        out += len(part).to_bytes(8, "big") + part
    return bytes(out)


def unpack_blobs(data: bytes, *, what: str, max_items: int = 1 << 16) -> list[bytes]:
    if len(data) < 4:
        raise ProtocolError(f"{what}: truncated")
    count = int.from_bytes(data[:4], "big")
    if count > max_items:
        raise ProtocolError(f"{what}: {count} items exceed the limit {max_items}")
    parts, pos = [], 4
    for _ in range(count):
        if pos + 8 > len(data):
            raise ProtocolError(f"{what}: truncated")
        size = int.from_bytes(data[pos:pos + 8], "big")
        pos += 8
        if pos + size > len(data):
            raise ProtocolError(f"{what}: truncated")
        parts.append(data[pos:pos + size])
        pos += size
    if pos != len(data):
        raise ProtocolError(f"{what}: {len(data) - pos} trailing bytes")
    return parts


__all__ = ["DEFAULT_CHUNK", "join", "pack_blobs", "split", "unpack_blobs"]
