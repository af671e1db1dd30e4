"""Trust on first use for the public keys a client encrypts under (``known_keys.json``).

Why pin at all: the client fetches the public keys from server A. Without a pin, an A that
swapped in a key pair of its own (or whoever stands in for A) would receive templates and queries
it can decrypt alone, and nothing in the protocol would notice. The strong answer is to hand the
client the key authority's ``public/`` directory (``trusted_keys``); when nobody did, the SDK
does what SSH does with host keys: the first keys seen for an (address, collection) are written
to a file, and any later difference is refused with :class:`~pura_client.errors.KeyChangedError`.
That protects every connection after the first, and makes a key change visible, by default.

What is pinned: the SHA-256 of the public key material itself (Paillier public key and the public
CKKS context, length-prefixed), not only the 16-hex key id A announces -- the id is 64 bits, short
enough that a forger could grind a second key set with the same id, and A says it about itself.
The key id is also recomputed from the material (as ``pura.keys.load_public_keys`` does for keys
on disk), so an A that announces one id and serves other keys is refused on first use already.

File: ``$PURA_KNOWN_KEYS``, else ``$XDG_CONFIG_HOME/pura/known_keys.json``, else
``~/.config/pura/known_keys.json``; written atomically (temporary file + rename) under an
exclusive lock, mode 0600 (public data, but its integrity is what the pin rests on).
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
from collections.abc import Iterator, Mapping
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path

from pura.errors import ConfigError, KeyMismatchError
from pura.keys import PublicKeys, key_id_of
from pura_client.errors import KeyChangedError

KNOWN_KEYS_ENV = "PURA_KNOWN_KEYS"
FORMAT_VERSION = 1


def default_known_keys_path(environ: Mapping[str, str] | None = None) -> Path:
    """``$PURA_KNOWN_KEYS``, else ``$XDG_CONFIG_HOME/pura/known_keys.json``, else under ~."""
    env = os.environ if environ is None else environ
    if env.get(KNOWN_KEYS_ENV):
        return Path(env[KNOWN_KEYS_ENV])
    config = Path(env["XDG_CONFIG_HOME"]) if env.get("XDG_CONFIG_HOME") else Path.home() / ".config"
    return config / "pura" / "known_keys.json"


def _material(keys: PublicKeys) -> tuple[bytes, ...]:
    """The public key material the key id is computed over (see ``pura.keys.generate_key_set``):
    B's sealing key included, so a pinned key id also pins the box only B opens."""
    return keys.id_parts()


def fingerprint(keys: PublicKeys) -> str:
    """Full SHA-256 (hex) over the length-prefixed public key material."""
    h = hashlib.sha256()
    for part in _material(keys):
        h.update(len(part).to_bytes(8, "big"))
        h.update(part)
    return h.hexdigest()


@dataclass(frozen=True)
class KeyPin:
    """What was seen on first use for one (address, collection)."""

    key_id: str
    parameter_set_id: str
    fingerprint: str
    first_seen: str

    @classmethod
    def of(cls, keys: PublicKeys, *, now: datetime | None = None) -> KeyPin:
        when = (now or datetime.now(UTC)).isoformat(timespec="seconds")
        return cls(keys.key_id, keys.parameters.id, fingerprint(keys), when)

    def matches(self, keys: PublicKeys) -> bool:
        return (self.key_id, self.parameter_set_id, self.fingerprint) == (
            keys.key_id, keys.parameters.id, fingerprint(keys)
        )


class KnownKeys:
    """The pin file: ``{"version": 1, "pins": {"<address>/<collection>": KeyPin}}``."""

    def __init__(self, path: Path | str | None = None) -> None:
        self.path = Path(path) if path is not None else default_known_keys_path()

    def __repr__(self) -> str:
        return f"KnownKeys({str(self.path)!r})"

    @staticmethod
    def entry(address: str, collection: str) -> str:
        return f"{address}/{collection}"

    def get(self, address: str, collection: str) -> KeyPin | None:
        """The pin for (address, collection), or None before first use."""
        raw = self._read().get(self.entry(address, collection))
        return None if raw is None else KeyPin(**raw)

    def check(self, address: str, collection: str, keys: PublicKeys) -> KeyPin:
        """Pin ``keys`` on first use; afterwards refuse anything but the pinned keys.

        The key id is recomputed from the material first: keys whose material does not hash to
        the id they carry are refused even on first use (they cannot come from ``pura keygen``).
        """
        if key_id_of(*_material(keys)) != keys.key_id:
            raise KeyMismatchError(
                f"server {address} serves public keys that do not hash to their key id "
                f"{keys.key_id}"
            )
        with self._locked():
            pins = self._read()
            name = self.entry(address, collection)
            if name in pins:
                pin = KeyPin(**pins[name])
                if not pin.matches(keys):
                    raise KeyChangedError(
                        f"server {address} (collection {collection!r}) now serves key "
                        f"{keys.key_id}, but key {pin.key_id} was pinned on first use "
                        f"({pin.first_seen}) in {self.path}. Refusing to encrypt under changed "
                        "keys; if the keys were rotated on purpose, remove the pin "
                        "(KnownKeys.forget) or pass the key authority's public/ directory."
                    )
                return pin
            pin = KeyPin.of(keys)
            pins[name] = asdict(pin)
            self._write(pins)
            return pin

    def forget(self, address: str, collection: str) -> bool:
        """Drop a pin (after a deliberate key rotation); True when there was one."""
        with self._locked():
            pins = self._read()
            found = pins.pop(self.entry(address, collection), None) is not None
            if found:
                self._write(pins)
            return found

    # --- file ------------------------------------------------------------------------------

    @contextlib.contextmanager
    def _locked(self) -> Iterator[None]:
        """Exclusive lock on a sibling file, so two clients pinning at once lose no entry."""
        self.path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        fd = os.open(self.path.with_name(self.path.name + ".lock"), os.O_CREAT | os.O_RDWR, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield
        finally:
            os.close(fd)

    def _read(self) -> dict[str, dict[str, str]]:
        try:
            data = json.loads(self.path.read_text())
        except FileNotFoundError:
            return {}
        except (OSError, ValueError) as exc:
            raise ConfigError(f"cannot read the key pins in {self.path}: {exc}") from None
        if not isinstance(data, dict) or data.get("version") != FORMAT_VERSION:
            raise ConfigError(f"{self.path} is not a version-{FORMAT_VERSION} pin file")
        pins = data.get("pins")
        if not isinstance(pins, dict):
            raise ConfigError(f"{self.path} has no pins object")
        return pins

    def _write(self, pins: Mapping[str, Mapping[str, str]]) -> None:
        tmp = self.path.with_name(self.path.name + ".tmp")
        fd = os.open(tmp, os.O_CREAT | os.O_WRONLY | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as fh:
            json.dump({"version": FORMAT_VERSION, "pins": pins}, fh, indent=2, sort_keys=True)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, self.path)


__all__ = ["KNOWN_KEYS_ENV", "KeyPin", "KnownKeys", "default_known_keys_path", "fingerprint"]
