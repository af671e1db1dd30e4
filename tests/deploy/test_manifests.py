"""deploy/: schema + policy validation of the manifests, and the mutations it must reject."""

from __future__ import annotations

import importlib.util
import shutil
import sys
from collections.abc import Callable
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]


def _load_validator() -> ModuleType:
    spec = importlib.util.spec_from_file_location(
        "validate_manifests", REPO / "scripts" / "validate_manifests.py"
    )
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


vm = _load_validator()


@pytest.fixture()
def deploy_copy(tmp_path: Path) -> Path:
    target = tmp_path / "deploy"
    shutil.copytree(REPO / "deploy", target)
    return target


def _edit_docs(path: Path, edit: Callable[[Any], None]) -> None:
    docs = list(yaml.safe_load_all(path.read_text(encoding="utf-8")))
    for doc in docs:
        edit(doc)
    path.write_text(yaml.safe_dump_all(docs), encoding="utf-8")


def test_shipped_deploy_dir_is_valid() -> None:
    assert vm.validate_all(REPO / "deploy") == []


def test_cli_exit_status(capsys: pytest.CaptureFixture[str]) -> None:
    assert vm.main(["--deploy-dir", str(REPO / "deploy")]) == 0
    assert "OK:" in capsys.readouterr().out


def test_manifests_cover_the_required_objects() -> None:
    docs = vm.load_k8s(REPO / "deploy" / "k8s")
    kinds = {(d["kind"], d["metadata"]["name"]) for _, d in docs}
    assert ("StatefulSet", "pura-server-a") in kinds
    assert ("StatefulSet", "pura-server-b") in kinds
    assert ("Deployment", "pura-ray-head") in kinds
    assert ("StatefulSet", "pura-ray-worker") in kinds


def test_unknown_field_fails_strict_schema(deploy_copy: Path) -> None:
    def edit(doc: Any) -> None:
        if doc.get("kind") == "StatefulSet":
            doc["spec"]["replicaz"] = 2

    _edit_docs(deploy_copy / "k8s" / "10-server-b.yaml", edit)
    errors = vm.validate_all(deploy_copy)
    assert any("schema" in e and "replicaz" in e for e in errors), errors


def test_wrong_type_fails_schema(deploy_copy: Path) -> None:
    def edit(doc: Any) -> None:
        if doc.get("kind") == "Service":
            doc["spec"]["ports"][0]["port"] = "fifty"

    _edit_docs(deploy_copy / "k8s" / "20-server-a.yaml", edit)
    assert any("schema" in e for e in vm.validate_all(deploy_copy))


def test_missing_persistent_volume_is_rejected(deploy_copy: Path) -> None:
    def edit(doc: Any) -> None:
        if doc.get("kind") == "StatefulSet":
            del doc["spec"]["volumeClaimTemplates"]

    _edit_docs(deploy_copy / "k8s" / "20-server-a.yaml", edit)
    assert any("volumeClaimTemplates" in e for e in vm.validate_all(deploy_copy))


def test_probe_that_is_not_grpc_health_is_rejected(deploy_copy: Path) -> None:
    def edit(doc: Any) -> None:
        if doc.get("kind") == "StatefulSet":
            container = doc["spec"]["template"]["spec"]["containers"][0]
            container["livenessProbe"] = {"tcpSocket": {"port": 50052}}

    _edit_docs(deploy_copy / "k8s" / "10-server-b.yaml", edit)
    assert any("livenessProbe is not a gRPC health check" in e
               for e in vm.validate_all(deploy_copy))


def test_a_mounting_b_secret_is_rejected(deploy_copy: Path) -> None:
    def edit(doc: Any) -> None:
        if doc.get("kind") == "StatefulSet":
            for vol in doc["spec"]["template"]["spec"]["volumes"]:
                if vol["name"] == "keys":
                    vol["secret"]["secretName"] = "pura-server-b-keys"

    _edit_docs(deploy_copy / "k8s" / "20-server-a.yaml", edit)
    assert any("same secret" in e for e in vm.validate_all(deploy_copy))


