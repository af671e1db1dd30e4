"""PackedLayout: stated bounds hold, overflow is an error, homomorphic sums stay exact."""

from __future__ import annotations

import random

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pura.crypto.paillier import (
    KeyShare,
    PackedLayout,
    PublicKey,
    RandomnessPool,
    decrypt_with_shares,
)
from pura.errors import PackingOverflowError

Keys = tuple[PublicKey, KeyShare, KeyShare]
LAYOUT = PackedLayout(slot_bits=53, n_slots=38, offset=1 << 11)


@st.composite
def layouts_and_values(draw: st.DrawFn) -> tuple[PackedLayout, list[int]]:
    slot_bits = draw(st.integers(min_value=2, max_value=80))
    n_slots = draw(st.integers(min_value=1, max_value=2046 // slot_bits))
    offset = draw(st.integers(min_value=0, max_value=(1 << (slot_bits - 1)) - 1))
    layout = PackedLayout(slot_bits, n_slots, offset)
    count = draw(st.integers(min_value=0, max_value=n_slots))
    values = draw(st.lists(st.integers(min_value=-offset, max_value=offset), min_size=count,
                           max_size=count))
    return layout, values


@settings(max_examples=200, deadline=None)
@given(case=layouts_and_values())
def test_pack_unpack_roundtrip(case: tuple[PackedLayout, list[int]]) -> None:
    layout, values = case
    packed = layout.pack(values)
    assert 0 <= packed < 1 << layout.total_bits
    assert layout.unpack(packed, len(values)) == values


@settings(max_examples=100, deadline=None)
@given(case=layouts_and_values(), data=st.data())
def test_out_of_bound_values_raise(case: tuple[PackedLayout, list[int]],
                                   data: st.DataObject) -> None:
    layout, values = case
    bad = data.draw(st.one_of(st.integers(max_value=-layout.offset - 1),
                              st.integers(min_value=layout.offset + 1)))
    if len(values) < layout.n_slots:
        with pytest.raises(PackingOverflowError):
            layout.pack([*values, bad])
    with pytest.raises(PackingOverflowError):
        layout.pack([0] * (layout.n_slots + 1))
    with pytest.raises(PackingOverflowError):
        layout.pack_raw([1 << layout.slot_bits])
    with pytest.raises(PackingOverflowError):
        layout.unpack_raw(1 << layout.total_bits)


def test_unpack_detects_slot_over_its_bound() -> None:
    raw = LAYOUT.pack_raw([2 * LAYOUT.offset + 1])
    with pytest.raises(PackingOverflowError):
        LAYOUT.unpack(raw, 1)
    assert LAYOUT.unpack_raw(raw, 1) == [2 * LAYOUT.offset + 1]
    with pytest.raises(PackingOverflowError):  # data above the slots the caller expects
        LAYOUT.unpack_raw(LAYOUT.pack_raw([1, 2]), 1)


def test_layout_validation(paillier_fast_keys: Keys) -> None:
    pk = paillier_fast_keys[0]
    assert PackedLayout.max_slots(pk, 53) == 2046 // 53
    LAYOUT.check_fits(pk)
    with pytest.raises(PackingOverflowError):
        PackedLayout(53, 39, 1 << 11).check_fits(pk)
    for args in ((1, 3, 0), (8, 0, 0), (8, 1, 128), (8, 1, -1)):
        with pytest.raises(PackingOverflowError):
            PackedLayout(*args)
    assert LAYOUT.headroom == (1 << 53) - 1 - (1 << 12)


@settings(max_examples=15, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(seed=st.integers(min_value=0, max_value=2**32))
def test_homomorphic_packed_sum_within_headroom_is_exact(paillier_fast_keys: Keys,
                                                         seed: int) -> None:
    """Encrypted packed values + an encrypted packed mask filling the headroom: no carries."""
    pk, s1, s2 = paillier_fast_keys
    rng = random.Random(seed)
    pool = RandomnessPool(pk, rng=rng)
    values = [rng.randint(-LAYOUT.offset, LAYOUT.offset) for _ in range(LAYOUT.n_slots)]
    masks = [rng.randint(0, LAYOUT.headroom) for _ in range(LAYOUT.n_slots)]
    masks[0] = LAYOUT.headroom  # the extreme case
    values[0] = LAYOUT.offset
    total = pk.encrypt(LAYOUT.pack(values), pool) + pk.encrypt(LAYOUT.pack_raw(masks), pool)
    contents = LAYOUT.unpack_raw(decrypt_with_shares(s1, s2, total))
    assert contents == [v + LAYOUT.offset + m for v, m in zip(values, masks, strict=True)]
