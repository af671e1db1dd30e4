"""Online phase of the share-based exact stage (issue 16): no public-key operation at all.

Two parties A and B hold additive shares modulo ``M = 2^128`` of the admitted query ``u`` and of
the k candidates ``y_j`` (with the servers' squared norms ``n_j``), in A's fresh secret order of
the candidates, plus the per-query correlated randomness of :class:`CorrelationsA` /
:class:`CorrelationsB` (made offline, :mod:`bench.online_exact_offline`). Three round trips::

    A → B  e^A = u^A − a^A, f_j^A = y_j^A − b_j^A               (inner-product triple openings)
    B → A  e^B, f_j^B; μ_ab = E_ab^B − u_ab (15 pairs); μ'_j = E'_j^B − u'_j (k)
    A → B  ω_ab = r1_ab·(E_ab^A + μ_ab) + t_ab^A + r2_ab      → B: w_ab = ω_ab + t_ab^B
    B → A  s = j* − c mod k                                    (derandomised 1-of-k random OT)
    A → B  P_j = ρ'·(E'_j^A + μ'_j) + t'_j^A + r2' + M_{(j−s) mod k}   → B: only w' of j*
    B → A  β = [w' > 0], g − v, h + t_π^B                      → A: decision β ⊕ π, index

with ``E_ab = 2(D_a − D_b) − 1`` (a < b; ``E > 0`` ⇔ b is nearer; ties go to the lower
position, as ``secure_min.helper_argmin``) and ``E'_j = 2(τ − D_j) + 1`` (``> 0`` ⇔ match).

Why B sees exactly what it sees today. Every ``w_ab`` B reconstructs is ``r1·E + r2`` with
``r1 ∈ [2^κ, 2^(κ+1))``, ``r2 ∈ [0, r1)`` and no flip bit, over A's fresh shuffle: the same
values, with the same distribution, as in today's one-round argmin. ``w'`` is today's flipped
threshold value ``r1'·(−1)^π·E' + r2'``. Everything else B receives is uniform in ``Z_M``: the
openings (one-time masks ``a``, ``b`` of the triples), the padded ``P_j`` for ``j ≠ j*`` (masks
``M_j`` B does not hold). A receives uniform values (``e^B``, ``f^B``, ``μ``, ``μ'``, ``s``),
β (uniform, independent of the decision because π is), and the index only on a match: the
value it opens is ``(j*+1)·(β ⊕ π)``. The arithmetic is exact: ``|w| < 2^77 ≪ 2^127``.

Numbers: ``Z_M`` elements are Python ints in numpy object arrays (numpy has no 128-bit integer);
all per-element work is vectorised array arithmetic. :func:`deal` is a reference dealer (the
ideal functionality of the offline phase) for tests and for the LFW sweep's many probes; the
benchmarked offline phase is the dealer-free threshold-Paillier one.
"""

from __future__ import annotations

import random
import secrets
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import numpy.typing as npt

from pura.crypto.params import STATISTICAL_SECURITY_BITS
from pura.errors import ProtocolError

RING_BITS = 128
MOD = 1 << RING_BITS
_ELEMENT_BYTES = RING_BITS // 8

ObjArray = npt.NDArray[np.object_]


def ring(values: Any) -> ObjArray:
    """An object array of Python ints reduced into ``[0, M)``."""
    arr = np.array(values, dtype=object)
    return arr % MOD  # type: ignore[no-any-return]


def signed(value: int) -> int:
    """Representative of ``value mod M`` in ``[−M/2, M/2)``."""
    v = int(value) % MOD
    return v - MOD if v >= MOD >> 1 else v


def signed_array(values: ObjArray) -> ObjArray:
    """Element-wise :func:`signed` (openings are small integers; small ints multiply faster)."""
    v = values % MOD
    return np.where(v >= MOD >> 1, v - MOD, v)  # type: ignore[no-any-return]


def pairs(k: int) -> list[tuple[int, int]]:
    """All ``(a, b)``, ``a < b``, in the order both parties use."""
    return [(a, b) for a in range(k) for b in range(a + 1, k)]


