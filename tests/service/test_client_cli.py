"""`pura-client` end to end on real LFW images against the running servers."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image
from pura_client.cli import app
from pura_client.datasets.lfw import LFWDataset
from typer.testing import CliRunner

from .conftest import Deployment

runner = CliRunner()


def _args(dep: Deployment, *extra: str) -> list[str]:
    return [*extra, "--server", dep.address, "--collection", "cli", "--tls", str(dep.tls)]


def test_enroll_identify_verify_delete(
    deployment: Deployment, lfw_dataset: LFWDataset, tmp_path: Path
) -> None:
    people = [n for n, c in lfw_dataset.people().items() if c >= 2][40:43]
    folder = tmp_path / "faces"
    for name in people:  # links, not copies: LFW stays in ../shared
        (folder / name).mkdir(parents=True)
        src = lfw_dataset.image_path(name, 1)
        (folder / name / src.name).symlink_to(src)
    with deployment.client("admin", "cli") as admin:
        admin.create_collection()

    result = runner.invoke(app, _args(deployment, "enroll", str(folder)))
    assert result.exit_code == 0, result.output
    assert "enrolled: 3" in result.output
    again = runner.invoke(app, _args(deployment, "enroll", str(folder)))
    assert "already-enrolled: 3" in again.output  # resumable: nothing stored twice

    probe = str(lfw_dataset.image_path(people[0], 2))
    result = runner.invoke(app, _args(deployment, "identify", probe))
    assert result.exit_code == 0, result.output
    assert result.output.strip() in (f"match {people[0]}", "no match")  # never someone else
    enrolled_image = str(folder / people[1] / f"{people[1]}_0001.jpg")
    same = runner.invoke(app, _args(deployment, "identify", enrolled_image))
    assert same.output.strip() == f"match {people[1]}"
    result = runner.invoke(app, _args(deployment, "verify", "--subject", people[1],
                                      enrolled_image))
    assert result.output.strip() == "match"
    result = runner.invoke(app, _args(deployment, "verify", "--subject", people[2],
                                      enrolled_image))
    assert result.output.strip() == "no match"

    blank = tmp_path / "blank.png"
    Image.fromarray(np.full((200, 200, 3), 128, np.uint8)).save(blank)
    result = runner.invoke(app, _args(deployment, "identify", str(blank)))
    assert result.exit_code == 0 and result.output.strip() == "no face"

    result = runner.invoke(app, _args(deployment, "delete", people[1]))
    assert result.exit_code == 0 and f"deleted {people[1]}: 1 templates" in result.output
    denied = runner.invoke(app, _args(deployment, "delete", people[0], "--cert", "identifier"))
    assert denied.exit_code == 2 and "PERMISSION_DENIED" in denied.output
