"""Reader for dlib's binary serialization of DNN networks (``*.dat`` written by ``serialize``).

Why parse it ourselves: the client must run dlib's face-recognition ResNet on a GPU through torch,
with the exact weights shipped by the ``face-recognition-models`` package, and without a C++ build.

The format, as written by dlib's ``serialize`` functions (``dlib/serialize.h``, ``dlib/dnn``):

* **integers**: one control byte ``c`` then ``c & 0x0F`` little-endian magnitude bytes; bit 7 of
  ``c`` is the sign (``0x81 0x11`` is −17, ``0x01 0x00`` is 0).
* **floats/doubles** (dlib's portable form): integer mantissa then integer exponent,
  value = mantissa · 2^exponent; exponents 32000/32001/32002 mean +inf/−inf/NaN.
* **strings**: integer length then the bytes. **bool**: one ASCII byte ``'1'`` or ``'0'``.
* **tensors** (``resizable_tensor``): version int (2 = raw little-endian float32 payload,
  1 = one portable float each), then num_samples, k, nr, nc, then the values.
* **alias tensors**: version int 1, then num_samples, k, nr, nc (the offset is implicit).
* **networks** are nested C++ types serialized outside-in: ``add_loss_layer`` writes its version,
  the loss details, then its sub-network; ``add_layer`` writes version 2 then its sub-network
  *first* and its own layer details after; ``add_layer`` directly over the input layer writes
  version 3, the input layer, its details, and (after the tail below) its sample expansion
  factor; tag and skip layers write version 1 and their
  sub-network only (so they are anonymous ``Marker`` entries here: the network type, not the
  file, says which tag they are). After its details every ``add_layer`` writes three bools and
  three (empty) scratch tensors.

:func:`read_network` returns the layers input-first as a flat list, which the torch model
(``pura_client.embedding.resnet``) checks against the architecture it implements. Malformed
files raise :class:`pura.errors.ConfigError` naming the byte offset.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import numpy.typing as npt

from pura.errors import ConfigError

Floats = npt.NDArray[np.float32]

_SPECIAL_EXPONENTS = {32000: math.inf, 32001: -math.inf, 32002: math.nan}


@dataclass(frozen=True)
class Layer:
    """One dlib layer: its serialization name (e.g. ``"con_4"``), integer/real hyper-parameters
    in file order, and named parameter arrays (already reshaped, float32)."""

    name: str
    ints: tuple[int, ...] = ()
    reals: tuple[float, ...] = ()
    arrays: dict[str, Floats] = field(default_factory=dict)

    def __repr__(self) -> str:
        shapes = {k: v.shape for k, v in self.arrays.items()}
        return f"Layer({self.name!r}, ints={self.ints}, reals={self.reals}, arrays={shapes})"


MARKER = "marker"
"""Name given to tag/skip layers (dlib writes no details for them)."""


@dataclass(frozen=True)
class Network:
    """A parsed network: the loss layer and the other layers from the input outwards."""

    loss: Layer
    layers: tuple[Layer, ...]


class _Reader:
    """Cursor over the file bytes with dlib's primitive decoders."""

    def __init__(self, data: bytes) -> None:
        self.data = data
        self.pos = 0

    def fail(self, what: str) -> ConfigError:
        return ConfigError(f"dlib model file malformed at byte {self.pos}: {what}")

    def take(self, n: int) -> bytes:
        if n < 0 or self.pos + n > len(self.data):
            raise self.fail(f"needs {n} more bytes")
        chunk = self.data[self.pos : self.pos + n]
        self.pos += n
        return chunk

    def integer(self) -> int:
        control = self.take(1)[0]
        size = control & 0x0F
        if size > 8 or control & 0x70:
            raise self.fail(f"bad integer control byte 0x{control:02x}")
        value = int.from_bytes(self.take(size), "little")
        return -value if control & 0x80 else value

    def real(self) -> float:
        mantissa, exponent = self.integer(), self.integer()
        if exponent in _SPECIAL_EXPONENTS:
            return _SPECIAL_EXPONENTS[exponent]
        return math.ldexp(float(mantissa), exponent)

    def string(self) -> str:
        length = self.integer()
        if not 0 <= length <= 256:
            raise self.fail(f"implausible string length {length}")
        return self.take(length).decode("ascii", errors="strict")

    def boolean(self) -> bool:
        byte = self.take(1)
        if byte not in (b"0", b"1"):
            raise self.fail("bool is not '0'/'1'")
        return byte == b"1"

    def shape(self) -> tuple[int, int, int, int]:
        n, k, nr, nc = self.integer(), self.integer(), self.integer(), self.integer()
        if min(n, k, nr, nc) < 0:
            raise self.fail("negative tensor dimension")
        return n, k, nr, nc

    def tensor(self) -> Floats:
        version = self.integer()
        shape = self.shape()
        count = shape[0] * shape[1] * shape[2] * shape[3]
        if version == 2:
            values = np.frombuffer(self.take(4 * count), dtype="<f4").astype(np.float32)
        elif version == 1:
            values = np.array([self.real() for _ in range(count)], dtype=np.float32)
        else:
            raise self.fail(f"unknown tensor version {version}")
        return values.reshape(shape)

    def alias(self) -> tuple[int, int, int, int]:
        if self.integer() != 1:
            raise self.fail("unknown alias_tensor version")
        return self.shape()


