"""Multi-panel detectors: flat panels placed anywhere in the lab frame (design.md conventions).

A panel is a flat grid of ``n_slow x n_fast`` square pixels: the centre of pixel (f, s) sits at
``origin + f * p * fast + s * p * slow`` (mm) with ``fast`` and ``slow`` orthonormal. A detector
is a tuple of panels of one size; its frame is the stacked array ``img[panel, slow, fast]``.
CSPAD ASICs, JUNGFRAU modules, and the 24 modules of the PILATUS 12M on its cylinder are all
panels. The flat detector perpendicular to the beam (physics/geometry.py ``Geometry``) is the
one-panel case: :meth:`PanelGeometry.flat` turns such a geometry back into it, so it gives
exactly the flat detector's numbers.

Lab frame (design.md): beam along +z, sample at the origin. A pixel at r = (x, y, z) scatters at
2 theta = angle(r, z) and maps onto the model grid at g = k (x, y) with k = sqrt(2 / (R (R + z)))
/ lambda, R = |r| (qgrid.py derives it for the flat case; nothing there assumes z = D).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from functools import cached_property

import numpy as np

from xray_platform.physics.geometry import DetectorPreset, Geometry

_TOL = 1e-6


def rotation(axis, angle_deg: float) -> np.ndarray:
    """Rodrigues' matrix of a rotation by ``angle_deg`` about ``axis`` (right-handed)."""
    k = np.asarray(axis, dtype=float) / np.linalg.norm(axis)
    a = math.radians(angle_deg)
    kx = np.array([[0, -k[2], k[1]], [k[2], 0, -k[0]], [-k[1], k[0], 0]])
    return np.eye(3) + math.sin(a) * kx + (1 - math.cos(a)) * (kx @ kx)


def _unit(v) -> tuple[float, float, float]:
    a = np.asarray(v, dtype=float)
    n = float(np.linalg.norm(a))
    if a.shape != (3,) or not math.isfinite(n) or n == 0:
        raise ValueError(f"a panel axis must be a non-zero 3-vector, got {v!r}")
    return tuple(float(x) for x in a / n)  # type: ignore[return-value]


