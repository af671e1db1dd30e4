"""Issue 16: an exact stage with no public-key work online, beside today's, in one run.

Usage::

    python -m bench.online_exact [--preset default|fast] [--k 6] [--repetitions 7]
                                 [--lfw] [--lfw-paillier 10] [--out bench/results/online_exact.json]

Per query (fresh synthetic unit vectors; every second query has a mate among the candidates):

* **today** — the product's exact stage, ``ServerA.match`` on the admitted query and k prepared
  candidates over ``BytesChannel`` (every message serialised), pools refilled between queries as
  the service does; the query admission (``ServerA.check_query``) is timed separately because
  the service overlaps it with preselection (bench/pura_path.py).
* **prototype** — the same admitted query and candidates: offline correlations (dealer-free,
  :mod:`bench.online_exact_offline`), conversion of the candidates (offline: one masked joint
  decryption per template use) and of the query (measured; online unless it is folded into
  admission), then the online phase (:mod:`bench.online_exact_shares`).

CPU seconds are thread CPU time charged to the party whose code ran (A's steps, B's handlers),
so A and B are reported separately although they share a process. Both answers are checked
against the plaintext answer on every query.

``--lfw``: the 500-identity LFW set (cached embeddings, PCA, quantisation, candidates = the 6
nearest 64-d heads as the CKKS preselection ranks them), every probe through the online phase
with correlations from the reference dealer (the online protocol's correctness on real data),
and ``--lfw-paillier N`` probes through the whole dealer-free path at the chosen preset.
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from bench.online_exact_offline import (
    OfflineA,
    OfflineB,
    convert_query_open,
    convert_query_request,
    convert_templates_open,
    convert_templates_request,
    inputs_a,
    prepare_norms,
)
from bench.online_exact_shares import (
    InputShares,
    Loopback,
    OnlineA,
    OnlineB,
    Outcome,
    Shape,
    WireStats,
    deal,
    plaintext_answer,
    run_online,
    share_inputs,
)
from bench.timing import machine_info
from pura.crypto.encoding import l2_normalize, quantize
from pura.crypto.paillier import (
    KeyShare,
    PartialDecryption,
    PartialPool,
    PublicKey,
    RandomnessPool,
    generate_keypair,
)
from pura.crypto.params import get_preset
from pura.errors import ProtocolError
from pura.protocols.enroll import encrypt_query, encrypt_template
from pura.protocols.identify import (
    BytesChannel,
    ExactConfig,
    MatchResult,
    ServerA,
    ServerB,
    threshold_units,
)
from pura.protocols.messages import AdmittedTemplate
from pura.protocols.norms import CheckedQuery
from pura.protocols.secure_distance import PreparedTemplate

FloatArray = npt.NDArray[np.float64]
Keys = tuple[PublicKey, KeyShare, KeyShare]

#: Same threshold as bench/run.py for synthetic probes (mates at ≈ 0.12, strangers at ≈ 2).
SYNTHETIC_THRESHOLD = 0.6
#: The LFW test's operating point (tests/protocols/test_identify.py): FMR 1e-5 on gallery pairs.
LFW_FMR = 1e-5
HEAD_DIM = 64
#: Fixed-base window of the prototype's pools (6: 86 instead of 128 multiplications per
#: randomiser at 512 bits; the tables are built once per party, not per query).
POOL_WINDOW = 6


# --------------------------------------------------------------------------------------------
# today's exact stage, with B's CPU separated
# --------------------------------------------------------------------------------------------


@dataclass
class Today:
    """The product's two servers over a serialising loopback that times B's handlers."""

    keys: Keys
    config: ExactConfig
    server_a: ServerA
    server_b: ServerB
    channel: BytesChannel
    b_cpu: list[float] = field(default_factory=lambda: [0.0])

    @classmethod
    def build(cls, keys: Keys, rng: random.Random, dim: int = 128, scale: int = 11) -> Today:
        pk, s1, s2 = keys
        config = ExactConfig.for_key(pk, dim, scale)
        b = ServerB(s2, config, RandomnessPool(pk, rng=random.Random(rng.getrandbits(64))))
        handlers = b.handlers()
        b_cpu = [0.0]

        def call(step: str, payload: bytes) -> bytes:
            t0 = time.thread_time()
            try:
                return handlers[step](payload)
            finally:
                b_cpu[0] += time.thread_time() - t0

        channel = BytesChannel(pk, call)
        a = ServerA(s1, config, channel, rng=random.Random(rng.getrandbits(64)))
        return cls(keys, config, a, b, channel, b_cpu)

    def admit(self, vectors: Sequence[Sequence[int]], client: RandomnessPool
              ) -> list[PreparedTemplate]:
        """Enrolment + A's offline preparation (not timed: the service does it at enrolment)."""
        uploads = [encrypt_template(list(v), self.config.template, self.keys[0], client)
                   for v in vectors]
        admitted = [t for t in self.server_a.admit(uploads) if isinstance(t, AdmittedTemplate)]
        if len(admitted) != len(vectors):
            raise ProtocolError("an honest template was refused by admission")
        return self.server_a.prepare(admitted)

    def measured(self, fn: Callable[[], Any]) -> tuple[Any, dict[str, float]]:
        """Run ``fn`` (A's code calling B through the channel); wall, CPU at A and B, bytes."""
        st = self.channel.stats
        before = (st.rounds, st.bytes_to_b, st.bytes_from_b, self.b_cpu[0])
        t_cpu, t0 = time.thread_time(), time.perf_counter()
        out = fn()
        wall, cpu = time.perf_counter() - t0, time.thread_time() - t_cpu
        b = self.b_cpu[0] - before[3]
        return out, {"wall_s": wall, "cpu_a_s": cpu - b, "cpu_b_s": b,
                     "round_trips": float(st.rounds - before[0]),
                     "bytes_a_to_b": float(st.bytes_to_b - before[1]),
                     "bytes_b_to_a": float(st.bytes_from_b - before[2])}


