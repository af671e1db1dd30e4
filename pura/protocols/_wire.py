"""Binary framing shared by the CKKS protocol messages (preselection, block refresh).

``MAGIC (8 bytes) | u32 header length | JSON header | u32 blob count | (u64 length | blob)*``.
The JSON header carries only small public fields (ids, slot numbers, k); ciphertexts travel as
opaque blobs and are validated by :mod:`pura.crypto.ckks` when parsed. Every malformed message
raises :class:`ProtocolError` with the shape of the problem, never a partial object.
"""

from __future__ import annotations

import json
import struct
from collections.abc import Sequence
from typing import Any

from pura.errors import ProtocolError

MAX_BLOBS = 1 << 20
MAX_HEADER = 1 << 24


def pack(magic: bytes, header: dict[str, Any], blobs: Sequence[bytes]) -> bytes:
    head = json.dumps(header, sort_keys=True, separators=(",", ":")).encode()
    parts = [magic, struct.pack(">I", len(head)), head, struct.pack(">I", len(blobs))]
    for blob in blobs:
        parts.append(struct.pack(">Q", len(blob)))
        parts.append(blob)
    return b"".join(parts)


def unpack(magic: bytes, data: bytes) -> tuple[dict[str, Any], list[bytes]]:
    if not data.startswith(magic):
        raise ProtocolError(f"message does not start with {magic!r}")
    view = memoryview(data)
    pos = len(magic)
    hlen = _read(">I", view, pos, "header length")
    pos += 4
    if hlen > MAX_HEADER or pos + hlen > len(data):
        raise ProtocolError(f"bad header length {hlen}")
    try:
        header = json.loads(bytes(view[pos : pos + hlen]))
    except ValueError as exc:
        raise ProtocolError(f"message header is not JSON: {exc}") from exc
    if not isinstance(header, dict):
        raise ProtocolError("message header must be a JSON object")
    pos += hlen
    count = _read(">I", view, pos, "blob count")
    pos += 4
    if count > MAX_BLOBS:
        raise ProtocolError(f"too many blobs ({count})")
    blobs = []
    for _ in range(count):
        size = _read(">Q", view, pos, "blob length")
        pos += 8
        if pos + size > len(data):
            raise ProtocolError("message truncated inside a blob")
        blobs.append(bytes(view[pos : pos + size]))
        pos += size
    if pos != len(data):
        raise ProtocolError(f"{len(data) - pos} trailing bytes after the message")
    return header, blobs


def _read(fmt: str, view: memoryview, pos: int, what: str) -> int:
    size = struct.calcsize(fmt)
    if pos + size > len(view):
        raise ProtocolError(f"message truncated at the {what}")
    value: int = struct.unpack_from(fmt, view, pos)[0]
    return value


def field(header: dict[str, Any], name: str, kind: type) -> Any:
    """``header[name]`` checked to be of ``kind`` (ProtocolError otherwise)."""
    value = header.get(name)
    if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
        raise ProtocolError(f"message field {name!r} missing or not {kind.__name__}")
    return value


def int_list(header: dict[str, Any], name: str) -> list[int]:
    value = field(header, name, list)
    if not all(isinstance(v, int) and not isinstance(v, bool) for v in value):
        raise ProtocolError(f"message field {name!r} must be a list of integers")
    return list(value)
