"""``pura-audit views``: the attacks compute the right thing on crafted records, and the
recording hooks write what the reader reads.

Fast: no servers, no LFW. Each attack is checked on a recording that leaks (the attack must
succeed) and on one that does not (the attack must fall to chance), so none of these tests
could pass with an attack that always answers the same.
"""

from __future__ import annotations

import dataclasses
import random
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
import pytest
from pura_client.audit import view_attacks as va
from pura_client.audit.recordings import Recording
from pura_client.audit.views import a_nearest_p_value, verdicts

from pura.pipeline.channel import Exchange
from pura.service.recording import EventLog, FileRecorder, instrument_a, record_b

# --- recording hooks --------------------------------------------------------------------------


def test_event_log_round_trip(tmp_path: Path) -> None:
    log = EventLog(tmp_path / "a")
    recorder = FileRecorder(log)
    q = recorder.begin_query()
    recorder.record(Exchange("ckks.preselect", b"\x01" * 10, b"reply-bytes", 0.5))
    recorder.end_query(q, "no-match")
    recorder.record(Exchange("ckks.refresh", b"req", b"", 0.1))
    log.close()
    rec = Recording(tmp_path / "a")
    assert rec.queries() == [0]
    [inside] = rec.by_query("exchange")[0]
    assert rec.blob(inside, "request") == b"\x01" * 10
    assert rec.blob(inside, "reply") == b"reply-bytes"
    outside = rec.exchanges("ckks.refresh")
    assert len(outside) == 1 and outside[0].get("query") is None


def test_record_b_wraps_every_handler(tmp_path: Path) -> None:
    def echo(payload: bytes) -> bytes:
        return payload[::-1]

    def refuse(payload: bytes) -> bytes:
        raise ValueError("refused")

    handlers, log = record_b({"x": echo, "y": refuse}, tmp_path)
    assert handlers["x"](b"abc") == b"cba"
    with pytest.raises(ValueError):
        handlers["y"](b"zz")
    log.close()
    rec = Recording(tmp_path / "b")
    x, y = rec.exchanges("x"), rec.exchanges("y")
    assert rec.blob(x[0], "reply") == b"cba"
    assert y[0].get("error") == "ValueError" and rec.blob(y[0], "request") == b"zz"


def test_instrument_a_records_fetches_and_preselection_state(tmp_path: Path) -> None:
    """The hooks pass values through unchanged and record what the pipeline read."""

    class Source:
        namespace = "ns"

        def candidates(self, ids: list[int]) -> list[tuple[str, Any]]:
            return [(f"s{i}", object()) for i in ids]

        def subject_of(self, template_id: int) -> str:
            return f"s{template_id}"

    class Preselect:
        def request(self, head: Any, k: int) -> tuple[str, Any]:
            return "request", SimpleNamespace()

    gallery = SimpleNamespace(preselect=Preselect())
    node = SimpleNamespace(helper=SimpleNamespace(recorder=None),
                           keys=SimpleNamespace(public=SimpleNamespace(key_id="k")),
                           enroller=SimpleNamespace(relayout=lambda block: np.array([2, 0, 1])))

    def identify(collection: str) -> str | None:
        assert list(node.enroller.relayout(SimpleNamespace(block_id=5))) == [2, 0, 1]
        node._gallery(collection).preselect.request([], 3)
        node.helper.recorder.record(Exchange("paillier.argmin", b"q", b"r", 0.0))
        source = node.candidates(collection)
        source.candidates([7, 3])
        assert source.namespace == "ns" and source.subject_of(9) == "s9"
        return None

    node.identify = identify
    node.candidates = lambda collection: Source()
    node._gallery = lambda name: gallery
    recording = instrument_a(node, tmp_path / "rec", tmp_path / "data")
    assert node.identify("c") is None
    recording.close()
    rec = Recording(tmp_path / "rec" / "a")
    [fetch] = rec.by_query("fetch")[0]
    assert fetch.get("labels") == ["s7", "s3"]
    assert fetch.get("template_ids") == [format(7, "032x"), format(3, "032x")]
    assert len(rec.by_query("preselect-state")[0]) == 1
    [relayout] = rec.by_query("relayout")[0]  # A's secret permutation, ground truth only
    assert relayout.get("block") == 5 and relayout.get("source") == [2, 0, 1]
    assert len(rec.by_query("exchange")[0]) == 1
    [opened] = rec.by_query("opened")[0]
    assert opened.get("label") == "s9"


# --- A: nearest enrolled subject ---------------------------------------------------------------


def _gallery(n: int, rng: np.random.Generator) -> tuple[np.ndarray, list[str]]:
    g = rng.standard_normal((n, 16))
    return g / np.linalg.norm(g, axis=1, keepdims=True), [f"p{i}" for i in range(n)]