# --------------------------------------------------------------------------------------------
# wire format: fixed 16-byte little-endian ring elements, one small header
# --------------------------------------------------------------------------------------------


def encode(*groups: Any) -> bytes:
    """Concatenate groups of ring elements (each flattened) as 16-byte words, with counts."""
    flat = [np.asarray(g, dtype=object).ravel() for g in groups]
    head = len(flat).to_bytes(2, "little") + b"".join(len(g).to_bytes(4, "little") for g in flat)
    body = b"".join(int(v % MOD).to_bytes(_ELEMENT_BYTES, "little") for g in flat for v in g)
    return head + body


def decode(data: bytes, shapes: Sequence[tuple[int, ...]]) -> list[ObjArray]:
    """Inverse of :func:`encode`; refuses any message whose group sizes differ from ``shapes``."""
    n = int.from_bytes(data[:2], "little")
    if n != len(shapes):
        raise ProtocolError(f"message has {n} groups, expected {len(shapes)}")
    counts = [int.from_bytes(data[2 + 4 * i:6 + 4 * i], "little") for i in range(n)]
    want = [int(np.prod(s)) if s else 1 for s in shapes]
    if counts != want or len(data) != 2 + 4 * n + _ELEMENT_BYTES * sum(counts):
        raise ProtocolError(f"message groups {counts} do not match the expected {want}")
    pos, out = 2 + 4 * n, []
    for count, shape in zip(counts, shapes, strict=True):
        vals = [int.from_bytes(data[pos + _ELEMENT_BYTES * i:pos + _ELEMENT_BYTES * (i + 1)],
                               "little") for i in range(count)]
        out.append(np.array(vals, dtype=object).reshape(shape) if shape else
                   np.array(vals[0], dtype=object))
        pos += _ELEMENT_BYTES * count
    return out


# --------------------------------------------------------------------------------------------
# channel: serialises every message, counts bytes and rounds, and each party's CPU time
# --------------------------------------------------------------------------------------------


@dataclass
class WireStats:
    """Bytes each way, A→B→A round trips, and each party's CPU seconds (thread time)."""

    bytes_a_to_b: int = 0
    bytes_b_to_a: int = 0
    round_trips: int = 0
    cpu_a: float = 0.0
    cpu_b: float = 0.0

    @property
    def total_bytes(self) -> int:
        return self.bytes_a_to_b + self.bytes_b_to_a


@dataclass
class Loopback:
    """Two parties in one process: A's steps and B's handlers exchange only ``bytes``."""

    stats: WireStats = field(default_factory=WireStats)

    def run_a(self, step: Callable[[], Any]) -> Any:
        """Run a step of A's and charge its CPU time to A."""
        t0 = time.thread_time()
        try:
            return step()
        finally:
            self.stats.cpu_a += time.thread_time() - t0

    def ask_b(self, handler: Callable[[bytes], bytes], payload: bytes) -> bytes:
        """One A → B → A round trip through ``bytes``; B's handler CPU is charged to B."""
        t0 = time.thread_time()
        reply = handler(bytes(payload))
        self.stats.cpu_b += time.thread_time() - t0
        self.stats.round_trips += 1
        self.stats.bytes_a_to_b += len(payload)
        self.stats.bytes_b_to_a += len(reply)
        return bytes(reply)


# --------------------------------------------------------------------------------------------
# correlated randomness (one query's worth)
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Shape:
    """What both parties agree on: candidates, dimension, scale, statistical parameter."""

    k: int
    dim: int
    scale_bits: int = 11
    kappa: int = STATISTICAL_SECURITY_BITS

    @property
    def n_pairs(self) -> int:
        return self.k * (self.k - 1) // 2

    @property
    def triple_bits(self) -> int:
        """Each party's share of a triple mask ``a``, ``b`` is uniform below ``2^triple_bits``:
        an opening ``u − a`` (A knows ``a^A``) hides ``u`` behind ``a^B`` to ``2^-κ`` per
        coordinate, as today's ``s + 1 + κ``-bit slot masks do."""
        return self.scale_bits + 1 + self.kappa


