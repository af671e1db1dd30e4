"""What one layout epoch costs (issue 12): ``python -m bench.relayout_cost``.

A secret re-layout (:mod:`pura.protocols.relayout`) is, per block of 4,096 slots, one round
with B: A masks the ``m`` rows, B decrypts and re-encrypts them one level up, A unmasks and
applies a secret slot permutation (baby-step/giant-step, one level); then every template's
candidate copy is re-sent to B, re-randomised, under a fresh tag
(:func:`pura.protocols.candidates.make_copy`, A's randomness pool). Measured here with the
product's own functions, CPU time per party (``time.process_time``, so the figures hold on a
shared machine), per face model's head dimension, plus the bytes each way; and the rounding the
lift adds (decrypted block after the re-layout vs the permuted plaintext heads).

Writes ``OUT/relayout_cost.json``.
"""

from __future__ import annotations

import argparse
import json
import random
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from bench.timing import machine_info
from pura.crypto.ckks import CKKSContext, heads_from_rows
from pura.crypto.paillier import RandomnessPool
from pura.crypto.params import get_preset
from pura.gallery.packing import encrypt_block
from pura.keys import generate_key_set, load_a_keys
from pura.protocols import relayout
from pura.protocols.candidates import make_copy
from pura.protocols.enroll import encrypt_template
from pura.protocols.identify import ExactConfig


def block_epoch(preset: str, seed: int = 0) -> dict[str, Any]:
    """One block's re-layout round at ``preset``'s head dimension: CPU per party, bytes."""
    params = get_preset(preset)
    m = params.encoding.head_dim
    secret = CKKSContext.generate(params.ckks)
    public = secret.public()
    n = public.slot_count
    rng = np.random.default_rng(seed)
    heads = rng.standard_normal((n, m))
    heads /= np.linalg.norm(heads, axis=1, keepdims=True)
    block = encrypt_block(public, 0, heads)
    t0 = time.process_time()
    request, state = relayout.prepare_relayout(public, block, random.Random(seed), "bench")
    wire_request = request.to_bytes()
    t1 = time.process_time()
    reply = relayout.answer_relayout(secret, relayout.RelayoutRequest.from_bytes(wire_request), m)
    wire_reply = reply.to_bytes()
    t2 = time.process_time()
    source = relayout.finish_relayout(public, block, state,
                                      relayout.RelayoutResponse.from_bytes(wire_reply))
    t3 = time.process_time()
    rows = np.stack([secret.decrypt(secret.ciphertext_from_bytes(c)) for c in block.ciphertexts])
    error = heads_from_rows(rows) - heads[source]
    return {
        "preset": preset, "model": params.encoding.model_id, "head_dim": m, "slots": n,
        "a_mask_cpu_s": t1 - t0, "b_lift_cpu_s": t2 - t1, "a_permute_cpu_s": t3 - t2,
        "a_cpu_s": (t1 - t0) + (t3 - t2), "request_bytes": len(wire_request),
        "reply_bytes": len(wire_reply), "rms_rounding_per_epoch": float(np.sqrt(np.mean(error**2))),
        "max_rounding_per_epoch": float(np.abs(error).max()),
    }


def copy_resend(preset: str, templates: int, seed: int = 0) -> dict[str, Any]:
    """A's CPU to make one template's fresh copy for B (re-randomised template + label)."""
    params = get_preset(preset)
    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.perf_counter()
        generate_key_set(Path(tmp) / "k", params)
        keygen_s = time.perf_counter() - t0
        keys = load_a_keys(Path(tmp) / "k" / "a")
    pk = keys.public.paillier
    config = ExactConfig.for_key(pk, params.encoding.dim, params.encoding.scale_bits)
    pool = RandomnessPool(pk, rng=random.Random(seed))
    rng = random.Random(seed)
    uploads = [encrypt_template([rng.randrange(-1000, 1000) for _ in range(params.encoding.dim)],
                                config.template, pk, pool) for _ in range(templates)]
    from pura.protocols.messages import AdmittedTemplate

    admitted = [AdmittedTemplate(u.packed, u.packed[0]) for u in uploads]  # shape only
    t0 = time.process_time()
    copies = [make_copy(a, i, (0, i), f"{i:032x}", pool) for i, a in enumerate(admitted)]
    cpu = (time.process_time() - t0) / templates
    return {"preset": preset, "paillier_bits": params.paillier.modulus_bits,
            "a_cpu_s_per_copy": cpu, "bytes_per_copy": len(copies[0].template)
            + len(copies[0].label), "keygen_wall_s": keygen_s}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--presets", nargs="+", default=["dlib", "default", "edgeface-xs"])
    parser.add_argument("--copies-preset", default="default")
    parser.add_argument("--copies", type=int, default=20)
    parser.add_argument("--out", type=Path, default=Path("bench/results"))
    args = parser.parse_args(argv)
    result = {
        "blocks": [block_epoch(p) for p in args.presets],
        "copies": copy_resend(args.copies_preset, args.copies),
        "machine": machine_info(),
    }
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "relayout_cost.json").write_text(json.dumps(result, indent=2), encoding="utf-8")
    print(json.dumps({k: v for k, v in result.items() if k != "machine"}, indent=2))


if __name__ == "__main__":
    main()
