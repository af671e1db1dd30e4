"""dlib's CNN face detector (``mmod_human_face_detector.dat``) ported to torch: a GPU detector.

Same parser as the ResNet (:mod:`.dlib_format`); the network is dlib's ``dnn_mmod_face_detection``
one: three ``con<·,5,5,2,2>`` (no padding) + batch-norm + relu downsamplers (16, 32, 32 filters),
three ``con<45,5,5,1,1>`` + bn + relu, and a ``con<1,9,9,1,1>`` scoring layer, run over a *tiled
image pyramid*: the image and its successive 5/6 downscalings (``pyramid_down<6>``) are packed
into one canvas (dlib's ``compute_tiled_image_pyramid_details`` layout, padding 10, outer padding
11), each level resized bilinearly from the previous one. Every output position scoring above 0
is a detection: its input-tensor position is ``8·p + 14`` (the three stride-2 5×5 convolutions),
the 80×80 detection window there is mapped back to the image through the pyramid level it falls
in (``point_up``: ``p·6/5 + 0.3`` per level), and overlapping detections are removed greedily
by score with dlib's overlap test (intersection over the bounding box of the pair > 0.338, or
one box fully covered).

This reproduces ``dlib.cnn_face_detection_model_v1(...)(image, 0)`` (no upsampling): boxes and
scores agree with dlib-bin on LFW (see the tests). Bilinear resampling runs in float32 here as in
dlib, so scores agree to ~1e-5 rather than bit for bit.
"""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import numpy.typing as npt
import torch
import torch.nn.functional as F  # noqa: N812 (torch convention)
from torch import nn

from pura.errors import ConfigError
from pura_client.embedding.dlib_format import Layer, read_network
from pura_client.embedding.models import MMOD_FILE, model_file
from pura_client.embedding.types import Box

PYRAMID_RATE = 5.0 / 6.0  # pyramid_down<6>: (N-1)/N
UP_RATIO = 6.0 / 5.0  # its point_up: p * N/(N-1) + 0.3
MIN_LEVEL_HEIGHT = 5
_DOWN = ((16, 3), (32, 16), (32, 32))
_FLAT = ((45, 32), (45, 45), (45, 45))


