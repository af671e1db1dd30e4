"""Key files: permissions, headers, role isolation."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from pura.errors import ConfigError, KeyMismatchError
from pura.keys import (
    KeyHeader,
    check_role_isolation,
    decode_key_file,
    key_id_of,
    read_key,
    read_secret_file,
    write_key,
    write_secret_file,
)


def test_secret_written_private_and_refused_when_opened_up(tmp_path: Path) -> None:
    path = tmp_path / "d" / "s.key"
    write_secret_file(path, b"secret")
    assert os.stat(path).st_mode & 0o777 == 0o600
    assert os.stat(path.parent).st_mode & 0o777 == 0o700
    assert read_secret_file(path) == b"secret"
    os.chmod(path, 0o644)
    with pytest.raises(ConfigError, match="chmod 600"):
        read_secret_file(path)


def test_headers_and_ids(tmp_path: Path) -> None:
    header = KeyHeader("paillier-share-1", "ps1", "kid1")
    path = write_key(tmp_path, header, b"payload")
    assert read_key(tmp_path, "paillier-share-1") == (header, b"payload")
    with pytest.raises(KeyMismatchError):
        read_key(tmp_path, "paillier-share-1", key_id="other")
    with pytest.raises(KeyMismatchError):
        read_key(tmp_path, "paillier-share-1", parameter_set_id="other")
    with pytest.raises(ConfigError):
        decode_key_file(b"garbage")
    with pytest.raises(ConfigError):
        decode_key_file(path.read_bytes()[:12])
    assert key_id_of(b"a", b"bc") != key_id_of(b"ab", b"c")


def test_a_refuses_to_start_with_b_secrets_readable(tmp_path: Path) -> None:
    a_dir, b_dir = tmp_path / "a", tmp_path / "b"
    write_key(a_dir, KeyHeader("paillier-share-1", "p", "k"), b"1")
    write_key(b_dir, KeyHeader("paillier-share-2", "p", "k"), b"2")
    check_role_isolation("a", a_dir)
    with pytest.raises(ConfigError, match="can read"):
        check_role_isolation("a", a_dir, others=(b_dir,))
    write_key(a_dir, KeyHeader("ckks-secret-context", "p", "k"), b"sk")
    with pytest.raises(ConfigError, match="ckks-secret"):
        check_role_isolation("a", a_dir)


def test_key_set_roundtrip_and_isolation(tmp_path: Path) -> None:
    from pura.crypto.params import FAST_PARAMETERS
    from pura.keys import PublicKeys, generate_key_set, load_a_keys, load_b_keys, load_public_keys

    pub = generate_key_set(tmp_path, FAST_PARAMETERS)
    a = load_a_keys(tmp_path / "a")
    b = load_b_keys(tmp_path / "b")
    client = load_public_keys(tmp_path / "public")
    assert a.public.key_id == b.public.key_id == client.key_id == pub.key_id
    assert a.share.index == 1 and b.share.index == 2
    assert b.ckks_secret.is_private and not a.public.ckks.is_private
    assert str(a.share.public_key.key_id) not in repr(a) or "exponent" not in repr(a)
    assert not (tmp_path / "a" / "paillier-share-2.key").exists()
    assert not (tmp_path / "a" / "ckks-secret.ctx").exists()
    again = PublicKeys.from_bundle(pub.bundle())
    assert again.key_id == pub.key_id and again.paillier == pub.paillier
    with pytest.raises(ConfigError, match="can read"):
        load_a_keys(tmp_path / "a", forbidden=(tmp_path / "b",))
    # a share copied from another key set is refused by id
    other = tmp_path / "other"
    generate_key_set(other, FAST_PARAMETERS)
    os.replace(other / "a" / "paillier-share-1.key", tmp_path / "a" / "paillier-share-1.key")
    with pytest.raises(KeyMismatchError):
        load_a_keys(tmp_path / "a")


def test_a_head_dim_that_does_not_divide_the_slots_is_refused() -> None:
    """The diagonal CKKS layout repeats the head over the 4,096 slots: 96 cannot tile them."""
    from pura.crypto.params import EncodingParams, ParameterSet
    from pura.errors import ParameterError

    with pytest.raises(ParameterError, match="divide the CKKS slot count"):
        ParameterSet(encoding=EncodingParams(head_dim=96))
    assert ParameterSet(encoding=EncodingParams(head_dim=128)).encoding.head_dim == 128
