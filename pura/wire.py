"""The one framing codec: every byte format Pura writes is a sequence of these primitives.

Why one codec: parsers go wrong at bounds (a length that runs past the end, a count that makes
the reader allocate gigabytes, bytes left over that a second parser would read differently).
Pura used to carry five hand-written framings (protocol messages, the JSON-header messages of
the CKKS steps, stored block records, CKKS context files, the public-key bundle), each with its
own bounds checks. They now share :class:`Reader` and :class:`Writer`, so every check is written
and tested once (known-answer tests in ``tests/protocols/test_wire.py``).

The primitives, all big-endian::

    u32, u64                      fixed-width unsigned integers
    part   = u64 length | bytes   one length-prefixed byte string
    blobs  = u32 count | part*    a counted list of parts
    header = u32 length | JSON    small public fields (ids, slot numbers, k), sorted keys

and two compositions used across the code base:

* **blob list** (:func:`pack_blobs`): stored block records in ``gallery.db`` and the broadcast
  CKKS query head. Its bytes are exactly those of the former ``pura.service.chunks.pack_blobs``:
  stores written before the codec was unified load unchanged, so no migration is needed.
* **message** (:func:`pack_message`): ``MAGIC (8 B) | header | blobs`` for the CKKS-side helper
  steps (preselection, refresh, candidate copies); the bytes of the former
  ``pura.protocols._wire``.

Ciphertexts travel as opaque parts and are validated by their own parsers
(:mod:`pura.crypto.paillier`, :mod:`pura.crypto.ckks`). A malformed input raises the caller's
error class (``ProtocolError`` on the wire, ``ConfigError`` for key files) naming the shape of
the problem, never a partial object.
"""

from __future__ import annotations

import json
import struct
from collections.abc import Sequence
from typing import Any, Self

from pura.errors import ProtocolError, PuraError

#: Bounds that keep a hostile length or count from making the reader allocate without limit.
MAX_BLOBS = 1 << 20
MAX_HEADER = 1 << 24

_U32 = struct.Struct(">I")
_U64 = struct.Struct(">Q")


class Writer:
    """Appends primitives to one buffer; :meth:`done` returns the bytes."""

    def __init__(self, prefix: bytes = b"") -> None:
        self.buf = bytearray(prefix)

    def raw(self, data: bytes) -> Self:
        """Fixed-width bytes whose length the reader knows (magic, key fingerprint, ciphertext)."""
        self.buf += data
        return self

    def u32(self, value: int) -> Self:
        if not 0 <= value < 1 << 32:
            raise ProtocolError(f"field value {value} does not fit u32")
        self.buf += _U32.pack(value)
        return self

    def u64(self, value: int) -> Self:
        if not 0 <= value < 1 << 64:
            raise ProtocolError(f"field value {value} does not fit u64")
        self.buf += _U64.pack(value)
        return self

    def part(self, data: bytes) -> Self:
        return self.u64(len(data)).raw(data)

    def parts(self, items: Sequence[bytes]) -> Self:
        for item in items:
            self.part(item)
        return self

    def blobs(self, items: Sequence[bytes]) -> Self:
        return self.u32(len(items)).parts(items)

    def header(self, fields: dict[str, Any]) -> Self:
        head = json.dumps(fields, sort_keys=True, separators=(",", ":")).encode()
        return self.u32(len(head)).raw(head)

    def done(self) -> bytes:
        return bytes(self.buf)


