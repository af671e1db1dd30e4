"""Micro-benchmarks of the threshold-Paillier layer and the exact secure protocols.

Prints one table per preset: key generation, encryption (online, from the pool, and the
offline pool refill), partial decryption, combination, the blinded-product distance round for
k = 4, 8, 16 (split into A before, B, A after), the secure argmin for k = 8 and the full exact
stage of one query (distance + argmin + threshold, in-process loopback with serialisation).

Run:  .venv/bin/python bench/paillier_micro.py [--presets fast,default] [--reps 5] [--workers 1]
"""

from __future__ import annotations

import argparse
import random
import statistics
import time
from collections.abc import Callable

from pura.crypto.paillier import (
    PartialPool,
    RandomnessPool,
    combine,
    generate_keypair,
)
from pura.crypto.params import PAILLIER_2048_FAST, PAILLIER_3072, PaillierParams
from pura.engine.local import LocalEngine
from pura.protocols.enroll import encrypt_template
from pura.protocols.identify import BytesChannel, ExactConfig, ServerA, ServerB
from pura.protocols.messages import AdmittedTemplate, PaillierTemplate
from pura.protocols.norms import CheckedQuery
from pura.protocols.secure_distance import (
    PreparedTemplate,
    finish_distance,
    helper_blinded_product,
    prepare_templates,
    start_distance,
)
from pura.protocols.secure_min import helper_compare, secure_argmin

PRESETS: dict[str, PaillierParams] = {"fast": PAILLIER_2048_FAST, "default": PAILLIER_3072}


def _median_ms(fn: Callable[[], object], reps: int) -> float:
    times = []
    for _ in range(reps):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return 1000 * statistics.median(times)


def _row(name: str, ms: float, note: str = "") -> None:
    value = f"{ms:>10.2f} ms" if ms >= 1 else f"{1000 * ms:>10.1f} us"
    print(f"  {name:<44} {value}  {note}")


def bench_preset(name: str, params: PaillierParams, reps: int, engine: LocalEngine) -> None:
    rng = random.Random(1)
    print(f"\n== {params.name} ({params.security_bits}-bit), engine workers={engine.workers}")
    seeds = iter(range(100))
    _row(f"keygen (median of {min(reps, 3)} seeds)",
         _median_ms(lambda: generate_keypair(params, random.Random(next(seeds))), min(reps, 3)))
    pk, s1, s2 = generate_keypair(params, rng)
    pool = RandomnessPool(pk, 64, rng=rng)
    _row("pool refill, per h_N^r value (offline)", _median_ms(lambda: pool.refill(1), reps * 4))
    _row("encrypt (online, pooled h_N^r)", _median_ms(lambda: pk.encrypt(12345, pool), reps * 4))
    c = pk.encrypt(42, pool)
    _row("partial decryption (one share)", _median_ms(lambda: s1.partial_decrypt(c), reps))
    p1, p2 = s1.partial_decrypt(c), s2.partial_decrypt(c)
    _row("combine", _median_ms(lambda: combine(p1, p2), reps * 4))
    masks = PartialPool(s1, rng=rng)
    _row("A mask + own partial (PartialPool, offline)", _median_ms(lambda: masks.refill(1), reps))

    config = ExactConfig.for_key(pk, 128, 11)
    layout = config.template
    vec = [[rng.randint(-2048, 2048) for _ in range(128)] for _ in range(17)]
    # the query as admission leaves it (B-made per-dimension [u_i] + the servers' norm)
    query = CheckedQuery(tuple(pk.encrypt(v, pool) for v in vec[0]),
                         pk.encrypt(sum(v * v for v in vec[0]), pool))
    template_bytes = (layout.cts_per_template + 1) * pk.ciphertext_bytes
    print(f"  template: {layout.cts_per_template} ciphertexts of {layout.slots_per_ct} "
          f"x {layout.slot_bits}-bit slots + norm = {template_bytes} B; "
          f"query upload: {layout.cts_per_template * pk.ciphertext_bytes} B")
    admitted = [AdmittedTemplate(encrypt_template(v, layout, pk, pool).packed,
                                 pk.encrypt(sum(x * x for x in v), pool)) for v in vec[1:]]
    temps = prepare_templates(admitted, s1, engine)
    for k in (4, 8, 16):
        a_before, b_time, a_after = [], [], []
        for _ in range(max(1, reps // 2)):
            t0 = time.perf_counter()
            state, req = start_distance(query, temps[:k], layout, masks, engine, rng)
            t1 = time.perf_counter()
            reply = helper_blinded_product(req, layout, s2, pool, engine)
            t2 = time.perf_counter()
            finish_distance(state, reply)
            t3 = time.perf_counter()
            a_before.append(t1 - t0)
            b_time.append(t2 - t1)
            a_after.append(t3 - t2)
        ms_a, ms_b, ms_f = (1000 * statistics.median(x) for x in (a_before, b_time, a_after))
        _row(f"blinded-product round k={k}", ms_a + ms_b + ms_f,
             f"A {ms_a:.0f} / B {ms_b:.0f} / A {ms_f:.1f}; {len(req.to_bytes())} B to B, "
             f"{len(reply.to_bytes())} B back")

    layout_c = config.compare
    entries = [(pk.encrypt(rng.getrandbits(30), pool), pk.encrypt(i, pool)) for i in range(8)]
    _row("secure argmin k=8 (3 rounds)", _median_ms(lambda: secure_argmin(
        entries, layout_c, s1, pool, lambda r: helper_compare(r, layout_c, s2, pool, engine),
        engine, rng), max(1, reps // 2)))

    server_b = ServerB(s2, config, RandomnessPool(pk, rng=rng), engine)
    channel = BytesChannel.loopback(server_b)
    server_a = ServerA(s1, config, channel, engine=engine, rng=rng)
    for k in (4, 8):
        cands: list[tuple[str, PaillierTemplate | PreparedTemplate]] = [
            (str(i), t) for i, t in enumerate(temps[:k])
        ]
        server_a.refill(k)
        before = channel.stats.bytes_to_b + channel.stats.bytes_from_b
        t = time.perf_counter()
        server_a.match(query, cands, 10**6)
        ms = 1000 * (time.perf_counter() - t)
        moved = channel.stats.bytes_to_b + channel.stats.bytes_from_b - before
        _row(f"full exact stage per query, k={k}", ms, f"{moved} B A<->B")
    del name


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--presets", default="fast,default")
    parser.add_argument("--reps", type=int, default=5)
    parser.add_argument("--workers", type=int, default=1)
    args = parser.parse_args()
    with LocalEngine(args.workers) as engine:
        for name in args.presets.split(","):
            bench_preset(name, PRESETS[name], args.reps, engine)


if __name__ == "__main__":
    main()
