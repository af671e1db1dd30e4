"""``pura serve`` with preselection scaled out: a local scoring pool and Ray shard actors.

One scenario runs on three servers A sharing the session's B: in-process scoring (the
reference), ``scoring_workers=2``, and ``ray_address`` on a real two-node loopback Ray cluster.
13 real LFW templates go into a collection of 4 templates per block (so preselection spans
4 blocks and the scorers really score), 6 probes are identified, two subjects are deleted (the
last block empties) and the probes are identified again. Every scaled answer must equal the
in-process answer, which itself must equal plaintext 1:N on the same fixed-point vectors; the
scorers' workers must hold exactly A's searchable blocks at their current versions.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import numpy.typing as npt
import pytest
from pura_client.encryptor import EncryptedParts

from pura.config import Limits, ServerConfig
from pura.crypto.encoding import l2_normalize, quantize
from pura.crypto.params import DLIB_FAST_PARAMETERS
from pura.engine.cluster import LoopbackRayCluster, ShardedScorer
from pura.errors import ConfigError
from pura.pipeline.config import DEFAULT_THRESHOLD_SQ
from pura.protocols.identify import threshold_units
from pura.protocols.preselect import ScoringPool
from pura.service.run import ServerAHandle, start_a

from .conftest import Deployment, config_a

COLLECTION = "scaled"
BLOCK_SIZE = 4
N_ENROLLED = 13  # blocks of 4, 4, 4, 1; > top_k after deleting two subjects
DELETED = (11, 12)  # the last block empties: the scorer must drop it
Answers = tuple[list[str | None], list[str | None]]
Vector = npt.NDArray[np.float64]


@dataclasses.dataclass(frozen=True)
class Scenario:
    labels: list[str]
    templates: list[EncryptedParts]
    probes: list[Vector]
    queries: list[EncryptedParts]


def _plaintext(dep: Deployment, labels: list[str], gallery: list[Vector], v: Vector) -> str | None:
    bits = DLIB_FAST_PARAMETERS.encoding.scale_bits

    def fixed(x: Vector) -> npt.NDArray[np.int64]:
        return quantize(dep.pca.apply(l2_normalize(x)), bits)

    d = ((np.stack([fixed(x) for x in gallery]) - fixed(v)) ** 2).sum(axis=1)
    best = int(np.argmin(d))
    return labels[best] if int(d[best]) <= threshold_units(DEFAULT_THRESHOLD_SQ, bits) else None


@pytest.fixture(scope="module")
def scenario(deployment: Deployment) -> Scenario:
    faces = deployment.faces
    labels = list(faces.gallery_labels[:N_ENROLLED])
    deleted = {labels[i] for i in DELETED}
    mated = [j for j, lab in enumerate(faces.probe_labels) if lab in labels]
    # Probes of the subjects to be deleted first: they must flip from match to no match.
    mated.sort(key=lambda j: faces.probe_labels[j] not in deleted)
    probes = [faces.probes[j] for j in mated[:4]] + [faces.non_enrolled[0],
                                                     faces.non_enrolled[1]]
    with deployment.client("enroller") as client:
        enc = client.encryptor()
        templates = [enc.template(faces.gallery[i]) for i in range(N_ENROLLED)]
        queries = [enc.query(v) for v in probes]
    return Scenario(labels, templates, probes, queries)


def _run(dep: Deployment, handle: ServerAHandle, sc: Scenario) -> Answers:
    """Enrol, identify, delete two subjects, identify again; returns both answer lists."""
    port = handle.running.port
    handle.node.create_collection(COLLECTION, block_size=BLOCK_SIZE)
    with dep.client("enroller", COLLECTION, port=port) as enroller:
        items = [(lab, t, f"req-{lab}") for lab, t in zip(sc.labels, sc.templates, strict=True)]
        statuses = list(enroller.bulk_enroll_encrypted(items))
    assert [s.code for s in statuses] == ["enrolled"] * N_ENROLLED
    with dep.client("identifier", COLLECTION, port=port) as client:
        before = [client.identify_encrypted(q).subject for q in sc.queries]
    _check_scorer_holds_gallery(handle)
    with dep.client("admin", COLLECTION, port=port) as admin:
        for i in DELETED:
            admin.delete(sc.labels[i])
    with dep.client("identifier", COLLECTION, port=port) as client:
        after = [client.identify_encrypted(q).subject for q in sc.queries]
    _check_scorer_holds_gallery(handle)
    return before, after


def _check_scorer_holds_gallery(handle: ServerAHandle) -> None:
    """What the workers/actors really hold == A's searchable blocks, current versions."""
    scorer = handle.node.scorer
    if scorer is None:
        return
    gallery = handle.node._gallery(COLLECTION)
    expected = {b.block_id: b.version for b in gallery.layout.searchable_blocks()}
    assert isinstance(scorer, ScoringPool | ShardedScorer)
    assert scorer.held(COLLECTION) == expected


def _start(dep: Deployment, data: Path, **scoring: object) -> ServerAHandle:
    limits = Limits(max_message_bytes=16 << 20, bulk_batch=5, query_budget=1000)
    config = dataclasses.replace(config_a(dep.root, dep.b.port, data, limits), **scoring)
    return start_a(config)


