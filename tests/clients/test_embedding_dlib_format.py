"""dlib serialization reader: known answers, round trips against a test-side encoder, the real
model file, and malformed input."""

from __future__ import annotations

import math
import struct

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from pura_client.embedding.dlib_format import MARKER, _Reader, parse_network, read_network
from pura_client.embedding.models import RESNET_FILE, model_file

from pura.errors import ConfigError

# --- a minimal encoder written from the format description (used to build test inputs) ------


def enc_int(value: int) -> bytes:
    magnitude = abs(value).to_bytes(8, "little").rstrip(b"\x00") or b"\x00"
    return bytes([len(magnitude) | (0x80 if value < 0 else 0)]) + magnitude


def enc_real(mantissa: int, exponent: int) -> bytes:
    return enc_int(mantissa) + enc_int(exponent)


def enc_str(text: str) -> bytes:
    return enc_int(len(text)) + text.encode()


def enc_tensor(values: np.ndarray, version: int = 2) -> bytes:
    n, k, nr, nc = values.shape
    head = enc_int(version) + b"".join(enc_int(v) for v in (n, k, nr, nc))
    if version == 2:
        return head + values.astype("<f4").tobytes()
    out = head
    for v in values.ravel():
        m, e = math.frexp(float(v))
        out += enc_real(int(m * 2**24), e - 24)
    return out


def enc_alias(shape: tuple[int, int, int, int]) -> bytes:
    return enc_int(1) + b"".join(enc_int(v) for v in shape)


EMPTY = enc_tensor(np.zeros((0, 0, 0, 0), np.float32))
TAIL = b"110" + EMPTY * 3


def tiny_network(weights: np.ndarray) -> bytes:
    """loss_metric over fc(4→2, no bias) over a tag over add_layer(relu, input_rgb_image)."""
    loss = enc_int(1) + enc_str("loss_metric_2") + enc_real(1, -2) + enc_real(3, -2)
    inner = (
        enc_int(3)
        + enc_str("input_rgb_image") + enc_real(1, 0) + enc_real(2, 0) + enc_real(3, 0)
        + enc_str("relu_") + TAIL + enc_int(1)
    )
    tag = enc_int(1) + inner
    fc = (
        enc_int(2) + tag
        + enc_str("fc_2") + enc_int(2) + enc_int(4)
        + enc_tensor(weights.reshape(4, 2, 1, 1))
        + enc_alias((4, 2, 1, 1)) + enc_alias((0, 0, 0, 0))
        + enc_int(1) + enc_real(1, 0) * 3 + enc_real(0, 0)
        + TAIL
    )
    return loss + fc


# --- primitives --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("data", "value"),
    [(b"\x01\x00", 0), (b"\x01\x05", 5), (b"\x81\x11", -17), (b"\x02\x80\x12", 4736),
     (b"\x03b\x90\xf5", 16093282)],
)
def test_integer_known_answers(data: bytes, value: int) -> None:
    assert _Reader(data).integer() == value


def test_real_known_answer_from_the_model_header() -> None:
    # Red channel mean of dlib's face ResNet input layer: 16093282 * 2^-17.
    assert _Reader(b"\x03b\x90\xf5\x81\x11").real() == pytest.approx(122.782, abs=1e-3)


@pytest.mark.parametrize(
    ("exponent", "check"),
    [(32000, math.isinf), (32001, lambda v: v == -math.inf), (32002, math.isnan)],
)
def test_special_reals(exponent: int, check: object) -> None:
    value = _Reader(enc_real(0, exponent)).real()
    assert callable(check) and check(value)


@given(st.integers(min_value=-(2**63) + 1, max_value=2**63 - 1))
def test_integer_round_trip(value: int) -> None:
    reader = _Reader(enc_int(value))
    assert reader.integer() == value
    assert reader.pos == len(reader.data)


@given(st.lists(st.floats(-1e3, 1e3, width=32), min_size=1, max_size=12))
def test_tensor_versions_agree(values: list[float]) -> None:
    arr = np.array(values, np.float32).reshape(1, len(values), 1, 1)
    v2 = _Reader(enc_tensor(arr, 2)).tensor()
    v1 = _Reader(enc_tensor(arr, 1)).tensor()
    np.testing.assert_array_equal(v2, arr)
    np.testing.assert_allclose(v1, arr, rtol=1e-6)


