"""B's own defences (issue 12): each malformed-but-parseable request a deviating A could send is
refused, counted and logged; honest queries and enrolments still run through the guard."""

from __future__ import annotations

import hashlib
import json
import random
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from pura.audit_log import AuditLog
from pura.crypto.encoding import l2_normalize, quantize
from pura.crypto.paillier import KeyShare, PublicKey, RandomnessPool, combine
from pura.crypto.seal import SealPrivateKey
from pura.errors import HelperRefusedError
from pura.protocols.candidates import LabelOpenRequest
from pura.protocols.enroll import encrypt_query, encrypt_template
from pura.protocols.helper_guard import HelperGuard, Quotas
from pura.protocols.identify import (
    STEP_BLINDED_PRODUCT,
    STEP_NORM_CHECK,
    STEP_THRESHOLD,
    BytesChannel,
    ExactConfig,
    ServerA,
    ServerB,
)
from pura.protocols.messages import AdmittedTemplate, NormCheckRequest, ThresholdRequest
from pura.protocols.norms import start_norm_check
from pura.protocols.preselect import PreselectRequest, PreselectResponse
from pura.protocols.relayout import RelayoutRequest
from pura.protocols.sealed import SealedLayout
from pura.protocols.sealed_query import seal_query, start_sealed_query
from pura.protocols.secure_min import helper_threshold
from pura.protocols.steps import Step
from pura.protocols.tickets import TICKET_STEP, TicketKind, seal, unseal

Keys = tuple[PublicKey, KeyShare, KeyShare]
DIM, S = 16, 11
Tamper = Callable[[str, bytes], bytes]


class Setup:
    """A (honest unless ``tamper`` rewrites a request) → guarded B, in one process."""

    def __init__(self, keys: Keys, tmp: Path, **quotas: int) -> None:
        pk, s1, s2 = keys
        self.key, self.s1 = pk, s1
        config = ExactConfig.for_key(pk, DIM, S)
        self.seal = SealPrivateKey.generate()
        self.b = ServerB(s2, config, RandomnessPool(pk, rng=random.Random(2)), seal=self.seal)
        self.log = AuditLog(tmp / "b-requests.log")
        steps = {**self.b.handlers(), Step.PRESELECT: self._no_preselect,
                 Step.OPEN_LABEL: lambda p: b"opened", Step.RELAYOUT: lambda p: b"lifted"}
        self.guard = HelperGuard(steps, pk, Quotas(view_k=quotas.pop("view_k", 8), **quotas),
                                 self.log, ckks_slots=4096, rng=random.Random(3))
        self.handlers = self.guard.handlers()
        self.tamper: dict[str, Tamper] = {}
        self.sent: list[tuple[str, bytes]] = []
        self.channel = BytesChannel(pk, self.call, ticketed=True)
        self.a = ServerA(s1, config, self.channel, rng=random.Random(4))
        self.pool = RandomnessPool(pk, rng=random.Random(5))

    @staticmethod
    def _no_preselect(payload: bytes) -> bytes:
        request = PreselectRequest.from_bytes(payload)
        return PreselectResponse(request.request_id, tuple(range(request.k))).to_bytes()

    def call(self, step: str, payload: bytes) -> bytes:
        if step in self.tamper:
            payload = self.tamper[step](step, payload)
        self.sent.append((step, payload))
        return self.handlers[step](payload)

    def vector(self, seed: int) -> list[int]:
        rng = random.Random(seed)
        v = l2_normalize([rng.gauss(0.0, 1.0) for _ in range(DIM)], dim=DIM)
        return [int(c) for c in quantize(v, S)]

    def enrol(self, seeds: list[int]) -> list[AdmittedTemplate]:
        layout = self.a.config.template
        out = self.a.admit([encrypt_template(self.vector(s), layout, self.key, self.pool)
                            for s in seeds])
        assert all(isinstance(t, AdmittedTemplate) for t in out)
        return [t for t in out if isinstance(t, AdmittedTemplate)]

    def identify(self, seed: int, gallery: list[AdmittedTemplate], tau: int = 1 << 18) -> bool:
        query = encrypt_query(self.vector(seed), self.a.config.template, self.key, self.pool)
        labels = [(f"s{j}", t) for j, t in enumerate(gallery)]
        return self.a.match(query, labels, tau).matched


