"""Regression: clients cannot forge squared norms (docs/security.md, "Exact distance").

Each attack is first shown to be real — the value an exact stage trusting client norms would
compute (``‖x‖²`` + ``‖y‖²`` − 2⟨x, y⟩ with the forged norm, decrypted here with both shares) is
within τ for a non-mate — and then shown to fail against the servers: the wire formats carry no
norm any more (bytes with one appended are refused), the servers' own norm is used (never
``matched=True`` for a non-mate), or the vector is rejected with :class:`EmbeddingRangeError`.
Honest mates still match.
"""

from __future__ import annotations

import random
from collections.abc import Sequence

import numpy as np
import pytest

from pura.crypto.encoding import l2_normalize, quantize
from pura.crypto.paillier import (
    Ciphertext,
    KeyShare,
    PublicKey,
    RandomnessPool,
    decrypt_with_shares,
)
from pura.errors import EmbeddingRangeError, ProtocolError
from pura.protocols import identify
from pura.protocols.enroll import encrypt_query, encrypt_template
from pura.protocols.identify import (
    BytesChannel,
    Candidate,
    ExactConfig,
    MatchResult,
    ServerA,
    ServerB,
    threshold_units,
)
from pura.protocols.messages import AdmittedTemplate, PaillierQuery, PaillierTemplate

Keys = tuple[PublicKey, KeyShare, KeyShare]
S = 11
DIM = 128
UNIT = 1 << (2 * S)
TAU = threshold_units(0.36, S)  # dlib's 0.6 Euclidean on unit vectors


class Servers:
    """A and B (loopback over the bytes encoding); A admits queries and templates itself."""

    def __init__(self, keys: Keys, seed: int, tau: int = TAU) -> None:
        pk, s1, s2 = keys
        self.keys = keys
        self.tau = tau
        config = ExactConfig.for_key(pk, DIM, S)
        b = ServerB(s2, config, RandomnessPool(pk, rng=random.Random(seed + 1)))
        self.a = ServerA(s1, config, BytesChannel.loopback(b), rng=random.Random(seed))
        self.client = RandomnessPool(pk, rng=random.Random(seed + 3))

    def enrol(self, uploads: Sequence[PaillierTemplate]) -> list[AdmittedTemplate]:
        out = self.a.admit(uploads)
        for r in out:
            if isinstance(r, EmbeddingRangeError):
                raise r
        return [r for r in out if isinstance(r, AdmittedTemplate)]

    def identify(self, query: PaillierQuery,
                 gallery: Sequence[tuple[str, Candidate]]) -> MatchResult:
        return self.a.match(query, gallery, self.tau)

    def query(self, x: Sequence[int]) -> PaillierQuery:
        return encrypt_query(list(x), self.a.config.template, self.keys[0], self.client)

    def template(self, y: Sequence[int]) -> PaillierTemplate:
        return encrypt_template(list(y), self.a.config.template, self.keys[0], self.client)

    def exact_stage_value(self, query_norm: Ciphertext, x: Sequence[int],
                          template_norm: Ciphertext, y: Sequence[int]) -> int:
        """What ``[D]`` decrypts to when uploaded norms are trusted (the old exact stage):
        ``norm_x + norm_y − 2⟨x, y⟩`` with ``x``, ``y`` the coordinates the ciphertexts hold."""
        _, s1, s2 = self.keys
        return (decrypt_with_shares(s1, s2, query_norm, signed=True)
                + decrypt_with_shares(s1, s2, template_norm, signed=True)
                - 2 * sum(a * b for a, b in zip(x, y, strict=True)))


def _q(v: np.ndarray) -> list[int]:
    return [int(c) for c in quantize(v, S)]


def _unit(rng: np.random.Generator) -> np.ndarray:
    return l2_normalize(rng.normal(size=DIM))


def _at_distance(x: np.ndarray, sq: float, rng: np.random.Generator) -> np.ndarray:
    """A unit vector y with ‖x − y‖² = sq (⟨x, y⟩ = 1 − sq/2)."""
    c = 1.0 - sq / 2.0
    z = rng.normal(size=DIM)
    z -= (z @ x) * x
    z /= np.linalg.norm(z)
    out: np.ndarray = c * x + np.sqrt(1.0 - c * c) * z
    return out


World = tuple["Servers", list[np.ndarray], list[list[int]], list[tuple[str, AdmittedTemplate]]]


