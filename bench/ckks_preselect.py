"""Measure the CKKS half: block scoring, permutation, preselection, refresh, bytes, hit rates.

Run: ``.venv/bin/python bench/ckks_preselect.py [--sizes 1000 10000] [--reps 5] [--no-lfw]``.
Timings are medians of ``--reps`` runs on this machine (2 shared cores: expect ±20 %).
"""

from __future__ import annotations

import argparse
import random
import statistics
import sys
import time
from collections.abc import Callable
from functools import partial
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "clients"))
sys.path.insert(0, str(ROOT))

from pura.crypto.ckks import CKKSContext, diagonal_rows, heads_from_rows  # noqa: E402
from pura.crypto.encoding import load_shipped_pca  # noqa: E402
from pura.crypto.params import CKKS_8192  # noqa: E402
from pura.gallery.packing import BlockLayout, HeadBlock, encrypt_block  # noqa: E402
from pura.protocols.preselect import (  # noqa: E402
    PreselectRequest,
    PreselectResponse,
    PreselectServer,
    PreselectState,
    ScoringPool,
    answer_preselect,
)
from pura.protocols.refresh import refresh_block  # noqa: E402


def median_ms(fn: Callable[[], object], reps: int) -> float:
    times = []
    for _ in range(reps):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return 1e3 * statistics.median(times)


def _answer(sec: CKKSContext, wire: bytes) -> object:
    return answer_preselect(sec, PreselectRequest.from_bytes(wire))


def _resolve(state: PreselectState, resp: bytes) -> object:
    return PreselectServer.resolve(state, PreselectResponse.from_bytes(resp))


