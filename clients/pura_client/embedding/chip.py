"""dlib-style face chip extraction (``get_face_chip``) reproduced in numpy.

Why reproduce it: the ResNet was trained on dlib's chips, so the torch pipeline must feed it the
same pixels; doing the geometry here (instead of calling dlib for every face) keeps the crop and
resampling in vectorised numpy next to the torch model.

Steps, following dlib's ``get_face_chip_details`` / ``extract_image_chips``:

1. The 5 landmarks are matched to dlib's canonical 5-point template (scaled by the chip size and
   ``padding``) with Umeyama's least-squares similarity transform (chip → image).
2. ``chip_details``: rotation angle and scale of that transform; the chip covers a
   ``size·scale``-wide rectangle centred on the image of the chip centre.
3. Extraction: dlib crops a bounding box grown by 2 px around the rotated rectangle, maps chip
   pixel ``(c, r)`` to that crop with the affine map fixed by three rectangle corners, and samples
   with bilinear interpolation; samples whose 2×2 neighbourhood leaves the crop are black, and
   values are truncated to ``uint8`` (dlib's ``assign_pixel`` from double).

dlib builds an image pyramid first when the face is more than ~2× larger than the chip; that
path is not reproduced: :func:`needs_pyramid` reports it and the pipeline then lets dlib-bin cut
the chip (same pixels, CPU only).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

CHIP_SIZE = 150
CHIP_PADDING = 0.25

# dlib's canonical positions of the 5 landmarks in a unit face box (get_face_chip_details).
_TEMPLATE_5 = np.array(
    [
        (0.8595674595992, 0.2134981538014),
        (0.6460604764104, 0.2289674387677),
        (0.1205750620789, 0.2137274526848),
        (0.3340850613712, 0.2290642403242),
        (0.4901123135679, 0.6277975316475),
    ],
    dtype=np.float64,
)


@dataclass(frozen=True)
class ChipDetails:
    """dlib ``chip_details``: the image rectangle (l, t, r, b; inclusive) and rotation angle."""

    rect: tuple[float, float, float, float]
    angle: float
    size: int

    def area(self) -> float:
        left, top, right, bottom = self.rect
        return (right - left + 1) * (bottom - top + 1)


def similarity_transform(
    src: npt.NDArray[np.float64], dst: npt.NDArray[np.float64]
) -> tuple[npt.NDArray[np.float64], npt.NDArray[np.float64]]:
    """Umeyama least-squares similarity ``dst ≈ M @ src + t`` (M = c·R), as dlib computes it."""
    mean_src, mean_dst = src.mean(axis=0), dst.mean(axis=0)
    d_src, d_dst = src - mean_src, dst - mean_dst
    sigma_src = float(np.mean(np.sum(d_src**2, axis=1)))
    cov = d_dst.T @ d_src / len(src)
    u, d, vt = np.linalg.svd(cov)
    s = np.eye(2)
    det_cov = float(np.linalg.det(cov))
    if det_cov < 0 or (det_cov == 0 and np.linalg.det(u) * np.linalg.det(vt) < 0):
        s[1, 1] = -1.0  # numpy orders singular values decreasingly: flip the smallest
    rotation = u @ s @ vt
    scale = float(np.trace(np.diag(d) @ s) / sigma_src) if sigma_src != 0 else 1.0
    m = scale * rotation
    return m, mean_dst - m @ mean_src


def face_chip_details(
    landmarks: npt.NDArray[np.float64], size: int = CHIP_SIZE, padding: float = CHIP_PADDING
) -> ChipDetails:
    """Where the chip lies in the image, from the 5 landmarks (shape (5, 2), x then y)."""
    if landmarks.shape != (5, 2):
        raise ValueError(f"expected 5 landmarks, got shape {landmarks.shape}")
    chip_points = (padding + _TEMPLATE_5) / (2 * padding + 1) * size
    m, t = similarity_transform(chip_points, landmarks.astype(np.float64))
    px, py = m[0, 0], m[1, 0]
    angle = math.atan2(py, px)
    scale = math.sqrt(px * px + py * py)
    cx, cy = m @ np.array([size / 2.0, size / 2.0]) + t
    half = (size * scale - 1) / 2
    return ChipDetails((cx - half, cy - half, cx + half, cy + half), angle, size)


def _rotate(center: tuple[float, float], point: tuple[float, float], angle: float) -> np.ndarray:
    cos, sin = math.cos(angle), math.sin(angle)
    dx, dy = point[0] - center[0], point[1] - center[1]
    return np.array([cos * dx - sin * dy + center[0], sin * dx + cos * dy + center[1]])


def _corners(rect: tuple[float, float, float, float]) -> list[tuple[float, float]]:
    left, top, right, bottom = rect
    return [(left, top), (right, top), (left, bottom), (right, bottom)]


def _crop_box(details: ChipDetails, width: int, height: int) -> tuple[int, int, int, int]:
    """dlib's integer crop: rotated rect grown by 2 px, clipped to the image, rounded."""
    left, top, right, bottom = details.rect
    center = ((left + right) / 2, (top + bottom) / 2)
    pts = np.array([_rotate(center, c, details.angle) for c in _corners(details.rect)])
    lo = np.maximum(pts.min(axis=0) - 2, 0.0)
    hi = np.minimum(pts.max(axis=0) + 2, [width - 1.0, height - 1.0])
    box = np.floor(np.concatenate([lo, hi]) + 0.5).astype(np.int64)
    return int(box[0]), int(box[1]), int(box[2]), int(box[3])


