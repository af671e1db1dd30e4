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
import random
import stat
from dataclasses import dataclass, replace
from pathlib import Path

from pura import wire
from pura.crypto.ckks import CKKSContext
from pura.crypto.paillier import (
    KeyShare,
    PublicKey,
    generate_keypair,
    public_key_from_bytes,
    public_key_to_bytes,
)
from pura.crypto.params import ParameterSet
from pura.crypto.seal import SealPrivateKey, SealPublicKey
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
    "parameters": False,
    "seal-public": False,
    "seal-private": True,
}
#: secrets only server B may hold
B_ONLY = ("paillier-share-2", "ckks-secret-context", "seal-private")
#: secrets only server A may hold
A_ONLY = ("paillier-share-1",)

FILE_NAMES: dict[str, str] = {
    "paillier-public": "paillier.pub",
    "paillier-share-1": "paillier-share-1.key",
    "paillier-share-2": "paillier-share-2.key",
    "ckks-public-context": "ckks-public.ctx",
    "ckks-secret-context": "ckks-secret.ctx",
    "seal-public": "seal.pub",
    "seal-private": "seal.key",
    "pca": "pca.npz",
    "parameters": "parameters.key",
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
    return hashlib.sha256(wire.pack_parts(public_parts)).hexdigest()[:16]


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


def default_peer_key_dirs(directory: Path, role: str) -> tuple[Path, ...]:
    """Where ``pura keygen`` put the *other* server's secrets relative to ``directory``: it
    writes ``K/a`` and ``K/b`` side by side, so a server started from ``K/a`` must also check
    ``K/b`` (issue 13, item 11: the check used to look only at A's own directory unless
    ``--forbid`` named the sibling)."""
    mine, other = ("a", "b") if role == "a" else ("b", "a")
    return (directory.parent / other,) if directory.name == mine else ()


# --- key sets: what `pura keygen` writes and each party loads ------------------------------


@dataclass(frozen=True)
class PublicKeys:
    """What every party holds: parameter set, Paillier public key, public CKKS context and
    (key sets made since sealed admission) B's public sealing key.

    The key id hashes every public part, the sealing key included: a client that pins the key
    id also pins the box only B can open (:mod:`pura.protocols.sealed`), so A cannot hand it a
    sealing key of its own. Key sets without a sealing key (made before it existed) keep
    their id and enrol through the joint-decryption admission."""

    parameters: ParameterSet
    paillier: PublicKey
    ckks: CKKSContext
    key_id: str
    seal: SealPublicKey | None = None

    def bundle(self) -> bytes:
        """Public material in one blob (served chunked by GetPublicKeys). Galois keys are left
        out: clients only encrypt, and the Galois keys are most of the context's size."""
        parts = (
            self.parameters.to_json().encode(),
            public_key_to_bytes(self.paillier),
            self.ckks.public(with_galois_keys=False).to_bytes(),
            self.key_id.encode(),
            self.seal.raw if self.seal is not None else b"",
        )
        return wire.pack_parts(parts)

    @classmethod
    def from_bundle(cls, data: bytes) -> PublicKeys:
        parts = wire.unpack_parts(data, 5, what="public key bundle", error=ConfigError)
        params = ParameterSet.from_json(parts[0].decode())
        ckks = CKKSContext.from_bytes(parts[2], expect_secret=False, params=params.ckks)
        seal = SealPublicKey(parts[4]) if parts[4] else None
        return cls(params, public_key_from_bytes(parts[1]), ckks, parts[3].decode(), seal)

    def id_parts(self) -> tuple[bytes, ...]:
        """What the key id hashes (the sealing key only where the set has one)."""
        parts = (public_key_to_bytes(self.paillier),
                 self.ckks.public(with_galois_keys=False).to_bytes())
        return parts + ((self.seal.raw,) if self.seal is not None else ())


@dataclass(frozen=True)
class AKeys:
    """Server A: public material + Paillier share 1 (+ Galois keys in its CKKS context)."""

    public: PublicKeys
    share: KeyShare

    def __repr__(self) -> str:
        return f"AKeys(key_id={self.public.key_id})"


@dataclass(frozen=True)
class BKeys:
    """Server B: public material + Paillier share 2 + the CKKS secret context (+ the private
    sealing key where the key set has one)."""

    public: PublicKeys
    share: KeyShare
    ckks_secret: CKKSContext
    seal: SealPrivateKey | None = None

    def __repr__(self) -> str:
        return f"BKeys(key_id={self.public.key_id})"


def _write_public_parts(directory: Path, header: KeyHeader, pub: PublicKeys, ckks: bytes) -> None:
    write_key(directory, replace(header, kind="parameters"), pub.parameters.to_json().encode())
    write_key(directory, replace(header, kind="paillier-public"), public_key_to_bytes(pub.paillier))
    write_key(directory, replace(header, kind="ckks-public-context"), ckks)
    if pub.seal is not None:
        write_key(directory, replace(header, kind="seal-public"), pub.seal.raw)


def generate_key_set(
    out: Path, parameters: ParameterSet, *, rng: random.Random | None = None
) -> PublicKeys:
    """The key authority: fresh keys, written as ``out/a``, ``out/b``, ``out/public``.

    The full Paillier secret is never written: only the two shares exist on disk, each in its
    own 0700 directory. Give ``a/`` to server A, ``b/`` to server B, ``public/`` to clients.
    """
    pk, share_a, share_b = generate_keypair(parameters.paillier, rng)
    secret_ctx = CKKSContext.generate(parameters.ckks)
    public_ctx = secret_ctx.public()
    client_ctx = public_ctx.public(with_galois_keys=False).to_bytes()
    seal = SealPrivateKey.generate()
    key_id = key_id_of(public_key_to_bytes(pk), client_ctx, seal.public.raw)
    pub = PublicKeys(parameters, pk, public_ctx, key_id, seal.public)
    header = KeyHeader("parameters", parameters.id, key_id)
    _write_public_parts(out / "a", header, pub, public_ctx.to_bytes())
    write_key(out / "a", replace(header, kind="paillier-share-1"), share_a.to_bytes())
    _write_public_parts(out / "b", header, pub, client_ctx)
    write_key(out / "b", replace(header, kind="paillier-share-2"), share_b.to_bytes())
    write_key(out / "b", replace(header, kind="ckks-secret-context"), secret_ctx.to_bytes())
    write_key(out / "b", replace(header, kind="seal-private"), seal.to_bytes())
    _write_public_parts(out / "public", header, pub, client_ctx)
    for sub in ("a", "b"):
        os.chmod(out / sub, 0o700)
    return pub


def load_public_keys(directory: Path) -> PublicKeys:
    """Parameters, Paillier public key and public CKKS context of a key directory."""
    header, params_json = read_key(directory, "parameters")
    params = ParameterSet.from_json(params_json.decode())
    if params.id != header.parameter_set_id:
        raise KeyMismatchError(f"{directory}: parameters file does not match its header")
    ids = {"key_id": header.key_id, "parameter_set_id": header.parameter_set_id}
    _, pk_bytes = read_key(directory, "paillier-public", **ids)
    _, ctx_bytes = read_key(directory, "ckks-public-context", **ids)
    pk = public_key_from_bytes(pk_bytes)
    ckks = CKKSContext.from_bytes(ctx_bytes, expect_secret=False, params=params.ckks)
    seal = None
    if (directory / FILE_NAMES["seal-public"]).exists():
        seal = SealPublicKey(read_key(directory, "seal-public", **ids)[1])
    pub = PublicKeys(params, pk, ckks, header.key_id, seal)
    if key_id_of(*pub.id_parts()) != header.key_id:
        raise KeyMismatchError(f"{directory}: public keys do not hash to key id {header.key_id}")
    pk.check_params(params.paillier)
    return pub


def _load_share(directory: Path, kind: str, pub: PublicKeys, index: int) -> KeyShare:
    _, raw = read_key(
        directory, kind, key_id=pub.key_id, parameter_set_id=pub.parameters.id
    )
    share = KeyShare.from_bytes(raw)
    if share.public_key != pub.paillier or share.index != index:
        raise KeyMismatchError(f"{directory}: share {share.index} does not belong to these keys")
    return share


def load_a_keys(directory: Path, *, forbidden: tuple[Path, ...] = ()) -> AKeys:
    """Server A's keys; refuses to proceed if A can read B's secrets (see module docstring)."""
    check_role_isolation("a", directory, others=forbidden)
    pub = load_public_keys(directory)
    return AKeys(pub, _load_share(directory, "paillier-share-1", pub, 1))


def load_b_keys(directory: Path, *, forbidden: tuple[Path, ...] = ()) -> BKeys:
    check_role_isolation("b", directory, others=forbidden)
    pub = load_public_keys(directory)
    share = _load_share(directory, "paillier-share-2", pub, 2)
    _, raw = read_key(
        directory, "ckks-secret-context", key_id=pub.key_id, parameter_set_id=pub.parameters.id
    )
    secret = CKKSContext.from_bytes(raw, expect_secret=True, params=pub.parameters.ckks)
    if secret.key_id != pub.ckks.key_id:
        raise KeyMismatchError(f"{directory}: CKKS secret key does not match the public context")
    seal = None
    if pub.seal is not None:
        _, raw_seal = read_key(directory, "seal-private", key_id=pub.key_id,
                               parameter_set_id=pub.parameters.id)
        seal = SealPrivateKey.from_bytes(raw_seal)
        if seal.public != pub.seal:
            raise KeyMismatchError(f"{directory}: sealing key does not match the public key")
    return BKeys(pub, share, secret, seal)


__all__ = [
    "A_ONLY",
    "B_ONLY",
    "FILE_NAMES",
    "KINDS",
    "AKeys",
    "BKeys",
    "KeyHeader",
    "PublicKeys",
    "check_private",
    "check_role_isolation",
    "decode_key_file",
    "default_peer_key_dirs",
    "encode_key_file",
    "generate_key_set",
    "key_id_of",
    "load_a_keys",
    "load_b_keys",
    "load_public_keys",
    "read_key",
    "read_secret_file",
    "write_key",
    "write_public_file",
    "write_secret_file",
]
