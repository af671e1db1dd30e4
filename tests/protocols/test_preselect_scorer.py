"""Preselection scorers behind the ``BlockScorer`` protocol: byte-identical requests, one
namespace per collection over shared workers, and ``sync`` keeping exactly the searchable blocks.
"""

from __future__ import annotations

import random

import numpy as np
import pytest

from pura.crypto.ckks import CKKSContext
from pura.crypto.params import CKKS_8192
from pura.errors import ProtocolError
from pura.gallery.packing import BlockLayout, HeadBlock, encrypt_block
from pura.protocols.preselect import (
    BlockScorer,
    PreselectServer,
    ScoringBackend,
    ScoringPool,
    answer_preselect,
    shard_of,
)

SLOTS = CKKS_8192.slot_count
M = 4


def _no_decoys(n: int) -> np.ndarray:
    raise AssertionError("blocks are built explicitly")


def _layout(public: CKKSContext, seed: int, n_blocks: int) -> tuple[BlockLayout, np.ndarray]:
    """``n_blocks`` blocks of random unit heads, 50 live templates per block."""
    rng = np.random.default_rng(seed)
    heads = rng.normal(size=(n_blocks * SLOTS, M))
    heads /= np.linalg.norm(heads, axis=1, keepdims=True)
    blocks: list[HeadBlock] = []
    for b in range(n_blocks):
        block = encrypt_block(public, b, heads[b * SLOTS : (b + 1) * SLOTS])
        block.live.update({s: seed * 100_000 + b * SLOTS + s for s in range(50)})
        blocks.append(block)
    return BlockLayout(public, M, _no_decoys, blocks), heads


def _query(public: CKKSContext, v: np.ndarray) -> list[bytes]:
    return [public.ciphertext_to_bytes(public.encrypt_query(v / np.linalg.norm(v)))]


def test_shard_of_is_round_robin_and_namespaced() -> None:
    assert [shard_of("", b, 3) for b in range(6)] == [0, 1, 2, 0, 1, 2]
    assert shard_of("lfw", 7, 4) == shard_of("lfw", 7, 4)
    offsets = {shard_of(name, 0, 8) for name in ("a", "b", "c", "d", "e", "f")}
    assert len(offsets) > 1  # collections do not all start on worker 0


def test_pool_views_byte_identical_and_namespaced(secret: CKKSContext) -> None:
    """Two collections with the same block ids over one pool: each view's request bytes equal
    the in-process request bytes of its own collection (a shared key space would mix them)."""
    public = secret.public()
    first, heads = _layout(public, 1, 2)
    second, _ = _layout(public, 2, 2)
    query = _query(public, heads[5] + 0.01)
    sent: list[bytes] = []
    with ScoringPool(public, workers=2) as pool:
        backend: ScoringBackend = pool
        assert "2 worker" in backend.describe()
        for name, layout in (("one", first), ("two", second)):
            view: BlockScorer = backend.view(name)
            local_req, local_state = PreselectServer(public, layout, random.Random(9)).request(
                query, 20)
            server = PreselectServer(public, layout, random.Random(9), pool=view)
            server.sync_pool()
            assert pool.held(name) == {0: 0, 1: 0}
            req, state = server.request(query, 20)
            assert req.to_bytes() == local_req.to_bytes() and state == local_state
            sent.append(req.to_bytes())
    assert sent[0] != sent[1]  # same block ids, different collections: different scores
    best = PreselectServer.resolve(state, answer_preselect(secret, req))
    assert best == PreselectServer.resolve(local_state, answer_preselect(secret, local_req))


def test_sync_ships_refreshes_and_drops_emptied_blocks(secret: CKKSContext) -> None:
    public = secret.public()
    layout, heads = _layout(public, 3, 3)
    query = _query(public, heads[SLOTS + 3])
    with ScoringPool(public, workers=2) as pool:
        server = PreselectServer(public, layout, random.Random(4), pool=pool)
        server.sync_pool()
        assert pool.held() == {0: 0, 1: 0, 2: 0}
        # Block 1 is refreshed (new ciphertexts, new version); block 2 loses its templates.
        fresh = encrypt_block(public, 1, heads[:SLOTS])
        layout.blocks[1].apply_refresh(list(fresh.ciphertexts), {}, [])
        layout.blocks[2].live.clear()
        server.sync_pool()
        assert pool.held() == {0: 0, 1: 1}
        local = PreselectServer(public, layout, random.Random(5)).request(query, 10)
        pooled = PreselectServer(public, layout, random.Random(5), pool=pool).request(query, 10)
        assert pooled[0].scores == local[0].scores and len(pooled[0].scores) == 2


@pytest.mark.slow  # kills a worker process (fault injection): the slow suite
def test_dead_worker_is_an_error_not_a_hang(secret: CKKSContext) -> None:
    """A worker that dies (OOM kill, crash) fails the exchange it was in, never blocks A, and
    is replaced before the next query (which gets the in-process bytes)."""
    public = secret.public()
    layout, heads = _layout(public, 4, 2)
    query = _query(public, heads[0])
    with ScoringPool(public, workers=2) as pool:
        server = PreselectServer(public, layout, random.Random(6), pool=pool)
        server.request(query, 10)
        proc = pool._procs[0][0]  # the test reaches in to kill worker 0 mid-conversation
        proc.kill()
        proc.join()
        with pytest.raises(ProtocolError, match="scoring worker 0 is gone"):
            pool._exchange({0: ("sync", [], [])})
        again, _ = server.request(query, 10)
    local = PreselectServer(public, layout, random.Random(6))
    local.request(query, 10)
    assert again.scores == local.request(query, 10)[0].scores