@pytest.fixture(scope="module")
def reference(
    deployment: Deployment, scenario: Scenario, tmp_path_factory: pytest.TempPathFactory
) -> Answers:
    """The in-process answers, checked against plaintext 1:N before and after the deletion."""
    handle = _start(deployment, tmp_path_factory.mktemp("a-local"))
    try:
        assert handle.node.scorer is None
        answers = _run(deployment, handle, scenario)
    finally:
        handle.stop()
    faces = deployment.faces
    gallery = [faces.gallery[i] for i in range(N_ENROLLED)]
    kept = [i for i in range(N_ENROLLED) if i not in DELETED]
    sets = ((scenario.labels, gallery),
            ([scenario.labels[i] for i in kept], [gallery[i] for i in kept]))
    for got, (labels, vectors) in zip(answers, sets, strict=True):
        assert got == [_plaintext(deployment, labels, vectors, v) for v in scenario.probes]
    assert any(a is not None for a in answers[0])  # matches are covered, not only "no match"
    assert answers[0] != answers[1]  # the deletion changed an answer
    return answers


def test_scoring_pool_answers_equal_in_process(
    deployment: Deployment, scenario: Scenario, reference: Answers, tmp_path: Path
) -> None:
    handle = _start(deployment, tmp_path / "a-pool", scoring_workers=2)
    try:
        assert isinstance(handle.node.scorer, ScoringPool)
        assert "2 worker processes" in handle.node.scorer_description()
        assert _run(deployment, handle, scenario) == reference
        _check_status_reports_a_dead_worker(deployment, handle, scenario)
    finally:
        handle.stop()


def _check_status_reports_a_dead_worker(
    dep: Deployment, handle: ServerAHandle, sc: Scenario
) -> None:
    """Stats (what ``pura status`` prints) says pool, 2/2 alive; after a worker is killed it
    says 1/2, and the next query replaces the worker (2/2 again, answer unchanged)."""
    pool = handle.node.scorer
    assert isinstance(pool, ScoringPool)
    with dep.client("auditor", COLLECTION, port=handle.running.port) as auditor:
        stats = auditor.stats()
        assert (stats.scorer, stats.scorer_alive, stats.scorer_expected) == ("pool", 2, 2)
        proc = pool._procs[0][0]
        proc.kill()
        proc.join(10)
        assert auditor.stats().scorer_alive == 1
        with dep.client("identifier", COLLECTION, port=handle.running.port) as client:
            client.identify_encrypted(sc.queries[-1])
        assert auditor.stats().scorer_alive == 2


@pytest.mark.slow
def test_ray_shards_answers_equal_in_process(
    deployment: Deployment, scenario: Scenario, reference: Answers, tmp_path: Path
) -> None:
    cluster = LoopbackRayCluster(workers=1, cpus_per_node=1)
    try:
        cluster.start()
        cluster.connect()
        handle = _start(deployment, tmp_path / "a-ray", ray_address=cluster.address)
        try:
            scorer = handle.node.scorer
            assert isinstance(scorer, ShardedScorer)
            assert scorer.n_shards == 2  # one per node that offers CPUs
            assert len(set(scorer.placement())) == 2  # the shards live on both nodes
            assert _run(deployment, handle, scenario) == reference
            assert scorer.held(COLLECTION) and sorted(scorer.held(COLLECTION)) == [0, 1, 2]
        finally:
            handle.stop()
    finally:
        cluster.stop()


def test_config_scoring_validation(tmp_path: Path) -> None:
    base = {"role": "a", "peer": "b:1", "tls_dir": tmp_path}
    with pytest.raises(ConfigError, match="choose one scorer"):
        ServerConfig(**base, scoring_workers=2, ray_address="auto")  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="scoring_workers must be"):
        ServerConfig(**base, scoring_workers=0)  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="ray_shards must be"):
        ServerConfig(**base, ray_address="auto", ray_shards=0)  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="ray_address is not"):
        ServerConfig(**base, ray_shards=2)  # type: ignore[arg-type]
    for bad in ("local", "ray://", "host", "host:99999", "http://h:1", ""):
        with pytest.raises(ConfigError, match="ray_address must be"):
            ServerConfig(**base, ray_address=bad)  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="applies to server A"):
        ServerConfig(role="b", tls_dir=tmp_path, ray_address="auto")
    for good in ("auto", "10.0.0.5:6379", "ray://pura-ray-head.pura.svc:10001", "[::1]:6379"):
        assert ServerConfig(**base, ray_address=good).ray_address == good  # type: ignore[arg-type]


def test_config_environment_overrides_yaml(tmp_path: Path) -> None:
    path = tmp_path / "a.yaml"
    path.write_text("role: a\npeer: b:50052\nray_address: auto\nray_shards: 3\n")
    env = {"PURA_RAY_ADDRESS": "ray://head:10001"}
    assert ServerConfig.from_yaml(path).ray_address == "auto"
    cfg = ServerConfig.from_yaml(path, environ=env)
    assert (cfg.ray_address, cfg.ray_shards) == ("ray://head:10001", 3)
    assert ServerConfig.from_yaml(path, environ={"PURA_RAY_ADDRESS": ""}).ray_address == "auto"
    with pytest.raises(ConfigError, match="ray_address must be"):
        ServerConfig.from_yaml(path, environ={"PURA_RAY_ADDRESS": "nonsense"})
    b = ServerConfig(role="b", tls_dir=tmp_path)
    assert b.with_environment(env) == b  # B scores no blocks: the variable is ignored there
    a = ServerConfig(role="a", peer="b:1", tls_dir=tmp_path)
    assert a.with_environment(env).ray_address == "ray://head:10001"
