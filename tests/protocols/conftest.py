"""Fixtures shared by the CKKS protocol tests (preselection, refresh, re-layout, scorers)."""

from __future__ import annotations

import pytest

from pura.crypto.ckks import CKKSContext
from pura.crypto.params import CKKS_8192


@pytest.fixture(scope="module")
def secret() -> CKKSContext:
    """B's side: a fresh CKKS key set per test module (with the secret key)."""
    return CKKSContext.generate(CKKS_8192)


@pytest.fixture(scope="module")
def public(secret: CKKSContext) -> CKKSContext:
    """A's and the clients' side of the same keys (no secret key)."""
    return secret.public()