@pytest.fixture
def setup(paillier_fast_keys: Keys, tmp_path: Path) -> Setup:
    return Setup(paillier_fast_keys, tmp_path)


def _entries(log: AuditLog) -> list[dict[str, str]]:
    return [e for e in log.entries()]


def test_honest_queries_and_enrolment_pass_and_are_logged(setup: Setup) -> None:
    gallery = setup.enrol([1, 2, 3, 4])  # enough for two concurrent admission lanes
    assert setup.identify(2, gallery) is True  # its own vector: a match
    assert setup.identify(99, gallery, tau=0) is False
    assert setup.guard.refusals_total == 0
    assert setup.log.verify().intact
    entries = _entries(setup.log)
    assert len(entries) == len(setup.sent)  # one entry per request, tickets included
    # The two admission lanes run concurrently, so log order and send order may interleave
    # differently: match entries to requests as multisets of (step, digest).
    sent = sorted(
        (step, hashlib.sha256(payload if step == TICKET_STEP else unseal(payload)[1]).hexdigest())
        for step, payload in setup.sent)
    logged = []
    for entry in entries:
        assert entry["outcome"] == "ok"
        digest = next(d for _, d in sent if d in entry["detail"])
        logged.append((entry["action"], digest))
    assert sorted(logged) == sent
    line = setup.log.path.read_text()
    assert all(len(v) < 200 for e in map(json.loads, line.splitlines()) for v in e.values()
               if isinstance(v, str))  # sizes and digests only, never ciphertexts


def test_template_in_the_opened_choice_is_refused(setup: Setup) -> None:
    """The "three calls decrypt a stored template" oracle: A puts a stored template ciphertext
    in both choices of the threshold round. Today's B opens it; now B refuses."""
    gallery = setup.enrol([1, 2])
    stored = gallery[0].packed[0]

    def swap(_step: str, sealed: bytes) -> bytes:
        ticket, body = unseal(sealed)
        req = ThresholdRequest.from_bytes(setup.key, body)
        pd = setup.s1.partial_decrypt(stored)
        evil = replace(req, choices=(stored, stored), choice_partials=(pd, pd))
        return seal(ticket, evil.to_bytes())

    setup.tamper[STEP_THRESHOLD] = swap
    with pytest.raises(HelperRefusedError, match="outside"):
        setup.identify(1, gallery)
    assert setup.guard.refusals[STEP_THRESHOLD] == 1
    assert setup.log.entries()[-1]["outcome"].startswith("refused")


def test_threshold_range_check_without_a_guard(paillier_fast_keys: Keys) -> None:
    """Even an unguarded B (protocol tests) refuses to open anything ≥ k."""
    pk, s1, s2 = paillier_fast_keys
    config = ExactConfig.for_key(pk, DIM, S)
    pool = RandomnessPool(pk, rng=random.Random(0))
    from pura.protocols.secure_min import start_threshold

    _, req = start_threshold(pk.encrypt(5, pool), pk.encrypt(1, pool), 10, config.compare, s1,
                             pool, random.Random(1), k=4)
    secret = pk.encrypt(123456, pool)
    pd = s1.partial_decrypt(secret)
    evil = replace(req, choices=(secret, secret), choice_partials=(pd, pd))
    with pytest.raises(HelperRefusedError):
        helper_threshold(evil, config.compare, s2)
    with pytest.raises(HelperRefusedError):  # a k other than B's own
        helper_threshold(req, config.compare, s2, k=3)
    reply = helper_threshold(req, config.compare, s2, k=4)
    assert 0 <= combine(s1.partial_decrypt(req.choices[reply.bit]), reply.partial) < 4