def needs_pyramid(details: ChipDetails) -> bool:
    """True when dlib would (or might) downsample with an image pyramid first (face ≳ 2× chip).

    dlib uses the pyramid when the rectangle halved by ``pyramid_down<2>::rect_down`` (a
    translation plus halving, so width w → (w+1)/2) still has more pixels than the chip. We
    answer True 5 % early: near the boundary the caller uses dlib's own extraction, which is
    exact either way, instead of risking a different resampling path.
    """
    left, top, right, bottom = details.rect
    halved = ((right - left + 2) / 2) * ((bottom - top + 2) / 2)
    return halved > 0.95 * details.size * details.size


def _affine_from_3(
    src: npt.NDArray[np.float64], dst: npt.NDArray[np.float64]
) -> npt.NDArray[np.float64]:
    """The 2×3 affine map sending the 3 ``src`` points exactly onto ``dst``."""
    a = np.hstack([src, np.ones((3, 1))])
    solution = np.asarray(np.linalg.solve(a, dst).T, dtype=np.float64)
    return solution


def extract_chip(rgb: npt.NDArray[np.uint8], details: ChipDetails) -> npt.NDArray[np.uint8]:
    """Cut the ``size × size`` RGB chip described by ``details`` (bilinear, black outside)."""
    height, width = rgb.shape[:2]
    x0, y0, x1, y1 = _crop_box(details, width, height)
    crop = rgb[y0 : y1 + 1, x0 : x1 + 1].astype(np.float64)
    left, top, right, bottom = details.rect
    local = (left - x0, top - y0, right - x0, bottom - y0)
    center = ((local[0] + local[2]) / 2, (local[1] + local[3]) / 2)
    corners = _corners(local)
    size = details.size
    src = np.array([(0.0, 0.0), (size - 1.0, 0.0), (0.0, size - 1.0)])
    dst = np.array([_rotate(center, corners[i], details.angle) for i in (0, 1, 2)])
    affine = _affine_from_3(src, dst)
    grid = np.mgrid[0:size, 0:size].astype(np.float64)
    rows, cols = grid[0], grid[1]
    px = affine[0, 0] * cols + affine[0, 1] * rows + affine[0, 2]
    py = affine[1, 0] * cols + affine[1, 1] * rows + affine[1, 2]
    return _bilinear(crop, px, py)


def _bilinear(
    image: npt.NDArray[np.float64], px: npt.NDArray[np.float64], py: npt.NDArray[np.float64]
) -> npt.NDArray[np.uint8]:
    h, w = image.shape[:2]
    left, top = np.floor(px).astype(np.int64), np.floor(py).astype(np.int64)
    inside = (left >= 0) & (top >= 0) & (left + 1 < w) & (top + 1 < h)
    lc, tc = np.clip(left, 0, max(w - 2, 0)), np.clip(top, 0, max(h - 2, 0))
    fx, fy = (px - left)[..., None], (py - top)[..., None]
    tl, tr = image[tc, lc], image[tc, lc + 1]
    bl, br = image[tc + 1, lc], image[tc + 1, lc + 1]
    top_row = (1 - fx) * tl + fx * tr
    value = (1 - fy) * top_row + fy * ((1 - fx) * bl + fx * br)
    out = np.clip(value, 0, 255).astype(np.uint8)  # truncation, like dlib's assign_pixel
    out[~inside] = 0
    return out