@pytest.mark.parametrize("data", [b"\x09" + b"\x00" * 9, b"\x71\x00", b"\x02\x01"])
def test_malformed_integers(data: bytes) -> None:
    with pytest.raises(ConfigError, match="malformed at byte"):
        _Reader(data).integer()


def test_bool_and_string_validation() -> None:
    assert _Reader(b"1").boolean() is True
    with pytest.raises(ConfigError, match="bool"):
        _Reader(b"\x01").boolean()
    assert _Reader(enc_str("con_4")).string() == "con_4"
    with pytest.raises(ConfigError, match="string length"):
        _Reader(enc_int(10_000)).string()


# --- networks ----------------------------------------------------------------------------


def test_tiny_network_parses_in_input_first_order() -> None:
    weights = np.arange(8, dtype=np.float32)
    net = parse_network(tiny_network(weights))
    assert net.loss.name == "loss_metric_2" and net.loss.reals == (0.25, 0.75)
    assert [layer.name for layer in net.layers] == ["input_rgb_image", "relu_", MARKER, "fc_2"]
    assert net.layers[0].reals == (1.0, 2.0, 3.0)
    fc = net.layers[-1]
    assert fc.ints == (2, 4, 1)
    np.testing.assert_array_equal(fc.arrays["weight"], weights.reshape(4, 2))
    assert fc.arrays["bias"].size == 0


def test_trailing_and_truncated_bytes_are_rejected() -> None:
    data = tiny_network(np.zeros(8, np.float32))
    with pytest.raises(ConfigError, match="trailing"):
        parse_network(data + b"\x00")
    with pytest.raises(ConfigError, match="more bytes"):
        parse_network(data[:-20])


def test_unknown_layer_type_is_rejected() -> None:
    data = tiny_network(np.zeros(8, np.float32)).replace(b"relu_", b"gelu_")
    with pytest.raises(ConfigError, match="unsupported layer type 'gelu_'"):
        parse_network(data)


def test_real_face_model_structure() -> None:
    net = read_network(model_file(RESNET_FILE))
    names = [layer.name for layer in net.layers]
    assert net.loss.name == "loss_metric_2"
    assert net.loss.reals[1] == pytest.approx(0.6)  # dlib's same-person distance threshold
    assert names[0] == "input_rgb_image_sized" and net.layers[0].ints == (150, 150)
    assert names.count("con_4") == 29 and names.count("add_prev_") == 14
    assert names[-1] == "fc_2" and net.layers[-1].arrays["weight"].shape == (256, 128)
    params = sum(a.size for layer in net.layers for a in layer.arrays.values())
    def conv(cin: int, cout: int) -> int:
        return cin * cout * 9 + cout + 2 * cout  # 3x3 filters + bias + affine gamma/beta

    expected = 32 * 3 * 49 + 32 + 64  # first 7x7 conv + affine
    expected += 6 * conv(32, 32)  # alevel4
    expected += conv(32, 64) + 7 * conv(64, 64)  # alevel3
    expected += conv(64, 128) + 5 * conv(128, 128)  # alevel2
    expected += conv(128, 256) + 5 * conv(256, 256)  # alevel1
    expected += 2 * conv(256, 256)  # alevel0
    expected += 256 * 128  # fc_no_bias
    assert params == expected == 5_614_592
    first = net.layers[1].arrays["weight"]
    assert first.shape == (32, 3, 7, 7)
    # the first filter value as raw little-endian float32 bytes right after the tensor header
    raw = model_file(RESNET_FILE).read_bytes()
    header = b"\x01\x02\x02\x80\x12\x01\x01\x01\x01\x01\x01"  # v2, 4736 x 1 x 1 x 1
    offset = raw.index(b"con_4" + header) + len(b"con_4" + header)
    assert first.flat[0] == struct.unpack("<f", raw[offset : offset + 4])[0]


def test_missing_file_is_a_config_error(tmp_path: object) -> None:
    with pytest.raises(ConfigError, match="cannot read"):
        read_network("/nonexistent/model.dat")