def test_second_opening_for_one_query_is_refused(setup: Setup) -> None:
    gallery = setup.enrol([1, 2])
    assert setup.identify(1, gallery) is True
    step, sealed = next((s, p) for s, p in setup.sent if s == STEP_THRESHOLD)
    with pytest.raises(HelperRefusedError, match="second"):
        setup.handlers[step](sealed)  # replay under the same ticket
    assert setup.guard.refusals[STEP_THRESHOLD] == 1


def test_a_query_vector_is_admitted_once_sealed_or_packed(setup: Setup) -> None:
    """A query ticket admits one vector: the sealed admission once, never beside the packed
    one, and never under an enrolment ticket."""
    gallery = setup.enrol([1, 2])
    layout = setup.a.config.template
    sealed = seal_query(setup.vector(2), layout, setup.key, setup.seal.public, random.Random(1))
    labels = [(f"s{j}", t) for j, t in enumerate(gallery)]
    assert setup.a.match(sealed, labels, 1 << 18).matched  # honest: passes the guard
    replay = next(p for s, p in setup.sent if s == Step.SEALED_QUERY)
    with pytest.raises(HelperRefusedError, match="second"):
        setup.handlers[Step.SEALED_QUERY](replay)
    _, request = start_sealed_query(sealed, SealedLayout.for_norms(setup.a.config.norms, setup.key))
    packed = encrypt_query(setup.vector(3), layout, setup.key, setup.pool)
    first = setup.a.session(TicketKind.QUERY)
    first.sealed_query(request)
    with pytest.raises(HelperRefusedError, match="admitted once"):
        setup.a.check_query(packed, first)
    second = setup.a.session(TicketKind.QUERY)
    setup.a.check_query(packed, second)
    with pytest.raises(HelperRefusedError, match="admitted once"):
        second.sealed_query(request)
    with pytest.raises(HelperRefusedError):
        setup.a.session(TicketKind.ENROL).sealed_query(request)
    assert setup.guard.refusals[Step.SEALED_QUERY] == 3


def test_norm_check_with_extra_comparisons_is_refused(setup: Setup) -> None:
    """A norm check may carry exactly two comparisons per admitted vector (today: up to 8,192
    A-chosen comparisons per call)."""
    gallery = setup.enrol([1, 2])

    def more(_step: str, sealed: bytes) -> bytes:
        ticket, body = unseal(sealed)
        if NormCheckRequest.from_bytes(setup.key, body).n_comparisons != 2:
            return sealed
        norms = [gallery[0].norm, gallery[1].norm]  # stored templates' norms, A's choice
        _, evil = start_norm_check(norms, setup.a.config.norms, setup.s1, setup.pool)
        return seal(ticket, evil.to_bytes())

    setup.tamper[STEP_NORM_CHECK] = more
    with pytest.raises(HelperRefusedError, match="exactly 2 per"):
        setup.identify(1, gallery)
    assert setup.guard.refusals[STEP_NORM_CHECK] == 1


def test_preselect_k_other_than_view_k_is_refused(setup: Setup) -> None:
    handler = setup.handlers[Step.PRESELECT]
    query = setup.channel.open_session(TicketKind.QUERY)
    blobs = (b"x" * 16, b"y" * 16)
    for k in (7, 9, 2 * 4096):
        with pytest.raises(HelperRefusedError, match="view_k"):
            handler(seal(query.ticket, PreselectRequest(b"r" * 16, b"k" * 8, k, blobs)
                         .to_bytes()))
    fresh = setup.channel.open_session(TicketKind.QUERY)
    ok = handler(seal(fresh.ticket, PreselectRequest(b"r" * 16, b"k" * 8, 8, blobs).to_bytes()))
    assert len(PreselectResponse.from_bytes(ok).positions) == 8
    with pytest.raises(HelperRefusedError, match="second"):
        handler(seal(fresh.ticket, PreselectRequest(b"r" * 16, b"k" * 8, 8, blobs).to_bytes()))
    assert setup.guard.refusals[Step.PRESELECT] == 4


