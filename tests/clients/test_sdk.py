"""The SDK's front door against real servers A and B (gRPC over mTLS on loopback, real keys,
real LFW descriptors), started the way ``tests/service/conftest.py`` starts them.

* ``connect`` -> ``Client``: enrol, identify, verify, delete, with typed results only;
* images go through the torch ``Embedder``; an image without a face is a result;
* keys are pinned on first use by default, and a server that comes back on the same address
  with a second key set is refused before anything is encrypted.
"""

from __future__ import annotations

import os

os.environ.setdefault("GRPC_VERBOSITY", "ERROR")

import dataclasses
import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
from google.protobuf.message import Message
from pura_client import Client, KeyChangedError, KnownKeys, connect
from pura_client.datasets.embedded import EmbeddedIdentificationSet
from pura_client.datasets.lfw import LFWDataset
from pura_client.sdk import Deletion, Enrolled, Identification, Verification

from pura.certs import make_demo_pki
from pura.config import Limits, ServerConfig
from pura.crypto.params import DLIB_FAST_PARAMETERS
from pura.keys import generate_key_set
from pura.pipeline.config import DEFAULT_THRESHOLD_SQ
from pura.service.run import ServerAHandle, start_a, start_b
from pura.service.server import RunningServer, free_port

pytestmark = pytest.mark.slow
COLLECTION = "sdk"


@dataclass
class Pair:
    """Servers B and A over one key set; A listens on ``port``."""

    b: RunningServer
    a: ServerAHandle
    port: int

    @property
    def address(self) -> str:
        return f"localhost:{self.port}"

    def stop(self) -> None:
        self.a.stop()
        self.b.stop(None)


def start_pair(root: Path, keys: Path, tls: Path, port: int) -> Pair:
    """As tests/service/conftest.py: B, then A against B, fast-profile keys, mTLS."""
    b = start_b(ServerConfig(role="b", key_dir=keys / "b", tls_dir=tls, data_dir=root / "b-data"))
    limits = Limits(max_message_bytes=16 << 20, bulk_batch=5, query_budget=1000)
    a = start_a(ServerConfig(role="a", key_dir=keys / "a", data_dir=root / "a-data", tls_dir=tls,
                             peer=f"localhost:{b.port}", listen=f"127.0.0.1:{port}",
                             limits=limits, shared_host_keys=True))  # one user runs A and B
    return Pair(b, a, a.running.port)


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Path:
    tls = tmp_path_factory.mktemp("sdk-tls")
    make_demo_pki(tls)
    return tls


@pytest.fixture(scope="module")
def servers(tmp_path_factory: pytest.TempPathFactory, pki: Path) -> Iterator[Pair]:
    root = tmp_path_factory.mktemp("sdk")
    generate_key_set(root / "keys", DLIB_FAST_PARAMETERS)
    pair = start_pair(root, root / "keys", pki, free_port())
    with connect(pair.address, COLLECTION, tls=pki, role="admin", pin_keys=False) as admin:
        created = admin.create_collection()
    assert created.name == COLLECTION and created.key_id
    yield pair
    pair.stop()


def _no_protobuf(result: object) -> None:
    assert dataclasses.is_dataclass(result)
    for field in dataclasses.fields(result):
        assert not isinstance(getattr(result, field.name), Message), field.name