@pytest.fixture(scope="module")
def world(paillier_fast_keys: Keys) -> World:
    rng = np.random.default_rng(2026)
    servers = Servers(paillier_fast_keys, seed=5)
    vecs = [_unit(rng) for _ in range(4)]
    ints = [_q(v) for v in vecs]
    stored = servers.enrol([servers.template(y) for y in ints])
    return servers, vecs, ints, [(f"s{i}", t) for i, t in enumerate(stored)]


def test_honest_mate_matches_and_stranger_does_not(world: World) -> None:
    servers, vecs, _, gallery = world
    rng = np.random.default_rng(1)
    mate = _at_distance(vecs[2], 0.1, rng)
    assert servers.identify(servers.query(_q(mate)), gallery) == MatchResult(True, "s2")
    stranger = _unit(rng)
    assert servers.identify(servers.query(_q(stranger)), gallery) == MatchResult(False)


def _with_norm(message: bytes, norm: Ciphertext) -> bytes:
    """The old wire format: the message followed by a one-item list holding a norm."""
    return message + (1).to_bytes(4, "big") + norm.raw_bytes()


def test_forged_query_norm_has_no_way_in(world: World) -> None:
    servers, _, ints, gallery = world
    pk = servers.keys[0]
    x = _q(_unit(np.random.default_rng(2)))
    query = servers.query(x)
    for shift in (2 * UNIT, 4 * UNIT):
        forged_norm = pk.encrypt(sum(v * v for v in x) - shift, servers.client)
        # the attack is real: trusting such a norm puts a stranger within τ of someone
        assert min(servers.exact_stage_value(forged_norm, x, t.norm, y)
                   for (_, t), y in zip(gallery, ints, strict=True)) <= TAU
        with pytest.raises(ProtocolError, match="trailing"):
            PaillierQuery.from_bytes(pk, _with_norm(query.to_bytes(), forged_norm))
    assert servers.identify(query, gallery) == MatchResult(False)


def test_wolf_template_with_forged_norm_matches_nobody(world: World) -> None:
    servers, vecs, _, gallery = world
    rng = np.random.default_rng(3)
    pk = servers.keys[0]
    y = _q(_unit(rng))
    upload = servers.template(y)
    wolf_norm = pk.encrypt(sum(v * v for v in y) - 3 * UNIT, servers.client)
    x = _q(_unit(rng))
    probe = servers.query(x)
    x_norm = pk.encrypt(sum(v * v for v in x), servers.client)
    # would match any probe if its norm were trusted
    assert servers.exact_stage_value(x_norm, x, wolf_norm, y) <= TAU
    with pytest.raises(ProtocolError, match="trailing"):
        PaillierTemplate.from_bytes(pk, _with_norm(upload.to_bytes(), wolf_norm))
    (wolf,) = servers.enrol([upload])  # admitted: its coordinates are a unit vector
    assert decrypt_with_shares(*servers.keys[1:], wolf.norm) == sum(v * v for v in y)
    with_wolf = [*gallery, ("WOLF", wolf)]
    assert servers.identify(probe, with_wolf) == MatchResult(False)
    mate = servers.query(_q(_at_distance(vecs[1], 0.1, rng)))
    assert servers.identify(mate, with_wolf) == MatchResult(True, "s1")


def test_scaled_down_query_is_rejected(world: World) -> None:
    """A short query (honest norm of a short vector) lowers D for moderately similar subjects:
    at ‖x − y‖² = 0.38 (no match) scaling x by ⟨x, y⟩ = 0.81 gives D ≈ 0.344·4^s < τ."""
    servers, vecs, ints, gallery = world
    rng = np.random.default_rng(4)
    x = _at_distance(vecs[3], 0.38, rng)
    assert servers.identify(servers.query(_q(x)), gallery) == MatchResult(False)
    xs = _q(0.81 * x)
    short = servers.query(xs)
    short_norm = servers.keys[0].encrypt(sum(v * v for v in xs), servers.client)
    assert servers.exact_stage_value(short_norm, xs, gallery[3][1].norm, ints[3]) <= TAU
    with pytest.raises(EmbeddingRangeError, match="squared norm lies outside"):
        servers.identify(short, gallery)
    # the shortest scaling the norm bound admits gains nothing near τ
    assert servers.identify(servers.query(_q(0.9975 * x)), gallery) == MatchResult(False)


