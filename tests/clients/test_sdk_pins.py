"""Trust-on-first-use key pins (pura_client.pins) on real fast-profile key sets, no servers.

The end-to-end pin tests against real servers A and B are in ``test_sdk.py`` (slow).
"""

from __future__ import annotations

import dataclasses
import json
import stat
import subprocess
import sys
from pathlib import Path

import pytest
from pura_client.errors import KeyChangedError
from pura_client.pins import KnownKeys, default_known_keys_path, fingerprint

from pura.crypto.params import DLIB_FAST_PARAMETERS
from pura.errors import ConfigError, KeyMismatchError, PuraError
from pura.keys import PublicKeys, generate_key_set, load_public_keys

ADDRESS, COLLECTION = "a.example:50051", "staff"


@pytest.fixture(scope="module")
def two_key_sets(tmp_path_factory: pytest.TempPathFactory) -> tuple[PublicKeys, PublicKeys]:
    """Two independent key ceremonies (what a swapped or rotated key set looks like)."""
    root = tmp_path_factory.mktemp("pins")
    generate_key_set(root / "one", DLIB_FAST_PARAMETERS)
    generate_key_set(root / "two", DLIB_FAST_PARAMETERS)
    return load_public_keys(root / "one" / "public"), load_public_keys(root / "two" / "public")


def test_first_use_pins_the_key_material_in_a_private_file(
    tmp_path: Path, two_key_sets: tuple[PublicKeys, PublicKeys]
) -> None:
    keys, _ = two_key_sets
    pins = KnownKeys(tmp_path / "cfg" / "known_keys.json")
    assert pins.get(ADDRESS, COLLECTION) is None
    pin = pins.check(ADDRESS, COLLECTION, keys)
    assert (pin.key_id, pin.parameter_set_id) == (keys.key_id, keys.parameters.id)
    assert pin.fingerprint == fingerprint(keys) and len(pin.fingerprint) == 64
    stored = json.loads(pins.path.read_text())
    assert stored["pins"][f"{ADDRESS}/{COLLECTION}"]["fingerprint"] == pin.fingerprint
    assert stat.S_IMODE(pins.path.stat().st_mode) == 0o600
    # the same keys again (a new process reading the file) pass and keep the first pin
    assert KnownKeys(pins.path).check(ADDRESS, COLLECTION, keys) == pin


def test_changed_keys_are_refused_until_the_pin_is_forgotten(
    tmp_path: Path, two_key_sets: tuple[PublicKeys, PublicKeys]
) -> None:
    first, second = two_key_sets
    pins = KnownKeys(tmp_path / "known_keys.json")
    pins.check(ADDRESS, COLLECTION, first)
    with pytest.raises(KeyChangedError, match=f"now serves key {second.key_id}"):
        pins.check(ADDRESS, COLLECTION, second)
    # the refusal is a KeyMismatchError, hence a PuraError: one hierarchy for callers
    assert issubclass(KeyChangedError, KeyMismatchError) and issubclass(KeyChangedError, PuraError)
    # pins are per (address, collection): another collection pins on its own first use
    assert pins.check(ADDRESS, "visitors", second).key_id == second.key_id
    assert pins.forget(ADDRESS, COLLECTION) and not pins.forget(ADDRESS, COLLECTION)
    assert pins.check(ADDRESS, COLLECTION, second).key_id == second.key_id


def test_keys_that_do_not_hash_to_their_id_are_refused_on_first_use(
    tmp_path: Path, two_key_sets: tuple[PublicKeys, PublicKeys]
) -> None:
    first, second = two_key_sets
    forged = dataclasses.replace(second, key_id=first.key_id)  # other keys, announced as first
    pins = KnownKeys(tmp_path / "known_keys.json")
    with pytest.raises(KeyMismatchError, match="do not hash to their key id"):
        pins.check(ADDRESS, COLLECTION, forged)
    assert not pins.path.exists()


def test_a_corrupt_pin_file_is_a_config_error_not_a_fresh_start(tmp_path: Path) -> None:
    path = tmp_path / "known_keys.json"
    path.write_text("{not json")
    with pytest.raises(ConfigError, match="cannot read the key pins"):
        KnownKeys(path).get(ADDRESS, COLLECTION)
    path.write_text(json.dumps({"version": 99, "pins": {}}))
    with pytest.raises(ConfigError, match="version-1"):
        KnownKeys(path).get(ADDRESS, COLLECTION)


def test_default_path_follows_env_then_xdg_then_home(tmp_path: Path) -> None:
    assert default_known_keys_path({"PURA_KNOWN_KEYS": str(tmp_path / "k.json")}) == (
        tmp_path / "k.json"
    )
    assert default_known_keys_path({"XDG_CONFIG_HOME": str(tmp_path)}) == (
        tmp_path / "pura" / "known_keys.json"
    )
    assert default_known_keys_path({}) == Path.home() / ".config" / "pura" / "known_keys.json"


def test_importing_the_sdk_loads_neither_torch_nor_the_server() -> None:
    """The front door must not drag in the face pipeline or the server package."""
    code = (
        "import sys, pura_client\n"
        "pura_client.connect, pura_client.Client, pura_client.KnownKeys\n"
        "bad = sorted(m for m in sys.modules if m.split('.')[0] in ('torch', 'dlib', "
        "'matplotlib') or m.startswith('pura.service'))\n"
        "print(','.join(bad))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], check=True, capture_output=True,
                         text=True, timeout=120)
    assert out.stdout.strip() == ""


def test_client_package_never_imports_server_modules() -> None:
    """Dependencies run one way: the SDK may import the core, never pura.service.

    ``audit/`` is left out: the privacy audit is an operator tool that starts and records real
    servers (``pura-audit views``), so it legitimately drives the server package.
    """
    root = Path(__file__).resolve().parents[2] / "clients" / "pura_client"
    offenders = [
        f"{path.relative_to(root)}:{n}"
        for path in root.rglob("*.py") if not {"_proto", "audit"} & set(path.parts)
        for n, line in enumerate(path.read_text().splitlines(), 1)
        if line.strip().startswith(("from pura.service", "import pura.service"))
    ]
    assert offenders == []
