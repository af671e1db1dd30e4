"""Run an ONNX inference graph as a torch module (SFace, YuNet): weights read once, ops in torch.

Why not onnxruntime: the client pipeline is torch end to end (batched, on the GPU when present,
one dependency set), and onnxruntime is only the *reference* in the parity tests (dev extra). The
``onnx`` package is used purely as a file reader (protobuf parsing + ``numpy_helper``); nothing is
executed by it.

At construction every node whose inputs are all constants is evaluated once with numpy — notably
the int8 block-quantised ``DequantizeLinear`` weights of SFace and their ``Reshape`` — so the
forward pass sees float32 weights only (dequantising on every call costs SFace ~60 % more time).
The remaining nodes are kept in graph order and interpreted with torch functional ops; constants
they read become buffers, so ``.to(device)`` moves them.

Only the operators the shipped models use are supported (an unknown op is a ConfigError at load,
never a silent skip). ``Reshape`` targets are taken with their leading dimension as the batch:
the shipped graphs are exported for batch 1 and reshape ``[1, -1, k]``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import onnx
import torch
import torch.nn.functional as F  # noqa: N812 (the universal torch idiom)
from onnx import numpy_helper
from torch import nn

from pura.errors import ConfigError

Array = npt.NDArray[Any]
Attrs = dict[str, Any]


@dataclass(frozen=True)
class _Node:
    op: str
    inputs: tuple[str, ...]
    outputs: tuple[str, ...]
    attrs: Attrs


def load_onnx(path: Path) -> onnx.ModelProto:
    """Parse an ONNX file (caller has checked its SHA-256); ConfigError if unreadable."""
    try:
        return onnx.load(str(path))
    except Exception as exc:  # protobuf raises several unrelated types on bad bytes
        raise ConfigError(f"cannot parse ONNX file {path.name}: {type(exc).__name__}") from exc


def _attrs(node: onnx.NodeProto) -> Attrs:
    out: Attrs = {}
    for attr in node.attribute:
        value = onnx.helper.get_attribute_value(attr)
        if isinstance(value, onnx.TensorProto):
            value = numpy_helper.to_array(value)
        elif isinstance(value, bytes):
            value = value.decode()
        out[attr.name] = value
    return out


def dequantize(x: Array, scale: Array, zero: Array | None, axis: int, block: int) -> Array:
    """ONNX ``DequantizeLinear`` (per-tensor, per-axis or blocked): ``(x − zero) · scale``.

    Blocked (opset 21): ``scale``/``zero`` have ``ceil(x.shape[axis] / block)`` entries along
    ``axis``; each covers ``block`` consecutive elements.
    """
    xi = x.astype(np.int32)
    zi = np.zeros_like(scale, dtype=np.int32) if zero is None else zero.astype(np.int32)
    axis = axis % x.ndim
    if block:
        scale = np.repeat(scale, block, axis=axis).take(range(x.shape[axis]), axis=axis)
        zi = np.repeat(zi, block, axis=axis).take(range(x.shape[axis]), axis=axis)
    elif scale.ndim == 1 and scale.size > 1:
        shape = [1] * x.ndim
        shape[axis] = scale.size
        scale, zi = scale.reshape(shape), zi.reshape(shape)
    out: Array = ((xi - zi).astype(np.float32) * scale.astype(np.float32)).astype(np.float32)
    return out


def _fold(node: _Node, args: list[Array]) -> Array:
    """Evaluate a constant-only node with numpy (weights: dequantise, reshape)."""
    if node.op == "DequantizeLinear":
        zero = args[2] if len(args) > 2 else None
        return dequantize(args[0], args[1], zero, node.attrs.get("axis", 1),
                          node.attrs.get("block_size", 0))
    if node.op == "Reshape":
        return args[0].reshape(tuple(int(v) for v in args[1]))
    raise ConfigError(f"ONNX constant folding does not support {node.op}")


Op = Callable[[list[torch.Tensor], Attrs], torch.Tensor]


def _conv(t: list[torch.Tensor], a: Attrs) -> torch.Tensor:
    pads = list(a.get("pads", [0, 0, 0, 0]))
    x = t[0]
    if pads[:2] != pads[2:]:  # asymmetric: pad explicitly (left/right, top/bottom)
        x = F.pad(x, (pads[1], pads[3], pads[0], pads[2]))
        pads = [0, 0, 0, 0]
    return F.conv2d(x, t[1], t[2] if len(t) > 2 else None, tuple(a.get("strides", [1, 1])),
                    (pads[0], pads[1]), tuple(a.get("dilations", [1, 1])), a.get("group", 1))


def _batch_norm(t: list[torch.Tensor], a: Attrs) -> torch.Tensor:
    return F.batch_norm(t[0], t[3], t[4], t[1], t[2], False, 0.0, a.get("epsilon", 1e-5))


def _prelu(t: list[torch.Tensor], a: Attrs) -> torch.Tensor:
    slope = t[1]
    if slope.dim() == t[0].dim() - 1 and slope.dim() > 1:  # (C, 1, 1): per-channel slopes
        return F.prelu(t[0], slope.reshape(-1))
    return torch.where(t[0] >= 0, t[0], t[0] * slope)


def _max_pool(t: list[torch.Tensor], a: Attrs) -> torch.Tensor:
    pads = list(a.get("pads", [0, 0, 0, 0]))
    return F.max_pool2d(t[0], tuple(a["kernel_shape"]), tuple(a.get("strides", [1, 1])),
                        (pads[0], pads[1]), ceil_mode=bool(a.get("ceil_mode", 0)))


def _resize(t: list[torch.Tensor], a: Attrs) -> torch.Tensor:
    if a.get("mode") != "nearest" or a.get("coordinate_transformation_mode") != "asymmetric":
        raise ConfigError("only nearest/asymmetric Resize is supported")
    scales = [float(v) for v in t[2].tolist()]
    # torch 'nearest' picks floor(dst · in / out): ONNX asymmetric + floor for integer scales.
    return F.interpolate(t[0], scale_factor=(scales[2], scales[3]), mode="nearest")


def _reshape(t: list[torch.Tensor], a: Attrs) -> torch.Tensor:
    shape = [int(v) for v in t[1].tolist()]
    return t[0].reshape(t[0].shape[0], *shape[1:])  # leading dimension is the batch


def _gemm(t: list[torch.Tensor], a: Attrs) -> torch.Tensor:
    if a.get("transA", 0) or a.get("alpha", 1.0) != 1.0 or a.get("beta", 1.0) != 1.0:
        raise ConfigError("only Gemm with transA=0, alpha=beta=1 is supported")
    weight = t[1] if a.get("transB", 0) else t[1].T
    return F.linear(t[0], weight, t[2] if len(t) > 2 else None)


_OPS: dict[str, Op] = {
    "Conv": _conv,
    "BatchNormalization": _batch_norm,
    "PRelu": _prelu,
    "Relu": lambda t, a: F.relu(t[0]),
    "Sigmoid": lambda t, a: torch.sigmoid(t[0]),
    "Add": lambda t, a: t[0] + t[1],
    "Sub": lambda t, a: t[0] - t[1],
    "Mul": lambda t, a: t[0] * t[1],
    "MaxPool": _max_pool,
    "Resize": _resize,
    "Transpose": lambda t, a: t[0].permute(*a["perm"]),
    "Reshape": _reshape,
    "Flatten": lambda t, a: torch.flatten(t[0], a.get("axis", 1)),
    "Gemm": _gemm,
    "Dropout": lambda t, a: t[0],  # inference: identity
}


def _fuse_conv_bn(nodes: list[_Node], consts: dict[str, Array]) -> list[_Node]:
    """Fold each inference BatchNormalization into the Conv that alone feeds it.

    ``BN(conv(x, W) + b) = conv(x, W·g) + (b − μ)·g + β`` with ``g = γ / sqrt(σ² + ε)`` per
    output channel: one pass over the activations instead of two (SFace's activations are
    megabytes per face, so the elementwise passes cost as much as the convolutions). Computed in
    float64 and rounded once, the outputs stay within float32 rounding of the unfused graph.
    """
    readers: dict[str, int] = {}
    for node in nodes:
        for name in node.inputs:
            readers[name] = readers.get(name, 0) + 1
    producer = {node.outputs[0]: node for node in nodes}
    fused: dict[str, _Node] = {}
    dropped: set[int] = set()
    for bn in nodes:
        conv = producer.get(bn.inputs[0]) if bn.op == "BatchNormalization" else None
        if conv is None or conv.op != "Conv" or readers.get(conv.outputs[0]) != 1:
            continue
        gamma, beta, mean, var = (consts[n].astype(np.float64) for n in bn.inputs[1:5])
        g = gamma / np.sqrt(var + float(bn.attrs.get("epsilon", 1e-5)))
        weight = consts[conv.inputs[1]].astype(np.float64)
        bias = consts[conv.inputs[2]].astype(np.float64) if len(conv.inputs) > 2 else 0.0
        w_name, b_name = f"{bn.outputs[0]}::w", f"{bn.outputs[0]}::b"
        consts[w_name] = (weight * g[:, None, None, None]).astype(np.float32)
        consts[b_name] = ((bias - mean) * g + beta).astype(np.float32)
        fused[bn.outputs[0]] = _Node("Conv", (conv.inputs[0], w_name, b_name), bn.outputs,
                                     conv.attrs)
        dropped.add(id(conv))
    return [fused.get(n.outputs[0], n) for n in nodes if id(n) not in dropped]


class OnnxGraph(nn.Module):
    """An ONNX graph as a torch module: ``forward(x) -> {output name: tensor}``."""

    def __init__(self, model: onnx.ModelProto) -> None:
        super().__init__()
        graph = model.graph
        consts: dict[str, Array] = {i.name: numpy_helper.to_array(i) for i in graph.initializer}
        self.input_name = next(i.name for i in graph.input if i.name not in consts)
        self.output_names = tuple(o.name for o in graph.output)
        self.nodes: list[_Node] = []
        for proto in graph.node:
            node = _Node(proto.op_type, tuple(proto.input), tuple(proto.output), _attrs(proto))
            if node.op == "Constant":
                consts[node.outputs[0]] = np.asarray(node.attrs["value"])
            elif all(name in consts for name in node.inputs if name):
                consts[node.outputs[0]] = _fold(node, [consts[n] for n in node.inputs if n])
            elif node.op not in _OPS:
                raise ConfigError(f"ONNX operator {node.op} is not supported")
            else:
                self.nodes.append(node)
        self.nodes = _fuse_conv_bn(self.nodes, consts)
        self._buffer_of: dict[str, str] = {}
        for node in self.nodes:
            for name in node.inputs:
                if name in consts and name not in self._buffer_of:
                    key = f"c{len(self._buffer_of)}"
                    self._buffer_of[name] = key
                    self.register_buffer(key, torch.from_numpy(np.array(consts[name])))

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        values: dict[str, torch.Tensor] = {self.input_name: x}
        for node in self.nodes:
            args = [self._value(values, name) for name in node.inputs if name]
            values[node.outputs[0]] = _OPS[node.op](args, node.attrs)
        return {name: values[name] for name in self.output_names}

    def _value(self, values: dict[str, torch.Tensor], name: str) -> torch.Tensor:
        if name in values:
            return values[name]
        buffer: torch.Tensor = getattr(self, self._buffer_of[name])
        return buffer


def for_onnxruntime(model: onnx.ModelProto) -> onnx.ModelProto:
    """A copy of ``model`` that onnxruntime accepts at any batch and image size (parity tests).

    Removes graph inputs that no node reads (the shipped SFace graph lists 29 such leftovers of
    quantisation and onnxruntime refuses it until they are gone) and frees the data input's
    fixed dimensions (YuNet is exported for 1×3×640×640; its convolutions take any size).
    """
    copy = onnx.ModelProto()
    copy.CopyFrom(model)
    used = {name for node in copy.graph.node for name in node.input}
    initialised = {i.name for i in copy.graph.initializer}
    keep = [i for i in copy.graph.input if i.name in used]
    del copy.graph.input[:]
    copy.graph.input.extend(keep)
    for value in copy.graph.input:
        if value.name not in initialised:
            for i, dim in enumerate(value.type.tensor_type.shape.dim):
                if i != 1:
                    dim.dim_param = f"d{i}"
    return copy
