"""SFace in torch (weights dequantised once at load) vs onnxruntime running the shipped int8
block-quantised graph, on 200 real LFW faces aligned by YuNet + the ArcFace template.

Tolerance: the weights are the same dequantised values, so the only differences are float32
summation order and the conv+BN folding — far inside what the int8 quantisation itself changes
(measured on 200 LFW faces: max abs 6.2e-6 on embeddings of magnitude ≤ 4.4, min cosine
0.9999998); the bar is max abs ≤ 1e-4 and cosine ≥ 0.9999.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from pura_client.datasets.lfw import LFWDataset, identification_split
from pura_client.embedding.aligned import AlignedEmbedder
from pura_client.embedding.image import load_rgb
from pura_client.embedding.onnx_graph import for_onnxruntime, load_onnx
from pura_client.embedding.registry import SFACE_MODEL_ID, get_model, network_file, weight_path
from pura_client.embedding.types import MultiFacePolicy

N_PARITY = 200
pytestmark = [pytest.mark.slow, pytest.mark.lfw, pytest.mark.timeout(3600)]


def test_sface_matches_onnxruntime_on_lfw(lfw_dataset: LFWDataset) -> None:
    ort = pytest.importorskip("onnxruntime")
    split = identification_split(N_PARITY, 1, n_non_enrolled=0, dataset=lfw_dataset)
    embedder = AlignedEmbedder(SFACE_MODEL_ID, device="cpu", policy=MultiFacePolicy.CENTER)
    located = embedder.locate([load_rgb(g.path) for g in split.gallery])
    chips = np.stack([chip for _, _, chip in located if chip is not None])
    assert len(chips) == N_PARITY
    with torch.inference_mode():
        mine = np.concatenate([embedder.network(torch.from_numpy(chips[i : i + 50])).numpy()
                               for i in range(0, N_PARITY, 50)])
    path = weight_path(network_file(get_model(SFACE_MODEL_ID)))
    options = ort.SessionOptions()
    options.log_severity_level = 3
    session = ort.InferenceSession(for_onnxruntime(load_onnx(path)).SerializeToString(), options,
                                   providers=["CPUExecutionProvider"])
    ref = np.concatenate([
        session.run(None, {"data": chip.transpose(2, 0, 1)[None].astype(np.float32)})[0]
        for chip in chips
    ])
    cosine = (mine * ref).sum(1) / np.linalg.norm(mine, axis=1) / np.linalg.norm(ref, axis=1)
    worst = float(np.abs(mine - ref).max())
    print(f"SFace torch vs onnxruntime on {N_PARITY} LFW faces: max abs {worst:.2e} "
          f"(|embedding| max {np.abs(ref).max():.2f}), min cosine {cosine.min():.12f}")
    assert worst <= 1e-4
    assert cosine.min() >= 0.9999


def test_sface_embeddings_are_batch_independent(lfw_dataset: LFWDataset) -> None:
    split = identification_split(8, 2, n_non_enrolled=0, dataset=lfw_dataset)
    embedder = AlignedEmbedder(SFACE_MODEL_ID, device="cpu", batch_size=8)
    paths = [g.path for g in split.gallery]
    batched = embedder.embed(paths)
    single = np.concatenate([embedder.embed([p]) for p in paths])
    assert np.abs(batched - single).max() < 1e-5
    np.testing.assert_allclose(np.linalg.norm(batched, axis=1), 1.0, atol=1e-6)
