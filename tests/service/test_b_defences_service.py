"""Server B as deployed (:class:`pura.service.nodes.NodeB`) refuses what no honest A sends, counts
the refusals and keeps a durable, hash-chained log of every request in its data directory
(issue 12). A is the product's :class:`ServerA` over B's own handlers, deviating at one step."""

from __future__ import annotations

import random
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from pura.audit_log import AuditLog
from pura.crypto.encoding import l2_normalize, quantize
from pura.crypto.paillier import RandomnessPool
from pura.crypto.params import DLIB_FAST_PARAMETERS
from pura.errors import HelperRefusedError
from pura.gallery.copies import CopyStore
from pura.keys import generate_key_set, load_a_keys, load_b_keys
from pura.pipeline.config import SearchConfig
from pura.protocols.enroll import encrypt_query, encrypt_template
from pura.protocols.identify import BytesChannel, ExactConfig, ServerA
from pura.protocols.messages import AdmittedTemplate, ThresholdRequest
from pura.protocols.preselect import PreselectRequest
from pura.protocols.steps import Step
from pura.protocols.tickets import TicketKind, seal, unseal
from pura.service.nodes import NodeB, loopback


class Deviating:
    """A's wire to B that rewrites one step's request (everything else honest)."""

    def __init__(self, node_b: NodeB) -> None:
        self.call = loopback(node_b)
        self.rewrite: dict[str, object] = {}

    def __call__(self, step: str, payload: bytes) -> bytes:
        fn = self.rewrite.get(step)
        return self.call(step, fn(payload) if callable(fn) else payload)


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> tuple[NodeB, ServerA, Deviating, Path]:
    root: Path = tmp_path_factory.mktemp("bdef")
    generate_key_set(root / "k", DLIB_FAST_PARAMETERS)
    data_b = root / "b"
    node_b = NodeB(load_b_keys(root / "k" / "b"), CopyStore(data_b / "copies.db"),
                   search=SearchConfig(top_k=3, view_k=16))
    a_keys = load_a_keys(root / "k" / "a")
    enc = a_keys.public.parameters.encoding
    wire = Deviating(node_b)
    exact = ExactConfig.for_key(a_keys.public.paillier, enc.dim, enc.scale_bits)
    server_a = ServerA(a_keys.share, exact, BytesChannel(a_keys.public.paillier, wire,
                                                          ticketed=True),
                       rng=random.Random(1))
    return node_b, server_a, wire, data_b


def _vector(seed: int, dim: int, scale: int) -> list[int]:
    rng = np.random.default_rng(seed)
    return [int(c) for c in quantize(l2_normalize(rng.normal(size=dim), dim=dim), scale)]


def test_deployed_b_refuses_an_opening_of_a_stored_template(
    world: tuple[NodeB, ServerA, Deviating, Path],
) -> None:
    node_b, a, wire, data_b = world
    layout = a.config.template
    pool = RandomnessPool(a.key, rng=random.Random(2))
    ys = [_vector(s, layout.dim, layout.scale_bits) for s in (1, 2, 3)]
    gallery = [t for t in a.admit([encrypt_template(y, layout, a.key, pool) for y in ys])
               if isinstance(t, AdmittedTemplate)]
    assert len(gallery) == 3
    query = encrypt_query(ys[1], layout, a.key, pool)
    cands = [(f"s{j}", t) for j, t in enumerate(gallery)]
    assert a.match(query, cands, 1 << 18).label == "s1"  # honest: works through the guard
    assert node_b.guard.refusals_total == 0

    stored = gallery[0].packed[0]

    def template_in_both_choices(sealed: bytes) -> bytes:
        ticket, body = unseal(sealed)
        req = ThresholdRequest.from_bytes(a.key, body)
        pd = a.share.partial_decrypt(stored)
        return seal(ticket, replace(req, choices=(stored, stored), choice_partials=(pd, pd))
                    .to_bytes())

    wire.rewrite[Step.THRESHOLD] = template_in_both_choices
    with pytest.raises(HelperRefusedError):
        a.match(encrypt_query(ys[2], layout, a.key, pool), cands, 1 << 18)
    wire.rewrite.clear()
    assert node_b.guard.refusals[Step.THRESHOLD] == 1

    log_path = data_b / "b-requests.log"
    reopened = AuditLog(log_path)  # what a restarted B (or an auditor) reads back
    assert reopened.verify().intact
    entries = reopened.entries()
    assert entries[-1]["action"] == Step.THRESHOLD
    assert entries[-1]["outcome"].startswith("refused")
    assert {e["action"] for e in entries} >= {Step.TICKET, Step.NORM_SQUARE, Step.NORM_CHECK,
                                             Step.BLINDED_PRODUCT, Step.ARGMIN}


def test_deployed_b_ranks_its_own_view_k(world: tuple[NodeB, ServerA, Deviating, Path]) -> None:
    node_b, a, wire, _ = world
    session = a.session(TicketKind.QUERY)
    assert isinstance(session, BytesChannel)
    before = node_b.guard.refusals[Step.PRESELECT]
    for k in (1, 17, 4096):  # B's view_k is 16: any other k is refused before decrypting
        request = PreselectRequest(b"q" * 16, node_b.keys.ckks_secret.key_id, k,
                                   (b"\x00" * 32,), "ns", (0,), (0,), 3)
        with pytest.raises(HelperRefusedError, match="view_k"):
            wire(Step.PRESELECT, seal(session.ticket, request.to_bytes()))
    assert node_b.guard.refusals[Step.PRESELECT] == before + 3
