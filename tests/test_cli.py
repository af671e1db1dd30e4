"""`pura` command line: keygen, certs, and serve's refusals to start unsafely."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from typer.testing import CliRunner

from pura.cli import app

runner = CliRunner()


@pytest.fixture(scope="module")
def material(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("cli")
    result = runner.invoke(app, ["keygen", "--out", str(root / "keys"), "--profile", "fast"])
    assert result.exit_code == 0, result.output
    assert "FAST PROFILE" in result.output
    result = runner.invoke(app, ["certs", "--out", str(root / "tls")])
    assert result.exit_code == 0, result.output
    return root


def test_keygen_layout_and_modes(material: Path) -> None:
    keys = material / "keys"
    assert sorted(p.name for p in (keys / "a").iterdir()) == [
        "ckks-public.ctx", "paillier-share-1.key", "paillier.pub", "parameters.key", "seal.pub",
    ]
    assert (keys / "public" / "seal.pub").exists() and (keys / "b" / "seal.key").exists()
    assert (keys / "b" / "ckks-secret.ctx").exists()
    assert not any("share" in p.name or "secret" in p.name for p in (keys / "public").iterdir())
    for secret in (keys / "a" / "paillier-share-1.key", keys / "b" / "ckks-secret.ctx",
                   keys / "b" / "seal.key"):
        assert os.stat(secret).st_mode & 0o777 == 0o600
    assert os.stat(keys / "b").st_mode & 0o777 == 0o700


def test_certs_written(material: Path) -> None:
    names = {p.name for p in (material / "tls").iterdir()}
    assert {"ca.pem", "server-a.pem", "server-b.pem", "identifier.key", "admin.pem"} <= names


def test_unknown_profile_is_refused(tmp_path: Path) -> None:
    result = runner.invoke(app, ["keygen", "--out", str(tmp_path), "--profile", "weak"])
    assert result.exit_code == 2 and "unknown parameter preset" in result.output


def test_serve_refuses_world_readable_share(material: Path) -> None:
    share = material / "keys" / "b" / "paillier-share-2.key"
    os.chmod(share, 0o644)
    try:
        result = runner.invoke(app, ["serve", "--role", "b", "--keys", str(material / "keys" / "b"),
                                     "--tls", str(material / "tls")])
    finally:
        os.chmod(share, 0o600)
    assert result.exit_code == 2 and "chmod 600" in result.output


def test_serve_a_refuses_when_it_can_read_b_secrets(material: Path) -> None:
    result = runner.invoke(app, [
        "serve", "--role", "a", "--keys", str(material / "keys" / "a"),
        "--tls", str(material / "tls"), "--peer", "localhost:1",
        "--forbid", str(material / "keys" / "b"),
    ])
    assert result.exit_code == 2 and "must not be readable" in result.output


def test_serve_a_refuses_the_default_layout_without_forbid(material: Path) -> None:
    """``pura keygen`` writes K/a and K/b side by side: A started from K/a refuses when it can
    read K/b even without --forbid (issue 13, item 11); the demo's explicit opt-out skips it."""
    args = ["serve", "--role", "a", "--keys", str(material / "keys" / "a"),
            "--tls", str(material / "tls"), "--peer", "localhost:1"]
    result = runner.invoke(app, args)
    assert result.exit_code == 2 and "must not be readable" in result.output
    assert str(material / "keys" / "b") in result.output


def test_serve_refuses_plaintext_without_dev(material: Path) -> None:
    result = runner.invoke(app, ["serve", "--role", "b", "--keys", str(material / "keys" / "b"),
                                 "--no-tls"])
    assert result.exit_code == 2 and "TLS" in result.output


def test_serve_reads_yaml_config_and_rejects_unknown_keys(material: Path, tmp_path: Path) -> None:
    config = tmp_path / "b.yaml"
    config.write_text(f"role: b\nkey_dir: {material / 'keys' / 'b'}\nlisten: 127.0.0.1:0\n"
                      f"tls_dir: {material / 'tls'}\nbogus: 1\n")
    result = runner.invoke(app, ["serve", "--config", str(config)])
    assert result.exit_code == 2 and "unknown config keys" in result.output
    result = runner.invoke(app, ["serve", "--role", "b"])
    assert result.exit_code == 2 and "--keys" in result.output
