"""Known-answer vectors (tests/vectors/paillier_kat.json, independent generator)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from pura.crypto.paillier import (
    Ciphertext,
    KeyFactors,
    PartialDecryption,
    combine,
    keys_from_factors,
)

VECTORS = json.loads(
    (Path(__file__).resolve().parents[1] / "vectors" / "paillier_kat.json").read_text()
)["vectors"]


def _int(v: Any) -> int:
    return int(v, 16) if isinstance(v, str) else int(v)


@pytest.mark.parametrize("vec", VECTORS, ids=lambda v: f"N{v['modulus_bits']}")
def test_known_answers(vec: dict[str, Any]) -> None:
    factors = KeyFactors(vec["alpha_p"], vec["beta_p"], vec["alpha_q"], vec["beta_q"])
    pk, s1, s2 = keys_from_factors(factors, vec["y"], _int(vec["sk1"]), vec["randomness_bits"])
    assert int(pk.n) == _int(vec["n"])
    assert int(pk.h_n) == _int(vec["h_n"])
    assert int(s2._exponent) == _int(vec["sk2"])
    for case in vec["cases"]:
        c = pk.encrypt_with_randomness(case["m"], case["r"])
        assert int(c.value) == _int(case["c"])
        parsed = Ciphertext.from_raw(pk, c.raw_bytes())
        p1, p2 = s1.partial_decrypt(parsed), s2.partial_decrypt(parsed)
        assert int(p1.value) == _int(case["pd1"])
        assert int(p2.value) == _int(case["pd2"])
        assert combine(p1, p2, signed=True) == case["m"]
        assert combine(PartialDecryption(pk, 1, _int(case["pd1"])),
                       PartialDecryption(pk, 2, _int(case["pd2"])), signed=True) == case["m"]
