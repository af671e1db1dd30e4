"""The one framing codec (pura.wire): known answers, byte compatibility, refusals.

The hex constants below were produced by the hand-written codecs this module replaced
(``pura.protocols._wire.pack``, ``pura.service.chunks.pack_blobs``, ``pura.crypto.ckks._frame``),
captured before the switch: stored block records in gallery.db and key files depend on these
exact bytes, so a store written by the previous version loads without a migration.
"""

from __future__ import annotations

import pytest

from pura import wire
from pura.errors import ConfigError, ProtocolError
from pura.protocols import _wire

#: ``MAGIC | u32 header length | JSON (sorted keys) | u32 count | (u64 length | blob)*``
MESSAGE_HEX = (
    "505552412d545354" "00000011" "7b226964223a226162222c226b223a337d"
    "00000002" "0000000000000001" "78" "0000000000000000"
)
#: ``u32 count | (u64 length | blob)*`` (stored blocks in gallery.db, broadcast query heads)
BLOBS_HEX = "00000002" "0000000000000003" "616263" "0000000000000000"
#: ``(u64 length | part)*`` without a count (CKKS context files, the public-key bundle)
PARTS_HEX = "0000000000000002" "6864" "0000000000000000" "0000000000000001" "7a"


def test_known_answers() -> None:
    assert wire.pack_message(b"PURA-TST", {"k": 3, "id": "ab"}, [b"x", b""]).hex() == MESSAGE_HEX
    assert wire.pack_blobs([b"abc", b""]).hex() == BLOBS_HEX
    assert wire.pack_blobs([]).hex() == "00000000"
    assert wire.pack_parts([b"hd", b"", b"z"]).hex() == PARTS_HEX


def test_known_answers_parse_back() -> None:
    assert wire.unpack_message(b"PURA-TST", bytes.fromhex(MESSAGE_HEX)) == (
        {"id": "ab", "k": 3}, [b"x", b""])
    assert wire.unpack_blobs(bytes.fromhex(BLOBS_HEX), what="t") == [b"abc", b""]
    assert wire.unpack_parts(bytes.fromhex(PARTS_HEX), 3, what="t") == [b"hd", b"", b"z"]


def test_protocol_alias_is_the_same_codec() -> None:
    assert _wire.pack is wire.pack_message and _wire.unpack is wire.unpack_message


@pytest.mark.parametrize("cut", [1, 4, 9, 20, len(bytes.fromhex(MESSAGE_HEX)) - 1])
def test_every_truncation_is_refused(cut: int) -> None:
    data = bytes.fromhex(MESSAGE_HEX)[:cut]
    with pytest.raises(ProtocolError):
        wire.unpack_message(b"PURA-TST", data)


def test_trailing_bytes_wrong_magic_and_hostile_counts() -> None:
    msg, blobs = bytes.fromhex(MESSAGE_HEX), bytes.fromhex(BLOBS_HEX)
    with pytest.raises(ProtocolError, match="trailing"):
        wire.unpack_message(b"PURA-TST", msg + b"\0")
    with pytest.raises(ProtocolError, match="magic"):
        wire.unpack_message(b"PURA-XXX", msg)
    with pytest.raises(ProtocolError, match="trailing"):
        wire.unpack_blobs(blobs + b"\0", what="t")
    # a count of 2^32-1 blobs in a 4-byte input is refused before any allocation
    with pytest.raises(ProtocolError, match="exceeds"):
        wire.unpack_blobs(b"\xff\xff\xff\xff", what="t", max_items=1 << 40)
    with pytest.raises(ProtocolError, match="exceeds"):
        wire.unpack_blobs(wire.pack_blobs([b""] * 3), what="t", max_items=2)
    # a part whose length runs past the end
    with pytest.raises(ProtocolError, match="truncated"):
        wire.unpack_blobs(b"\x00\x00\x00\x01" + (1 << 40).to_bytes(8, "big"), what="t")


def test_header_must_be_a_json_object() -> None:
    for head in (b"[1,2]", b"{not json"):
        data = b"PURA-TST" + len(head).to_bytes(4, "big") + head + b"\x00" * 4
        with pytest.raises(ProtocolError, match="header"):
            wire.unpack_message(b"PURA-TST", data)
    with pytest.raises(ProtocolError, match="header length"):
        wire.unpack_message(b"PURA-TST", b"PURA-TST" + (1 << 30).to_bytes(4, "big"))


def test_the_callers_error_class_is_raised() -> None:
    """Key files are configuration: a damaged one must read as ConfigError, not ProtocolError."""
    with pytest.raises(ConfigError, match="key file: truncated"):
        wire.unpack_parts(bytes.fromhex(PARTS_HEX)[:-1], 3, what="key file", error=ConfigError)
    with pytest.raises(ConfigError, match="trailing"):
        wire.unpack_parts(bytes.fromhex(PARTS_HEX), 2, what="key file", error=ConfigError)


def test_writer_refuses_values_that_do_not_fit() -> None:
    with pytest.raises(ProtocolError):
        wire.Writer().u32(1 << 32)
    with pytest.raises(ProtocolError):
        wire.Writer().u32(-1)


def test_message_magics_are_distinct() -> None:
    """The 8-byte magics play the role of Kind for the CKKS-step messages (and the ticket
    envelope): two equal ones would let one message parse as another."""
    from pura.protocols import candidates, preselect, refresh, tickets

    magics = [refresh._REQ_MAGIC, refresh._RESP_MAGIC, preselect._REQ_MAGIC,
              preselect._RESP_MAGIC, tickets._MAGIC, candidates._PUT, candidates._ERASE,
              candidates._SYNC, candidates._SYNC_REPLY, candidates._ACK, candidates._SERVE,
              candidates._OPEN, candidates._OPEN_REPLY]
    assert len(set(magics)) == len(magics) and all(len(m) == 8 for m in magics)


def test_hex_field_parses_ids_and_refuses_the_rest() -> None:
    assert wire.hex_field({"id": "00ff"}, "id") == b"\x00\xff"
    for header in ({"id": "zz"}, {"id": 5}, {}):
        with pytest.raises(ProtocolError):
            wire.hex_field(header, "id")