def test_b_bounds_the_preselections_of_one_layout_epoch(paillier_fast_keys: Keys,
                                                        tmp_path: Path) -> None:
    """Issue 12: with ``epoch_queries`` B ranks a block at most that many times between two
    re-layouts of it, whatever A sends; a re-layout of another block does not reset it."""
    setup = Setup(paillier_fast_keys, tmp_path, epoch_queries=2)
    handler = setup.handlers[Step.PRESELECT]
    blobs = (b"x" * 16,)

    def preselect(block: int) -> bytes:
        ticket = setup.channel.open_session(TicketKind.QUERY).ticket
        request = PreselectRequest(b"r" * 16, b"k" * 8, 8, blobs, "ns", (block,), (0,))
        return handler(seal(ticket, request.to_bytes()))

    def relayout(block: int) -> None:
        request = RelayoutRequest(b"q" * 16, b"k" * 16, (b"row",), "ns", block)
        assert setup.handlers[Step.RELAYOUT](request.to_bytes()) == b"lifted"

    preselect(0)
    preselect(0)
    with pytest.raises(HelperRefusedError, match="re-lay it out"):
        preselect(0)
    preselect(1)  # another block has its own count
    relayout(1)
    with pytest.raises(HelperRefusedError, match="re-lay it out"):
        preselect(0)
    relayout(0)
    preselect(0)
    assert setup.guard.refusals[Step.PRESELECT] == 2


def test_out_of_sequence_and_unticketed_requests_are_refused(setup: Setup) -> None:
    gallery = setup.enrol([1, 2])
    assert setup.identify(1, gallery) is True
    bp = next(p for s, p in setup.sent if s == STEP_BLINDED_PRODUCT)
    _, body = unseal(bp)
    with pytest.raises(HelperRefusedError, match="no query ticket"):
        setup.handlers[STEP_BLINDED_PRODUCT](body)
    fresh = setup.channel.open_session(TicketKind.QUERY)
    with pytest.raises(HelperRefusedError, match="before the query's norm check"):
        setup.handlers[STEP_BLINDED_PRODUCT](seal(fresh.ticket, body))
    enrol = setup.channel.open_session(TicketKind.ENROL)
    with pytest.raises(HelperRefusedError, match="not part of a enrol"):
        setup.handlers[STEP_BLINDED_PRODUCT](seal(enrol.ticket, body))
    assert setup.guard.refusals[STEP_BLINDED_PRODUCT] == 3
    assert setup.log.verify().intact


def test_ticket_rate_is_bounded(paillier_fast_keys: Keys, tmp_path: Path) -> None:
    setup = Setup(paillier_fast_keys, tmp_path, tickets_per_minute=2)
    now = [100.0]
    setup.guard._clock = lambda: now[0]
    setup.channel.open_session(TicketKind.QUERY)
    setup.channel.open_session(TicketKind.QUERY)
    with pytest.raises(HelperRefusedError, match="rate"):
        setup.channel.open_session(TicketKind.QUERY)
    now[0] += 61.0
    setup.channel.open_session(TicketKind.QUERY)
    assert setup.guard.refusals[TICKET_STEP] == 1


def test_log_survives_restart_and_detects_tampering(setup: Setup) -> None:
    setup.channel.open_session(TicketKind.QUERY)
    setup.channel.open_session(TicketKind.ENROL)
    again = AuditLog(setup.log.path)  # B restarts: the chain is re-verified and continued
    assert len(again) == 2 and again.verify().intact
    lines = setup.log.path.read_text().splitlines()
    first = json.loads(lines[0])
    first["target"] = "00" * 16
    setup.log.path.write_text("\n".join([json.dumps(first), *lines[1:]]) + "\n")
    assert not setup.log.verify().intact