def test_a_nearest_leaking_recording_scores_one() -> None:
    rng = np.random.default_rng(1)
    gallery, labels = _gallery(50, rng)
    probes = gallery[:40] + 0.3 * rng.standard_normal((40, 16))
    truth = va.nearest_subjects(probes, gallery, labels)
    # today's A: the candidates it fetched, B's ranking first
    guesses = [va.a_guess([t, "p0", "p1"], [], labels, random.Random(0)) for t in truth]
    score = va.score_nearest(guesses, truth, len(labels), "fetched")
    assert score.top1 == 1.0 and score.top5 == 1.0
    assert not verdicts(_figures(score.top1, score.chance, score.probes))["a_nearest_top1"]


def test_a_nearest_without_evidence_is_chance() -> None:
    rng = np.random.default_rng(2)
    gallery, labels = _gallery(40, rng)
    probes = rng.standard_normal((4000, 16))
    truth = va.nearest_subjects(probes, gallery, labels)
    guess_rng = random.Random(3)
    guesses = [va.a_guess([], [], labels, guess_rng) for _ in truth]
    score = va.score_nearest(guesses, truth, len(labels), "none")
    assert abs(score.top1 - 1 / 40) < 0.01
    assert abs(score.top5 - 5 / 40) < 0.02
    assert verdicts(_figures(score.top1, score.chance, score.probes))["a_nearest_top1"]


def test_a_nearest_verdict_is_a_test_not_a_bare_rate() -> None:
    """One lucky uniform guess in 60 probes of a 301-person gallery is a rate above 3/N but no
    evidence of a leak; 76 right out of 88 is."""
    assert a_nearest_p_value(1, 60, 301) > 0.05
    assert a_nearest_p_value(76, 88, 301) < 1e-6
    assert a_nearest_p_value(0, 60, 301) == 1.0


def test_linking_finds_stored_bytes_not_rerandomised_ones() -> None:
    rnd = random.Random(4)
    stored = {f"s{i}": [rnd.randbytes(512)] for i in range(20)}
    prints = va.fingerprints(stored)
    reply = b"header" + stored["s7"][0] + rnd.randbytes(100) + stored["s2"][0]
    assert va.linked_subjects([reply], prints) == ["s7", "s2"]
    rerandomised = b"header" + rnd.randbytes(512) + rnd.randbytes(512)
    assert va.linked_subjects([rerandomised], prints) == []


def _figures(top1: float, chance: float, probes: int = 100) -> dict[str, Any]:
    n = round(1 / chance)
    hits = round(top1 * probes)
    return {"a_nearest_top1": top1, "a_nearest_chance": chance,
            "a_nearest_p_above_target": a_nearest_p_value(hits, probes, n),
            "b_slot_alignment": None,
            "b_subspace_cosine": None, "b_subspace_cosine_random": None, "b_match_auc": 0.5,
            "wolf_capture": 0.0, "wolf_capture_chance": 0.0}


# --- B: alignment, subspace, match detection ---------------------------------------------------

SLOTS, DIM = 512, 8


def _heads(rng: np.random.Generator) -> np.ndarray:
    """Unit head vectors in a cone around a common direction, as face embeddings are."""
    centre = np.ones(DIM) / np.sqrt(DIM)
    heads = centre + 0.5 * rng.standard_normal((SLOTS, DIM))
    out: np.ndarray = heads / np.linalg.norm(heads, axis=1, keepdims=True)
    return out


def _views(
    heads: np.ndarray, n: int, rng: np.random.Generator, *, permute: bool = False,
    mated: bool = False,
) -> list[va.QueryView]:
    """Masked, rotated views ``a·(G h) + c`` like A's preselection makes (or, with
    ``permute``, under a fresh secret slot permutation per query, which must defeat B)."""
    out = []
    for i in range(n):
        h = heads[int(rng.integers(SLOTS))] + 0.5 * rng.standard_normal(DIM)
        if mated:
            h = heads[i % SLOTS] * 3.0
        scores = heads @ h
        rot = int(rng.integers(SLOTS))
        view = np.roll(scores, -rot)  # view[p] = slot (p + rot)
        if permute:
            view = view[rng.permutation(SLOTS)]
        a, c = float(rng.uniform(1, 100)), float(rng.uniform(-1e3, 1e3))
        out.append(va.QueryView([a * view + c], (0,), (rot,), epoch=i % 3, mated=mated))
    return out


def test_b_aligns_rotated_views_and_not_permuted_ones() -> None:
    rng = np.random.default_rng(5)
    heads = _heads(rng)
    rotated = _views(heads, 30, rng)
    fraction, pairs = va.slot_alignment(rotated, random.Random(0))
    assert pairs > 0 and fraction is not None and fraction > 0.5  # chance: 1/512
    permuted = _views(heads, 30, rng, permute=True)
    fraction, _ = va.slot_alignment(permuted, random.Random(0))
    assert fraction is not None and fraction <= 0.05


