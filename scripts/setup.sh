#!/usr/bin/env bash
# Creates .venv and installs Pura with every extra (server, ray, client, bench) and its test
# tools; a server-only install is `pip install ".[server]"` (docs/architecture.md, "Packages").
# torch is installed FIRST from the pinned CPU wheel: a plain `torch` requirement
# would otherwise pull a multi-GB CUDA build.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-python3}
if [ ! -x .venv/bin/python ]; then
  "$PY" -m venv .venv
fi
.venv/bin/python -m pip install --quiet --upgrade pip
.venv/bin/python -m pip install --quiet "torch==2.13.0"
.venv/bin/python -m pip install --quiet -e ".[all,dev]"
.venv/bin/python scripts/gen_protos.py