@dataclass(frozen=True)
class CorrelationsA:
    """A's half of one query's correlations. Secret; never leaves A."""

    a: ObjArray          # (d,)   triple mask of the query
    b: ObjArray          # (k, d) triple masks of the candidates
    c: ObjArray          # (k,)   share of ⟨a, b_j⟩
    c0: int              # share of ⟨a, a⟩
    r1: ObjArray         # (pairs,) multiplicative blinds, [2^κ, 2^(κ+1))
    r2: ObjArray         # (pairs,) additive blinds, [0, r1)
    t: ObjArray          # (pairs,) OLE shares: t^A + t^B = r1·u
    rho: int             # threshold scalar r1'·(−1)^π mod M
    thr_r2: int          # additive blind of the threshold value
    thr_t: ObjArray      # (k,) OLE shares: t'^A + t'^B = ρ·u'_j
    pi: int              # threshold flip bit
    idx_t: int           # OLE share: t^A + t^B = π·v
    ot_masks: ObjArray   # (k,) M_0..M_{k-1}; B holds M_c only

    def __repr__(self) -> str:
        return f"CorrelationsA(k={len(self.c)}, <secret>)"


@dataclass(frozen=True)
class CorrelationsB:
    """B's half of one query's correlations. Secret; never leaves B."""

    a: ObjArray
    b: ObjArray
    c: ObjArray
    c0: int
    u: ObjArray          # (pairs,) OLE inputs (uniform in Z_M)
    t: ObjArray          # (pairs,)
    thr_u: ObjArray      # (k,)
    thr_t: ObjArray      # (k,)
    idx_u: int           # OLE input v of the index opening
    idx_t: int
    ot_choice: int       # c, uniform in [0, k)
    ot_key: int          # M_c

    def __repr__(self) -> str:
        return f"CorrelationsB(k={len(self.c)}, <secret>)"


@dataclass(frozen=True)
class Blinds:
    """A's comparison scalars (drawn offline; shared by :func:`deal` and the Paillier phase)."""

    r1: list[int]
    r2: list[int]
    thr_r1: int
    thr_r2: int
    pi: int

    def __repr__(self) -> str:
        return f"Blinds(pairs={len(self.r1)}, <secret>)"

    @classmethod
    def draw(cls, shape: Shape, rng: random.Random) -> Blinds:
        """Same ranges as ``CompareLayout.blinds`` in today's protocol: ``r1 ∈ [2^κ, 2^(κ+1))``,
        ``r2 ∈ [0, r1)``, a uniform flip for the threshold (none for the argmin pairs)."""
        r1 = [(1 << shape.kappa) + rng.getrandbits(shape.kappa) for _ in range(shape.n_pairs)]
        r2 = [rng.randrange(v) for v in r1]
        thr_r1 = (1 << shape.kappa) + rng.getrandbits(shape.kappa)
        return cls(r1, r2, thr_r1, rng.randrange(thr_r1), rng.getrandbits(1))

    @property
    def rho(self) -> int:
        return (-self.thr_r1 if self.pi else self.thr_r1) % MOD


def _uniform(rng: random.Random, count: int) -> ObjArray:
    return np.array([rng.getrandbits(RING_BITS) for _ in range(count)], dtype=object)


def _small(rng: random.Random, shape: tuple[int, ...], bits: int) -> ObjArray:
    n = int(np.prod(shape))
    return np.array([rng.getrandbits(bits) for _ in range(n)], dtype=object).reshape(shape)


def _split(value: ObjArray | int, rng: random.Random) -> tuple[ObjArray, ObjArray]:
    arr = np.asarray(value, dtype=object)
    mine = _uniform(rng, arr.size).reshape(arr.shape)
    return mine, (arr - mine) % MOD