def _split_params(params: Floats, *shapes: tuple[int, int, int, int]) -> list[Floats]:
    """Cut a flat parameter tensor into consecutive alias views (dlib's implicit offsets)."""
    flat = params.reshape(-1)
    parts: list[Floats] = []
    offset = 0
    for shape in shapes:
        size = int(np.prod(shape))
        if offset + size > flat.size:
            raise ConfigError("dlib layer parameters are shorter than their aliases")
        parts.append(flat[offset : offset + size].reshape(shape).copy())
        offset += size
    return parts


def _con(r: _Reader, name: str) -> Layer:
    params = r.tensor()
    ints = tuple(r.integer() for _ in range(7))  # filters, nr, nc, stride y/x, padding y/x
    filters, biases = r.alias(), r.alias()
    reals = tuple(r.real() for _ in range(4))  # learning-rate / weight-decay multipliers
    weight, bias = _split_params(params, filters, biases)
    return Layer(name, ints, reals, {"weight": weight, "bias": bias.reshape(-1)})


def _affine(r: _Reader, name: str) -> Layer:
    params = r.tensor()
    gamma, beta = r.alias(), r.alias()
    mode = r.integer()
    g, b = _split_params(params, gamma, beta)
    return Layer(name, (mode,), (), {"gamma": g.reshape(-1), "beta": b.reshape(-1)})


def _fc(r: _Reader, name: str) -> Layer:
    outputs, inputs = r.integer(), r.integer()
    params = r.tensor()
    weights, biases = r.alias(), r.alias()
    bias_mode = r.integer()
    reals = tuple(r.real() for _ in range(4))
    w, b = _split_params(params, weights, biases)
    arrays = {"weight": w.reshape(inputs, outputs), "bias": b.reshape(-1)}
    return Layer(name, (outputs, inputs, bias_mode), reals, arrays)


def _pool(r: _Reader, name: str) -> Layer:
    return Layer(name, tuple(r.integer() for _ in range(6)))  # nr, nc, stride y/x, padding y/x


def _plain(r: _Reader, name: str) -> Layer:
    return Layer(name)


def _input_rgb(r: _Reader, name: str) -> Layer:
    means = tuple(r.real() for _ in range(3))
    size = (r.integer(), r.integer()) if name == "input_rgb_image_sized" else ()
    return Layer(name, size, means)


