"""Message encodings: roundtrip, compactness, key binding, truncation, trailing bytes."""

from __future__ import annotations

import random
from typing import Any

import pytest

from pura.crypto.paillier import KeyShare, PublicKey, RandomnessPool, generate_keypair
from pura.crypto.params import PAILLIER_2048_FAST
from pura.errors import InvalidCiphertextError, KeyMismatchError, ProtocolError
from pura.protocols.messages import (
    VERSION,
    AdmittedTemplate,
    ArgminReply,
    ArgminRequest,
    BlindedProductReply,
    BlindedProductRequest,
    CompareReply,
    CompareRequest,
    Kind,
    NormCheckReply,
    NormCheckRequest,
    NormReply,
    NormRequest,
    PaillierQuery,
    PaillierTemplate,
    SealedAdmitReply,
    SealedAdmitRequest,
    SealedQuery,
    SealedQueryRequest,
    SealedTemplate,
    ThresholdReply,
    ThresholdRequest,
)

Keys = tuple[PublicKey, KeyShare, KeyShare]


def _messages(keys: Keys) -> list[Any]:
    pk, s1, s2 = keys
    pool = RandomnessPool(pk, rng=random.Random(1))
    c = [pk.encrypt(i, pool) for i in range(4)]
    p1 = [s1.partial_decrypt(x) for x in c]
    return [
        PaillierQuery(tuple(c[:4])),
        PaillierTemplate(tuple(c[:2])),
        BlindedProductRequest(128, 53, 2, tuple(c[:3]), tuple(c[:2]), tuple(p1[:2])),
        BlindedProductReply(tuple(c[:2])),
        CompareRequest(76, 3, (c[0],), (p1[0],)),
        CompareReply(tuple(c[:2]), tuple(c[1:3]), tuple(c[2:4])),
        ThresholdRequest(76, 6, c[0], p1[0], (c[1], c[2]), (p1[1], p1[2])),
        ThresholdReply(1, s2.partial_decrypt(c[1])),
        AdmittedTemplate(tuple(c[:2]), c[2]),
        NormRequest(128, 53, 1, True, tuple(c[:3]), tuple(p1[:3])),
        NormReply(pk, (1, 0), (c[0],), tuple(c[:2]), (c[3],)),
        NormCheckRequest(154, 2, (c[0],), (p1[0],)),
        NormCheckReply(pk, (0, 1)),
        ArgminRequest(76, 3, tuple(c[:3]), tuple(p1[:3])),
        ArgminReply(tuple(c[:3]), c[3]),
        SealedTemplate(b"s" * 32, b"box", tuple(c[:2])),
        SealedAdmitRequest(2, 53, (1, -1), (b"box",), tuple(c[:2])),
        SealedAdmitReply(pk, (1, 0), (c[0],), (s2.partial_decrypt(c[0]),), (c[1],), (c[2],),
                         tuple(c[:2])),
        SealedQuery(pk, b"s" * 32, b"box"),
        SealedQueryRequest(pk, 128, 53, b"box"),
    ]


def test_roundtrip_and_size(paillier_fast_keys: Keys) -> None:
    pk = paillier_fast_keys[0]
    for msg in _messages(paillier_fast_keys):
        data = msg.to_bytes()
        back = type(msg).from_bytes(pk, data)
        assert back == msg


def test_sizes_are_compact(paillier_fast_keys: Keys) -> None:
    pk = paillier_fast_keys[0]
    q = _messages(paillier_fast_keys)[0]
    assert len(q.to_bytes()) == 12 + 4 + 4 * pk.ciphertext_bytes


def test_wrong_key_kind_truncation_trailing(paillier_fast_keys: Keys) -> None:
    pk = paillier_fast_keys[0]
    other = generate_keypair(PAILLIER_2048_FAST, random.Random(96))[0]
    msgs = _messages(paillier_fast_keys)
    for msg in msgs:
        data = msg.to_bytes()
        with pytest.raises(KeyMismatchError):
            type(msg).from_bytes(other, data)
        with pytest.raises(ProtocolError):
            type(msg).from_bytes(pk, data[:-1])
        with pytest.raises(ProtocolError):
            type(msg).from_bytes(pk, data + b"\0")
        with pytest.raises(ProtocolError):
            type(msg).from_bytes(pk, b"XX" + data[2:])
    with pytest.raises(ProtocolError):
        BlindedProductReply.from_bytes(pk, msgs[0].to_bytes())  # wrong kind
    with pytest.raises(ProtocolError):
        PaillierQuery.from_bytes(pk, msgs[0].to_bytes()[:12] + (10**6).to_bytes(4, "big"))


def test_invalid_ciphertext_inside_a_message(paillier_fast_keys: Keys) -> None:
    pk = paillier_fast_keys[0]
    reply = _messages(paillier_fast_keys)[3]
    data = bytearray(reply.to_bytes())
    data[16:16 + pk.ciphertext_bytes] = bytes(pk.ciphertext_bytes)  # first value := 0
    with pytest.raises(InvalidCiphertextError):
        BlindedProductReply.from_bytes(pk, bytes(data))


def test_semantic_checks(paillier_fast_keys: Keys) -> None:
    pk, _, s2 = paillier_fast_keys
    msgs = _messages(paillier_fast_keys)
    bad_bit = msgs[7].to_bytes()[:12] + (2).to_bytes(4, "big") + msgs[7].to_bytes()[16:]
    with pytest.raises(ProtocolError):
        ThresholdReply.from_bytes(pk, bad_bit)
    with pytest.raises(KeyMismatchError):
        other = generate_keypair(PAILLIER_2048_FAST, random.Random(95))[0]
        pool = RandomnessPool(other, rng=random.Random(0))
        BlindedProductReply((msgs[3].products[0], other.encrypt(1, pool))).to_bytes()
    assert s2.index == 2


def test_kinds_are_unique_and_every_message_uses_its_own(paillier_fast_keys: Keys) -> None:
    """Two classes sharing a kind byte would parse each other's bytes (a reply taken for a
    request); the registry is one IntEnum and every message class names a distinct member."""
    values = [k.value for k in Kind]
    assert len(values) == len(set(values)) and all(0 < v < 256 for v in values)
    msgs = _messages(paillier_fast_keys)
    kinds = {type(m): type(m).KIND for m in msgs}
    assert all(isinstance(k, Kind) for k in kinds.values())
    assert len(set(kinds.values())) == len(kinds) == len(Kind)  # every kind is exercised here
    pk = paillier_fast_keys[0]
    for msg in msgs:  # known answer for the header: b"PM" | version | kind | key fingerprint
        assert msg.to_bytes()[:12] == b"PM" + bytes([VERSION, type(msg).KIND]) + pk.fingerprint


def test_argmin_reply_needs_an_indicator_and_one_minimum(paillier_fast_keys: Keys) -> None:
    pk = paillier_fast_keys[0]
    msgs = _messages(paillier_fast_keys)
    reply = next(m for m in msgs if isinstance(m, ArgminReply))
    two_minima = ArgminReply(reply.onehot, reply.masked_min).to_bytes()[:-pk.ciphertext_bytes - 4]
    w = bytearray(two_minima)
    w += (2).to_bytes(4, "big") + reply.masked_min.raw_bytes() * 2
    with pytest.raises(ProtocolError, match="one masked minimum"):
        ArgminReply.from_bytes(pk, bytes(w))
    with pytest.raises(ProtocolError):  # an argmin request is not a compare request
        CompareRequest.from_bytes(
            pk, next(m for m in msgs if isinstance(m, ArgminRequest)).to_bytes())