def test_every_step_refuses_a_request_without_a_ticket(setup: Setup) -> None:
    """Every step B serves, bar the ticket itself, refuses a request without an envelope."""
    upkeep = (TICKET_STEP, Step.RELAYOUT)  # gallery upkeep is logged, not ticketed
    for step, handler in setup.handlers.items():
        if step in upkeep:
            continue
        with pytest.raises(HelperRefusedError):
            handler(b"PM" + bytes(40))
    assert np.all([setup.guard.refusals[s] == 1 for s in setup.handlers if s not in upkeep])


def test_label_opening_needs_this_querys_threshold(setup: Setup) -> None:
    """One label per query, only for the candidates served to it, only after its threshold."""
    opener = setup.handlers[Step.OPEN_LABEL]
    query = setup.channel.open_session(TicketKind.QUERY)
    pre = PreselectRequest(b"r" * 16, b"k" * 8, 8, (b"x" * 16, b"y" * 16))
    setup.handlers[Step.PRESELECT](seal(query.ticket, pre.to_bytes()))
    with pytest.raises(HelperRefusedError, match="before this query's threshold"):
        opener(seal(query.ticket, LabelOpenRequest(b"r" * 16, 0).to_bytes()))
    gallery = setup.enrol([1, 2])
    sealed_threshold: list[bytes] = []

    def keep(_step: str, sealed: bytes) -> bytes:
        sealed_threshold.append(sealed)
        return sealed

    setup.tamper[STEP_THRESHOLD] = keep
    assert setup.identify(1, gallery) is True  # its ticket has a threshold, but no preselection
    ticket = unseal(sealed_threshold[0])[0]
    with pytest.raises(HelperRefusedError, match="before this query's threshold"):
        opener(seal(ticket, LabelOpenRequest(b"r" * 16, 0).to_bytes()))
    assert setup.guard.refusals[Step.OPEN_LABEL] == 2


def test_b_floods_its_decryptions_before_ranking() -> None:
    """What B ranks is its decryption plus fresh N(0, FLOOD_SIGMA²) noise (today: the exact
    decryption), and B refuses a preselection k other than its own view_k."""
    from pura.crypto.ckks import CKKSContext
    from pura.crypto.params import CKKS_8192
    from pura.gallery.packing import BlockLayout, encrypt_block
    from pura.protocols.preselect import (
        FLOOD_SIGMA,
        PreselectServer,
        answer_preselect,
        decrypt_view,
    )

    secret = CKKSContext.generate(CKKS_8192)
    public = secret.public()
    gen = np.random.default_rng(7)
    heads = gen.normal(size=(public.slot_count, 4))
    heads /= np.linalg.norm(heads, axis=1, keepdims=True)
    block = encrypt_block(public, 0, heads)
    block.live = {s: s for s in range(50)}
    layout = BlockLayout(public, 4, lambda n: np.zeros((n, 4)), [block])
    server = PreselectServer(public, layout, random.Random(1))
    query = [public.ciphertext_to_bytes(public.encrypt_query(heads[3]))]
    request, _ = server.request(query, 8)
    exact = decrypt_view(secret, request, sigma=0.0)
    noisy = decrypt_view(secret, request, rng=random.Random(1))
    again = decrypt_view(secret, request, rng=random.Random(2))
    assert 0.95 < float(np.std(noisy - exact)) / FLOOD_SIGMA < 1.05
    assert not np.array_equal(noisy, again)
    assert np.array_equal(noisy, decrypt_view(secret, request, rng=random.Random(1)))  # injectable
    with pytest.raises(HelperRefusedError, match="view_k"):
        answer_preselect(secret, request, view_k=9)
    assert len(answer_preselect(secret, request, view_k=8).positions) == 8
