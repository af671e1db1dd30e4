"""pura.engine.cluster: shard actors and a real multi-node Ray cluster on loopback.

The multi-node test starts three ``ray start`` nodes (head + 2 workers, one CPU each) on
loopback addresses 127.X.Y.2-4, spreads gallery blocks over three shard actors and checks that
the gathered block scores are *byte-identical* to the single-process scores (CKKS evaluation is
deterministic), that the decrypted top-k equals the plaintext top-k, and that the product's
``PreselectServer`` running on the shards produces the same masked scores and candidates.
"""

from __future__ import annotations

import random
import time
from typing import Any, cast

import numpy as np
import pytest

from pura.crypto.ckks import CKKSCiphertext, CKKSContext, diagonal_rows
from pura.crypto.params import CKKS_8192
from pura.engine.cluster import (
    LoopbackRayCluster,
    ShardActor,
    ShardedScorer,
    score_blocks_locally,
)
from pura.errors import ConfigError, KeyMismatchError, NotFoundError
from pura.gallery.packing import BlockLayout, HeadBlock
from pura.protocols.preselect import PreselectServer, answer_preselect

HEAD_DIM = 4
N_BLOCKS = 3


@pytest.fixture(scope="module")
def secret_ctx() -> CKKSContext:
    return CKKSContext.generate(CKKS_8192)


@pytest.fixture(scope="module")
def gallery(secret_ctx: CKKSContext) -> tuple[np.ndarray, dict[int, list[bytes]]]:
    """Plain heads (N_BLOCKS·slots, HEAD_DIM) and their encrypted blocks (diagonal layout)."""
    pub = secret_ctx.public()
    rng = np.random.default_rng(7)
    heads = rng.standard_normal((N_BLOCKS * pub.slot_count, HEAD_DIM))
    heads /= np.linalg.norm(heads, axis=1, keepdims=True)
    blocks: dict[int, list[bytes]] = {}
    for b in range(N_BLOCKS):
        part = heads[b * pub.slot_count : (b + 1) * pub.slot_count]
        blocks[b] = [pub.ciphertext_to_bytes(pub.encrypt_vector(row))
                     for row in diagonal_rows(part)]
    return heads, blocks


def _query(ctx: CKKSContext, heads: np.ndarray) -> np.ndarray:
    probe = heads[1234] + 0.05 * np.random.default_rng(3).standard_normal(HEAD_DIM)
    unit: np.ndarray = probe / np.linalg.norm(probe)
    return unit


def _reference(
    ctx: CKKSContext, blocks: dict[int, list[bytes]], query: CKKSCiphertext
) -> dict[int, bytes]:
    pub = ctx.public()
    parsed = {b: [pub.ciphertext_from_bytes(c) for c in cts] for b, cts in blocks.items()}
    scores = score_blocks_locally(pub, pub.expand_query(query, HEAD_DIM), parsed)
    return {b: pub.ciphertext_to_bytes(s) for b, s in scores.items()}


def test_actor_scores_like_single_process(
    secret_ctx: CKKSContext, gallery: tuple[np.ndarray, dict[int, list[bytes]]]
) -> None:
    heads, blocks = gallery
    pub = secret_ctx.public()
    actor = ShardActor(pub.to_bytes())
    assert actor.put_blocks({1: blocks[1], 2: blocks[2]}) == 2
    query = pub.encrypt_query(_query(secret_ctx, heads))
    scores = actor.score([pub.ciphertext_to_bytes(query)])
    assert sorted(scores) == [1, 2]
    parsed = {b: [pub.ciphertext_from_bytes(c) for c in blocks[b]] for b in (1, 2)}
    local = score_blocks_locally(pub, pub.expand_query(query, HEAD_DIM), parsed)
    for b in (1, 2):
        assert scores[b] == pub.ciphertext_to_bytes(local[b])
    assert actor.drop_block(1) and not actor.drop_block(1)
    assert actor.block_ids() == [2]


def test_actor_refuses_secret_context(secret_ctx: CKKSContext) -> None:
    with pytest.raises(ConfigError, match="SECRET"):
        ShardActor(secret_ctx.to_bytes())


def test_actor_rejects_blocks_of_another_key(
    secret_ctx: CKKSContext, gallery: tuple[np.ndarray, dict[int, list[bytes]]]
) -> None:
    other = CKKSContext.generate(CKKS_8192).public()
    actor = ShardActor(other.to_bytes())
    with pytest.raises(KeyMismatchError):
        actor.put_blocks({0: gallery[1][0]})


def test_scorer_rejects_zero_shards(secret_ctx: CKKSContext) -> None:
    with pytest.raises(ConfigError):
        ShardedScorer(secret_ctx.public(), 0)


