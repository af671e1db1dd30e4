"""5-point similarity alignment to the standard 112×112 ArcFace template (SFace, EdgeFace).

Both networks were trained on faces warped so that the two eyes, the nose tip and the mouth
corners land on fixed template points; feeding them anything else costs accuracy. The transform
is the least-squares similarity (rotation, uniform scale, translation — no shear, no reflection)
of Umeyama (1991), the estimator insightface and OpenCV's ``FaceRecognizerSF.alignCrop`` use. The
warp samples bilinearly with zero borders, like ``cv2.warpAffine``'s defaults, via scipy.
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt
from scipy import ndimage

from pura.errors import ConfigError

CHIP_SIZE = 112
ARCFACE_TEMPLATE: npt.NDArray[np.float64] = np.array(
    [
        [38.2946, 51.6963],  # left eye (in the image)
        [73.5318, 51.5014],  # right eye
        [56.0252, 71.7366],  # nose tip
        [41.5493, 92.3655],  # left mouth corner
        [70.7299, 92.2041],  # right mouth corner
    ]
)


def similarity_transform(
    src: npt.ArrayLike, dst: npt.ArrayLike
) -> npt.NDArray[np.float64]:
    """2×3 matrix ``M`` of the similarity minimising Σ‖M·[src; 1] − dst‖² (Umeyama 1991)."""
    s = np.asarray(src, np.float64)
    d = np.asarray(dst, np.float64)
    if s.shape != d.shape or s.ndim != 2 or s.shape[1] != 2 or s.shape[0] < 2:
        raise ConfigError(f"need matching (n >= 2, 2) point sets, got {s.shape} and {d.shape}")
    mu_s, mu_d = s.mean(0), d.mean(0)
    sc, dc = s - mu_s, d - mu_d
    u, sing, vt = np.linalg.svd(dc.T @ sc / len(s))
    sign = np.ones(2)
    if np.linalg.det(u) * np.linalg.det(vt) < 0:
        sign[-1] = -1.0  # the best orthogonal map is a reflection: take the best rotation
    rot = u @ np.diag(sign) @ vt
    var_s = (sc**2).sum() / len(s)
    scale = float((sing * sign).sum() / var_s) if var_s > 0 else 1.0
    shift = mu_d - scale * rot @ mu_s
    return np.hstack([scale * rot, shift[:, None]])


def warp_affine(
    rgb: npt.NDArray[np.uint8], matrix: npt.NDArray[np.float64], size: int = CHIP_SIZE
) -> npt.NDArray[np.uint8]:
    """``size``×``size`` output whose pixel (x, y) samples ``rgb`` at ``M⁻¹·(x, y, 1)``."""
    full = np.vstack([matrix, [0.0, 0.0, 1.0]])
    inv = np.linalg.inv(full)
    ys, xs = np.mgrid[0:size, 0:size].astype(np.float64)
    src_x = inv[0, 0] * xs + inv[0, 1] * ys + inv[0, 2]
    src_y = inv[1, 0] * xs + inv[1, 1] * ys + inv[1, 2]
    out = np.empty((size, size, 3), np.uint8)
    for ch in range(3):
        plane = ndimage.map_coordinates(
            rgb[:, :, ch].astype(np.float32), [src_y, src_x],
            order=1, mode="grid-constant", cval=0.0,
        )
        out[:, :, ch] = np.clip(np.rint(plane), 0, 255).astype(np.uint8)
    return out


def align_face(rgb: npt.NDArray[np.uint8], landmarks: npt.ArrayLike) -> npt.NDArray[np.uint8]:
    """The 112×112 ArcFace chip of the face whose 5 landmarks (image pixels) are given."""
    return warp_affine(rgb, similarity_transform(landmarks, ARCFACE_TEMPLATE), CHIP_SIZE)
