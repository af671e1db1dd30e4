"""A server-only install starts without torch (issue 10): runs scripts/check_server_install.sh.

Slow and needs the package index: a fresh venv, ``pip install ".[server]"`` of a clean tree of
HEAD, then ``pura keygen``, ``pura certs`` and servers B and A as processes. The script fails if
torch, dlib, matplotlib (or another client-only distribution) is installed or imported.
"""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.slow
def test_server_extra_installs_and_serves_without_torch(tmp_path: Path) -> None:
    run = subprocess.run(["bash", str(ROOT / "scripts" / "check_server_install.sh"),
                          str(tmp_path / "install")],
                         capture_output=True, text=True, timeout=1800)
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    lines = run.stdout.splitlines()
    assert lines[-1] == "PASS"
    assert "no torch, dlib, matplotlib, onnx, scipy, pillow, faiss or ray installed" in lines
    assert any(line.startswith("a serving on port") for line in lines)
    assert "torch/dlib/matplotlib: none" in run.stdout