def block_costs(sec: CKKSContext, pub: CKKSContext, reps: int) -> None:
    print("## per block (4096 slots)")
    rng = random.Random(0)
    for m in (16, 32, 64):
        heads = load_shipped_pca().sample_decoy_heads(pub.slot_count, m, rng)
        block = [pub.encrypt_vector(row) for row in diagonal_rows(heads)]
        query = pub.expand_query(pub.encrypt_query(heads[0]), m)
        score = pub.score_block(query, block)
        t_score = median_ms(partial(pub.score_block, query, block), reps)
        t_rot = median_ms(partial(pub.rotate, score, 2**12 - 1), reps)
        t_mask = median_ms(partial(pub.affine_mask, score, 77777, 123.5), reps)
        err = np.max(np.abs(sec.decrypt(score) - heads @ heads[0]))
        t_enc = median_ms(partial(pub.encrypt_query, heads[0]), max(1, reps // 2))
        t_expand = median_ms(partial(pub.expand_query, pub.encrypt_query(heads[0]), m), reps)
        ct_bytes = len(pub.ciphertext_to_bytes(block[0]))
        print(f"m={m}: score {t_score:.1f} ms ({1e3 * t_score / pub.slot_count:.2f} µs/slot), "
              f"rotation by 4095 (12 key switches, worst case) {t_rot:.1f} ms, "
              f"mask {t_mask:.2f} ms, max score error {err:.1e}; "
              f"client query encryption {t_enc:.0f} ms, query {ct_bytes / 2**20:.2f} MiB "
              f"(one ciphertext), expansion at A {t_expand:.0f} ms, "
              f"block storage {m * ct_bytes / pub.slot_count:.0f} B/template (full block)")


def build_layout(pub: CKKSContext, n: int, m: int) -> tuple[BlockLayout, np.ndarray]:
    pca = load_shipped_pca()
    rng = random.Random(n)
    blocks: list[HeadBlock] = []
    heads_all = []
    for b in range(-(-n // pub.slot_count)):
        heads = pca.sample_decoy_heads(pub.slot_count, m, rng)
        block = encrypt_block(pub, b, heads)
        used = min(pub.slot_count, n - b * pub.slot_count)
        block.live = {s: b * pub.slot_count + s for s in range(used)}
        blocks.append(block)
        heads_all.append(heads)
    return BlockLayout(pub, m, lambda k: pca.sample_decoy_heads(k, m, rng), blocks), np.vstack(
        heads_all
    )


def preselection(sec: CKKSContext, pub: CKKSContext, sizes: list[int], reps: int) -> None:
    m, k = 32, 128
    print(f"## preselection (m={m}, k={k} positions in B's view)")
    for n in sizes:
        layout, heads = build_layout(pub, n, m)
        query = [pub.ciphertext_to_bytes(pub.encrypt_query(heads[0]))]
        serial = PreselectServer(pub, layout, random.Random(1))
        serial.request(query, k)  # warm the parsed-block cache
        t_a1 = median_ms(partial(serial.request, query, k), reps)
        with ScoringPool(pub, workers=2) as pool:
            par = PreselectServer(pub, layout, random.Random(2), pool=pool)
            par.request(query, k)  # ship blocks to the workers once
            t_a2 = median_ms(partial(par.request, query, k), reps)
        req, state = serial.request(query, k)
        wire = req.to_bytes()
        t_b = median_ms(partial(_answer, sec, wire), reps)
        resp = answer_preselect(sec, req).to_bytes()
        t_res = median_ms(partial(_resolve, state, resp), reps)
        q_bytes = sum(len(b) for b in query)
        print(f"n={n}: {len(layout.blocks)} block(s); A score+rotate+mask {t_a1:.0f} ms (1 proc), "
              f"{t_a2:.0f} ms (2 procs); B decrypt+rank {t_b:.1f} ms; A resolve {t_res:.2f} ms; "
              f"bytes client->A {q_bytes / 2**20:.2f} MiB, A->B {len(wire) / 2**10:.0f} KiB, "
              f"B->A {len(resp)} B")


def enrolment(sec: CKKSContext, pub: CKKSContext, reps: int) -> None:
    m = 32
    print(f"## enrolment = block refresh (m={m})")
    pca = load_shipped_pca()
    rng = random.Random(5)
    decoys: Callable[[int], np.ndarray] = lambda n: pca.sample_decoy_heads(n, m, rng)  # noqa: E731
    layout = BlockLayout(pub, m, decoys)
    heads: dict[int, bytes] = {}
    truth: dict[int, np.ndarray] = {}
    next_id = 0
    for batch in (1, 1, 1, 100, 400):
        t = time.perf_counter()
        for _ in range(batch):
            truth[next_id] = decoys(1)[0]
            heads[next_id] = pub.ciphertext_to_bytes(pub.encrypt_head(truth[next_id]))
            layout.assign(next_id)
            next_id += 1
        t_client = time.perf_counter() - t
        t = time.perf_counter()
        nbytes = refresh_block(pub, sec, layout.blocks[0], heads, decoys, rng)
        dt = time.perf_counter() - t
        print(f"batch {batch}: refresh {1e3 * dt:.0f} ms ({1e3 * dt / batch:.1f} ms/template), "
              f"A<->B {nbytes / 2**20:.1f} MiB ({nbytes / batch / 2**10:.0f} KiB/template); "
              f"client head encryption {1e3 * t_client / batch:.1f} ms, "
              f"upload {len(heads[0]) / 2**10:.0f} KiB/template")
    block = layout.blocks[0]
    values = heads_from_rows(
        np.stack([sec.decrypt(sec.ciphertext_from_bytes(c)) for c in block.ciphertexts]))
    err = max(float(np.max(np.abs(values[s] - truth[t]))) for s, t in block.live.items())
    print(f"   after {block.version} refreshes: {len(block.live)} live heads, max coordinate "
          f"error {err:.1e}")


def local_enrolment(pub: CKKSContext, reps: int) -> None:
    m = 32
    print(f"## enrolment / deletion by A alone (seeded blocks, m={m})")
    pca = load_shipped_pca()
    layout = BlockLayout(
        pub, m, lambda n: pca.sample_decoy_heads(n, m, random.Random(0)),
        decoy_model=lambda n, r: pca.sample_decoy_heads(n, m, r),
        decoy_seed=b"bench-seed-0123456789",
    )
    layout.new_block()
    rng = random.Random(9)
    heads = {t: pub.ciphertext_to_bytes(pub.encrypt_head(pca.sample_decoy_heads(1, m, rng)[0]))
             for t in range(reps + 10)}
    t_place = median_ms(partial(pub.place_head, pub.ciphertext_from_bytes(heads[0]), 2345, m), reps)
    times = []
    for t in range(reps):
        start = time.perf_counter()
        layout.insert(t, heads[t])
        times.append(time.perf_counter() - start)
    t_ins = 1e3 * statistics.median(times)
    start = time.perf_counter()
    layout.insert_many([(t, heads[t]) for t in range(reps, reps + 10)])
    t_batch = 1e3 * (time.perf_counter() - start) / 10
    deletions = []
    for t in range(reps):
        start = time.perf_counter()
        layout.delete(t, heads[t])
        deletions.append(time.perf_counter() - start)
    t_del = 1e3 * statistics.median(deletions)
    print(f"place_head {t_place:.0f} ms; insert {t_ins:.0f} ms/template single, {t_batch:.0f} "
          f"ms/template in a batch of 10; delete {t_del:.0f} ms; A<->B bytes 0; "
          f"client upload {len(heads[0]) / 2**10:.0f} KiB/template")


def hit_rates() -> None:
    from pura_client.datasets.embedded import embedded_identification_set

    data = embedded_identification_set(500, 0, n_non_enrolled=200)
    pca = load_shipped_pca()
    gallery, probes = pca.apply(data.gallery), pca.apply(data.probes)
    nearest = np.argmax(probes @ gallery.T, axis=1)
    index = {name: i for i, name in enumerate(data.gallery_labels)}
    mates = np.array([index[name] for name in data.probe_labels])
    print(f"## LFW hit rate: 500 identities, {len(probes)} mated probes; plaintext rank-1 "
          f"(128-d) correct for {np.mean(nearest == mates):.3f}")
    ks = (8, 16, 32, 64, 128, 256, 512)
    print("target = plaintext 128-d rank-1 answer; columns: k positions returned by B")
    for decoys in (True, False):
        for m in (16, 32, 64):
            block = gallery[:, :m]
            if decoys:
                extra = pca.sample_decoy_heads(CKKS_8192.slot_count - 500, m, random.Random(m))
                block = np.vstack([block, extra])
            scores = probes[:, :m] @ block.T
            own = scores[np.arange(len(probes)), nearest]
            rank = (scores > own[:, None]).sum(axis=1) + 1
            own_t = scores[np.arange(len(probes)), mates]
            rank_t = (scores > own_t[:, None]).sum(axis=1) + 1
            cells = " ".join(f"{np.mean(rank <= k):.3f}" for k in ks)
            real = int(np.ceil(rank.max() * 500 / block.shape[0]))
            print(f"{'decoys' if decoys else 'no-decoy'} m={m}: k={ks} -> {cells}; k for all: "
                  f"{rank.max()} (≈{real} real candidates); true-mate hit k=128: "
                  f"{np.mean(rank_t <= 128):.3f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="*", default=[1000, 10000])
    parser.add_argument("--reps", type=int, default=5)
    parser.add_argument("--no-lfw", action="store_true")
    args = parser.parse_args()
    sec = CKKSContext.generate(CKKS_8192)
    pub = sec.public()
    print(f"public context {len(pub.to_bytes()) / 2**20:.1f} MiB (A), client context "
          f"{len(sec.public(with_galois_keys=False).to_bytes()) / 2**20:.1f} MiB")
    block_costs(sec, pub, args.reps)
    preselection(sec, pub, args.sizes, args.reps)
    enrolment(sec, pub, args.reps)
    local_enrolment(pub, args.reps)
    if not args.no_lfw:
        hit_rates()


if __name__ == "__main__":
    main()