def test_b_reachable_from_ray_is_rejected(deploy_copy: Path) -> None:
    def edit(doc: Any) -> None:
        if doc.get("metadata", {}).get("name") == "server-b-from-a-only":
            doc["spec"]["ingress"][0]["from"].append(
                {"podSelector": {"matchLabels": {"app.kubernetes.io/name": "pura-ray-worker"}}}
            )

    _edit_docs(deploy_copy / "k8s" / "40-network-policy.yaml", edit)
    assert any("other than server A" in e for e in vm.validate_all(deploy_copy))


def test_committed_secret_data_is_rejected(deploy_copy: Path) -> None:
    (deploy_copy / "k8s" / "99-secret.yaml").write_text(
        "apiVersion: v1\nkind: Secret\nmetadata: {name: leaked, namespace: pura}\n"
        "data: {share: c2VjcmV0}\n", encoding="utf-8")
    assert any("must not be committed" in e for e in vm.validate_all(deploy_copy))


def test_root_container_is_rejected(deploy_copy: Path) -> None:
    def edit(doc: Any) -> None:
        if doc.get("kind") == "Deployment":
            doc["spec"]["template"]["spec"]["securityContext"]["runAsNonRoot"] = False

    _edit_docs(deploy_copy / "k8s" / "30-ray-cluster.yaml", edit)
    assert any("runAsNonRoot" in e for e in vm.validate_all(deploy_copy))


def test_compose_schema_and_tls_rules(deploy_copy: Path) -> None:
    path = deploy_copy / "compose.yaml"
    doc = yaml.safe_load(path.read_text(encoding="utf-8"))
    doc["services"]["server-b"]["restartt"] = "always"
    del doc["services"]["server-a"]["healthcheck"]
    path.write_text(yaml.safe_dump(doc), encoding="utf-8")
    errors = vm.validate_all(deploy_copy)
    assert any("compose.yaml: schema" in e and "restartt" in e for e in errors), errors
    assert any("server-a has no healthcheck" in e for e in errors)


def test_dockerfile_targets(deploy_copy: Path) -> None:
    path = deploy_copy / "Dockerfile"
    path.write_text(path.read_text(encoding="utf-8").replace(" AS client\n", " AS cli\n"),
                    encoding="utf-8")
    assert "Dockerfile: no 'client' build target" in vm.validate_all(deploy_copy)


def test_cli_reports_failure(deploy_copy: Path, capsys: pytest.CaptureFixture[str]) -> None:
    shutil.rmtree(deploy_copy / "k8s")
    (deploy_copy / "k8s").mkdir()
    assert vm.main(["--deploy-dir", str(deploy_copy)]) == 1
    assert "FAILED" in capsys.readouterr().out


def test_metrics_are_exposed_and_b_metrics_rule_opens_only_the_metrics_port(
    deploy_copy: Path,
) -> None:
    """Both servers serve /metrics (issue 14) and declare the port; B's scrape rule is
    accepted only while it opens nothing but the metrics port."""
    for name in ("10-server-b.yaml", "20-server-a.yaml"):
        text = (REPO / "deploy" / "k8s" / name).read_text(encoding="utf-8")
        assert "--metrics-listen=0.0.0.0:9100" in text and "containerPort: 9100" in text
    compose = (REPO / "deploy" / "compose.yaml").read_text(encoding="utf-8")
    assert compose.count("--metrics-listen=0.0.0.0:9100") == 2
    assert vm.validate_all(deploy_copy) == []

    def edit(doc: Any) -> None:
        if doc.get("metadata", {}).get("name") == "server-b-metrics-from-monitoring":
            doc["spec"]["ingress"][0]["ports"].append({"port": 50052, "protocol": "TCP"})

    _edit_docs(deploy_copy / "k8s" / "40-network-policy.yaml", edit)
    assert any("other than server A" in e for e in vm.validate_all(deploy_copy))