# --------------------------------------------------------------------------------------------
# the prototype on the product's admitted objects
# --------------------------------------------------------------------------------------------


@dataclass
class Prototype:
    """Both parties' long-lived Paillier state: empty pools (every randomiser is charged to the
    offline phase that uses it) and A's mask pool for the template conversion."""

    keys: Keys
    config: ExactConfig
    rng: random.Random
    pool_a: RandomnessPool = field(init=False)
    pool_b: RandomnessPool = field(init=False)
    masks_a: PartialPool = field(init=False)

    def __post_init__(self) -> None:
        pk, s1, _ = self.keys
        seeds = [random.Random(self.rng.getrandbits(64)) for _ in range(3)]
        self.pool_a = RandomnessPool(pk, rng=seeds[0], window=POOL_WINDOW)
        self.pool_b = RandomnessPool(pk, rng=seeds[1], window=POOL_WINDOW)
        self.masks_a = PartialPool(s1, rng=seeds[2], window=POOL_WINDOW)

    def shape(self, k: int) -> Shape:
        t = self.config.template
        return Shape(k, t.dim, t.scale_bits, t.kappa)

    def correlations(self, shape: Shape) -> tuple[Any, Any, WireStats]:
        """Dealer-free offline phase for one query (two round trips, the last reply empty)."""
        _, s1, s2 = self.keys
        ch = Loopback()
        off_a = ch.run_a(lambda: OfflineA(shape, s1, self.pool_a,
                                          random.Random(self.rng.getrandbits(64))))
        t0 = time.thread_time()
        off_b = OfflineB(shape, s2, self.pool_b, random.Random(self.rng.getrandbits(64)))
        ch.stats.cpu_b += time.thread_time() - t0
        m1 = ch.run_a(off_a.encrypt_mask)
        r2 = ch.ask_b(off_b.reply, m1)
        m3 = ch.run_a(lambda: off_a.answer(r2))
        ch.ask_b(off_b.receive, m3)
        return off_a.result(), off_b.result(), ch.stats

    def convert_templates(self, prepared: Sequence[PreparedTemplate],
                          norm_parts: Sequence[PartialDecryption]
                          ) -> tuple[Any, tuple[Any, Any], WireStats]:
        """Offline, per candidate use: one masked joint decryption per packed ciphertext."""
        ch = Loopback()
        layout, share_b = self.config.template, self.keys[2]
        state, msg = ch.run_a(lambda: convert_templates_request(
            prepared, norm_parts, layout, self.masks_a, self.rng))
        out: list[Any] = []

        def open_b(m: bytes) -> bytes:
            out.append(convert_templates_open(m, len(prepared), layout, share_b))
            return b""

        ch.ask_b(open_b, msg)
        return state, out[0], ch.stats

    def convert_query(self, query: CheckedQuery) -> tuple[Any, Any, WireStats, float]:
        """The admitted query to shares (public-key work; wall time returned)."""
        ch = Loopback()
        layout, (_, s1, s2) = self.config.template, self.keys
        out: list[Any] = []
        t0 = time.perf_counter()
        masks, msg = ch.run_a(lambda: convert_query_request(query, layout, s1, self.pool_a,
                                                           self.rng))

        def open_b(m: bytes) -> bytes:
            out.append(convert_query_open(m, layout, s2))
            return b""

        ch.ask_b(open_b, msg)
        return masks, out[0], ch.stats, time.perf_counter() - t0


