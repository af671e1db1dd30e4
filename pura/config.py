"""Server configuration: one frozen dataclass, loadable from YAML, with safe defaults.

Defaults follow the service-hardening notes (threat T21): explicit message-size limits, a cap on
concurrent RPCs (excess calls get RESOURCE_EXHAUSTED from gRPC itself), a server-side default
deadline for calls that carry none, TLS on, reflection off, and an identification budget of 100
queries per principal per hour (the project bar for decision-oracle attacks, threat T5).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any

import yaml

from pura.errors import ConfigError

MiB = 1 << 20
#: Environment variable naming the Ray cluster of server A's preselection shards; it overrides
#: the YAML file (deploy/k8s sets it), an explicit ``--ray-address`` flag overrides it.
RAY_ADDRESS_ENV = "PURA_RAY_ADDRESS"
_HOST_PORT = re.compile(r"^(\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9_.-]+):([0-9]{1,5})$")


def check_ray_address(address: str) -> str:
    """Accept the address forms ``ray.init`` accepts for joining an existing cluster.

    ``"auto"`` (a Ray node runs on this host), ``"host:port"`` (the head's GCS) or
    ``"ray://host:port"`` (Ray Client, for an A that is not itself a Ray node). Anything else,
    notably ``"local"`` (which would start a private runtime), is refused: one-machine
    parallelism is ``scoring_workers``."""
    if address == "auto":
        return address
    target = address.removeprefix("ray://")
    match = _HOST_PORT.match(target)
    if match is None or not 0 < int(match.group(2)) < 65536:
        raise ConfigError(f"ray_address must be 'auto', 'host:port' or 'ray://host:port', "
                          f"got {address!r}")
    return address


def environment_ray_address(environ: Mapping[str, str], role: str) -> str | None:
    """``PURA_RAY_ADDRESS`` for a server of ``role``: None when unset, empty, or for B."""
    address = environ.get(RAY_ADDRESS_ENV, "").strip()
    return address if address and role == "a" else None


@dataclass(frozen=True)
class Limits:
    """Resource limits of one server."""

    #: Largest single gRPC message accepted. Queries at the 128-bit profile (64 CKKS
    #: ciphertexts of N = 8192 + 3 packed Paillier ciphertexts) are ~15 MB, so 4 MB is too small.
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
    #: Open client streams (BulkEnroll) per principal, and in total (0 = half the worker
    #: threads): each holds a worker thread, and Identify must keep threads of its own.
    streams_per_principal: int = 2
    max_open_streams: int = 0
    #: A stream whose client sends nothing for this long is cancelled by the server.
    stream_idle_s: float = 30.0

    @property
    def open_streams_cap(self) -> int:
        """The total cap on open streams: ``max_open_streams``, or half the worker threads."""
        return self.max_open_streams or max(1, self.worker_threads // 2)


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
    #: Directories holding the other server's secrets, checked to be unreadable at start
    #: (the sibling of ``key_dir`` in ``pura keygen``'s layout is always checked too).
    forbidden_key_dirs: tuple[Path, ...] = ()
    #: Demo and tests only: A and B run as one user on one machine, where no file mode can
    #: keep one from reading the other's keys, so the sibling-directory check is skipped (with
    #: a warning). Never in a deployment: non-collusion is the whole security argument.
    shared_host_keys: bool = False
    #: (sha256 hex of token, principal, role) bearer tokens, in addition to mTLS.
    tokens: tuple[tuple[str, str, str], ...] = ()
    #: Address for bearer-token callers (TLS without client certificates). The ``listen``
    #: port always requires a client certificate; when a call brings both a certificate role
    #: and a token, the certificate wins (docs/service.md).
    token_listen: str | None = None
    dev: bool = False
    #: Worker processes for the heavy Paillier loops (gmpy2 holds the GIL); 1 = in-process.
    engine_workers: int = 1
    #: Candidates passed from CKKS preselection to the exact stage (pura.pipeline.config
    #: DEFAULT_TOP_K: the measured need with the 64-d head, plus a margin).
    top_k: int = 6
    #: Identifications per layout epoch (both servers; 0 = until the gallery changes): see
    #: :class:`pura.pipeline.config.SearchConfig` and docs/security.md (issue 12).
    epoch_queries: int = 0
    #: Scoring section (server A): processes scoring CKKS preselection blocks; 1 = in-process.
    scoring_workers: int = 1
    #: Ray cluster holding preselection shards (A only): "auto", "host:port", "ray://host:port".
    ray_address: str | None = None
    #: Shard actors on that cluster; None = one per live Ray node that offers CPUs.
    ray_shards: int | None = None
    #: ``--record DIR``: an auditor's tool for evaluation galleries (pura/service/recording.py):
    #: every A↔B payload, and at A the candidates read and the preselection secrets, written in
    #: the clear to DIR. Never set it on a server holding real people's templates.
    record_dir: Path | None = None
    #: ``host:port`` of the Prometheus ``/metrics`` endpoint (port 0: any free port); None: off.
    metrics_listen: str | None = None
    limits: Limits = field(default_factory=Limits)

    def __post_init__(self) -> None:
        if self.role not in ("a", "b"):
            raise ConfigError(f"role must be 'a' or 'b', got {self.role!r}")
        if self.role == "a" and not self.peer:
            raise ConfigError("server A needs the address of server B (peer)")
        if self.tls_dir is None and not self.dev:
            raise ConfigError("TLS can only be disabled together with --dev")
        if self.token_listen is not None and not self.tokens:
            raise ConfigError("token_listen is set but no tokens are configured")
        self._check_scoring()

    def _check_scoring(self) -> None:
        """The scoring section: one way of parallelising preselection, on server A only.

        Why refuse combinations instead of picking one: a deployment that asks for Ray and
        silently scores locally (or the reverse) would look healthy and be mis-sized."""
        if self.scoring_workers < 1:
            raise ConfigError(f"scoring_workers must be ≥ 1, got {self.scoring_workers}")
        if self.ray_shards is not None and self.ray_shards < 1:
            raise ConfigError(f"ray_shards must be ≥ 1 (or unset: one per Ray node), "
                              f"got {self.ray_shards}")
        if self.ray_address is None:
            if self.ray_shards is not None:
                raise ConfigError("ray_shards is set but ray_address is not")
            if self.role == "b" and self.scoring_workers > 1:
                raise ConfigError("scoring_workers applies to server A (B scores no blocks)")
            return
        check_ray_address(self.ray_address)
        if self.role == "b":
            raise ConfigError("ray_address applies to server A (B scores no blocks)")
        if self.scoring_workers > 1:
            raise ConfigError(f"choose one scorer: ray_address={self.ray_address!r} and "
                              f"scoring_workers={self.scoring_workers} are both set")

    def with_environment(self, environ: Mapping[str, str]) -> ServerConfig:
        """This configuration with ``PURA_RAY_ADDRESS`` applied (an empty value is unset).

        The variable is how container deployments switch the shards on without editing the
        mounted YAML; it replaces ``ray_address`` and is validated like it. Server B scores no
        blocks and ignores it (one environment may serve both roles)."""
        address = environment_ray_address(environ, self.role)
        return self if address is None else replace(self, ray_address=address)

    @property
    def certificate(self) -> str:
        return self.cert_name or f"server-{self.role}"

    def with_overrides(self, **changes: Any) -> ServerConfig:
        return replace(self, **{k: v for k, v in changes.items() if v is not None})

    @classmethod
    def from_yaml(cls, path: Path, environ: Mapping[str, str] | None = None) -> ServerConfig:
        """The file's configuration; ``environ`` (e.g. ``os.environ``) may override
        ``ray_address`` through ``PURA_RAY_ADDRESS`` (see :meth:`with_environment`)."""
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
        for key in ("key_dir", "data_dir", "tls_dir", "record_dir"):
            if raw.get(key) is not None:
                raw[key] = Path(raw[key])
        raw["forbidden_key_dirs"] = tuple(Path(p) for p in raw.get("forbidden_key_dirs", ()))
        raw["tokens"] = tuple(tuple(t) for t in raw.get("tokens", ()))
        address = environment_ray_address(environ or {}, str(raw.get("role", "")))
        if address is not None:
            raw["ray_address"] = address
        try:
            return cls(limits=limits, **raw)
        except TypeError as exc:
            raise ConfigError(f"bad config {path}: {exc}") from exc


__all__ = [
    "RAY_ADDRESS_ENV",
    "Limits",
    "MiB",
    "ServerConfig",
    "check_ray_address",
    "environment_ray_address",
]