@pytest.mark.slow
def test_multi_node_cluster_matches_single_process(
    secret_ctx: CKKSContext, gallery: tuple[np.ndarray, dict[int, list[bytes]]]
) -> None:
    heads, blocks = gallery
    probe = _query(secret_ctx, heads)
    pub = secret_ctx.public()
    query = pub.encrypt_query(probe)  # one encryption: scoring is then deterministic
    reference = _reference(secret_ctx, blocks, query)
    cluster = LoopbackRayCluster(workers=2, cpus_per_node=1)
    try:
        cluster.start()
        cluster.connect()
        with ShardedScorer(pub, 3) as scorer:
            info = scorer.info()
            assert info.nodes == 3 and info.shards == 3
            assert all(ip.startswith("127.") for ip in scorer.placement())
            assert len(set(scorer.placement())) >= 2  # shards really live on several nodes
            scorer.load(blocks)
            assert scorer.block_ids() == sorted(blocks)
            scores = scorer.score(query)
            assert {b: pub.ciphertext_to_bytes(s) for b, s in scores.items()} == reference
            # B's side: the top-k over the gathered scores equals plaintext top-k.
            flat = np.concatenate([secret_ctx.decrypt(scores[b]) for b in sorted(scores)])
            plain = heads @ probe
            assert list(np.argsort(-flat)[:5]) == list(np.argsort(-plain)[:5])
            best = int(np.argmax(heads @ probe))
            _preselect_on_shards_equals_local(secret_ctx, blocks, query, scorer, best)
            _dead_actor_is_replaced(secret_ctx, blocks, query, scorer, best)
            scorer.drop([0])
            assert sorted(scorer.score(pub.encrypt_query(probe))) == [1, 2]
            with pytest.raises(NotFoundError):
                scorer.drop([0])
    finally:
        cluster.stop()


def _preselect_on_shards_equals_local(
    secret_ctx: CKKSContext, blocks: dict[int, list[bytes]], query: CKKSCiphertext,
    scorer: ShardedScorer, best: int,
) -> None:
    """The product's PreselectServer with the Ray pool: same masked scores, same candidates."""
    pub = secret_ctx.public()
    slots = pub.slot_count
    heads = [HeadBlock(b, slots, HEAD_DIM, cts, live={s: b * slots + s for s in range(slots)})
             for b, cts in blocks.items()]

    def server(pool: Any) -> PreselectServer:
        layout = BlockLayout(pub, HEAD_DIM, lambda n: np.zeros((n, HEAD_DIM)), heads)
        return PreselectServer(pub, layout, rng=random.Random(11), pool=pool)

    raw = [pub.ciphertext_to_bytes(query)]
    local_req, local_state = server(None).request(raw, 16)
    ray_req, ray_state = server(cast(Any, scorer.pool())).request(raw, 16)
    assert ray_req.scores == local_req.scores and ray_state == local_state
    answer = answer_preselect(secret_ctx, ray_req)
    assert PreselectServer.resolve(ray_state, answer)[0] == best


def _dead_actor_is_replaced(
    secret_ctx: CKKSContext, blocks: dict[int, list[bytes]], query: CKKSCiphertext,
    scorer: ShardedScorer, best: int,
) -> None:
    """Issue 14: a killed shard actor shows in status, is replaced by the next scoring call
    (its blocks re-shipped) and the answer is unchanged."""
    import ray

    assert scorer.alive() == (3, 3)
    ray.kill(scorer._actors[0], no_restart=True)  # asynchronous: wait until it is gone
    deadline = time.monotonic() + 60
    while scorer.alive(timeout_s=5) != (2, 3) and time.monotonic() < deadline:
        time.sleep(0.5)
    assert scorer.alive(timeout_s=5) == (2, 3)
    _preselect_on_shards_equals_local(secret_ctx, blocks, query, scorer, best)
    assert scorer.alive() == (3, 3)
    assert sorted(scorer.held()) == sorted(blocks)


def test_masks_leave_the_host_only_over_ray_tls() -> None:
    """Shards receive per-query masks and rotations (issue 13, item 12): a cluster with a node
    off this host is refused unless Ray's TLS is switched on."""
    from pura.engine.cluster import check_ray_transport

    check_ray_transport(["127.0.0.1", "127.0.0.2"], {})  # loopback only: fine
    with pytest.raises(ConfigError, match="RAY_USE_TLS"):
        check_ray_transport(["127.0.0.1", "10.0.0.7"], {})
    with pytest.raises(ConfigError, match="RAY_USE_TLS"):
        check_ray_transport(["10.0.0.7"], {"RAY_USE_TLS": "0"})
    check_ray_transport(["10.0.0.7"], {"RAY_USE_TLS": "1"})
