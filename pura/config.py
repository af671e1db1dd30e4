"""Server configuration: one frozen dataclass, loadable from YAML, with safe defaults.

Defaults follow the service-hardening notes (threat T21): explicit message-size limits, a cap on
concurrent RPCs (excess calls get RESOURCE_EXHAUSTED from gRPC itself), a server-side default
deadline for calls that carry none, TLS on, reflection off, and an identification budget of 100
queries per principal per hour (the project bar for decision-oracle attacks, threat T5).
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any

import yaml

from pura.errors import ConfigError

MiB = 1 << 20


@dataclass(frozen=True)
class Limits:
    """Resource limits of one server."""

    #: Largest single gRPC message accepted. Queries at the 128-bit profile (32 CKKS
    #: ciphertexts of N = 8192 + 129 Paillier ciphertexts) are ~10 MB, so 4 MB is too small.
    max_message_bytes: int = 64 * MiB
    #: Largest reassembled chunked payload (helper steps, public keys).
    max_payload_bytes: int = 1024 * MiB
    max_concurrent_rpcs: int = 32
    worker_threads: int = 8
    #: Deadline applied when the client sends none; and the cap on any client deadline.
    default_deadline_s: float = 120.0
    max_deadline_s: float = 600.0
    #: Identification/verification queries per principal per window.
    query_budget: int = 100
    budget_window_s: float = 3600.0
    #: Failed verifications per target subject per window.
    failed_per_target: int = 20
    #: Templates committed per BulkEnroll transaction (and per block refresh).
    bulk_batch: int = 64


@dataclass(frozen=True)
class ServerConfig:
    """Everything ``pura serve`` needs."""

    role: str  # "a" | "b"
    listen: str = "127.0.0.1:0"
    key_dir: Path = Path(".pura/keys/a")
    data_dir: Path = Path(".pura/data")
    tls_dir: Path | None = Path(".pura/tls")
    #: Certificate name (``<name>.pem``/``.key`` in ``tls_dir``) this server presents.
    cert_name: str = ""
    #: Address of B (A only).
    peer: str = ""
    #: Directories holding the other server's secrets, checked to be unreadable at start.
    forbidden_key_dirs: tuple[Path, ...] = ()
    #: (sha256 hex of token, principal, role) bearer tokens, in addition to mTLS.
    tokens: tuple[tuple[str, str, str], ...] = ()
    dev: bool = False
    #: Worker processes for the heavy Paillier loops (gmpy2 holds the GIL); 1 = in-process.
    engine_workers: int = 1
    #: Candidates passed from CKKS preselection to the exact stage.
    top_k: int = 8
    limits: Limits = field(default_factory=Limits)

    def __post_init__(self) -> None:
        if self.role not in ("a", "b"):
            raise ConfigError(f"role must be 'a' or 'b', got {self.role!r}")
        if self.role == "a" and not self.peer:
            raise ConfigError("server A needs the address of server B (peer)")
        if self.tls_dir is None and not self.dev:
            raise ConfigError("TLS can only be disabled together with --dev")

    @property
    def certificate(self) -> str:
        return self.cert_name or f"server-{self.role}"

    def with_overrides(self, **changes: Any) -> ServerConfig:
        return replace(self, **{k: v for k, v in changes.items() if v is not None})

    @classmethod
    def from_yaml(cls, path: Path) -> ServerConfig:
        try:
            raw = yaml.safe_load(path.read_text()) or {}
        except (OSError, yaml.YAMLError) as exc:
            raise ConfigError(f"cannot read config {path}: {exc}") from exc
        if not isinstance(raw, dict):
            raise ConfigError(f"{path} must hold a mapping")
        limits = Limits(**raw.pop("limits", {}))
        known = {f.name for f in fields(cls)}
        unknown = set(raw) - known
        if unknown:
            raise ConfigError(f"unknown config keys in {path}: {sorted(unknown)}")
        for key in ("key_dir", "data_dir", "tls_dir"):
            if raw.get(key) is not None:
                raw[key] = Path(raw[key])
        raw["forbidden_key_dirs"] = tuple(Path(p) for p in raw.get("forbidden_key_dirs", ()))
        raw["tokens"] = tuple(tuple(t) for t in raw.get("tokens", ()))
        try:
            return cls(limits=limits, **raw)
        except TypeError as exc:
            raise ConfigError(f"bad config {path}: {exc}") from exc


__all__ = ["Limits", "MiB", "ServerConfig"]
