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
    k = max(1, math.ceil(max(img.shape) / size))
    ns, nf = img.shape[0] // k, img.shape[1] // k
    blocks = img[: ns * k, : nf * k].reshape(ns, k, nf, k)
    top = blocks.max(axis=(1, 3))
    masked = top < 0  # every pixel of the block masked (negative)
    v = np.log1p(np.clip(top, 0, None))
    good = v[~masked] if (~masked).any() else np.zeros(1)
    lo, hi = float(np.median(good)), float(np.percentile(good, 99.9))  # background -> white
    g = np.clip(255 * (1 - (v - lo) / max(hi - lo, 1e-6)), 0, 255).astype(np.uint8)
    g[masked] = 200
    buf = io.BytesIO()
    Image.fromarray(g, mode="L").save(buf, format="PNG", optimize=True)
    i = frame.info
    meta = {"file": frame.path, "frame": frame.index, "scale": k, "width": nf, "height": ns,
            "wavelength_A": i.wavelength_A, "distance_mm": i.distance_mm,
            "pixel_size_mm": i.pixel_size_mm, "beam_center_px": i.beam_center_px}
    return buf.getvalue(), meta
