"""YuNet face detector (OpenCV Zoo, 2023mar, MIT) in torch: boxes, scores and 5 landmarks.

The fp32 ONNX graph runs through :class:`~pura_client.embedding.onnx_graph.OnnxGraph`; decoding
follows OpenCV's ``FaceDetectorYN`` (the model's reference runtime): the image is fed as BGR
0–255 floats, zero-padded at the bottom/right to a multiple of 32; for each stride s ∈ {8, 16, 32}
and grid cell (r, c)::

    score = sqrt(clip(cls, 0, 1) · clip(obj, 0, 1))
    centre = ((c, r) + bbox[0:2]) · s,   size = exp(bbox[2:4]) · s
    landmark k = ((c, r) + kps[2k : 2k+2]) · s

then non-maximum suppression (IoU 0.3) among cells with score ≥ 0.6. Landmarks are, in image
terms, left eye, right eye, nose tip, left and right mouth corners — the order of the ArcFace
template (:mod:`.align`).

Images wider or taller than ``max_side`` are downscaled before detection (coordinates are mapped
back): YuNet is trained for faces of 10–300 px, and a 12-MP photo would cost seconds.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt
import torch
from PIL import Image

from pura_client.embedding.onnx_graph import OnnxGraph, load_onnx
from pura_client.embedding.registry import _YUNET, weight_path

STRIDES = (8, 16, 32)
SCORE_THRESHOLD = 0.6
NMS_THRESHOLD = 0.3
MAX_SIDE = 640
Floats = npt.NDArray[np.float32]


@dataclass(frozen=True)
class Detections:
    """Faces in one image: ``boxes`` (n, 4) as x1, y1, x2, y2; ``scores`` (n,);
    ``landmarks`` (n, 5, 2) in image pixels; sorted by decreasing score."""

    boxes: Floats
    scores: Floats
    landmarks: Floats

    def __len__(self) -> int:
        return int(self.scores.shape[0])

    def pick(self, center: bool, width: int, height: int) -> int | None:
        """Index of the kept face: closest box centre to the image centre, else the largest."""
        if len(self) == 0:
            return None
        if center:
            cx = (self.boxes[:, 0] + self.boxes[:, 2] - width) / 2
            cy = (self.boxes[:, 1] + self.boxes[:, 3] - height) / 2
            return int(np.argmin(cx**2 + cy**2))
        area = (self.boxes[:, 2] - self.boxes[:, 0]) * (self.boxes[:, 3] - self.boxes[:, 1])
        return int(np.argmax(area))


def load_yunet_graph() -> OnnxGraph:
    """The YuNet graph from the models folder (SHA-256 checked)."""
    return OnnxGraph(load_onnx(weight_path(_YUNET))).eval()


def _nms(boxes: Floats, scores: Floats, threshold: float) -> list[int]:
    """Greedy NMS by decreasing score (OpenCV's NMSBoxes on x1, y1, x2, y2 boxes)."""
    order = list(np.argsort(-scores, kind="stable"))
    keep: list[int] = []
    area = (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])
    while order:
        i = order.pop(0)
        keep.append(int(i))
        if not order:
            break
        rest = np.array(order)
        w = np.minimum(boxes[i, 2], boxes[rest, 2]) - np.maximum(boxes[i, 0], boxes[rest, 0])
        h = np.minimum(boxes[i, 3], boxes[rest, 3]) - np.maximum(boxes[i, 1], boxes[rest, 1])
        inter = np.clip(w, 0, None) * np.clip(h, 0, None)
        iou = inter / (area[i] + area[rest] - inter)
        order = [j for j, o in zip(order, iou, strict=True) if o <= threshold]
    return keep


