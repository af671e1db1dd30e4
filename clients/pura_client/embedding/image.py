"""Decode any supported image input to an RGB ``uint8`` array, the one format the pipelines take.

This is the single boundary where Pillow errors become :class:`pura.errors.FaceError`: callers
get one error type for "cannot use this picture" (unreadable bytes, truncated file, too small),
while "no face in a readable picture" stays a normal :class:`FaceResult`.
"""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import numpy.typing as npt
from PIL import Image, ImageOps, UnidentifiedImageError

from pura.errors import FaceError

ImageInput = str | Path | bytes | npt.NDArray[np.generic] | Image.Image
"""A path, encoded bytes, a decoded array (HxW, HxWx1, HxWx3, HxWx4) or a PIL image."""

MIN_SIDE = 32
"""Smallest accepted image side: below this no face is large enough for the 150x150 chip."""


def read_bytes(source: str | Path | bytes) -> bytes:
    """The encoded bytes of ``source`` (they also key the cache); FaceError if unreadable."""
    if isinstance(source, bytes):
        return source
    try:
        return Path(source).read_bytes()
    except OSError as exc:
        raise FaceError(f"cannot read image file {Path(source).name!r}: {exc.strerror}") from exc


def load_rgb(source: ImageInput, *, min_side: int = MIN_SIDE) -> npt.NDArray[np.uint8]:
    """Decode ``source`` to a contiguous HxWx3 ``uint8`` RGB array.

    Grayscale is replicated to three channels; alpha is dropped (composited on black), EXIF
    orientation is applied so phone photos are upright. Raises FaceError for undecodable input,
    unsupported array shapes/dtypes, or a side shorter than ``min_side``.
    """
    if isinstance(source, np.ndarray):
        rgb = _array_to_rgb(source)
    else:
        rgb = _pil_to_rgb(_open_pil(source))
    height, width = rgb.shape[:2]
    if min(height, width) < min_side:
        raise FaceError(f"image too small: {width}x{height} px (minimum side {min_side} px)")
    return rgb


def _open_pil(source: str | Path | bytes | Image.Image) -> Image.Image:
    if isinstance(source, Image.Image):
        return source
    data = read_bytes(source)
    try:
        image = Image.open(io.BytesIO(data))
        image.load()
    except (UnidentifiedImageError, OSError, ValueError, Image.DecompressionBombError) as exc:
        raise FaceError(f"unreadable image ({len(data)} bytes): {type(exc).__name__}") from exc
    return image


def _pil_to_rgb(image: Image.Image) -> npt.NDArray[np.uint8]:
    image = ImageOps.exif_transpose(image) or image
    if image.mode in ("RGBA", "LA", "PA") or (image.mode == "P" and "transparency" in image.info):
        background = Image.new("RGB", image.size, (0, 0, 0))
        background.paste(image.convert("RGBA"), mask=image.convert("RGBA").getchannel("A"))
        image = background
    return np.ascontiguousarray(np.asarray(image.convert("RGB"), dtype=np.uint8))


def _array_to_rgb(array: npt.NDArray[np.generic]) -> npt.NDArray[np.uint8]:
    if array.dtype != np.uint8:
        raise FaceError(f"image arrays must be uint8, got {array.dtype}")
    if array.ndim == 2:
        array = array[:, :, None]
    if array.ndim != 3 or array.shape[2] not in (1, 3, 4):
        raise FaceError(f"image array must be HxW, HxWx1, HxWx3 or HxWx4, got shape {array.shape}")
    if array.shape[2] == 1:
        array = np.repeat(array, 3, axis=2)
    elif array.shape[2] == 4:
        alpha = array[:, :, 3:4].astype(np.uint16)
        array = ((array[:, :, :3].astype(np.uint16) * alpha + 127) // 255).astype(np.uint8)
    return np.ascontiguousarray(array, dtype=np.uint8)