def _bn(r: _Reader, name: str) -> Layer:
    params = r.tensor()
    gamma, beta = r.alias(), r.alias()
    r.tensor()  # means of the last training batch (unused at inference)
    r.tensor()  # their inverse standard deviations (unused at inference)
    running_means, running_variances = r.tensor(), r.tensor()
    ints = (r.integer(), r.integer())  # num_updates, running_stats_window_size
    reals = tuple(r.real() for _ in range(5))  # 4 multipliers, then eps
    g, b = _split_params(params, gamma, beta)
    arrays = {
        "gamma": g.reshape(-1),
        "beta": b.reshape(-1),
        "running_mean": running_means.reshape(-1),
        "running_var": running_variances.reshape(-1),
    }
    return Layer(name, ints, reals, arrays)


def _input_rgb_pyramid(r: _Reader, name: str) -> Layer:
    means = tuple(r.real() for _ in range(3))
    # version 1 ("input_rgb_image_pyramid") has no padding fields: dlib's defaults are 10, 11.
    padding = (r.integer(), r.integer()) if name.endswith("2") else (10, 11)
    return Layer(name, padding, means)


def _loss_mmod(r: _Reader, name: str) -> Layer:
    version = r.integer()
    if version != 1:
        raise r.fail(f"unsupported mmod_options version {version}")
    width, height = r.integer(), r.integer()
    # loss per false alarm / missed target, truth IoU, NMS (iou, covered), ignore (iou, covered)
    reals = tuple(r.real() for _ in range(7))
    return Layer(name, (width, height), reals)


def _loss_metric(r: _Reader, name: str) -> Layer:
    return Layer(name, (), (r.real(), r.real()))  # margin, distance threshold


_DETAILS = {
    "con_4": _con,
    "affine_": _affine,
    "fc_2": _fc,
    "max_pool_2": _pool,
    "avg_pool_2": _pool,
    "relu_": _plain,
    "add_prev_": _plain,
    "input_rgb_image": _input_rgb,
    "input_rgb_image_sized": _input_rgb,
    "loss_metric_2": _loss_metric,
    "bn_con2": _bn,
    "input_rgb_image_pyramid": _input_rgb_pyramid,
    "input_rgb_image_pyramid2": _input_rgb_pyramid,
    "loss_mmod_": _loss_mmod,
}


def _details(r: _Reader) -> Layer:
    start = r.pos
    name = r.string()
    parser = _DETAILS.get(name)
    if parser is None:
        r.pos = start
        raise r.fail(f"unsupported layer type {name!r}")
    return parser(r, name)


def _layer_tail(r: _Reader) -> None:
    """The bookkeeping every add_layer writes after its details: 3 bools, 3 scratch tensors."""
    for _ in range(3):
        r.boolean()
    for _ in range(3):
        r.tensor()


def _subnet(r: _Reader, out: list[Layer]) -> None:
    """Parse one (possibly nested) sub-network; appends layers to ``out`` input-first.

    Iterative over the nesting depth would be needed for very deep nets; the face network nests
    ~130 levels, well under Python's recursion limit.
    """
    version = r.integer()
    if version == 1:  # tag / skip layer: no details of its own
        _subnet(r, out)
        out.append(Layer(MARKER))
    elif version == 2:
        _subnet(r, out)
        out.append(_details(r))
        _layer_tail(r)
    elif version == 3:
        out.append(_details(r))  # the input layer
        out.append(_details(r))
        _layer_tail(r)
        r.integer()  # sample expansion factor (1 for image inputs)
    else:
        raise r.fail(f"unknown layer version {version}")


def parse_network(data: bytes) -> Network:
    """Parse a serialized ``add_loss_layer`` network (the whole file must be consumed)."""
    r = _Reader(data)
    if r.integer() != 1:
        raise r.fail("expected add_loss_layer version 1")
    loss = _details(r)
    layers: list[Layer] = []
    _subnet(r, layers)
    if r.pos != len(data):
        raise r.fail(f"{len(data) - r.pos} trailing bytes")
    return Network(loss, tuple(layers))


def read_network(path: Path | str) -> Network:
    """Read and parse a dlib network file."""
    try:
        data = Path(path).read_bytes()
    except OSError as exc:
        raise ConfigError(f"cannot read dlib model file {Path(path).name!r}") from exc
    return parse_network(data)

