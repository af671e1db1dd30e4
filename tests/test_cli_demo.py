"""`pura demo` end to end: keys, certs, A and B as separate TLS processes, real LFW faces."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from pura_client.datasets.lfw import LFWDataset


@pytest.mark.slow
def test_demo_on_a_small_folder(lfw_dataset: LFWDataset, tmp_path: Path) -> None:
    faces = tmp_path / "faces"
    people = list(lfw_dataset.people().items())[200:240]
    for name, count in people:  # links: LFW stays in ../shared
        (faces / name).mkdir(parents=True)
        for n in range(1, min(count, 2) + 1):
            src = lfw_dataset.image_path(name, n)
            (faces / name / src.name).symlink_to(src)
    result = subprocess.run(
        [sys.executable, "-m", "pura.cli", "demo", "--faces", str(faces), "--people", "8",
         "--probes", "3", "--profile", "fast", "--workdir", str(tmp_path / "work")],
        capture_output=True, text=True, timeout=600,
        env={**os.environ, "COLUMNS": "200"},
    )
    assert result.returncode == 0, result.stdout + result.stderr
    out = result.stdout
    assert "FAST PROFILE" in out and "separate processes, TLS" in out
    assert "enrolled 8/8 templates" in out
    m = re.search(r"(\d+)/(\d+) answers correct, (\d+)/(\d+) equal to plaintext", out)
    assert m is not None, out
    assert m.group(3) == m.group(4) == "6"  # every encrypted answer equals plaintext 1:N