def test_scaled_up_template_is_rejected(world: World) -> None:
    """A long template uploaded with a unit-looking norm matches moderately similar probes."""
    servers, _, _, gallery = world
    rng = np.random.default_rng(5)
    y = _unit(rng)
    ys = _q(1.25 * y)
    long = servers.template(ys)
    pk = servers.keys[0]
    unit_looking = pk.encrypt(UNIT, servers.client)
    x = _q(_at_distance(y, 0.6, rng))  # a non-mate (0.6 > 0.36)
    probe = servers.query(x)
    x_norm = pk.encrypt(sum(v * v for v in x), servers.client)
    assert servers.exact_stage_value(x_norm, x, unit_looking, ys) <= TAU
    with pytest.raises(EmbeddingRangeError, match=r"^template .*squared norm"):
        servers.enrol([long])
    # stored without admission (e.g. by an older enrolment path), it is refused when matched
    assert servers.identify(probe, [*gallery, ("LONG", long)]) == MatchResult(False)
    with pytest.raises(EmbeddingRangeError, match="templates \\[0\\]"):
        servers.a.prepare([long])


def test_admission_runs_in_batches_with_per_item_errors(world: World,
                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    servers, _, _, _ = world
    monkeypatch.setattr(identify, "ADMIT_BATCH", 2)
    channel = servers.a.channel
    assert isinstance(channel, BytesChannel)
    rng = np.random.default_rng(6)
    uploads = [servers.template(_q(_unit(rng))), servers.template(_q(1.05 * _unit(rng))),
               servers.template(_q(_unit(rng)))]
    before = channel.stats.rounds
    out = servers.a.admit(uploads)
    assert channel.stats.rounds - before == 4  # two batches, two rounds each
    assert [type(r) for r in out] == [AdmittedTemplate, EmbeddingRangeError, AdmittedTemplate]


# -- real LFW embeddings --------------------------------------------------------------------


@pytest.mark.lfw
def test_lfw_mates_match_and_forgeries_do_not(paillier_fast_keys: Keys,
                                              lfw_identification_set: object) -> None:
    """Real dlib descriptors through the shipped PCA and quantiser: two mated probes of
    distinct enrolled identities match (6 enrolled); a non-enrolled probe with a forged norm
    and a wolf made from a real face match nobody. τ at a 1:1 FMR of 1e-5 on gallery pairs."""
    from pura.crypto.encoding import load_shipped_pca

    s = lfw_identification_set
    pca = load_shipped_pca()
    gallery_all = pca.apply(s.gallery)  # type: ignore[attr-defined]
    iu = np.triu_indices(len(gallery_all), 1)
    impostor = ((gallery_all[:, None, :] - gallery_all[None, :, :]) ** 2).sum(-1)[iu]
    tau = threshold_units(float(np.quantile(impostor, 1e-5)), S)
    labels: tuple[str, ...] = s.gallery_labels  # type: ignore[attr-defined]
    probe_labels: tuple[str, ...] = s.probe_labels  # type: ignore[attr-defined]
    qg = quantize(gallery_all, S).astype(np.int64)
    qp = quantize(pca.apply(s.probes), S).astype(np.int64)  # type: ignore[attr-defined]
    best: dict[int, int] = {}  # gallery index -> first mated probe that matches it in plaintext
    for i in range(60):
        d = ((qg - qp[i]) ** 2).sum(axis=1)
        j = int(d.argmin())
        if d[j] <= tau and labels[j] == probe_labels[i]:
            best.setdefault(j, i)
    assert len(best) >= 2
    mated = sorted(best.items())[:2]
    enrolled = sorted({j for j, _ in mated} | {200, 201, 202, 203})
    servers = Servers(paillier_fast_keys, seed=40, tau=tau)
    stored = servers.enrol([servers.template(qg[j].tolist()) for j in enrolled])
    gallery = [(labels[j], t) for j, t in zip(enrolled, stored, strict=True)]
    for j, i in mated:
        assert servers.identify(servers.query(qp[i].tolist()), gallery) == \
            MatchResult(True, labels[j])
    x = quantize(pca.apply(s.non_enrolled)[0], S).tolist()  # type: ignore[attr-defined]
    stranger = servers.query(x)
    pk = servers.keys[0]
    forged_norm = pk.encrypt(sum(v * v for v in x) - 2 * UNIT, servers.client)
    assert min(servers.exact_stage_value(forged_norm, x, t.norm, qg[j].tolist())
               for j, (_, t) in zip(enrolled, gallery, strict=True)) <= tau
    assert servers.identify(stranger, gallery) == MatchResult(False)
    y = qg[100].tolist()
    wolf_norm = pk.encrypt(sum(v * v for v in y) - 3 * UNIT, servers.client)
    x_norm = pk.encrypt(sum(v * v for v in x), servers.client)
    assert servers.exact_stage_value(x_norm, x, wolf_norm, y) <= tau
    (wolf,) = servers.enrol([servers.template(y)])
    assert servers.identify(stranger, [*gallery, ("WOLF", wolf)]) == MatchResult(False)
