"""Service fixtures: real servers A and B (gRPC over mTLS on loopback) with fast-profile keys.

``deployment`` (session) -> :class:`Deployment`: B and A running in this process (real sockets,
real TLS, real protocols), a collection ``lfw`` created by the admin, the shipped PCA, and the
LFW identification set (real dlib descriptors). ``Deployment.client(role)`` connects with that
role's certificate; ``Deployment.start_a(data_dir, **limits)`` starts another A against the same
B for tests that need their own limits or a private store.
"""

from __future__ import annotations

import os

os.environ.setdefault("GRPC_VERBOSITY", "ERROR")  # GOAWAY on shutdown is expected

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from pura_client.client import PuraClient
from pura_client.datasets.embedded import EmbeddedIdentificationSet

from pura.certs import make_demo_pki
from pura.config import Limits, ServerConfig
from pura.crypto.encoding import PCARotation, load_shipped_pca
from pura.crypto.params import DLIB_FAST_PARAMETERS
from pura.keys import generate_key_set
from pura.service.run import ServerAHandle, start_a, start_b
from pura.service.server import RunningServer

COLLECTION = "lfw"


@dataclass
class Deployment:
    """Servers A and B over a fast-profile key set."""

    root: Path
    b: RunningServer
    a: ServerAHandle
    pca: PCARotation
    faces: EmbeddedIdentificationSet

    @property
    def tls(self) -> Path:
        return self.root / "tls"

    @property
    def keys(self) -> Path:
        return self.root / "keys"

    @property
    def address(self) -> str:
        return f"localhost:{self.a.running.port}"

    def client(self, role: str, collection: str = COLLECTION, *, port: int = 0) -> PuraClient:
        address = f"localhost:{port}" if port else self.address
        return PuraClient.connect(address, collection, tls_dir=self.tls, cert_name=role,
                                  pca=self.pca, timeout_s=120)

    def start_a(self, data: Path, **limits: int) -> ServerAHandle:
        return start_a(config_a(self.root, self.b.port, data, Limits(**limits)))  # type: ignore[arg-type]


def config_a(root: Path, b_port: int, data: Path, limits: Limits) -> ServerConfig:
    return ServerConfig(role="a", key_dir=root / "keys" / "a", data_dir=data,
                        tls_dir=root / "tls", peer=f"localhost:{b_port}", limits=limits,
                        shared_host_keys=True)  # one user runs A and B here


@pytest.fixture(scope="session")
def deployment(
    tmp_path_factory: pytest.TempPathFactory, lfw_identification_set: EmbeddedIdentificationSet
) -> Iterator[Deployment]:
    root = tmp_path_factory.mktemp("deploy")
    make_demo_pki(root / "tls")
    generate_key_set(root / "keys", DLIB_FAST_PARAMETERS)
    b = start_b(ServerConfig(role="b", key_dir=root / "keys" / "b", tls_dir=root / "tls",
                             data_dir=root / "b-data"))
    limits = Limits(max_message_bytes=16 << 20, bulk_batch=5, query_budget=1000)
    a = start_a(config_a(root, b.port, root / "data", limits))
    dep = Deployment(root, b, a, load_shipped_pca(), lfw_identification_set)
    with dep.client("admin") as admin:
        admin.create_collection()
    yield dep
    a.stop()
    b.stop(None)
