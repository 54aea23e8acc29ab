"""Sensor layouts that are not a regular grid of modules: CSPAD's pinwheel of 64 ASICs, the
ePix10k 2M's four turned quadrants. A layout is a set of flat sensors in one plane perpendicular
to the beam, each a rectangle of pixels placed by the position of its first pixel's centre and
its fast and slow unit vectors (mm, lab x and y of design.md, the beam at (0, 0)).

The simulator renders such a detector on a virtual flat pixel grid centred on the layout's beam
position and masks every virtual pixel that no sensor covers; `panels.cut_into_panels` cuts
those frames back into the sensors (frames as the detector writes them, placed panel by
panel). The layouts are JSON files beside this module (layouts/<name>.json), each naming its
source.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import numpy as np

LAYOUT_DIR = Path(__file__).with_name("layouts")


@dataclass(frozen=True)
class Layout:
    """Sensors of ``n_fast`` x ``n_slow`` pixels of ``pixel_mm``; ``sensors`` rows are
    (x0, y0, fast_x, fast_y, slow_x, slow_y): the centre of pixel (0, 0) relative to the beam
    (mm) and the in-plane unit vectors of increasing fast and slow index."""

    name: str
    description: str
    source: str
    pixel_mm: float
    n_fast: int
    n_slow: int
    sensors: tuple[tuple[float, ...], ...]

    @property
    def array(self) -> np.ndarray:
        return np.asarray(self.sensors, dtype=np.float64).reshape(-1, 6)

    def corners_mm(self) -> np.ndarray:
        """(sensors, 4, 2) outer corners of every sensor (mm)."""
        a, p = self.array, self.pixel_mm
        o, f, s = a[:, None, 0:2], a[:, None, 2:4], a[:, None, 4:6]
        i = np.array([-0.5, self.n_fast - 0.5, self.n_fast - 0.5, -0.5])[None, :, None]
        j = np.array([-0.5, -0.5, self.n_slow - 0.5, self.n_slow - 0.5])[None, :, None]
        return o + p * (i * f + j * s)

    @property
    def frame_shape(self) -> tuple[int, int]:
        """(slow, fast) of the virtual flat frame: odd sizes, the beam on its centre pixel,
        every sensor inside."""
        c = np.abs(self.corners_mm()).reshape(-1, 2).max(axis=0) / self.pixel_mm
        nf, ns = (2 * math.ceil(v + 1) + 1 for v in c)
        return ns, nf

    def covered(self) -> np.ndarray:
        """(slow, fast) bool on the virtual frame: pixel centres that fall on a sensor."""
        ns, nf = self.frame_shape
        cf, cs = (nf - 1) / 2, (ns - 1) / 2
        out = np.zeros((ns, nf), dtype=bool)
        p = self.pixel_mm
        for (x0, y0, fx, fy, sx, sy), box in zip(self.array, self.corners_mm(), strict=True):
            lo = np.floor(box.min(axis=0) / p + (cf, cs)).astype(int)
            hi = np.ceil(box.max(axis=0) / p + (cf, cs)).astype(int) + 1
            lo, hi = np.maximum(lo, 0), np.minimum(hi, (nf, ns))
            x = (np.arange(lo[0], hi[0]) - cf) * p - x0
            y = (np.arange(lo[1], hi[1]) - cs) * p - y0
            # sensor indices of the virtual pixel centres: projections on its unit vectors
            i = (x[None, :] * fx + y[:, None] * fy) / p
            j = (x[None, :] * sx + y[:, None] * sy) / p
            inside = (i >= -0.5) & (i < self.n_fast - 0.5) & (j >= -0.5) & (j < self.n_slow - 0.5)
            out[lo[1]:hi[1], lo[0]:hi[0]] |= inside
        return out


@lru_cache(maxsize=8)
def layout(name: str) -> Layout:
    """The layout in layouts/<name>.json."""
    path = LAYOUT_DIR / f"{name}.json"
    if not path.is_file():
        known = sorted(p.stem for p in LAYOUT_DIR.glob("*.json"))
        raise KeyError(f"unknown sensor layout {name!r}; known: {known}")
    d = json.loads(path.read_text())
    return Layout(name, d["description"], d["source"], float(d["pixel_mm"]), int(d["n_fast"]),
                  int(d["n_slow"]), tuple(tuple(float(v) for v in row) for row in d["sensors"]))


def layout_of_panels(panels, description: str, source: str) -> dict:
    """The layout JSON (a dict) of coplanar sensors perpendicular to the beam, from
    :class:`~xray_platform.physics.panels.Panel`\\ s; refuses tilted or non-coplanar ones."""
    z = {round(p.origin_mm[2], 3) for p in panels}
    if len(z) != 1 or any(abs(p.fast[2]) > 1e-6 or abs(p.slow[2]) > 1e-6 for p in panels):
        raise ValueError("a sensor layout needs coplanar sensors perpendicular to the beam")
    sizes = {(p.n_fast, p.n_slow, round(p.pixel_mm, 6)) for p in panels}
    if len(sizes) != 1:
        raise ValueError(f"sensors of different sizes {sorted(sizes)}")
    (nf, ns, pixel), = sizes
    rows = [[round(p.origin_mm[0], 4), round(p.origin_mm[1], 4), *(round(v, 6) for v in (
        p.fast[0], p.fast[1], p.slow[0], p.slow[1]))] for p in panels]
    return {"description": description, "source": source, "pixel_mm": pixel, "n_fast": nf,
            "n_slow": ns, "sensors": rows}


def dumps(d: dict) -> str:
    """Layout JSON text with one sensor per line."""
    head = {k: v for k, v in d.items() if k != "sensors"}
    body = ",\n".join("  " + json.dumps(r) for r in d["sensors"])
    return json.dumps(head, indent=1)[:-2] + ',\n "sensors": [\n' + body + "\n ]\n}\n"
