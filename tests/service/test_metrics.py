"""``/metrics`` on A and B (issue 14): scraped over HTTP from running servers (real mTLS RPCs,
real enrolment with B), the figures an operator needs are there and move with the traffic."""

from __future__ import annotations

import dataclasses
import re
import urllib.request
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from pura_client.client import PuraClient

from pura.config import Limits, ServerConfig
from pura.errors import PermissionDeniedError
from pura.service.run import ServerAHandle, start_a, start_b
from pura.service.server import RunningServer

from .conftest import Deployment, config_a


def _scrape(port: int) -> str:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as reply:
        return str(reply.read().decode())


def _value(text: str, name: str, **labels: str) -> float:
    """The sample ``name{labels}`` (labels in any order), or 0 when absent."""
    for line in text.splitlines():
        if not line.startswith(name + "{") and line.split(" ")[0] != name:
            continue
        found = dict(re.findall(r'(\w+)="([^"]*)"', line.split("}")[0]))
        if all(found.get(k) == v for k, v in labels.items()):
            return float(line.rsplit(" ", 1)[1])
    return 0.0


@pytest.fixture(scope="module")
def metered(deployment: Deployment, tmp_path_factory: pytest.TempPathFactory
            ) -> Iterator[tuple[ServerAHandle, RunningServer]]:
    root = deployment.root
    b = start_b(ServerConfig(role="b", key_dir=root / "keys" / "b", tls_dir=root / "tls",
                             data_dir=tmp_path_factory.mktemp("b-metrics"),
                             metrics_listen="127.0.0.1:0"))
    data: Path = tmp_path_factory.mktemp("a-metrics")
    cfg = dataclasses.replace(config_a(root, b.port, data, Limits(bulk_batch=4)),
                              metrics_listen="127.0.0.1:0")
    a = start_a(cfg)
    yield a, b
    a.stop()
    b.stop(None)


def test_a_and_b_export_rpcs_stages_levels_and_refusals(
    deployment: Deployment, metered: tuple[ServerAHandle, RunningServer]
) -> None:
    a, b = metered
    assert a.running.metrics is not None and b.metrics is not None
    port = a.running.port

    def client(role: str) -> PuraClient:
        return deployment.client(role, "metered", port=port)

    before = _scrape(a.running.metrics.port)
    assert _value(before, "pura_level", what="gallery_templates") == 0
    with client("admin") as admin:
        admin.create_collection()
    faces = deployment.faces
    with client("enroller") as enroller:
        items = [(f"m-{i}", faces.gallery[40 + i], uuid.uuid4().hex) for i in range(3)]
        assert [s.code for s in enroller.bulk_enroll(items)] == ["enrolled"] * 3
    with client("identifier") as identifier, pytest.raises(PermissionDeniedError):
        identifier.create_collection()  # an identifier may not administer: counted as refused

    text_a, text_b = _scrape(a.running.metrics.port), _scrape(b.metrics.port)
    assert _value(text_a, "pura_rpc_total", method="Pura/BulkEnroll", code="OK") == 1
    assert _value(text_a, "pura_rpc_total", method="PuraAdmin/CreateCollection",
                  code="PERMISSION_DENIED") == 1
    assert _value(text_a, "pura_rpc_seconds_count", method="Pura/BulkEnroll", code="OK") == 1
    assert _value(text_a, "pura_level", what="gallery_templates") == 3
    assert _value(text_a, "pura_server_info", role="a") == 1
    # A timed its round trips to B, and B timed the same steps on its side
    a_steps = set(re.findall(r'pura_stage_seconds_count\{stage="a->b:([^"]+)"', text_a))
    b_steps = set(re.findall(r'pura_stage_seconds_count\{stage="b:([^"]+)"', text_b))
    assert a_steps and a_steps == b_steps
    assert any("norm" in s for s in b_steps)
    b_ok = re.findall(r'^pura_rpc_total\{[^}]*code="OK"[^}]*\} (\S+)', text_b, re.M)
    assert sum(float(v) for v in b_ok) >= 1  # A's calls, counted by B's interceptor
    assert "pura_level{what=\"randomness_pool\"}" in text_b
    assert "# TYPE pura_b_quota_refusals_total counter" in text_b