def _wire(stats: WireStats) -> dict[str, float]:
    return {"cpu_a_s": stats.cpu_a, "cpu_b_s": stats.cpu_b, "round_trips": stats.round_trips,
            "bytes_a_to_b": stats.bytes_a_to_b, "bytes_b_to_a": stats.bytes_b_to_a}


Stored = tuple[PreparedTemplate, PartialDecryption]
"""A stored template with A's per-template precomputation (packed parts and norm part)."""


def prototype_query(
    proto: Prototype, checked: CheckedQuery, stored: Sequence[Stored], tau: int,
    online_repeats: int = 5,
) -> tuple[Outcome, dict[str, dict[str, float]]]:
    """One query through the whole prototype; candidates are already in A's shuffled order."""
    shape = proto.shape(len(stored))
    corr_a, corr_b, off = proto.correlations(shape)
    conv_a, (y_b, n_b), conv = proto.convert_templates([p for p, _ in stored],
                                                       [n for _, n in stored])
    q_masks, u_b, qconv, q_wall = proto.convert_query(checked)
    in_a, in_b = inputs_a(q_masks, conv_a), InputShares(u_b, y_b, n_b)
    walls, outcome, stats = [], None, WireStats()
    for _ in range(online_repeats):  # the same shares and correlations: timing only
        t0 = time.perf_counter()
        got, stats = run_online(OnlineA(shape, in_a, corr_a, tau), OnlineB(shape, in_b, corr_b))
        walls.append(time.perf_counter() - t0)
        if outcome is not None and got != outcome:
            raise ProtocolError("the online phase is not deterministic in its inputs")
        outcome = got
    assert outcome is not None
    return outcome, {
        "online": {"wall_s": statistics.median(walls), **_wire(stats)},
        "offline_correlations": _wire(off),
        "template_conversion": _wire(conv),
        "query_conversion": {"wall_s": q_wall, **_wire(qconv)},
    }


# --------------------------------------------------------------------------------------------
# synthetic run: today and the prototype on the same queries
# --------------------------------------------------------------------------------------------


def _unit(rng: np.random.Generator, dim: int) -> FloatArray:
    return l2_normalize(rng.normal(size=dim))


def _ints(v: FloatArray, scale: int) -> list[int]:
    return [int(x) for x in quantize(v[None, :], scale)[0]]


def _summary(rows: Sequence[dict[str, float]]) -> dict[str, Any]:
    keys = rows[0].keys()
    out: dict[str, Any] = {}
    for key in keys:
        vals = [r[key] for r in rows]
        out[key] = statistics.median(vals)
        if key == "wall_s":
            out["wall_min_s"], out["wall_max_s"] = min(vals), max(vals)
    return out