def deal(shape: Shape, rng: random.Random | None = None) -> tuple[CorrelationsA, CorrelationsB]:
    """Reference dealer: the correlations the offline phase must produce, drawn directly.

    Not the product design (a dealer who sees both halves is a third trusted party); it is the
    ideal functionality the dealer-free Paillier phase implements, used by tests and by the
    long LFW sweep where running the offline phase per probe would take hours.
    """
    rng = rng if rng is not None else secrets.SystemRandom()
    k, d, bits = shape.k, shape.dim, shape.triple_bits
    a_a, a_b = _small(rng, (d,), bits), _small(rng, (d,), bits)
    b_a, b_b = _small(rng, (k, d), bits), _small(rng, (k, d), bits)
    a, b = a_a + a_b, b_a + b_b
    c_a, c_b = _split(b @ a, rng)
    c0_a, c0_b = _split(int(a @ a), rng)
    blinds = Blinds.draw(shape, rng)
    u = _uniform(rng, shape.n_pairs)
    t_a, t_b = _split(np.array(blinds.r1, dtype=object) * u, rng)
    thr_u = _uniform(rng, k)
    thr_a, thr_b = _split(blinds.rho * thr_u, rng)
    idx_u = rng.getrandbits(RING_BITS)
    idx_a, idx_b = _split(blinds.pi * idx_u, rng)
    masks, choice = _uniform(rng, k), rng.randrange(k)
    ca = CorrelationsA(a_a, b_a, c_a, int(c0_a), np.array(blinds.r1, dtype=object),
                       np.array(blinds.r2, dtype=object), t_a, blinds.rho, blinds.thr_r2,
                       thr_a, blinds.pi, int(idx_a), masks)
    cb = CorrelationsB(a_b, b_b, c_b, int(c0_b), u, t_b, thr_u, thr_b, idx_u, int(idx_b),
                       choice, int(masks[choice]))
    return ca, cb


# --------------------------------------------------------------------------------------------
# shares of the inputs
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class InputShares:
    """One party's shares of the query ``u`` (d,), the candidates ``y`` (k, d) and their
    squared norms ``n`` (k,), candidates in A's (secret, fresh) order."""

    u: ObjArray
    y: ObjArray
    n: ObjArray

    def __repr__(self) -> str:
        return f"InputShares(k={len(self.n)}, <secret>)"


def share_inputs(
    query: Sequence[int], candidates: Sequence[Sequence[int]], rng: random.Random
) -> tuple[InputShares, InputShares]:
    """Split plaintext integers into two share sets (tests and the dealer-mode LFW sweep)."""
    u = np.array([int(v) for v in query], dtype=object)
    y = np.array([[int(v) for v in row] for row in candidates], dtype=object)
    n = (y * y).sum(axis=1) if len(y) else np.zeros(0, dtype=object)
    ua, ub = _split(u, rng)
    ya, yb = _split(y, rng)
    na, nb = _split(n, rng)
    return InputShares(ua, ya, na), InputShares(ub, yb, nb)


# --------------------------------------------------------------------------------------------
# the online parties
# --------------------------------------------------------------------------------------------


def _distance_shares(
    inputs: InputShares, corr: CorrelationsA | CorrelationsB, e: ObjArray, f: ObjArray,
    *, leader: bool,
) -> ObjArray:
    """This party's shares of ``D_j = ⟨u,u⟩ + n_j − 2⟨u, y_j⟩`` from the opened ``e``, ``f``.

    ``⟨u, y_j⟩ = ⟨e,f_j⟩ + ⟨e,b_j⟩ + ⟨a,f_j⟩ + ⟨a,b_j⟩`` and ``⟨u,u⟩ = ⟨e,e⟩ + 2⟨e,a⟩ + ⟨a,a⟩``;
    the public terms go to the leader (A) only.
    """
    inner = corr.b @ e + f @ corr.a + corr.c
    norm_u = 2 * int(e @ corr.a) + corr.c0
    if leader:
        inner = inner + f @ e
        norm_u += int(e @ e)
    return (norm_u + inputs.n - 2 * inner) % MOD  # type: ignore[no-any-return]