def _sq(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return ((a - b) ** 2).sum(axis=-1)  # type: ignore[no-any-return]


def test_enroll_identify_verify_delete_with_typed_results(
    servers: Pair, pki: Path, tmp_path: Path, lfw_identification_set: EmbeddedIdentificationSet
) -> None:
    faces = lfw_identification_set
    n = 12
    gallery, labels = faces.gallery[:n], faces.gallery_labels[:n]
    known = KnownKeys(tmp_path / "known_keys.json")
    with connect(servers.address, COLLECTION, tls=pki, role="enroller",
                 known_keys=known) as enroller:
        first = enroller.enroll(labels[0], gallery[0])
        assert isinstance(first, Enrolled) and first.face_found and first.template_id
        _no_protobuf(first)
        statuses = enroller.enroll_many(
            [(labels[i], gallery[i], f"sdk-{i}") for i in range(1, n)])
        assert [s.code for s in statuses] == ["enrolled"] * (n - 1)
        assert enroller.key_pin is not None
    # a mated probe the plaintext answer is sure about, and a non-enrolled one
    mated = [i for i, lab in enumerate(faces.probe_labels) if lab in labels]
    d = np.array([_sq(gallery, faces.probes[i]) for i in mated])
    sure = [i for i, row in zip(mated, d, strict=True)
            if row.min() < 0.8 * DEFAULT_THRESHOLD_SQ and labels[int(row.argmin())]
            == faces.probe_labels[i]]
    outsider = next(j for j, v in enumerate(faces.non_enrolled)
                    if _sq(gallery, v).min() > 1.2 * DEFAULT_THRESHOLD_SQ)
    assert sure, "no mated probe with an unambiguous plaintext answer among the first people"
    probe, label = faces.probes[sure[0]], faces.probe_labels[sure[0]]
    with connect(servers.address, COLLECTION, tls=pki, role="identifier",
                 known_keys=known) as identifier:
        hit = identifier.identify(probe)
        assert isinstance(hit, Identification) and hit.matched and hit.subject == label
        assert isinstance(hit.budget_remaining, int)
        _no_protobuf(hit)
        miss = identifier.identify(faces.non_enrolled[outsider])
        assert not miss.matched and miss.subject is None and miss.face_found
        yes = identifier.verify(label, probe)
        other = next(lab for lab in labels if lab != label)
        no = identifier.verify(other, probe)
        assert isinstance(yes, Verification) and (yes.matched, no.matched) == (True, False)
        _no_protobuf(yes)
    with connect(servers.address, COLLECTION, tls=pki, role="admin", known_keys=known) as admin:
        receipt = admin.delete(label)
        assert isinstance(receipt, Deletion) and receipt.subject == label
        assert receipt.templates_removed >= 1 and receipt.audit_entry_hash
        _no_protobuf(receipt)
        assert label not in admin.subjects()
    with connect(servers.address, COLLECTION, tls=pki, role="identifier",
                 known_keys=known) as identifier:
        assert identifier.identify(probe).subject != label
    # every client above checked against the one pin written on first use
    assert len(json.loads(known.path.read_text())["pins"]) == 1


def test_images_go_through_the_embedder_and_no_face_is_a_result(
    servers: Pair, pki: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str],
    lfw_dataset: LFWDataset,
) -> None:
    root = lfw_dataset.root / "lfw-deepfunneled"
    person = sorted(p for p in root.iterdir() if p.is_dir())[0]
    image = sorted(person.iterdir())[0]
    known = KnownKeys(tmp_path / "known_keys.json")
    with connect(servers.address, COLLECTION, tls=pki, role="enroller", known_keys=known) as c:
        enrolled = c.enroll("sdk-image-person", image)
        assert enrolled.face_found
        embedder = c.embedder()
    with connect(servers.address, COLLECTION, tls=pki, role="identifier", known_keys=known,
                 embedder=embedder) as c:
        assert c.identify(image).subject == "sdk-image-person"
        assert c.identify(image.read_bytes()).subject == "sdk-image-person"
        blank = np.full((200, 200, 3), 128, np.uint8)
        assert c.identify(blank) == Identification(None, None, face_found=False)
        assert c.verify("sdk-image-person", blank) == Verification(
            "sdk-image-person", matched=False, face_found=False)
    _run_readme_script(servers.address, pki, image, capsys)
    assert capsys.readouterr().out.strip() == "sdk-image-person"


def _run_readme_script(address: str, tls: Path, image: Path, capsys: pytest.CaptureFixture[str]
                       ) -> None:
    """The README's "Client SDK" script, as printed there, against these servers."""
    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text()
    section = readme.split("## Client SDK", 1)[1]
    script = section.split("```python\n", 1)[1].split("```", 1)[0]
    assert len(script.strip().splitlines()) == 5
    for old, new in (("localhost:50051", address), ('"demo"', repr(COLLECTION)),
                     ('".pura/tls"', repr(str(tls))), ('"probe.jpg"', repr(str(image)))):
        assert old in script
        script = script.replace(old, new)
    capsys.readouterr()
    exec(compile(script, "README.md", "exec"), {})


def test_keys_are_pinned_by_default_and_a_second_key_set_is_refused(
    tmp_path: Path, pki: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """First use pins (default file, here via $PURA_KNOWN_KEYS); the same address serving a
    second key set afterwards is refused before anything is encrypted."""
    pin_file = tmp_path / "config" / "known_keys.json"
    monkeypatch.setenv("PURA_KNOWN_KEYS", str(pin_file))
    generate_key_set(tmp_path / "keys-1", DLIB_FAST_PARAMETERS)
    generate_key_set(tmp_path / "keys-2", DLIB_FAST_PARAMETERS)
    port = free_port()
    vector = np.ones(128) / np.sqrt(128)

    def first_contact(pair: Pair) -> Client:
        with connect(pair.address, COLLECTION, tls=pki, role="admin", pin_keys=False) as admin:
            admin.create_collection()
        return connect(pair.address, COLLECTION, tls=pki, role="identifier")

    pair = start_pair(tmp_path / "one", tmp_path / "keys-1", pki, port)
    try:
        with first_contact(pair) as client:
            assert client.identify(vector).subject is None  # encrypts: keys fetched and pinned
            pinned = client.key_pin
        assert pinned is not None and pin_file.exists()
        with connect(pair.address, COLLECTION, tls=pki, role="identifier") as again:
            assert again.identify(vector).subject is None  # same keys: accepted
            assert again.key_pin == pinned
    finally:
        pair.stop()
    pair = start_pair(tmp_path / "two", tmp_path / "keys-2", pki, port)  # same address
    try:
        with first_contact(pair) as client, pytest.raises(KeyChangedError, match=pinned.key_id):
            client.identify(vector)
        # a fresh pin file (an operator who accepted the rotation) trusts the new keys
        with connect(pair.address, COLLECTION, tls=pki, role="identifier",
                     known_keys=tmp_path / "rotated.json") as rotated:
            assert rotated.identify(vector).subject is None
            assert rotated.key_pin is not None and rotated.key_pin.key_id != pinned.key_id
    finally:
        pair.stop()
