"""Key files on disk and who may hold which.

Rules (threat T19, docs/architecture.md "Keys and who holds what"):

* Secret files (Paillier shares, the CKKS secret context, TLS private keys) are written 0600
  inside a 0700 directory, atomically (temp file + fsync + rename), and refused on load when
  group or others may read or write them -- the rule OpenSSH applies to private keys
  (``st_mode & 077 != 0`` -> refuse).
* Every key file starts with a one-line JSON header naming its *kind*, the parameter-set id and
  the key id, so a file can never be loaded as the wrong kind or mixed across keys.
* Server A must not be able to read share 2 or the CKKS secret key: A and B together can decrypt
  everything, so their non-collusion is the whole security argument. :func:`check_role_isolation`
  refuses to start A when either secret is present in (or readable from) A's key directory.
"""

from __future__ import annotations

import hashlib
import json
import os
import stat
from dataclasses import dataclass
from pathlib import Path

from pura.errors import ConfigError, KeyMismatchError

MAGIC = b"PURAKEY1\n"

#: kinds of key file and whether they are secret
KINDS: dict[str, bool] = {
    "paillier-public": False,
    "paillier-share-1": True,
    "paillier-share-2": True,
    "ckks-public-context": False,
    "ckks-secret-context": True,
    "pca": False,
}
#: secrets only server B may hold
B_ONLY = ("paillier-share-2", "ckks-secret-context")
#: secrets only server A may hold
A_ONLY = ("paillier-share-1",)

FILE_NAMES: dict[str, str] = {
    "paillier-public": "paillier.pub",
    "paillier-share-1": "paillier-share-1.key",
    "paillier-share-2": "paillier-share-2.key",
    "ckks-public-context": "ckks-public.ctx",
    "ckks-secret-context": "ckks-secret.ctx",
    "pca": "pca.npz",
}


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _atomic_write(path: Path, data: bytes, mode: int) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    try:
        os.fchmod(fd, mode)
        os.write(fd, data)
        os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(tmp, path)
    _fsync_dir(path.parent)


def write_secret_file(path: Path, data: bytes) -> None:
    """Write a secret: directory 0700, file 0600, atomically."""
    path.parent.mkdir(parents=True, exist_ok=True)
    os.chmod(path.parent, 0o700)
    _atomic_write(path, data, 0o600)


def write_public_file(path: Path, data: bytes) -> None:
    """Write public material (world-readable is fine, it is public)."""
    _atomic_write(path, data, 0o644)


def check_private(path: Path) -> None:
    """Refuse a secret file that group/others can access, or that is not a regular file."""
    try:
        st = path.stat()
    except FileNotFoundError:
        raise ConfigError(f"secret file {path} does not exist") from None
    if not stat.S_ISREG(st.st_mode):
        raise ConfigError(f"secret file {path} is not a regular file")
    if st.st_mode & 0o077:
        raise ConfigError(
            f"secret file {path} has mode {stat.S_IMODE(st.st_mode):04o}; it must not be "
            f"accessible by group or others (chmod 600 {path})"
        )


def read_secret_file(path: Path) -> bytes:
    """Read a secret file after checking its permissions."""
    check_private(path)
    return path.read_bytes()


@dataclass(frozen=True)
class KeyHeader:
    """First line of every key file."""

    kind: str
    parameter_set_id: str
    key_id: str


def encode_key_file(header: KeyHeader, payload: bytes) -> bytes:
    if header.kind not in KINDS:
        raise ConfigError(f"unknown key kind {header.kind!r}")
    line = json.dumps(
        {"kind": header.kind, "parameter_set_id": header.parameter_set_id, "key_id": header.key_id},
        sort_keys=True,
    ).encode()
    return MAGIC + line + b"\n" + payload


def decode_key_file(data: bytes, *, path: Path | str = "<bytes>") -> tuple[KeyHeader, bytes]:
    if not data.startswith(MAGIC):
        raise ConfigError(f"{path} is not a Pura key file")
    end = data.find(b"\n", len(MAGIC))
    if end < 0:
        raise ConfigError(f"{path} has a truncated header")
    try:
        raw = json.loads(data[len(MAGIC):end])
        header = KeyHeader(str(raw["kind"]), str(raw["parameter_set_id"]), str(raw["key_id"]))
    except (ValueError, KeyError, TypeError) as exc:
        raise ConfigError(f"{path} has a malformed header") from exc
    if header.kind not in KINDS:
        raise ConfigError(f"{path} holds unknown key kind {header.kind!r}")
    return header, data[end + 1:]


def write_key(directory: Path, header: KeyHeader, payload: bytes) -> Path:
    """Write one key file under its standard name; secrets get 0600."""
    path = directory / FILE_NAMES[header.kind]
    blob = encode_key_file(header, payload)
    if KINDS[header.kind]:
        write_secret_file(path, blob)
    else:
        write_public_file(path, blob)
    return path


def read_key(
    directory: Path, kind: str, *, key_id: str | None = None, parameter_set_id: str | None = None
) -> tuple[KeyHeader, bytes]:
    """Read the ``kind`` file of ``directory``, checking secrecy, kind and (optionally) ids."""
    path = directory / FILE_NAMES[kind]
    if KINDS[kind]:
        data = read_secret_file(path)
    else:
        try:
            data = path.read_bytes()
        except FileNotFoundError:
            raise ConfigError(f"key file {path} does not exist") from None
    header, payload = decode_key_file(data, path=path)
    if header.kind != kind:
        raise ConfigError(f"{path} holds a {header.kind!r}, expected {kind!r}")
    if key_id is not None and header.key_id != key_id:
        raise KeyMismatchError(f"{path} belongs to key {header.key_id}, expected {key_id}")
    if parameter_set_id is not None and header.parameter_set_id != parameter_set_id:
        raise KeyMismatchError(
            f"{path} was made for parameter set {header.parameter_set_id}, "
            f"expected {parameter_set_id}"
        )
    return header, payload


def key_id_of(*public_parts: bytes) -> str:
    """Key id: SHA-256 over the public key material (length-prefixed), first 16 hex chars."""
    h = hashlib.sha256()
    for part in public_parts:
        h.update(len(part).to_bytes(8, "big"))
        h.update(part)
    return h.hexdigest()[:16]


def check_role_isolation(role: str, directory: Path, *, others: tuple[Path, ...] = ()) -> None:
    """Refuse to start a server that can read the other server's secrets.

    ``directory`` is the server's own key directory; ``others`` are further paths the
    deployment knows hold the other party's secrets (e.g. the sibling key directory made by
    ``pura keygen``). On one machine with one user, file modes cannot separate A from B, so the
    check is on what the process can actually open.
    """
    forbidden = B_ONLY if role == "a" else A_ONLY
    candidates = [directory / FILE_NAMES[k] for k in forbidden]
    for other in others:
        candidates += [other / FILE_NAMES[k] for k in forbidden]
    for path in candidates:
        if path.exists() and os.access(path, os.R_OK):
            raise ConfigError(
                f"server {role.upper()} can read {path}; the other server's secret must not be "
                "readable by this process (A and B together can decrypt everything)"
            )


__all__ = [
    "A_ONLY",
    "B_ONLY",
    "FILE_NAMES",
    "KINDS",
    "KeyHeader",
    "check_private",
    "check_role_isolation",
    "decode_key_file",
    "encode_key_file",
    "key_id_of",
    "read_key",
    "read_secret_file",
    "write_key",
    "write_public_file",
    "write_secret_file",
]