class _BatchNorm(nn.Module):
    """dlib ``bn_con`` at inference: ``gamma·(x − running mean)/sqrt(running var + eps) + beta``."""

    scale: torch.Tensor
    shift: torch.Tensor

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.register_buffer("scale", torch.ones(channels))
        self.register_buffer("shift", torch.zeros(channels))

    def load(self, layer: Layer) -> None:
        a = layer.arrays
        eps = layer.reals[4]
        inv = a["gamma"] / np.sqrt(a["running_var"] + np.float32(eps))
        self.scale.copy_(torch.from_numpy(inv.astype(np.float32)))
        self.shift.copy_(torch.from_numpy((a["beta"] - a["running_mean"] * inv).astype(np.float32)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.scale.view(1, -1, 1, 1) + self.shift.view(1, -1, 1, 1)


class DlibFaceCNN(nn.Module):
    """The MMOD scoring network: (1, 3, H, W) normalised canvas → (1, 1, h, w) scores."""

    def __init__(self) -> None:
        super().__init__()
        convs: list[nn.Conv2d] = []
        norms: list[_BatchNorm] = []
        for out_ch, in_ch in _DOWN:
            convs.append(nn.Conv2d(in_ch, out_ch, 5, 2, padding=0))
            norms.append(_BatchNorm(out_ch))
        for out_ch, in_ch in _FLAT:
            convs.append(nn.Conv2d(in_ch, out_ch, 5, 1, padding=2))
            norms.append(_BatchNorm(out_ch))
        self.convs = nn.ModuleList(convs)
        self.norms = nn.ModuleList(norms)
        self.score = nn.Conv2d(45, 1, 9, 1, padding=4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for conv, norm in zip(self.convs, self.norms, strict=True):
            x = F.relu(norm(conv(x)))
        scores: torch.Tensor = self.score(x)
        return scores

    def load(self, layers: list[Layer]) -> None:
        """Copy the file's layers (input-first, input layer excluded) after checking them."""
        convs = [layer for layer in layers if layer.name == "con_4"]
        norms = [layer for layer in layers if layer.name == "bn_con2"]
        modules = [*self.convs, self.score]
        if len(convs) != len(modules) or len(norms) != len(self.norms):
            raise ConfigError("mmod network does not have the expected 7 conv / 6 bn layers")
        with torch.no_grad():
            for conv, layer in zip(modules, convs, strict=True):
                assert isinstance(conv, nn.Conv2d)
                pad = conv.padding
                assert isinstance(pad, tuple)
                expected = (conv.out_channels, *conv.kernel_size, *conv.stride, *pad)
                if layer.ints != expected:
                    raise ConfigError(f"mmod conv {layer.ints} does not match {expected}")
                assert conv.bias is not None
                conv.weight.copy_(torch.from_numpy(layer.arrays["weight"]))
                conv.bias.copy_(torch.from_numpy(layer.arrays["bias"]))
            for norm, layer in zip(self.norms, norms, strict=True):
                assert isinstance(norm, _BatchNorm)
                norm.load(layer)


Rect = tuple[int, int, int, int]  # inclusive left, top, right, bottom


def pyramid_rects(
    nr: int, nc: int, padding: int = 10, outer: int = 11
) -> tuple[list[Rect], int, int]:
    """dlib's tiled-pyramid layout: level rectangles in the canvas and the canvas size."""
    sizes = [(nc, nr)]
    while True:
        nr, nc = math.floor(PYRAMID_RATE * nr), math.floor(PYRAMID_RATE * nc)
        if nr * nc == 0 or nr < MIN_LEVEL_HEIGHT:
            break
        sizes.append((nc, nr))
    total = sum(h + padding for _, h in sizes) - 2 * padding
    height, prev_width = 0, 0
    for w, h in sizes:
        fits_beside = w <= sizes[0][0] - prev_width - padding
        if fits_beside and (height - sizes[0][1]) * 2 >= total - sizes[0][1]:
            break
        height += h + padding
        prev_width = w
    height -= padding
    width = sizes[0][0]
    rects: list[Rect] = []
    y = outer
    i = 0
    while y < height + outer and i < len(sizes):
        w, h = sizes[i]
        rects.append((outer, y, outer + w - 1, y + h - 1))
        y += h + padding
        i += 1
    y -= padding
    first = rects[0]
    while i < len(sizes):
        w, h = sizes[i]
        right, bottom = outer + width - 1, y - 1
        rect = (right - (w - 1), bottom - (h - 1), right, bottom)
        apart = rect[0] > first[2] or rect[2] < first[0] or rect[1] > first[3] or rect[3] < first[1]
        if not apart:  # the last column must not run into the full-size image
            break
        rects.append(rect)
        y -= h + padding
        i += 1
    return rects, height + 2 * outer, width + 2 * outer


def resize_bilinear(src: torch.Tensor, out_h: int, out_w: int) -> torch.Tensor:
    """dlib ``resize_image`` (bilinear, corner-aligned: scale = (in−1)/(out−1)) of (C, h, w)."""
    in_h, in_w = src.shape[1], src.shape[2]
    ys = torch.arange(out_h, dtype=torch.float64) * ((in_h - 1) / max(out_h - 1, 1))
    xs = torch.arange(out_w, dtype=torch.float64) * ((in_w - 1) / max(out_w - 1, 1))
    top, left = ys.floor().long(), xs.floor().long()
    bottom, right = (top + 1).clamp(max=in_h - 1), (left + 1).clamp(max=in_w - 1)
    ty = (ys - top).to(src.dtype).to(src.device).view(1, -1, 1)
    tx = (xs - left).to(src.dtype).to(src.device).view(1, 1, -1)
    top, bottom, left, right = (t.to(src.device) for t in (top, bottom, left, right))
    rows_t, rows_b = src[:, top], src[:, bottom]
    upper = (1 - tx) * rows_t[:, :, left] + tx * rows_t[:, :, right]
    lower = (1 - tx) * rows_b[:, :, left] + tx * rows_b[:, :, right]
    return (1 - ty) * upper + ty * lower


@dataclass(frozen=True)
class CnnDetection:
    """One face: its box in image pixels (inclusive) and the network's score."""

    box: Box
    score: float


class TorchCnnFaceDetector:
    """``dlib.cnn_face_detection_model_v1`` (upsample 0) in torch; runs on CPU or CUDA."""

    def __init__(self, device: torch.device | str = "cpu", path: Path | None = None) -> None:
        network = read_network(path if path is not None else model_file(MMOD_FILE))
        if network.loss.name != "loss_mmod_" or network.layers[0].name != "input_rgb_image_pyramid":
            raise ConfigError("not a dlib MMOD detector with an RGB pyramid input")
        self.window = network.loss.ints
        self.nms_iou, self.nms_covered = network.loss.reals[3], network.loss.reals[4]
        self.padding, self.outer = network.layers[0].ints
        self.device = torch.device(device)
        self.mean = torch.tensor(network.layers[0].reals, dtype=torch.float32).view(3, 1, 1)
        self.net = DlibFaceCNN()
        self.net.load(list(network.layers[1:]))
        self.net.to(self.device).eval()

    def canvas(self, rgb: npt.NDArray[np.uint8]) -> tuple[torch.Tensor, list[Rect]]:
        """The normalised tiled pyramid (1, 3, H, W) and the level rectangles."""
        nr, nc = rgb.shape[:2]
        rects, height, width = pyramid_rects(nr, nc, self.padding, self.outer)
        data = torch.zeros(3, height, width, device=self.device)
        image = torch.from_numpy(np.array(rgb, dtype=np.uint8)).to(self.device)
        first = (image.permute(2, 0, 1).float() - self.mean.to(self.device)) / 256.0
        left, top, right, bottom = rects[0]
        data[:, top : bottom + 1, left : right + 1] = first
        for prev, rect in itertools.pairwise(rects):
            src = data[:, prev[1] : prev[3] + 1, prev[0] : prev[2] + 1]
            h, w = rect[3] - rect[1] + 1, rect[2] - rect[0] + 1
            data[:, rect[1] : rect[3] + 1, rect[0] : rect[2] + 1] = resize_bilinear(src, h, w)
        return data.unsqueeze(0), rects

    def detect(
        self, rgb: npt.NDArray[np.uint8], upsample: int = 0, threshold: float = 0.0
    ) -> list[CnnDetection]:
        """Faces in an RGB image, best first, after dlib's non-maximum suppression.

        ``upsample`` doubles the image that many times first (dlib's ``pyramid_up`` geometry
        for ``pyramid_down<2>``: size from ``rect_up``, corner-aligned bilinear resampling) and
        maps the boxes back with ``rect_down``, like dlib's Python binding. dlib resamples in
        SIMD float, so ~2 % of upsampled pixels differ by one grey level from dlib's and
        boxes can move by a pixel; without upsampling the detections are dlib's.
        """
        if upsample < 0:
            raise ConfigError(f"upsample must be >= 0, got {upsample}")
        image = rgb
        for _ in range(upsample):
            image = self._pyramid_up(image)
        found = self._detect_at_scale(image, threshold)
        if upsample == 0:
            return found
        return [CnnDetection(_rect_down(d.box, upsample), d.score) for d in found]

    def _pyramid_up(self, rgb: npt.NDArray[np.uint8]) -> npt.NDArray[np.uint8]:
        nr, nc = rgb.shape[:2]
        bottom, right = _round(2 * (nr - 1) + 1.5), _round(2 * (nc - 1) + 2.5)
        src = torch.from_numpy(np.array(rgb, dtype=np.uint8)).to(self.device)
        up = resize_bilinear(src.permute(2, 0, 1).double(), bottom + 1, right + 1)
        out: npt.NDArray[np.uint8] = (
            up.clamp(0, 255).to(torch.uint8).permute(1, 2, 0).cpu().numpy()  # truncation
        )
        return out

    def _detect_at_scale(
        self, rgb: npt.NDArray[np.uint8], threshold: float
    ) -> list[CnnDetection]:
        canvas, rects = self.canvas(rgb)
        with torch.inference_mode():
            scores = self.net(canvas)[0, 0].float().cpu().numpy()
        rows, cols = np.nonzero(scores > threshold)
        candidates = [
            (float(scores[r, c]), self._to_image(rects, 8.0 * c + 14.0, 8.0 * r + 14.0))
            for r, c in zip(rows.tolist(), cols.tolist(), strict=True)
        ]
        candidates.sort(key=lambda item: -item[0])
        kept: list[CnnDetection] = []
        for score, box in candidates:
            if not any(self._overlaps(k.box, box) for k in kept):
                kept.append(CnnDetection(box, score))
        return kept

    def _to_image(self, rects: list[Rect], x: float, y: float) -> Box:
        """Window centred at tensor point (x, y) → image box (dlib tiled_pyramid_to_image)."""
        half_w, half_h = (self.window[0] - 1) / 2, (self.window[1] - 1) / 2
        level = _nearest_rect(rects, _round(x), _round(y))
        ox, oy = rects[level][0], rects[level][1]
        corners = [(x - half_w - ox, y - half_h - oy), (x + half_w - ox, y + half_h - oy)]
        for _ in range(level):
            corners = [(px * UP_RATIO + 0.3, py * UP_RATIO + 0.3) for px, py in corners]
        (left, top), (right, bottom) = corners
        return (_round(left), _round(top), _round(right), _round(bottom))

    def _overlaps(self, a: Box, b: Box) -> bool:
        """dlib ``test_box_overlap``: intersection over the pair's bounding box, or coverage."""
        il, it, ir, ib = max(a[0], b[0]), max(a[1], b[1]), min(a[2], b[2]), min(a[3], b[3])
        inner = _area((il, it, ir, ib))
        if inner == 0:
            return False
        outer = _area((min(a[0], b[0]), min(a[1], b[1]), max(a[2], b[2]), max(a[3], b[3])))
        return (
            inner / outer > self.nms_iou
            or inner / _area(a) > self.nms_covered
            or inner / _area(b) > self.nms_covered
        )


def _rect_down(box: Box, levels: int) -> Box:
    """dlib ``pyramid_down<2>::rect_down``: ``p/2 − (1.25, 0.75)`` per level, then rounding."""
    (x0, y0), (x1, y1) = (float(box[0]), float(box[1])), (float(box[2]), float(box[3]))
    for _ in range(levels):
        x0, y0, x1, y1 = x0 / 2 - 1.25, y0 / 2 - 0.75, x1 / 2 - 1.25, y1 / 2 - 0.75
    return (_round(x0), _round(y0), _round(x1), _round(y1))


def _round(v: float) -> int:
    return math.floor(v + 0.5)


def _area(box: Box) -> int:
    w, h = box[2] - box[0] + 1, box[3] - box[1] + 1
    return w * h if w > 0 and h > 0 else 0


def _nearest_rect(rects: list[Rect], x: int, y: int) -> int:
    best, best_dist = 0, math.inf
    for i, (left, top, right, bottom) in enumerate(rects):
        if left <= x <= right and top <= y <= bottom:
            return i
        nx, ny = min(max(x, left), right), min(max(y, top), bottom)
        dist = math.hypot(nx - x, ny - y)
        if dist < best_dist:
            best, best_dist = i, dist
    return best
