"""The latest frame as a small PNG for the live page (a few tens of kB, written about once a
second, never per frame), with what the page needs to draw resolution rings over it."""

from __future__ import annotations

import io
import math
from typing import Any

import numpy as np

SIZE = 384  # the longer side in px


def thumbnail(frame: Any, size: int = SIZE) -> tuple[bytes, dict[str, Any]]:
    """(PNG bytes, meta) of an io Frame: block maxima (spots survive the shrink), log scale,
    masked pixels grey."""
    from PIL import Image

    img = frame.image
    if img.ndim == 3:  # panels: show the frame on the reciprocal-space grid instead
        return _grid_thumbnail(frame, size)
    k = max(1, math.ceil(max(img.shape) / size))
    ns, nf = img.shape[0] // k, img.shape[1] // k
    blocks = img[: ns * k, : nf * k].reshape(ns, k, nf, k)
    top = blocks.max(axis=(1, 3))
    masked = top < 0  # every pixel of the block masked (negative)
    v = np.log1p(np.clip(top, 0, None))
    buf = io.BytesIO()
    Image.fromarray(_grey(v, masked), mode="L").save(buf, format="PNG", optimize=True)
    i = frame.info
    meta = {"file": frame.path, "frame": frame.index, "scale": k, "width": nf, "height": ns,
            "wavelength_A": i.wavelength_A, "distance_mm": i.distance_mm,
            "pixel_size_mm": i.pixel_size_mm, "beam_center_px": i.beam_center_px}
    return buf.getvalue(), meta


def _grey(v: np.ndarray, masked: np.ndarray) -> np.ndarray:
    """log counts -> 8-bit grey: background white, the brightest 0.1 % black, masked grey."""
    good = v[~masked] if (~masked).any() else np.zeros(1)
    lo, hi = float(np.median(good)), float(np.percentile(good, 99.9))
    g = np.clip(255 * (1 - (v - lo) / max(hi - lo, 1e-6)), 0, 255).astype(np.uint8)
    g[masked] = 200
    return g


#: the grid a multi-panel frame's thumbnail shows (resolution d at radius 1/d from the middle)
GRID_D_MIN_A = 1.2


def _grid_thumbnail(frame: Any, size: int) -> tuple[bytes, dict[str, Any]]:
    """A multi-panel frame on a size x size reciprocal-space grid to 1.2 Å (its panels in one
    picture, whatever their layout); the page draws ring d at radius (1/d) / cell."""
    import torch
    from PIL import Image

    from xray_platform.physics.qgrid import QGrid, frame_to_grid

    grid = QGrid(size, GRID_D_MIN_A)
    counts = frame_to_grid(torch.as_tensor(frame.image), frame.geometry(), grid).numpy()
    masked = counts < 0
    buf = io.BytesIO()
    Image.fromarray(_grey(np.log1p(np.clip(counts, 0, None)), masked), mode="L").save(
        buf, format="PNG", optimize=True)
    meta = {"file": frame.path, "frame": frame.index, "scale": 1, "width": size,
            "height": size, "wavelength_A": frame.info.wavelength_A,
            "grid_d_min_A": GRID_D_MIN_A, "n_panels": int(frame.image.shape[0])}
    return buf.getvalue(), meta
