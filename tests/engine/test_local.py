"""LocalEngine: chunking, order preservation, real process pool, config errors."""

from __future__ import annotations

import random
from collections.abc import Sequence
from functools import partial

import pytest

from pura.crypto.paillier import (
    KeyShare,
    PublicKey,
    RandomnessPool,
    combine,
    partial_decrypt_batch,
)
from pura.engine.local import SERIAL, LocalEngine
from pura.errors import ConfigError


def _square_all(items: Sequence[int]) -> list[int]:
    return [i * i for i in items]


def test_split_is_contiguous_and_balanced() -> None:
    engine = LocalEngine(3, min_chunk=2)
    parts = engine.split(list(range(10)))
    assert [list(p) for p in parts] == [[0, 1, 2, 3], [4, 5, 6], [7, 8, 9]]
    assert [list(p) for p in engine.split([1, 2, 3])] == [[1, 2, 3]]
    assert SERIAL.map_chunks(_square_all, []) == []


def test_process_pool_preserves_order_and_results(
    paillier_fast_keys: tuple[PublicKey, KeyShare, KeyShare],
) -> None:
    pk, s1, s2 = paillier_fast_keys
    pool = RandomnessPool(pk, rng=random.Random(1))
    cts = [pk.encrypt(v, pool) for v in range(6)]
    with LocalEngine(2) as engine:
        # (chunk functions must be importable in a spawned worker: pura's, not this module's)
        parts = engine.map_chunks(partial(partial_decrypt_batch, s1), cts)
    assert [combine(p, s2.partial_decrypt(c)) for p, c in zip(parts, cts, strict=True)] == list(
        range(6))


def test_bad_configuration() -> None:
    with pytest.raises(ConfigError):
        LocalEngine(0)
    with pytest.raises(ConfigError):
        LocalEngine(2, min_chunk=0)
    assert "workers=2" in repr(LocalEngine(2))
