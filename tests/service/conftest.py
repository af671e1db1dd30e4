"""Service tests: quiet gRPC core's info logs (GOAWAY on shutdown is expected)."""

from __future__ import annotations

import os

os.environ.setdefault("GRPC_VERBOSITY", "ERROR")