def _pair_shares(dist: ObjArray, k: int, *, leader: bool) -> ObjArray:
    """Shares of ``E_ab = 2(D_a − D_b) − 1`` for every pair (the −1 is the leader's)."""
    ps = pairs(k)
    left = np.array([dist[a] for a, _ in ps], dtype=object)
    right = np.array([dist[b] for _, b in ps], dtype=object)
    return (2 * (left - right) - (1 if leader else 0)) % MOD  # type: ignore[no-any-return]


@dataclass(frozen=True)
class Outcome:
    """What A learns: the decision and, on a match only, the winner's position."""

    matched: bool
    index: int | None = None


class OnlineA:
    """A's side: holds its shares, its correlations and the threshold τ (integer units of D)."""

    def __init__(self, shape: Shape, inputs: InputShares, corr: CorrelationsA, tau: int) -> None:
        self.shape, self.inputs, self.corr, self.tau = shape, inputs, corr, int(tau)
        self._dist: ObjArray | None = None
        self._mu_thr: ObjArray | None = None

    def __repr__(self) -> str:
        return f"OnlineA(k={self.shape.k})"

    def open_triples(self) -> bytes:
        """Message 1: A's shares of the openings ``e = u − a`` and ``f_j = y_j − b_j``."""
        return encode(self.inputs.u - self.corr.a, self.inputs.y - self.corr.b)

    def blind_pairs(self, reply: bytes) -> bytes:
        """Message 3: ``ω_ab`` for every pair; B adds ``t^B`` and reads ``w_ab = r1·E + r2``."""
        k, d, n = self.shape.k, self.shape.dim, self.shape.n_pairs
        e_b, f_b, mu, mu_thr = decode(reply, [(d,), (k, d), (n,), (k,)])
        e = signed_array(self.inputs.u - self.corr.a + e_b)
        f = signed_array(self.inputs.y - self.corr.b + f_b)
        self._dist = _distance_shares(self.inputs, self.corr, e, f, leader=True)
        self._mu_thr = mu_thr
        big_e = _pair_shares(self._dist, k, leader=True)
        return encode(self.corr.r1 * (big_e + mu) + self.corr.t + self.corr.r2)

    def blind_threshold(self, reply: bytes) -> bytes:
        """Message 5: the k threshold values, each padded with ``M_{(j−s) mod k}``; B can
        unpad only the winner's (it holds ``M_c`` and ``s = j* − c``)."""
        if self._dist is None or self._mu_thr is None:
            raise ProtocolError("threshold step before the pair step")
        (s_arr,) = decode(reply, [()])
        s = int(s_arr) % MOD
        if not 0 <= s < self.shape.k:
            raise ProtocolError("rotation outside [0, k)")
        e_thr = (2 * self.tau + 1 - 2 * self._dist) % MOD
        value = self.corr.rho * (e_thr + self._mu_thr) + self.corr.thr_t + self.corr.thr_r2
        pads = np.array([self.corr.ot_masks[(j - s) % self.shape.k]
                         for j in range(self.shape.k)], dtype=object)
        return encode(value + pads)

    def finish(self, reply: bytes) -> Outcome:
        """Decision ``β ⊕ π``; the opened value is ``(j*+1)·(β ⊕ π)`` (0 on no match)."""
        beta_arr, g_masked, h_masked = decode(reply, [(), (), ()])
        beta = int(beta_arr)
        if beta not in (0, 1):
            raise ProtocolError("comparison bit is not a bit")
        opened = signed(int(h_masked) + self.corr.pi * int(g_masked) + self.corr.idx_t)
        matched = bool(beta ^ self.corr.pi)
        if not matched:
            if opened != 0:
                raise ProtocolError("a non-match opened a non-zero value")
            return Outcome(False)
        if not 1 <= opened <= self.shape.k:
            raise ProtocolError("opened index lies outside the candidate list")
        return Outcome(True, opened - 1)


