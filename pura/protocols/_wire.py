"""The CKKS-side helper messages' framing, as names the protocol modules already use.

A thin alias of :mod:`pura.wire` (``MAGIC | header | blobs``), kept so that preselection,
refresh and candidate copies read as before; the codec itself lives, and is tested, there.
"""

from __future__ import annotations

from pura.wire import MAX_BLOBS, MAX_HEADER, field, hex_field, int_list
from pura.wire import pack_message as pack
from pura.wire import unpack_message as unpack

__all__ = ["MAX_BLOBS", "MAX_HEADER", "field", "hex_field", "int_list", "pack", "unpack"]
