"""Head admission (issue 13, item 2): B's blinded range check of a CKKS head, real CKKS-8192."""

from __future__ import annotations

import random

import numpy as np
import pytest

from pura.crypto.ckks import CKKSContext
from pura.crypto.params import CKKS_8192
from pura.errors import ProtocolError
from pura.protocols.head_admission import (
    answer_head_checks,
    check_head_locally,
    finish_head_checks,
    prepare_head_checks,
)

M = 64


@pytest.fixture(scope="module")
def keys() -> tuple[CKKSContext, CKKSContext]:
    secret = CKKSContext.generate(CKKS_8192)
    return secret.public(), secret


def _unit(seed: int, scale: float = 1.0) -> np.ndarray:
    y = np.random.default_rng(seed).normal(size=M)
    out: np.ndarray = scale * y / np.linalg.norm(y)
    return out


@pytest.mark.parametrize(("name", "values", "ok"), [
    ("unit", _unit(1), True),
    ("shorter", _unit(2, 0.9), True),
    ("basis vector", np.eye(M)[5], True),
    ("negative basis vector", -np.eye(M)[9], True),
    ("zero", np.zeros(M), True),
    ("norm 1.05", _unit(3, 1.05), False),
    ("one coordinate 1.02", np.eye(M)[0] * 1.02, False),
    ("all 0.5 (norm 4)", np.full(M, 0.5), False),
    ("2^30", np.full(M, 2.0**30), False),
    ("2^34", np.full(M, 2.0**34), False),
    ("-2^34", np.full(M, -(2.0**34)), False),
])
def test_range_check(
    keys: tuple[CKKSContext, CKKSContext], name: str, values: np.ndarray, ok: bool
) -> None:
    public, secret = keys
    junk = np.random.default_rng(7).normal(size=100) * 1e6  # slots >= M are ignored
    head = public.encrypt_head(np.concatenate([values, junk]))
    for seed in range(3):  # the verdict does not depend on A's blinding
        assert check_head_locally(public, secret, head, M, random.Random(seed)) is ok, name


def test_b_sees_flipped_signs_and_a_checks_the_reply(
    keys: tuple[CKKSContext, CKKSContext]
) -> None:
    """B's bits for an honest head are A's flips (uniform to B), not all ones."""
    public, secret = keys
    head = public.encrypt_head(_unit(4))
    cts, state = prepare_head_checks(public, head, M, random.Random(11))
    bits = answer_head_checks(secret, cts, M)
    assert 0 < sum(bits) < len(bits)
    assert finish_head_checks(state, bits)
    assert not finish_head_checks(state, [1 - b for b in bits])
    with pytest.raises(ProtocolError):
        finish_head_checks(state, bits[:-1])
    with pytest.raises(ProtocolError):
        answer_head_checks(secret, cts[:2], M)
