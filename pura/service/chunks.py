"""Chunked payloads as the server's ``pura.v1.Chunk`` messages.

The framing itself (split, reassembly with limits and digest, blob lists) is in the core,
:mod:`pura.transport`, shared with the client SDK; this module only builds the server's own
generated message class from it. ``join``, ``pack_blobs`` and ``unpack_blobs`` are re-exported so
server code keeps one import.
"""

from __future__ import annotations

from collections.abc import Iterator

from pura.service._proto.pura.v1 import common_pb2
from pura.transport import DEFAULT_CHUNK, join, pack_blobs, split_fields, unpack_blobs


def split(payload: bytes, chunk_size: int = DEFAULT_CHUNK) -> Iterator[common_pb2.Chunk]:
    """Chunks of ``payload``; an empty payload is one empty final chunk."""
    for f in split_fields(payload, chunk_size):
        yield common_pb2.Chunk(index=f.index, data=f.data, last=f.last, sha256=f.sha256)


__all__ = ["DEFAULT_CHUNK", "join", "pack_blobs", "split", "unpack_blobs"]
