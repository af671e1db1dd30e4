"""Face models through real servers (gRPC, mTLS, loopback): a 512-d collection, and what the
servers and ``pura-client`` say when a request uses another model than the collection's.

The deployment here runs EdgeFace XS keys (``edgeface-xs-fast``: 512-d, Paillier 2048; a non-
commercial model, evaluation only) so that the packing of 512 coordinates, the exact stage on
them and the CKKS head through EdgeFace's own PCA run in the product servers, not only in-process.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import grpc
import numpy as np
import pytest
from pura_client.cli import app
from pura_client.client import PuraClient
from pura_client.datasets.embedded import EmbeddedIdentificationSet, embedded_identification_set
from pura_client.datasets.lfw import LFWDataset
from typer.testing import CliRunner

from pura.certs import make_demo_pki
from pura.config import Limits, ServerConfig
from pura.crypto.encoding import PCARotation, l2_normalize, load_shipped_pca, quantize
from pura.crypto.params import EDGEFACE_XS_FAST_PARAMETERS
from pura.keys import generate_key_set
from pura.pipeline.config import SearchConfig
from pura.service._proto.pura.v1 import common_pb2, pura_pb2
from pura.service.run import ServerAHandle, start_a, start_b
from pura.service.server import RunningServer

PARAMS = EDGEFACE_XS_FAST_PARAMETERS
ENC = PARAMS.encoding
DLIB = "dlib_face_recognition_resnet_model_v1"
SFACE = "sface_2021dec_int8bq"
ENROLLED = 24
runner = CliRunner()


class Servers:
    def __init__(self, root: Path, a: ServerAHandle, b: RunningServer) -> None:
        self.root, self.a, self.b = root, a, b
        self.pca: PCARotation = load_shipped_pca(ENC.model_id)

    @property
    def address(self) -> str:
        return f"localhost:{self.a.running.port}"

    def client(self, role: str, collection: str = "edge") -> PuraClient:
        return PuraClient.connect(self.address, collection, tls_dir=self.root / "tls",
                                  cert_name=role, pca=self.pca, timeout_s=300)


@pytest.fixture(scope="module")
def servers(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Servers]:
    root = tmp_path_factory.mktemp("edge")
    make_demo_pki(root / "tls")
    generate_key_set(root / "keys", PARAMS)
    b = start_b(ServerConfig(role="b", key_dir=root / "keys" / "b", tls_dir=root / "tls",
                             data_dir=root / "b-data"))
    a = start_a(ServerConfig(role="a", key_dir=root / "keys" / "a", data_dir=root / "a-data",
                             tls_dir=root / "tls", peer=f"localhost:{b.port}",
                             limits=Limits(max_message_bytes=16 << 20, bulk_batch=8,
                                           query_budget=1000),
                             shared_host_keys=True))
    servers = Servers(root, a, b)
    with servers.client("admin") as admin:
        admin.create_collection()
    yield servers
    a.stop()
    b.stop(None)


@pytest.fixture(scope="module")
def edge_faces(lfw_dataset: LFWDataset) -> EmbeddedIdentificationSet:
    from pura_client.embedding.aligned import pipeline_for

    return embedded_identification_set(
        n_identities=500, seed=0, n_non_enrolled=200, dataset=lfw_dataset,
        pipeline=pipeline_for(ENC.model_id, device="cpu"),
    )


@pytest.mark.lfw
@pytest.mark.timeout(1800)
def test_a_512_d_collection_equals_plaintext_through_real_servers(
    servers: Servers, edge_faces: EmbeddedIdentificationSet
) -> None:
    s = edge_faces
    assert s.gallery.shape[1] == 512
    info = servers.a.node.collection("edge")
    assert info.model_id == ENC.model_id
    assert info.threshold == SearchConfig.for_model(ENC.model_id).tau_units(ENC.scale_bits)
    labels = list(s.gallery_labels[:ENROLLED])
    with servers.client("enroller") as enroller:
        statuses = enroller.bulk_enroll(
            [(labels[i], s.gallery[i], f"edge-{i}") for i in range(ENROLLED)])
    assert [x.code for x in statuses] == ["enrolled"] * ENROLLED, statuses[:3]
    pca = servers.pca
    q_gallery = quantize(pca.apply(l2_normalize(s.gallery[:ENROLLED], dim=512)), ENC.scale_bits)
    mated = [j for j, lab in enumerate(s.probe_labels) if lab in set(labels)][:6]
    probes = [s.probes[j] for j in mated] + list(s.non_enrolled[:4])
    truth = [s.probe_labels[j] for j in mated] + [None] * 4
    got, want = [], []
    with servers.client("identifier") as identifier:
        for v in probes:
            q = quantize(pca.apply(l2_normalize(v, dim=512)), ENC.scale_bits)
            d = ((q_gallery.astype(np.int64) - q.astype(np.int64)) ** 2).sum(axis=1)
            best = int(d.argmin())
            want.append(labels[best] if int(d[best]) <= info.threshold else None)
            got.append(identifier.identify(v).subject)
    assert got == want
    assert sum(g == t for g, t in zip(got, truth, strict=True)) >= 8  # the model works, too


@pytest.mark.lfw
def test_the_server_names_both_models_when_a_query_uses_another(
    servers: Servers, edge_faces: EmbeddedIdentificationSet
) -> None:
    with servers.client("identifier") as client:
        parts = client.encryptor().query(edge_faces.probes[0])
        stub = client._stub
        request = pura_pb2.IdentifyRequest(ref=client._ref(), query=common_pb2.EncryptedQuery(
            model_id=SFACE, dim=512, paillier=parts.paillier, ckks_head=parts.ckks_head))
        with pytest.raises(grpc.RpcError) as raised:
            stub.Identify(request, timeout=120)
    assert raised.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    details = raised.value.details() or ""
    assert f"'{ENC.model_id}'" in details and f"'{SFACE}'" in details
    assert f"re-enrol the collection under model '{SFACE}'" in details


@pytest.mark.lfw
def test_pura_client_refuses_another_model_before_embedding(
    servers: Servers, lfw_dataset: LFWDataset, tmp_path: Path
) -> None:
    common = ["--server", servers.address, "--collection", "edge", "--tls",
              str(servers.root / "tls")]
    image = str(lfw_dataset.image_path("Aaron_Peirsol", 1))
    result = runner.invoke(app, ["identify", image, "--model", DLIB, *common])
    assert result.exit_code == 2, result.output
    text = " ".join(result.output.split())  # rich wraps long lines
    assert "ParameterError" in text and ENC.model_id in text and DLIB in text
    assert f"re-enrol the collection under model '{DLIB}'" in text
    assert "--profile dlib" in text

    folder = tmp_path / "faces" / "Aaron_Peirsol"
    folder.mkdir(parents=True)
    (folder / "Aaron_Peirsol_0001.jpg").symlink_to(image)
    before = _templates(servers)
    result = runner.invoke(app, ["enroll", str(folder.parent), "--model", SFACE, *common])
    text = " ".join(result.output.split())
    assert result.exit_code == 2 and "this enrolment was made with model" in text, text
    assert _templates(servers) == before  # refused before anything was embedded or sent

    # the collection's own model (named or not) goes through: embedded with EdgeFace here
    result = runner.invoke(app, ["identify", image, "--model", ENC.model_id, *common])
    assert result.exit_code == 0 and result.output.strip() in ("no match", "match Aaron_Peirsol")


def _templates(servers: Servers) -> int:
    with servers.client("auditor") as auditor:
        return int(auditor.stats().templates)