class Reader:
    """Reads primitives from ``data`` with every bound checked.

    ``what`` names the object in error messages; ``error`` is the class raised (the caller's
    boundary decides whether bad bytes are a protocol fault or a configuration fault).
    """

    def __init__(
        self, data: bytes, *, what: str, error: type[PuraError] = ProtocolError
    ) -> None:
        self.data = memoryview(data)
        self.what = what
        self.error = error
        self.pos = 0

    def fail(self, problem: str) -> PuraError:
        return self.error(f"{self.what}: {problem}")

    @property
    def remaining(self) -> int:
        return len(self.data) - self.pos

    def expect(self, prefix: bytes, problem: str) -> Self:
        """Consume ``prefix`` (a magic) or raise ``problem``."""
        if bytes(self.data[self.pos:self.pos + len(prefix)]) != prefix:
            raise self.fail(problem)
        self.pos += len(prefix)
        return self

    def take(self, size: int) -> bytes:
        if size < 0 or size > self.remaining:
            raise self.fail("truncated")
        out = bytes(self.data[self.pos:self.pos + size])
        self.pos += size
        return out

    def u32(self) -> int:
        value: int = _U32.unpack(self.take(4))[0]
        return value

    def u64(self) -> int:
        value: int = _U64.unpack(self.take(8))[0]
        return value

    def part(self) -> bytes:
        size = self.u64()
        if size > self.remaining:
            raise self.fail("truncated inside a part")
        return self.take(size)

    def parts(self, count: int) -> list[bytes]:
        return [self.part() for _ in range(count)]

    def count(self, limit: int, item_bytes: int = 0) -> int:
        """A ``u32`` item count, refused above ``limit`` or when ``count * item_bytes`` cannot
        fit the bytes left (checked before any allocation)."""
        n = self.u32()
        if n > limit or n * item_bytes > self.remaining:
            raise self.fail(f"list of {n} items exceeds the limit or the message")
        return n

    def blobs(self, max_items: int = MAX_BLOBS) -> list[bytes]:
        # every part costs at least its 8-byte length, so a count the bytes cannot hold fails here
        return self.parts(self.count(max_items, 8))

    def header(self, max_len: int = MAX_HEADER) -> dict[str, Any]:
        size = self.u32()
        if size > max_len or size > self.remaining:
            raise self.fail(f"bad header length {size}")
        try:
            fields = json.loads(self.take(size))
        except ValueError as exc:
            raise self.fail(f"header is not JSON: {exc}") from exc
        if not isinstance(fields, dict):
            raise self.fail("header must be a JSON object")
        return fields

    def rest(self) -> bytes:
        return self.take(self.remaining)

    def end(self) -> None:
        if self.remaining:
            raise self.fail(f"{self.remaining} trailing bytes")


# --- compositions ---------------------------------------------------------------------------


def pack_parts(parts: Sequence[bytes]) -> bytes:
    """``part*`` without a count (the reader knows how many): CKKS context files, key bundles."""
    return Writer().parts(parts).done()


def unpack_parts(
    data: bytes, count: int, *, what: str, error: type[PuraError] = ProtocolError
) -> list[bytes]:
    reader = Reader(data, what=what, error=error)
    out = reader.parts(count)
    reader.end()
    return out


def pack_blobs(parts: Sequence[bytes]) -> bytes:
    """Counted list of byte strings (stored block records, broadcast query heads)."""
    return Writer().blobs(parts).done()


def unpack_blobs(data: bytes, *, what: str, max_items: int = 1 << 16) -> list[bytes]:
    reader = Reader(data, what=what)
    out = reader.blobs(max_items)
    reader.end()
    return out


def pack_message(magic: bytes, header: dict[str, Any], blobs: Sequence[bytes]) -> bytes:
    """``MAGIC | header | blobs``: one CKKS-side helper message."""
    return Writer(magic).header(header).blobs(blobs).done()


def unpack_message(magic: bytes, data: bytes) -> tuple[dict[str, Any], list[bytes]]:
    reader = Reader(data, what=f"message {magic!r}")
    reader.expect(magic, "wrong magic")
    header = reader.header()
    blobs = reader.blobs()
    reader.end()
    return header, blobs


def field(header: dict[str, Any], name: str, kind: type) -> Any:
    """``header[name]`` checked to be of ``kind`` (ProtocolError otherwise)."""
    value = header.get(name)
    if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
        raise ProtocolError(f"message field {name!r} missing or not {kind.__name__}")
    return value


def hex_field(header: dict[str, Any], name: str) -> bytes:
    """``header[name]``, a hex string, as bytes (ProtocolError otherwise): request ids and key
    ids in the CKKS-side messages."""
    try:
        return bytes.fromhex(field(header, name, str))
    except ValueError as exc:
        raise ProtocolError(f"message field {name!r} is not hex") from exc


def int_list(header: dict[str, Any], name: str) -> list[int]:
    value = field(header, name, list)
    if not all(isinstance(v, int) and not isinstance(v, bool) for v in value):
        raise ProtocolError(f"message field {name!r} must be a list of integers")
    return list(value)


__all__ = [
    "MAX_BLOBS",
    "MAX_HEADER",
    "Reader",
    "Writer",
    "field",
    "hex_field",
    "int_list",
    "pack_blobs",
    "pack_message",
    "pack_parts",
    "unpack_blobs",
    "unpack_message",
    "unpack_parts",
]
