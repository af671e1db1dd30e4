"""Cost of the servers' norm admission (pura.protocols.norms) next to the whole exact stage.

Usage: ``python -m bench.norms_admission [fast|default] [k] [repeats]``. Prints one JSON line:
median seconds of ``admit_query`` alone and of ``ServerA.match`` (which includes it) for k
admitted, prepared candidates, the A↔B bytes of one admission, and the batch admission of 10
templates. Pools are refilled between queries (the offline step), so the figures are online
cost. Honest unit vectors only; correctness is covered by tests/protocols/.
"""

from __future__ import annotations

import json
import random
import statistics
import sys
import time

import numpy as np

from pura.crypto.encoding import l2_normalize, quantize
from pura.crypto.paillier import RandomnessPool, generate_keypair
from pura.crypto.params import PAILLIER_2048_FAST, PAILLIER_3072
from pura.protocols.enroll import encrypt_query, encrypt_template
from pura.protocols.identify import (
    BytesChannel,
    ExactConfig,
    ServerA,
    ServerB,
    threshold_units,
)
from pura.protocols.messages import AdmittedTemplate
from pura.protocols.norms import admit_query

DIM, S = 128, 11


def main(profile: str = "fast", k: int = 8, repeats: int = 5) -> dict[str, object]:
    params = {"fast": PAILLIER_2048_FAST, "default": PAILLIER_3072}[profile]
    pk, s1, s2 = generate_keypair(params, random.Random(7))
    config = ExactConfig.for_key(pk, DIM, S)
    b = ServerB(s2, config, RandomnessPool(pk, rng=random.Random(1)))
    channel = BytesChannel.loopback(b)
    a = ServerA(s1, config, channel, rng=random.Random(2))
    client = RandomnessPool(pk, rng=random.Random(3))
    rng = np.random.default_rng(0)

    def vector() -> list[int]:
        return [int(v) for v in quantize(l2_normalize(rng.normal(size=DIM)), S)]

    t0 = time.perf_counter()
    batch = a.admit([encrypt_template(vector(), config.template, pk, client) for _ in range(10)])
    admit10 = time.perf_counter() - t0
    admitted = [t for t in batch if isinstance(t, AdmittedTemplate)][:k]
    while len(admitted) < k:
        (t,) = a.admit([encrypt_template(vector(), config.template, pk, client)])
        assert isinstance(t, AdmittedTemplate)
        admitted.append(t)
    gallery = [(f"s{j}", p) for j, p in enumerate(a.prepare(admitted))]
    tau = threshold_units(0.36, S)
    admit_s, match_s = [], []
    for _ in range(repeats):
        query = encrypt_query(vector(), config.template, pk, client)
        a.refill(k)
        b.refill(k)
        before = (channel.stats.bytes_to_b, channel.stats.bytes_from_b)
        t0 = time.perf_counter()
        admit_query(query.packed, config.norms, s1, a.pool, channel, a.engine, a.rng)
        admit_s.append(time.perf_counter() - t0)
        moved = (channel.stats.bytes_to_b - before[0], channel.stats.bytes_from_b - before[1])
        a.refill(k)
        b.pool.refill(DIM + 8 * k + 16)
        t0 = time.perf_counter()
        a.match(query, gallery, tau)
        match_s.append(time.perf_counter() - t0)
    return {
        "profile": profile, "k": k, "repeats": repeats,
        "admit_query_s": round(statistics.median(admit_s), 3),
        "match_incl_admission_s": round(statistics.median(match_s), 3),
        "admission_bytes_a_to_b": moved[0], "admission_bytes_b_to_a": moved[1],
        "admit_10_templates_s": round(admit10, 3),
    }


if __name__ == "__main__":
    args = sys.argv[1:]
    print(json.dumps(main(args[0] if args else "fast", *(int(v) for v in args[1:3]))))
