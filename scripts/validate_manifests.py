"""Validate the deployment files in ``deploy/`` without docker or a cluster (runs in CI).

Three layers, each catching a different class of mistake:

1. **Schema**: every Kubernetes object is checked, strictly (unknown fields are errors), against
   the Kubernetes OpenAPI JSON schemas shipped inside the ``kubernetes-validate`` package, for
   the oldest Kubernetes version we support; the compose file against the Compose specification
   schema shipped inside ``check-jsonschema``. No schema is downloaded at run time.
2. **Pura's deployment rules** (what a schema cannot know): A and B are StatefulSets with
   persistent volumes and gRPC-health readiness/liveness probes; every pod runs as non-root with
   no privilege escalation; A's pod never mounts B's secrets and vice versa (non-collusion would
   otherwise be one ``kubectl exec`` away); no Secret with data is committed; B accepts ingress
   from A only; a Ray head and Ray workers exist for the shards.
3. **Dockerfile** sanity: the ``server`` and ``client`` targets exist and the server image ships
   the health probe the manifests call.

Usage: ``python scripts/validate_manifests.py [--deploy-dir deploy] [--k8s-version 1.30.0]``;
exit status 0 when everything passes, 1 with one line per problem otherwise.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Iterator
from importlib import resources
from pathlib import Path
from typing import Any

import jsonschema
import kubernetes_validate
import yaml

#: Oldest Kubernetes minor we support (native sidecars not needed; NetworkPolicy, PDB v1 exist).
DEFAULT_K8S_VERSION = "1.30.0"
HEALTH_PROBE = "grpc_health_probe.py"
SERVER_NAMES = {"a": "pura-server-a", "b": "pura-server-b"}
#: Prometheus /metrics port of both servers (``pura serve --metrics-listen``): counts, durations
#: and levels only, so a rule opening nothing but this port may admit a monitoring namespace.
METRICS_PORT = 9100

Manifest = dict[str, Any]


def load_k8s(directory: Path) -> list[tuple[Path, Manifest]]:
    """Every YAML document of every ``*.yaml`` in ``directory`` (sorted, empty docs dropped)."""
    docs: list[tuple[Path, Manifest]] = []
    for path in sorted(directory.glob("*.yaml")):
        with path.open(encoding="utf-8") as handle:
            for doc in yaml.safe_load_all(handle):
                if doc is not None:
                    docs.append((path, doc))
    return docs


def schema_errors(docs: list[tuple[Path, Manifest]], version: str) -> list[str]:
    """Strict schema validation of every object against the shipped Kubernetes schemas."""
    errors: list[str] = []
    for path, doc in docs:
        name = f"{path.name}: {doc.get('kind')}/{doc.get('metadata', {}).get('name')}"
        try:
            kubernetes_validate.validate(doc, version, strict=True)
        except kubernetes_validate.ValidationError as exc:
            where = "/".join(str(p) for p in exc.path)
            errors.append(f"{name}: schema: {exc.message} at {where or '<root>'}")
        except kubernetes_validate.SchemaNotFoundError:
            errors.append(f"{name}: no Kubernetes {version} schema for this apiVersion/kind")
    return errors


def _by_kind(docs: list[tuple[Path, Manifest]], kind: str) -> dict[str, Manifest]:
    return {d["metadata"]["name"]: d for _, d in docs if d.get("kind") == kind}


def _pod_spec(workload: Manifest) -> Manifest:
    spec: Manifest = workload["spec"]["template"]["spec"]
    return spec


def _containers(workload: Manifest) -> Iterator[Manifest]:
    yield from _pod_spec(workload).get("containers", [])


def _secret_names(workload: Manifest) -> set[str]:
    return {
        v["secret"]["secretName"] for v in _pod_spec(workload).get("volumes", []) if "secret" in v
    }


def _probe_runs_health_check(probe: Manifest | None) -> bool:
    if not probe:
        return False
    if "grpc" in probe:
        return True
    command = probe.get("exec", {}).get("command", [])
    return any(HEALTH_PROBE in str(part) for part in command)


def server_rules(docs: list[tuple[Path, Manifest]]) -> list[str]:
    """StatefulSets with PVCs and gRPC health probes for A and B; their secrets kept apart."""
    errors: list[str] = []
    sets = _by_kind(docs, "StatefulSet")
    secrets: dict[str, set[str]] = {}
    for role, name in SERVER_NAMES.items():
        sts = sets.get(name)
        if sts is None:
            errors.append(f"server {role.upper()}: no StatefulSet named {name}")
            continue
        if not sts["spec"].get("volumeClaimTemplates"):
            errors.append(f"{name}: StatefulSet has no volumeClaimTemplates (persistent volume)")
        for c in _containers(sts):
            for kind in ("readinessProbe", "livenessProbe"):
                if not _probe_runs_health_check(c.get(kind)):
                    errors.append(f"{name}/{c['name']}: {kind} is not a gRPC health check")
        secrets[role] = _secret_names(sts)
    shared = secrets.get("a", set()) & secrets.get("b", set())
    if shared:
        errors.append(f"servers A and B mount the same secret(s) {sorted(shared)}: "
                      "each role must get its own key material")
    return errors


def security_rules(docs: list[tuple[Path, Manifest]]) -> list[str]:
    """Non-root, no privilege escalation, no committed secret data."""
    errors: list[str] = []
    for _, doc in docs:
        kind, name = doc.get("kind"), doc.get("metadata", {}).get("name")
        if kind == "Secret" and (doc.get("data") or doc.get("stringData")):
            errors.append(f"Secret/{name}: secret data must not be committed (create it from "
                          "`pura keygen` output at deploy time)")
        if kind not in {"Deployment", "StatefulSet", "DaemonSet", "Job"}:
            continue
        if not _pod_spec(doc).get("securityContext", {}).get("runAsNonRoot"):
            errors.append(f"{kind}/{name}: pod securityContext.runAsNonRoot is not true")
        for c in _containers(doc):
            ctx = c.get("securityContext", {})
            if ctx.get("allowPrivilegeEscalation") is not False:
                errors.append(f"{kind}/{name}/{c['name']}: allowPrivilegeEscalation not false")
            if "resources" not in c:
                errors.append(f"{kind}/{name}/{c['name']}: no resource requests/limits")
    return errors


def network_rules(docs: list[tuple[Path, Manifest]]) -> list[str]:
    """B admits protocol ingress from A's pods only (its metrics port may be scraped); the Ray
    head and workers exist."""
    errors: list[str] = []
    b_policies = [
        p for p in _by_kind(docs, "NetworkPolicy").values()
        if p["spec"]["podSelector"].get("matchLabels", {}).get("app.kubernetes.io/name")
        == SERVER_NAMES["b"]
    ]
    if not b_policies:
        errors.append("no NetworkPolicy selects server B")
    for policy in b_policies:
        for rule in policy["spec"].get("ingress", []):
            ports = rule.get("ports", [])
            if ports and all(p.get("port") == METRICS_PORT for p in ports):
                continue  # a metrics scrape, not protocol traffic
            sources = rule.get("from", [])
            labels = [s.get("podSelector", {}).get("matchLabels", {}) for s in sources]
            if not sources or any(
                lab.get("app.kubernetes.io/name") != SERVER_NAMES["a"] for lab in labels
            ):
                errors.append(f"NetworkPolicy/{policy['metadata']['name']}: B admits ingress "
                              "from something other than server A")
    names = {d["metadata"]["name"] for _, d in docs}
    for needed in ("pura-ray-head", "pura-ray-worker"):
        if needed not in names:
            errors.append(f"Ray cluster for shards: {needed} is missing")
    return errors


def compose_errors(path: Path) -> list[str]:
    """The compose file against the Compose specification schema (shipped, not downloaded)."""
    schema_file = resources.files("check_jsonschema.builtin_schemas.vendor") / "compose-spec.json"
    schema = json.loads(schema_file.read_text(encoding="utf-8"))
    with path.open(encoding="utf-8") as handle:
        doc = yaml.safe_load(handle)
    validator = jsonschema.validators.validator_for(schema)(schema)
    errors = [
        f"{path.name}: schema: {e.message} at {'/'.join(str(p) for p in e.path) or '<root>'}"
        for e in validator.iter_errors(doc)
    ]
    services = doc.get("services", {}) if isinstance(doc, dict) else {}
    for role in ("server-a", "server-b"):
        svc = services.get(role)
        if svc is None:
            errors.append(f"{path.name}: service {role} missing")
            continue
        if "healthcheck" not in svc:
            errors.append(f"{path.name}: {role} has no healthcheck")
        if not any("tls" in str(v) for v in svc.get("volumes", [])):
            errors.append(f"{path.name}: {role} mounts no TLS material")
    return errors


def dockerfile_errors(path: Path) -> list[str]:
    """The targets the manifests and compose file name, and the probe they run."""
    text = path.read_text(encoding="utf-8")
    errors = [
        f"{path.name}: no '{target}' build target"
        for target in ("server", "client")
        if f" AS {target}\n" not in text
    ]
    if HEALTH_PROBE not in text:
        errors.append(f"{path.name}: server image does not ship {HEALTH_PROBE}")
    if "USER " not in text:
        errors.append(f"{path.name}: images run as root (no USER instruction)")
    return errors


def validate_all(deploy_dir: Path, k8s_version: str = DEFAULT_K8S_VERSION) -> list[str]:
    """Every problem found in ``deploy_dir`` (empty list: all good)."""
    docs = load_k8s(deploy_dir / "k8s")
    if not docs:
        return [f"no Kubernetes manifests in {deploy_dir / 'k8s'}"]
    errors = schema_errors(docs, k8s_version)
    errors += server_rules(docs) + security_rules(docs) + network_rules(docs)
    errors += compose_errors(deploy_dir / "compose.yaml")
    errors += dockerfile_errors(deploy_dir / "Dockerfile")
    return errors


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="validate deploy/ (Kubernetes, compose, docker)")
    parser.add_argument("--deploy-dir", type=Path,
                        default=Path(__file__).resolve().parents[1] / "deploy")
    parser.add_argument("--k8s-version", default=DEFAULT_K8S_VERSION)
    args = parser.parse_args(argv)
    errors = validate_all(args.deploy_dir, args.k8s_version)
    for line in errors:
        print(line)
    n_docs = len(load_k8s(args.deploy_dir / "k8s"))
    print(f"{'FAILED' if errors else 'OK'}: {n_docs} Kubernetes objects, compose file, Dockerfile"
          f" ({len(errors)} problem(s))")
    return 1 if errors else 0


if __name__ == "__main__":
    sys.exit(main())
