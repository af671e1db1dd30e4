"""SFace (OpenCV Zoo, 2021dec, int8 block-quantised, Apache-2.0) as a torch module.

The ONNX file holds a MobileFaceNet-style network (27 conv + BN + PReLU, a 7×7×512 → 128 linear
layer and a final batch norm) whose weights are int8 blocks of 9–64 values, each with a float
scale and an int8 zero point. :class:`~pura_client.embedding.onnx_graph.OnnxGraph` dequantises
them once at load (bit-for-bit the values onnxruntime computes on every call), so the network runs
as float32 convolutions, batched, on any torch device. Input: aligned 112×112 RGB chips, 0–255
(the graph subtracts 127.5 and multiplies by 1/128 itself). Output: the raw 128-d embedding;
callers L2-normalise it and compare by cosine similarity.
"""

from __future__ import annotations

import torch
from torch import nn

from pura_client.embedding.onnx_graph import OnnxGraph, load_onnx
from pura_client.embedding.registry import SFACE_MODEL_ID, get_model, network_file, weight_path

SFACE_DIM = 128


class SFaceNet(nn.Module):
    """``forward(chips)``: (n, 112, 112, 3) uint8 RGB → (n, 128) float32 raw embeddings."""

    dim = SFACE_DIM

    def __init__(self, graph: OnnxGraph) -> None:
        super().__init__()
        self.graph = graph.eval()

    def forward(self, chips: torch.Tensor) -> torch.Tensor:
        x = chips.permute(0, 3, 1, 2).float()  # NHWC uint8 → NCHW float, RGB kept
        out: torch.Tensor = self.graph(x)["fc1"]
        return out


def load_sface() -> SFaceNet:
    """SFace from the models folder, SHA-256 checked (ConfigError when missing or altered)."""
    path = weight_path(network_file(get_model(SFACE_MODEL_ID)))
    return SFaceNet(OnnxGraph(load_onnx(path))).eval()