@dataclass(frozen=True)
class Panel:
    """One flat panel: ``origin_mm`` is the lab position of the centre of pixel (0, 0)."""

    origin_mm: tuple[float, float, float]
    fast: tuple[float, float, float]  # unit vector of increasing fast index
    slow: tuple[float, float, float]  # unit vector of increasing slow index
    pixel_mm: float
    n_fast: int
    n_slow: int
    name: str = ""

    def __post_init__(self) -> None:
        object.__setattr__(self, "origin_mm", tuple(float(x) for x in self.origin_mm))
        object.__setattr__(self, "fast", _unit(self.fast))
        object.__setattr__(self, "slow", _unit(self.slow))
        if not all(math.isfinite(x) for x in self.origin_mm) or len(self.origin_mm) != 3:
            raise ValueError(f"panel {self.name!r}: origin {self.origin_mm} is not a 3-vector")
        if abs(float(np.dot(self.fast, self.slow))) > 1e-4:
            raise ValueError(f"panel {self.name!r}: fast and slow axes are not perpendicular "
                             f"(fast . slow = {np.dot(self.fast, self.slow):.2g})")
        if not (math.isfinite(self.pixel_mm) and self.pixel_mm > 0):
            raise ValueError(f"panel {self.name!r}: pixel size {self.pixel_mm!r} mm")
        if self.n_fast < 1 or self.n_slow < 1:
            raise ValueError(f"panel {self.name!r}: {self.n_fast} x {self.n_slow} pixels")

    @property
    def normal(self) -> np.ndarray:
        return np.cross(self.fast, self.slow)

    def lab(self) -> np.ndarray:
        """(n_slow, n_fast, 3) float64 lab positions (mm) of every pixel centre."""
        o, f, s = (np.asarray(v) for v in (self.origin_mm, self.fast, self.slow))
        i = np.arange(self.n_fast)[None, :, None] * self.pixel_mm
        j = np.arange(self.n_slow)[:, None, None] * self.pixel_mm
        return o + i * f + j * s

    def corners(self) -> np.ndarray:
        """(4, 3) lab positions of the outer corners of the panel (mm)."""
        o, f, s = (np.asarray(v) for v in (self.origin_mm, self.fast, self.slow))
        p = self.pixel_mm
        a = np.array([-0.5, self.n_fast - 0.5]) * p
        b = np.array([-0.5, self.n_slow - 0.5]) * p
        return np.array([o + x * f + y * s for x in a for y in b])

    def where(self, u: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Rays from the sample along unit vectors u (n, 3): the distance t (mm) to this
        panel's plane (inf where the ray misses the plane or runs away from it) and the
        fractional pixel position (f, s) there."""
        n = self.normal
        o = np.asarray(self.origin_mm)
        denom = u @ n
        with np.errstate(divide="ignore", invalid="ignore"):
            t = np.where(np.abs(denom) > 1e-12, (o @ n) / denom, np.inf)
        t = np.where(t > 0, t, np.inf)
        hit = u * np.where(np.isfinite(t), t, 0.0)[:, None] - o
        return t, hit @ np.asarray(self.fast) / self.pixel_mm, \
            hit @ np.asarray(self.slow) / self.pixel_mm


@dataclass(frozen=True)
class PanelGeometry:
    """A multi-panel detector and a monochromatic beam (frames are ``img[panel, slow, fast]``)."""

    panels: tuple[Panel, ...]
    wavelength_A: float
    name: str = "panels"
    max_counts: int = 2**20

    def __post_init__(self) -> None:
        object.__setattr__(self, "panels", tuple(self.panels))
        if not self.panels:
            raise ValueError("a detector needs at least one panel")
        sizes = {(p.n_slow, p.n_fast) for p in self.panels}
        if len(sizes) != 1:
            raise ValueError(f"panels of different sizes {sorted(sizes)} (slow, fast) cannot "
                             "be stacked into one frame")
        if not (math.isfinite(self.wavelength_A) and self.wavelength_A > 0):
            raise ValueError(f"wavelength_A must be a positive number, got "
                             f"{self.wavelength_A!r}")

    @property
    def shape(self) -> tuple[int, int, int]:
        """Frame shape (panel, slow, fast)."""
        p = self.panels[0]
        return (len(self.panels), p.n_slow, p.n_fast)

    @property
    def pixel_mm(self) -> float:
        return self.panels[0].pixel_mm

    @property
    def energy_keV(self) -> float:
        from xray_platform.physics.geometry import energy_keV
        return energy_keV(self.wavelength_A)

    @cached_property
    def _plane_distances(self) -> np.ndarray:
        return np.array([abs(float(np.asarray(p.origin_mm) @ p.normal)) for p in self.panels])

    @property
    def distance_mm(self) -> float:
        """Perpendicular distance (mm) from the sample to the nearest panel plane."""
        return float(self._plane_distances.min())

    @cached_property
    def beam_hit(self) -> tuple[int, float, float] | None:
        """(panel, f, s): where the direct beam meets the plane of the first panel it reaches
        (the beam centre, often in a gap between panels); None if it reaches none."""
        z = np.array([[0.0, 0.0, 1.0]])
        best = None
        for i, p in enumerate(self.panels):
            t, f, s = p.where(z)
            if np.isfinite(t[0]) and (best is None or t[0] < best[0]):
                best = (float(t[0]), i, float(f[0]), float(s[0]))
        return None if best is None else best[1:]

    @property
    def beam_center_px(self) -> tuple[float, float] | None:
        """Beam centre (f, s) in the pixels of the panel :attr:`beam_hit` names."""
        return None if self.beam_hit is None else self.beam_hit[1:]

    def lab_xyz(self) -> np.ndarray:
        """(n_pixels, 3) float64 lab positions of every pixel in frame order (panel, slow,
        fast)."""
        return np.concatenate([p.lab().reshape(-1, 3) for p in self.panels])

    def two_theta_range(self) -> tuple[float, float]:
        """(min, max) scattering angle 2 theta (rad) over the panels' corners and the beam."""
        c = np.concatenate([p.corners() for p in self.panels])
        tth = np.arctan2(np.hypot(c[:, 0], c[:, 1]), c[:, 2])
        lo = 0.0 if self.beam_hit is not None and self._beam_inside() else float(tth.min())
        return lo, float(tth.max())

    def _beam_inside(self) -> bool:
        i, f, s = self.beam_hit  # type: ignore[misc]
        p = self.panels[i]
        return -0.5 <= f <= p.n_fast - 0.5 and -0.5 <= s <= p.n_slow - 0.5

    def shifted(self, dz_mm: float) -> PanelGeometry:
        """The detector moved by dz_mm along the beam (a distance override)."""
        panels = tuple(replace(p, origin_mm=(p.origin_mm[0], p.origin_mm[1],
                                             p.origin_mm[2] + dz_mm)) for p in self.panels)
        return replace(self, panels=panels)

    def flat(self) -> Geometry | None:
        """The same detector as a flat :class:`Geometry` when it is one panel perpendicular to
        the beam with fast along +x and slow along +y (the flat detector's own numbers), else
        None."""
        if len(self.panels) != 1:
            return None
        p = self.panels[0]
        if not (np.allclose(p.fast, (1, 0, 0), atol=_TOL)
                and np.allclose(p.slow, (0, 1, 0), atol=_TOL) and p.origin_mm[2] > 0):
            return None
        det = DetectorPreset(self.name, self.name, p.n_fast, p.n_slow, p.pixel_mm, p.n_fast,
                             p.n_slow, 0, 0, self.max_counts)
        f0 = -p.origin_mm[0] / p.pixel_mm
        s0 = -p.origin_mm[1] / p.pixel_mm
        return Geometry(det, p.origin_mm[2], self.wavelength_A, (f0, s0))


def panels_of(geom: Geometry) -> PanelGeometry:
    """A flat :class:`Geometry` as a one-panel :class:`PanelGeometry` (gaps become masked
    pixels of the frame, as the readers give them)."""
    det, p = geom.detector, geom.detector.pixel_mm
    f0, s0 = geom.beam_center_px
    panel = Panel((-f0 * p, -s0 * p, geom.distance_mm), (1, 0, 0), (0, 1, 0), p, det.n_fast,
                  det.n_slow, det.name)
    return PanelGeometry((panel,), geom.wavelength_A, det.name, det.max_counts)


def layout_panels(geom: Geometry) -> PanelGeometry:
    """The sensors of a layout detector (``geom.detector.layout``) in the lab frame of this
    shot: its virtual flat frame puts the layout's beam position on its centre pixel, and
    the shot's beam centre may sit off it."""
    from xray_platform.physics.layouts import layout

    det = geom.detector
    if det.layout is None:
        raise ValueError(f"detector {det.name} has no sensor layout")
    lay = layout(det.layout)
    f0, s0 = geom.beam_center_px
    # lab x, y of the layout's own beam position (the virtual frame's centre)
    cx = ((det.n_fast - 1) / 2 - f0) * det.pixel_mm
    cy = ((det.n_slow - 1) / 2 - s0) * det.pixel_mm
    panels = tuple(Panel((cx + x0, cy + y0, geom.distance_mm), (fx, fy, 0.0), (sx, sy, 0.0),
                         lay.pixel_mm, lay.n_fast, lay.n_slow, f"{det.layout}:{k}")
                   for k, (x0, y0, fx, fy, sx, sy) in enumerate(lay.array))
    return PanelGeometry(panels, geom.wavelength_A, det.name, det.max_counts)


def cut_into_panels(frame: np.ndarray, geom: Geometry) -> tuple[np.ndarray, PanelGeometry]:
    """A layout detector's virtual flat frame (slow, fast) as its sensors record it:
    ``(img[sensor, slow, fast], PanelGeometry)``, each sensor pixel taking the virtual pixel
    its centre falls on (sensors turned by a fraction of a degree move by < 0.5 pixel)."""
    pg = layout_panels(geom)
    f0, s0 = geom.beam_center_px
    p = geom.detector.pixel_mm
    xyz = pg.lab_xyz()
    fi = np.clip(np.rint(xyz[:, 0] / p + f0).astype(np.int64), 0, frame.shape[1] - 1)
    si = np.clip(np.rint(xyz[:, 1] / p + s0).astype(np.int64), 0, frame.shape[0] - 1)
    return np.asarray(frame)[si, fi].reshape(pg.shape), pg
