"""YuNet in torch vs onnxruntime (the reference runtime) on 200 real LFW images: raw head
outputs, decoded boxes/landmarks, and the detector's behaviour on LFW (a face in every image)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from pura_client.datasets.lfw import LFWDataset, identification_split
from pura_client.embedding.image import load_rgb
from pura_client.embedding.onnx_graph import for_onnxruntime, load_onnx
from pura_client.embedding.registry import _YUNET, weight_path
from pura_client.embedding.yunet import YuNetDetector, decode

N_PARITY = 200
pytestmark = [pytest.mark.slow, pytest.mark.lfw, pytest.mark.timeout(3600)]


def test_yunet_matches_onnxruntime_on_lfw(lfw_dataset: LFWDataset) -> None:
    ort = pytest.importorskip("onnxruntime")
    split = identification_split(N_PARITY, 0, n_non_enrolled=0, dataset=lfw_dataset)
    images = [load_rgb(g.path) for g in split.gallery]
    detector = YuNetDetector(torch.device("cpu"))
    options = ort.SessionOptions()
    options.log_severity_level = 3
    session = ort.InferenceSession(
        for_onnxruntime(load_onnx(weight_path(_YUNET))).SerializeToString(), options,
        providers=["CPUExecutionProvider"],
    )
    names = [o.name for o in session.get_outputs()]
    found = detector.detect_many(images)
    worst_raw = worst_mark = 0.0
    for rgb, det in zip(images, found, strict=True):
        bgr, scale = detector._prepare(rgb)
        raw = session.run(None, {"input": bgr.transpose(2, 0, 1)[None]})
        ref = decode({n: r[0] for n, r in zip(names, raw, strict=True)}, *bgr.shape[:2])
        with torch.inference_mode():
            mine = detector.graph(torch.from_numpy(bgr.transpose(2, 0, 1)[None].copy()))
        worst_raw = max(worst_raw, max(float(np.abs(mine[n].numpy() - r).max())
                                       for n, r in zip(names, raw, strict=True)))
        assert len(ref) == len(det)
        worst_mark = max(worst_mark, float(np.abs(ref.landmarks / scale - det.landmarks).max()))
    print(f"YuNet torch vs onnxruntime on {N_PARITY} LFW images: raw max abs {worst_raw:.2e}, "
          f"landmarks max abs {worst_mark:.2e} px")
    assert worst_raw <= 1e-4
    assert worst_mark <= 1e-3
    assert all(len(d) >= 1 for d in found)  # YuNet at 0.6 finds a face in every LFW image here