def decode(
    outputs: dict[str, Floats], pad_h: int, pad_w: int, score_threshold: float = SCORE_THRESHOLD
) -> Detections:
    """Turn one image's raw head outputs (no batch axis) into NMS-filtered detections."""
    boxes, scores, marks = [], [], []
    for s in STRIDES:
        rows, cols = pad_h // s, pad_w // s
        r, c = np.divmod(np.arange(rows * cols, dtype=np.float32), cols)
        score = np.sqrt(np.clip(outputs[f"cls_{s}"][:, 0], 0, 1)
                        * np.clip(outputs[f"obj_{s}"][:, 0], 0, 1))
        bbox, kps = outputs[f"bbox_{s}"], outputs[f"kps_{s}"].reshape(-1, 5, 2)
        cx, cy = (c + bbox[:, 0]) * s, (r + bbox[:, 1]) * s
        w, h = np.exp(bbox[:, 2]) * s, np.exp(bbox[:, 3]) * s
        keep = score >= score_threshold
        boxes.append(np.stack([cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2], 1)[keep])
        scores.append(score[keep])
        grid = np.stack([c, r], 1)[:, None, :]
        marks.append(((grid + kps) * s)[keep])
    all_boxes = np.concatenate(boxes).astype(np.float32)
    all_scores = np.concatenate(scores).astype(np.float32)
    all_marks = np.concatenate(marks).astype(np.float32)
    kept = _nms(all_boxes, all_scores, NMS_THRESHOLD)
    return Detections(all_boxes[kept], all_scores[kept], all_marks[kept])


class YuNetDetector:
    """Batched YuNet on a torch device (images of the same padded size share a forward pass)."""

    def __init__(
        self,
        device: torch.device,
        *,
        score_threshold: float = SCORE_THRESHOLD,
        max_side: int = MAX_SIDE,
        graph: OnnxGraph | None = None,
    ) -> None:
        self.device = device
        self.score_threshold = score_threshold
        self.max_side = max_side
        self.graph = (graph if graph is not None else load_yunet_graph()).to(device)

    def __repr__(self) -> str:
        return f"YuNetDetector(device={self.device.type!r}, score>={self.score_threshold})"

    @property
    def pipeline_id(self) -> str:
        return f"yunet2023mar-s{self.score_threshold:g}-max{self.max_side}"

    def detect_many(self, images: Sequence[npt.NDArray[np.uint8]]) -> list[Detections]:
        """Detections for each RGB image, in order."""
        prepared = [self._prepare(rgb) for rgb in images]
        out: list[Detections | None] = [None] * len(images)
        groups: dict[tuple[int, int], list[int]] = {}
        for i, (bgr, _) in enumerate(prepared):
            groups.setdefault(bgr.shape[:2], []).append(i)
        for (pad_h, pad_w), members in groups.items():
            batch = np.stack([prepared[i][0] for i in members]).transpose(0, 3, 1, 2)
            with torch.inference_mode():
                raw = self.graph(torch.from_numpy(batch).to(self.device))
            host = {k: v.float().cpu().numpy() for k, v in raw.items()}
            for j, i in enumerate(members):
                det = decode({k: v[j] for k, v in host.items()}, pad_h, pad_w,
                             self.score_threshold)
                scale = prepared[i][1]
                out[i] = Detections(det.boxes / scale, det.scores, det.landmarks / scale)
        return [d for d in out if d is not None]

    def _prepare(self, rgb: npt.NDArray[np.uint8]) -> tuple[Floats, float]:
        """BGR float32, downscaled to ``max_side`` if larger, zero-padded to multiples of 32."""
        h, w = rgb.shape[:2]
        scale = min(1.0, self.max_side / max(h, w))
        if scale < 1.0:
            size = (max(1, round(w * scale)), max(1, round(h * scale)))
            rgb = np.asarray(Image.fromarray(rgb).resize(size, Image.Resampling.BILINEAR))
            h, w = rgb.shape[:2]
        pad_h, pad_w = -(-h // 32) * 32, -(-w // 32) * 32
        bgr = np.zeros((pad_h, pad_w, 3), np.float32)
        bgr[:h, :w] = rgb[:, :, ::-1]
        return bgr, scale