def synthetic(keys: Keys, k: int, repetitions: int, seed: int) -> dict[str, Any]:
    """``repetitions`` queries (+1 warm-up) through today's stage and the prototype."""
    rng, nrng = random.Random(seed), np.random.default_rng(seed)
    today = Today.build(keys, rng)
    proto = Prototype(keys, today.config, random.Random(rng.getrandbits(64)))
    scale = today.config.template.scale_bits
    tau = threshold_units(SYNTHETIC_THRESHOLD, scale)
    client = RandomnessPool(keys[0], rng=random.Random(rng.getrandbits(64)))
    rows: dict[str, list[dict[str, float]]] = {}
    agree = 0
    for rep in range(repetitions + 1):
        gallery = [_unit(nrng, 128) for _ in range(k)]
        probe = (l2_normalize(gallery[rep % k] + 0.035 * nrng.normal(size=128))
                 if rep % 2 else _unit(nrng, 128))
        vectors = [_ints(g, scale) for g in gallery]
        prepared = today.admit(vectors, client)
        norm_parts = prepare_norms(prepared, keys[1])  # per template, like PreparedTemplate
        labels = [str(j) for j in range(k)]
        order = list(range(k))
        rng.shuffle(order)  # A's fresh secret order (today's ServerA.match shuffles again)
        query = encrypt_query(_ints(probe, scale), today.config.template, keys[0], client)
        today.server_a.refill(k)
        today.server_b.refill(k)
        checked, admit = today.measured(partial(today.server_a.check_query, query))
        candidates = list(zip(labels, prepared, strict=True))
        result, exact = today.measured(partial(today.server_a.match, checked, candidates, tau))
        outcome, proto_rows = prototype_query(
            proto, checked, [(prepared[j], norm_parts[j]) for j in order], tau)
        want = plaintext_answer(_ints(probe, scale), vectors, tau)
        want_label = MatchResult(True, str(want.index)) if want.matched else MatchResult(False)
        got_label = (MatchResult(True, str(order[outcome.index]))
                     if outcome.matched and outcome.index is not None else MatchResult(False))
        ok = result == want_label and got_label == want_label
        print(f"query {rep}: today {result} prototype {got_label} plaintext {want_label} "
              f"today exact {exact['wall_s']:.3f}s prototype online "
              f"{proto_rows['online']['wall_s'] * 1e3:.1f}ms", file=sys.stderr)
        if rep == 0:
            continue  # warm-up
        agree += ok
        for name, row in [("today_exact", exact), ("today_admission", admit), *proto_rows.items()]:
            rows.setdefault(name, []).append(row)
    return {"k": k, "dim": 128, "queries": repetitions, "answers_equal_plaintext": agree,
            "tau_units": tau, **{name: _summary(r) for name, r in rows.items()}}


# --------------------------------------------------------------------------------------------
# LFW
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class LFWCase:
    """Quantised PCA-rotated gallery/probes, each probe's 6 preselected candidates, τ."""

    gallery: npt.NDArray[np.int64]
    probes: npt.NDArray[np.int64]
    candidates: npt.NDArray[np.int64]
    tau: int
    n_mated: int


def lfw_case(k: int, scale: int = 11) -> LFWCase:
    """As tests/protocols/test_identify.py builds it (τ at FMR 1e-5 on gallery impostor pairs),
    with the product's 64-d head for the candidates (its CKKS preselection's ranking)."""
    from pura_client.datasets.embedded import embedded_identification_set

    from pura.crypto.encoding import load_shipped_pca

    s = embedded_identification_set(n_identities=500, seed=0, n_non_enrolled=200)
    pca = load_shipped_pca()
    gallery = pca.apply(s.gallery)
    probes = np.vstack([pca.apply(s.probes), pca.apply(s.non_enrolled)])
    iu = np.triu_indices(len(gallery), 1)
    impostor = ((gallery[:, None, :] - gallery[None, :, :]) ** 2).sum(-1)[iu]
    theta = float(np.quantile(impostor, LFW_FMR))
    heads = ((probes[:, None, :HEAD_DIM] - gallery[None, :, :HEAD_DIM]) ** 2).sum(-1)
    return LFWCase(quantize(gallery, scale).astype(np.int64),
                   quantize(probes, scale).astype(np.int64),
                   np.argsort(heads, axis=1)[:, :k], threshold_units(theta, scale),
                   len(s.probes))


def _full_search(case: LFWCase, i: int) -> int:
    dist = ((case.gallery - case.probes[i]) ** 2).sum(axis=1)
    best = int(dist.argmin())
    return best if int(dist[best]) <= case.tau else -1


