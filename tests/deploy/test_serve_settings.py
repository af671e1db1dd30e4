"""deploy/: the server A arguments and environment of the manifests mean what they say to the
real ``pura serve`` (CLI parsing down to the ServerConfig it would run), Ray shards included."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml
from typer.testing import CliRunner

import pura.service.run as run
from pura.cli import app
from pura.config import ServerConfig

DEPLOY = Path(__file__).resolve().parents[2] / "deploy"


def _k8s_server_a() -> tuple[list[str], dict[str, str]]:
    docs = yaml.safe_load_all((DEPLOY / "k8s" / "20-server-a.yaml").read_text(encoding="utf-8"))
    [sts] = [d for d in docs if d["kind"] == "StatefulSet"]
    [container] = sts["spec"]["template"]["spec"]["containers"]
    return list(container["args"]), {e["name"]: e["value"] for e in container["env"]}


def _parsed(args: list[str], env: dict[str, str], monkeypatch: pytest.MonkeyPatch) -> ServerConfig:
    """The ServerConfig ``pura serve`` builds from ``args`` and ``env`` (nothing is started)."""
    seen: list[ServerConfig] = []

    def capture(cfg: ServerConfig, **_: Any) -> None:
        seen.append(cfg)

    monkeypatch.setattr(run, "serve_forever", capture)
    monkeypatch.delenv("PURA_RAY_ADDRESS", raising=False)
    result = CliRunner().invoke(app, args, env=env)
    assert result.exit_code == 0, result.output
    [cfg] = seen
    return cfg


def test_k8s_server_a_uses_the_ray_shards(monkeypatch: pytest.MonkeyPatch) -> None:
    args, env = _k8s_server_a()
    cfg = _parsed(args, env, monkeypatch)
    assert cfg.role == "a"
    assert cfg.ray_address == env["PURA_RAY_ADDRESS"]
    assert cfg.ray_address.startswith("ray://pura-ray-head.")  # Ray Client: A is no Ray node
    assert cfg.ray_shards == 8 and cfg.scoring_workers == 1


def test_compose_server_a_reads_the_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    compose = yaml.safe_load((DEPLOY / "compose.yaml").read_text(encoding="utf-8"))
    server_a = compose["services"]["server-a"]
    assert server_a["environment"]["PURA_RAY_ADDRESS"] == "${PURA_RAY_ADDRESS:-}"
    assert server_a["environment"]["OMP_NUM_THREADS"] == "1"
    off = _parsed(server_a["command"], {"PURA_RAY_ADDRESS": ""}, monkeypatch)
    assert off.ray_address is None  # empty (the default) = in-process scoring
    on = _parsed(server_a["command"], {"PURA_RAY_ADDRESS": "ray://ray-head:10001"}, monkeypatch)
    assert on.ray_address == "ray://ray-head:10001"


def test_flag_beats_environment_and_bad_settings_fail(monkeypatch: pytest.MonkeyPatch) -> None:
    args, env = _k8s_server_a()
    flagged = _parsed([*args, "--ray-address=auto"], env, monkeypatch)
    assert flagged.ray_address == "auto"
    result = CliRunner().invoke(app, [*args, "--scoring-workers=2"], env=env)
    assert result.exit_code == 2 and "choose one scorer" in result.output
    result = CliRunner().invoke(app, args, env={"PURA_RAY_ADDRESS": "local"})
    assert result.exit_code == 2 and "ray_address must be" in result.output


def test_serve_help_documents_scoring() -> None:
    out = CliRunner().invoke(app, ["serve", "--help"], env={"COLUMNS": "200"}).output
    for flag in ("--scoring-workers", "--ray-address", "--ray-shards", "PURA_RAY_ADDRESS"):
        assert flag in out