class OnlineB:
    """B's side: stateless across queries; within one query it keeps its shares and ``j*``."""

    def __init__(self, shape: Shape, inputs: InputShares, corr: CorrelationsB) -> None:
        self.shape, self.inputs, self.corr = shape, inputs, corr
        self._dist: ObjArray | None = None
        self._winner: int | None = None

    def __repr__(self) -> str:
        return f"OnlineB(k={self.shape.k})"

    def handlers(self) -> tuple[Callable[[bytes], bytes], ...]:
        return self.open_triples, self.rank, self.decide

    def open_triples(self, message: bytes) -> bytes:
        """Reply 2: B's openings, and its masked shares of every pair and threshold input."""
        k, d = self.shape.k, self.shape.dim
        e_a, f_a = decode(message, [(d,), (k, d)])
        e_b, f_b = self.inputs.u - self.corr.a, self.inputs.y - self.corr.b
        e, f = signed_array(e_a + e_b), signed_array(f_a + f_b)
        self._dist = _distance_shares(self.inputs, self.corr, e, f, leader=False)
        mu = _pair_shares(self._dist, k, leader=False) - self.corr.u
        mu_thr = -2 * self._dist - self.corr.thr_u
        return encode(e_b, f_b, mu, mu_thr)

    def rank(self, message: bytes) -> bytes:
        """Reply 4: the one position that wins all its comparisons, as ``s = j* − c mod k``."""
        (omega,) = decode(message, [(self.shape.n_pairs,)])
        w = [signed(v) for v in (omega + self.corr.t) % MOD]
        beaten = [False] * self.shape.k
        for (a, b), value in zip(pairs(self.shape.k), w, strict=True):
            beaten[a if value > 0 else b] = True
        winners = [j for j, lost in enumerate(beaten) if not lost]
        if len(winners) != 1:
            raise ProtocolError(f"{len(winners)} undefeated positions (expected one)")
        self._winner = winners[0]
        return encode((self._winner - self.corr.ot_choice) % self.shape.k)

    def decide(self, message: bytes) -> bytes:
        """Reply 6: β in the clear (independent of the decision: π is uniform) and the OLE
        messages that open ``(j*+1)·(β ⊕ π)`` to A."""
        if self._winner is None:
            raise ProtocolError("threshold step before the ranking step")
        (padded,) = decode(message, [(self.shape.k,)])
        j = self._winner
        w = signed(int(padded[j]) - self.corr.ot_key + int(self.corr.thr_t[j]))
        beta = 1 if w > 0 else 0
        g = (j + 1) * (1 - 2 * beta)
        h = (j + 1) * beta
        return encode(beta, g - self.corr.idx_u, h + self.corr.idx_t)


def run_online(
    a: OnlineA, b: OnlineB, channel: Loopback | None = None
) -> tuple[Outcome, WireStats]:
    """The three round trips over a serialising loopback; returns A's outcome and the stats."""
    ch = channel if channel is not None else Loopback()
    open_triples, rank, decide = b.handlers()
    m1 = ch.run_a(a.open_triples)
    r2 = ch.ask_b(open_triples, m1)
    m3 = ch.run_a(lambda: a.blind_pairs(r2))
    r4 = ch.ask_b(rank, m3)
    m5 = ch.run_a(lambda: a.blind_threshold(r4))
    r6 = ch.ask_b(decide, m5)
    outcome = ch.run_a(lambda: a.finish(r6))
    return outcome, ch.stats


def plaintext_answer(query: Sequence[int], candidates: Sequence[Sequence[int]],
                     tau: int) -> Outcome:
    """The reference: nearest candidate (ties to the lower position) if within ``τ``."""
    u = np.array(query, dtype=np.int64)
    y = np.array(candidates, dtype=np.int64)
    dist = ((y - u) ** 2).sum(axis=1)
    best = int(np.argmin(dist))
    return Outcome(True, best) if int(dist[best]) <= tau else Outcome(False)


__all__ = [
    "MOD",
    "Blinds",
    "CorrelationsA",
    "CorrelationsB",
    "InputShares",
    "Loopback",
    "OnlineA",
    "OnlineB",
    "Outcome",
    "Shape",
    "WireStats",
    "deal",
    "decode",
    "encode",
    "pairs",
    "plaintext_answer",
    "ring",
    "run_online",
    "share_inputs",
    "signed",
]
