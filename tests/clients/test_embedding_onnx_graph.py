"""ONNX → torch graph module: blocked dequantisation, conv+BN folding, and parity with
onnxruntime on small synthetic graphs (the LFW parity runs are in test_embedding_sface/yunet)."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
import torch
from onnx import TensorProto, helper, numpy_helper
from pura_client.embedding.onnx_graph import OnnxGraph, dequantize, for_onnxruntime

from pura.errors import ConfigError


def test_blocked_dequantize_matches_the_onnx_definition() -> None:
    rng = np.random.default_rng(0)
    x = rng.integers(-128, 128, (3, 10), dtype=np.int8)
    scale = rng.uniform(0.01, 0.1, (3, 3)).astype(np.float32)  # blocks of 4 (last one partial)
    zero = rng.integers(-5, 5, (3, 3), dtype=np.int8)
    out = dequantize(x, scale, zero, axis=1, block=4)
    for j in range(10):
        expect = (x[:, j].astype(np.float32) - zero[:, j // 4]) * scale[:, j // 4]
        np.testing.assert_array_equal(out[:, j], expect)


def _conv_bn_prelu_model() -> onnx.ModelProto:
    rng = np.random.default_rng(1)
    inits = [
        numpy_helper.from_array(rng.normal(size=(4, 3, 3, 3)).astype(np.float32), "w"),
        numpy_helper.from_array(rng.normal(size=4).astype(np.float32), "b"),
        numpy_helper.from_array(rng.uniform(0.5, 2, 4).astype(np.float32), "g"),
        numpy_helper.from_array(rng.normal(size=4).astype(np.float32), "beta"),
        numpy_helper.from_array(rng.normal(size=4).astype(np.float32), "mu"),
        numpy_helper.from_array(rng.uniform(0.5, 2, 4).astype(np.float32), "var"),
        numpy_helper.from_array(rng.uniform(0, 0.3, (4, 1, 1)).astype(np.float32), "slope"),
    ]
    nodes = [
        helper.make_node("Conv", ["x", "w", "b"], ["c"], pads=[1, 1, 1, 1], strides=[2, 2]),
        helper.make_node("BatchNormalization", ["c", "g", "beta", "mu", "var"], ["n"],
                         epsilon=1e-3),
        helper.make_node("PRelu", ["n", "slope"], ["y"]),
    ]
    graph = helper.make_graph(
        nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 16, 16])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)], inits,
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def test_folded_graph_matches_onnxruntime() -> None:
    ort = pytest.importorskip("onnxruntime")
    model = _conv_bn_prelu_model()
    graph = OnnxGraph(model).eval()
    assert [n.op for n in graph.nodes] == ["Conv", "PRelu"]  # BN folded into the conv
    x = np.random.default_rng(2).normal(size=(3, 3, 16, 16)).astype(np.float32)
    session = ort.InferenceSession(for_onnxruntime(model).SerializeToString(),
                                   providers=["CPUExecutionProvider"])
    expect = np.concatenate([session.run(None, {"x": x[i : i + 1]})[0] for i in range(3)])
    with torch.inference_mode():
        got = graph(torch.from_numpy(x))["y"].numpy()
    np.testing.assert_allclose(got, expect, atol=1e-5, rtol=1e-5)


def test_unknown_operator_is_refused_at_load() -> None:
    node = helper.make_node("Softplus", ["x"], ["y"])
    graph = helper.make_graph(
        [node], "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 2])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)],
    )
    with pytest.raises(ConfigError, match="Softplus"):
        OnnxGraph(helper.make_model(graph))
