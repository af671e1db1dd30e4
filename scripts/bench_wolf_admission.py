"""Cost of A's wolf check at template admission: ``ServerA.admit`` with and without it.

Usage: ``.venv/bin/python scripts/bench_wolf_admission.py [fast|default] [batch] [repeats]``.
The same A and B (loopback through the bytes encoding), the same uploads; the two
configurations alternate (order reversed every repeat), so load on a shared machine hits both
alike. Prints one JSON line: median wall seconds per batch without and with the check, and the
CPU time of A's norm cross term alone and with the check's extra power product (less noisy).
The check adds no round and no message (its comparison rides in the norm-check round).
"""

from __future__ import annotations

import json
import random
import statistics
import sys
import time

import numpy as np

from pura.crypto.encoding import l2_normalize, load_shipped_pca, quantize
from pura.crypto.paillier import RandomnessPool, generate_keypair
from pura.crypto.params import PAILLIER_2048_FAST, PAILLIER_3072
from pura.protocols.enroll import encrypt_template
from pura.protocols.identify import BytesChannel, ExactConfig, ServerA, ServerB
from pura.protocols.messages import AdmittedTemplate
from pura.protocols.norms import weighted_sum_pairs, weighted_sums
from pura.protocols.population import mean_bound

DIM, S = 128, 11
MODEL = "dlib_face_recognition_resnet_model_v1"


def main(profile: str = "fast", batch: int = 16, repeats: int = 3) -> dict[str, object]:
    params = {"fast": PAILLIER_2048_FAST, "default": PAILLIER_3072}[profile]
    pk, s1, s2 = generate_keypair(params, random.Random(7))
    plain = ExactConfig.for_key(pk, DIM, S)
    wolf = ExactConfig(plain.template, plain.compare,
                       plain.norms.with_mean(mean_bound(MODEL, load_shipped_pca(MODEL), S)))
    b = ServerB(s2, plain, RandomnessPool(pk, rng=random.Random(1)))
    channel = BytesChannel.loopback(b)
    servers = {name: ServerA(s1, cfg, channel, rng=random.Random(2))
               for name, cfg in (("without", plain), ("with", wolf))}
    client = RandomnessPool(pk, rng=random.Random(3))
    rng = np.random.default_rng(0)
    uploads = [encrypt_template([int(v) for v in quantize(l2_normalize(rng.normal(size=DIM)), S)],
                                plain.template, pk, client) for _ in range(batch)]
    times: dict[str, list[float]] = {"without": [], "with": []}
    for r in range(repeats):
        for name, a in (list(servers.items()) if r % 2 else list(servers.items())[::-1]):
            a.pool.refill(max(0, 8 * batch * DIM // 4 - len(a.pool)))  # offline, not timed
            b.pool.refill(max(0, batch * (DIM + 8) - len(b.pool)))
            start = time.perf_counter()
            out = a.admit(uploads)
            times[name].append(time.perf_counter() - start)
            assert all(isinstance(t, AdmittedTemplate) for t in out)
    without, with_ = statistics.median(times["without"]), statistics.median(times["with"])
    # A's extra work per template in isolation (less noisy than whole batches on a busy
    # machine; CPU time of this process): the norm's cross term alone vs. with the wolf check's
    # second power product and the sum of the bases.
    bases = [pk.encrypt(int(v), client) for v in rng.integers(0, 1 << 50, DIM)]
    offsets = [int(v) for v in rng.integers(0, 1 << plain.template.mask_bits, DIM)]
    shifted, _ = wolf.norms.mean.offset_exponents()  # type: ignore[union-attr]
    micro: dict[str, list[float]] = {"cross": [], "cross+wolf": []}
    for _ in range(7):
        start = time.process_time()
        weighted_sums([(bases, offsets)])
        micro["cross"].append(time.process_time() - start)
        start = time.process_time()
        weighted_sum_pairs([(bases, offsets, shifted)])
        total = bases[0]
        for ct in bases[1:]:
            total = total + ct
        micro["cross+wolf"].append(time.process_time() - start)
    cross, both = (statistics.median(micro[k]) for k in ("cross", "cross+wolf"))
    return {"profile": profile, "batch": batch, "repeats": repeats,
            "median_s_without": round(without, 3), "median_s_with": round(with_, 3),
            "ratio": round(with_ / without, 3),
            "per_template_ms_extra": round(1000 * (with_ - without) / batch, 1),
            "a_cross_term_ms": round(1000 * cross, 1),
            "a_cross_term_plus_wolf_ms": round(1000 * both, 1)}


if __name__ == "__main__":
    args = sys.argv[1:]
    print(json.dumps(main(args[0] if args else "fast", *(int(a) for a in args[1:3]))))
