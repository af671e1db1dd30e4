"""``pura status`` against a running A (real mTLS): the collection's figures and the scorer."""

from __future__ import annotations

from typer.testing import CliRunner

from pura.cli import app

from .conftest import COLLECTION, Deployment


def test_status_prints_collection_and_in_process_scorer(deployment: Deployment) -> None:
    result = CliRunner().invoke(app, [
        "status", COLLECTION, "--server", deployment.address, "--tls", str(deployment.tls),
        "--cert", "auditor"])
    assert result.exit_code == 0, result.output
    assert f"collection {COLLECTION}:" in result.output
    assert "scorer: in-process, 1/1 alive (ok); in-process" in result.output


def test_status_of_unknown_collection_fails_cleanly(deployment: Deployment) -> None:
    result = CliRunner().invoke(app, [
        "status", "no-such-collection", "--server", deployment.address, "--tls",
        str(deployment.tls), "--cert", "auditor"])
    assert result.exit_code == 2 and "NOT_FOUND" in result.output