def test_b_recovers_head_subspace_from_aligned_views_only() -> None:
    rng = np.random.default_rng(6)
    heads = _heads(rng)
    rotated = _views(heads, 60, rng)
    recovered = va.recovered_subspace(va.aligned_matrix(rotated), DIM)
    reference = np.roll(heads, -rotated[0].rotations[0], axis=0)  # type: ignore[index]
    cos, rand = va.subspace_cosines(recovered, reference, rng)
    assert cos > rand + 0.3
    permuted = _views(heads, 60, rng, permute=True)
    recovered = va.recovered_subspace(va.aligned_matrix(permuted), DIM)
    cos_p, rand_p = va.subspace_cosines(recovered, reference, rng)
    assert cos_p < rand_p + 0.1


def test_few_aligned_queries_recover_only_their_share_of_the_subspace() -> None:
    """B's basis from E < DIM queries is completed with random directions before scoring, so
    two aligned queries score their share of the subspace (E/DIM exact directions, the rest
    random), not like a recovered subspace."""
    rng = np.random.default_rng(10)
    heads = _heads(rng)
    two = _views(heads, 2, rng)
    found = va.recovered_subspace(va.aligned_matrix(two), DIM)
    assert found.shape[1] == 2
    reference = np.roll(heads, -two[0].rotations[0], axis=0)  # type: ignore[index]
    cos, rand = va.subspace_cosines(va.complete_basis(found, DIM, rng), reference, rng)
    share = 2 / DIM
    assert abs(cos - (share + (1 - share) * rand)) < 0.1
    unpadded, _ = va.subspace_cosines(found, reference, rng)
    assert unpadded > cos  # what scoring the two directions alone would have claimed
    many = _views(heads, 4 * DIM, rng)
    found = va.recovered_subspace(va.aligned_matrix(many), DIM)
    reference = np.roll(heads, -many[0].rotations[0], axis=0)  # type: ignore[index]
    cos, rand = va.subspace_cosines(va.complete_basis(found, DIM, rng), reference, rng)
    assert cos > rand + 0.3


def test_b_match_statistic_separates_planted_mates() -> None:
    rng = np.random.default_rng(7)
    heads = _heads(rng)
    mated = _views(heads, 40, rng, mated=True)
    other = _views(heads, 40, rng)
    stat = va.match_statistic
    assert va.auc([stat(q.views) for q in mated], [stat(q.views) for q in other]) > 0.75
    same = _views(heads, 80, rng)
    half = [stat(q.views) for q in same]
    assert abs(va.auc(half[:40], half[40:]) - 0.5) < 0.2


def test_auc_is_mann_whitney() -> None:
    assert va.auc([2, 3], [1, 0]) == 1.0
    assert va.auc([0, 1], [2, 3]) == 0.0
    assert va.auc([1], [1]) == 0.5


def test_b_reads_alignment_off_a_request_that_names_rotations() -> None:
    """When A's request tells B each view's block and rotation, B aligns every pair even if
    its decrypted views carried no usable pattern."""
    rng = np.random.default_rng(8)
    noise = [
        va.QueryView([rng.standard_normal(SLOTS)], (4,), (rot,), epoch=i % 2, mated=False,
                     told_blocks=(4,), told_rotations=(rot,))
        for i, rot in enumerate(int(r) for r in rng.integers(SLOTS, size=12))
    ]
    fraction, pairs = va.slot_alignment(noise, random.Random(0))
    assert pairs > 0 and fraction == 1.0
    untold = [dataclasses.replace(q, told_blocks=(), told_rotations=()) for q in noise]
    fraction, _ = va.slot_alignment(untold, random.Random(0))
    assert fraction is not None and fraction <= 0.2


def test_told_alignment_fails_across_a_secret_relayout() -> None:
    """Issue 12: B still reads blocks and rotations off the requests, but queries of
    different layout epochs (ground truth: A's recorded re-layouts) show other templates at
    the positions B lines up; queries of one epoch still align."""
    rng = np.random.default_rng(9)
    epochs = [np.arange(SLOTS), rng.permutation(SLOTS), rng.permutation(SLOTS)]
    queries = [
        va.QueryView([rng.standard_normal(SLOTS)], (4,), (rot,), epoch=i % 3, mated=False,
                     told_blocks=(4,), told_rotations=(rot,), canon=(epochs[i % 3],))
        for i, rot in enumerate(int(r) for r in rng.integers(SLOTS, size=12))
    ]
    fraction, pairs = va.slot_alignment(queries, random.Random(0))
    assert pairs > 0 and fraction == 0.0
    same = [dataclasses.replace(q, canon=(epochs[0],)) for q in queries]
    fraction, _ = va.slot_alignment(same, random.Random(0))
    assert fraction == 1.0


def test_record_dir_is_off_by_default_and_read_from_yaml(tmp_path: Path) -> None:
    from pura.config import ServerConfig

    assert ServerConfig(role="b").record_dir is None
    path = tmp_path / "b.yaml"
    path.write_text(f"role: b\nrecord_dir: {tmp_path / 'rec'}\n")
    assert ServerConfig.from_yaml(path).record_dir == tmp_path / "rec"