def lfw_dealer(case: LFWCase, k: int, seed: int) -> dict[str, Any]:
    """Every probe: the online phase (reference-dealer correlations) vs plaintext."""
    rng = random.Random(seed)
    shape = Shape(k, case.gallery.shape[1])
    same, full, matched, walls = 0, 0, 0, []
    for i in range(len(case.probes)):
        cands = [int(j) for j in case.candidates[i]]
        rng.shuffle(cands)
        q = case.probes[i].tolist()
        ys = [case.gallery[j].tolist() for j in cands]
        in_a, in_b = share_inputs(q, ys, rng)
        corr_a, corr_b = deal(shape, rng)
        t0 = time.perf_counter()
        got, _ = run_online(OnlineA(shape, in_a, corr_a, case.tau), OnlineB(shape, in_b, corr_b))
        walls.append(time.perf_counter() - t0)
        label = cands[got.index] if got.matched and got.index is not None else -1
        same += got == plaintext_answer(q, ys, case.tau)
        full += label == _full_search(case, i)
        matched += label >= 0
    n = len(case.probes)
    return {"probes": n, "mated_probes": case.n_mated, "non_enrolled_probes": n - case.n_mated,
            "equal_plaintext_same_candidates": same, "equal_plaintext_full_gallery": full,
            "matched": matched, "tau_units": case.tau,
            "online_wall_median_s": statistics.median(walls)}


def lfw_paillier(case: LFWCase, keys: Keys, k: int, n_probes: int, seed: int) -> dict[str, Any]:
    """``n_probes`` probes (half mated, half not) through admission, conversion, the
    dealer-free offline phase and the online phase, vs plaintext."""
    rng = random.Random(seed)
    today = Today.build(keys, rng)
    proto = Prototype(keys, today.config, random.Random(rng.getrandbits(64)))
    client = RandomnessPool(keys[0], rng=random.Random(rng.getrandbits(64)))
    n = len(case.probes)
    half = n_probes // 2
    idx = (rng.sample(range(case.n_mated), n_probes - half)
           + rng.sample(range(case.n_mated, n), half))
    stored: dict[int, Stored] = {}
    same = 0
    for i in idx:
        cands = [int(j) for j in case.candidates[i]]
        new = [j for j in cands if j not in stored]
        if new:
            fresh = today.admit([case.gallery[j].tolist() for j in new], client)
            for j, p, part in zip(new, fresh, prepare_norms(fresh, keys[1]), strict=True):
                stored[j] = (p, part)
        rng.shuffle(cands)
        query = encrypt_query(case.probes[i].tolist(), today.config.template, keys[0], client)
        today.server_a.refill(k)
        today.server_b.refill(k)
        checked = today.server_a.check_query(query)
        got, _ = prototype_query(proto, checked, [stored[j] for j in cands], case.tau,
                                 online_repeats=1)
        label = cands[got.index] if got.matched and got.index is not None else -1
        same += label == _full_search(case, i)
    return {"probes": len(idx), "equal_plaintext_full_gallery": same,
            "preset": keys[0].params_name}


# --------------------------------------------------------------------------------------------
# command line
# --------------------------------------------------------------------------------------------


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m bench.online_exact", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--preset", default="default", help="parameter preset: default | fast")
    p.add_argument("--k", type=int, default=6)
    p.add_argument("--repetitions", type=int, default=7)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--lfw", action="store_true", help="LFW 500-identity sweep (dealer)")
    p.add_argument("--lfw-paillier", type=int, default=0,
                   help="LFW probes through the whole dealer-free path")
    p.add_argument("--no-synthetic", action="store_true")
    p.add_argument("--out", type=Path, default=None)
    return p


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    args = parser().parse_args(argv)
    params = get_preset(args.preset)
    result: dict[str, Any] = {"preset": args.preset, "paillier": asdict(params.paillier),
                              "machine": machine_info()}
    t0 = time.perf_counter()
    keys = generate_keypair(params.paillier, random.Random(args.seed))
    print(f"keys: {time.perf_counter() - t0:.1f}s", file=sys.stderr)
    if not args.no_synthetic:
        result["synthetic"] = synthetic(keys, args.k, args.repetitions, args.seed)
    if args.lfw or args.lfw_paillier:
        case = lfw_case(args.k)
        if args.lfw:
            result["lfw_dealer"] = lfw_dealer(case, args.k, args.seed)
        if args.lfw_paillier:
            result["lfw_paillier"] = lfw_paillier(case, keys, args.k, args.lfw_paillier,
                                                  args.seed)
    if args.out is not None:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(result, indent=2, default=float) + "\n")
        if "synthetic" in result:
            from bench.online_exact_plot import plot

            plot(result, args.out.with_suffix(".png"))
    return result


if __name__ == "__main__":
    out = main()
    print(json.dumps({k: v for k, v in out.items() if k != "machine"}, indent=2, default=float))
