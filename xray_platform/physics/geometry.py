"""Detector and beam geometry: pixel <-> lab <-> reciprocal space, d-spacing maps, presets.

Conventions (design.md, one source of truth):
- Lab frame: beam along +z, sample at the origin, k0 = (0, 0, 1/lambda) in 1/Å.
- Flat detector perpendicular to the beam at distance D (mm); image array ``img[slow, fast]``.
- Pixel centre (f, s) is at x = (f - f0) * p, y = (s - s0) * p, z = D with (f0, s0) the beam
  centre in pixels (pixel centres at integer indices) and p the pixel size in mm.
- Resolution of a pixel: d = lambda / (2 sin(theta)), 2 theta = angle between k1 and the beam.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, replace
from functools import lru_cache

import numpy as np
import torch

#: h c in keV Å (CODATA 2018): E[keV] = HC_KEV_A / lambda[Å].
HC_KEV_A = 12.398419843320026


def energy_keV(wavelength_A: float) -> float:
    return HC_KEV_A / wavelength_A


def wavelength_A(energy_keV: float) -> float:
    return HC_KEV_A / energy_keV


@dataclass(frozen=True)
class DetectorPreset:
    """A flat pixel-array detector made of a regular grid of modules separated by gaps, or
    (``layout``) of sensors placed as in physics/layouts/<layout>.json, rendered on a virtual
    flat frame whose pixels outside every sensor are gaps."""

    name: str
    description: str
    n_fast: int
    n_slow: int
    pixel_mm: float
    module_fast: int  # module size in pixels
    module_slow: int
    gap_fast: int  # pixels between module columns (along fast)
    gap_slow: int  # pixels between module rows (along slow)
    max_counts: int  # counts at which a pixel saturates (overload)
    layout: str | None = None  # a sensor layout (physics/layouts.py) instead of module gaps

    def __post_init__(self) -> None:
        nf = (self.n_fast + self.gap_fast) / (self.module_fast + self.gap_fast)
        ns = (self.n_slow + self.gap_slow) / (self.module_slow + self.gap_slow)
        if nf != int(nf) or ns != int(ns):
            raise ValueError(f"detector {self.name}: modules and gaps do not tile the frame")

    @property
    def n_modules(self) -> tuple[int, int]:
        """(modules along fast, modules along slow)."""
        return (
            (self.n_fast + self.gap_fast) // (self.module_fast + self.gap_fast),
            (self.n_slow + self.gap_slow) // (self.module_slow + self.gap_slow),
        )

    @property
    def shape(self) -> tuple[int, int]:
        """Image shape (slow, fast)."""
        return (self.n_slow, self.n_fast)

    def gap_mask(self) -> np.ndarray:
        """Boolean (slow, fast) image, True on inter-module gap pixels. Cached, read-only."""
        return _gap_mask(self)

    def is_gap(self, fi: torch.Tensor, si: torch.Tensor) -> torch.Tensor:
        """Whether integer pixel indices (on the detector) are gap pixels."""
        if self.layout is not None:
            fl = fi.long().clamp(0, self.n_fast - 1)
            sl = si.long().clamp(0, self.n_slow - 1)
            return self.gap_mask_tensor(fi.device)[sl, fl]
        if not fi.is_floating_point():  # float remainder is much cheaper than integer
            fi, si = fi.float(), si.float()
        return (torch.remainder(fi, self.module_fast + self.gap_fast) >= self.module_fast) | (
            torch.remainder(si, self.module_slow + self.gap_slow) >= self.module_slow)

    def gap_mask_tensor(self, device=None) -> torch.Tensor:
        """:meth:`gap_mask` as a bool tensor on ``device`` (cached per device)."""
        return _gap_mask_tensor(self, str(torch.device(device or "cpu")))


@lru_cache(maxsize=8)
def _gap_mask(det: DetectorPreset) -> np.ndarray:
    if det.layout is not None:
        from xray_platform.physics.layouts import layout

        mask = ~layout(det.layout).covered()
        mask.setflags(write=False)
        return mask
    f = np.arange(det.n_fast)
    s = np.arange(det.n_slow)
    gap_f = (f % (det.module_fast + det.gap_fast)) >= det.module_fast
    gap_s = (s % (det.module_slow + det.gap_slow)) >= det.module_slow
    mask = gap_s[:, None] | gap_f[None, :]
    mask.setflags(write=False)
    return mask


@lru_cache(maxsize=8)
def _gap_mask_tensor(det: DetectorPreset, device: str) -> torch.Tensor:
    return torch.from_numpy(_gap_mask(det).copy()).to(device)


def _layout_preset(name: str, description: str, max_counts: int) -> DetectorPreset:
    """A detector of the sensor layout ``name`` on its virtual flat frame."""
    from xray_platform.physics.layouts import layout

    lay = layout(name)
    ns, nf = lay.frame_shape
    return DetectorPreset(name, description, nf, ns, lay.pixel_mm, nf, ns, 0, 0, max_counts,
                          layout=name)


#: Detector presets with their real dimensions (manufacturer data sheets).
DETECTORS: dict[str, DetectorPreset] = {
    d.name: d
    for d in (
        # DECTRIS PILATUS 6M: 5 x 12 modules of 487 x 195 px, 172 um pixels, 20-bit counters.
        DetectorPreset("pilatus6m", "DECTRIS PILATUS 6M", 2463, 2527, 0.172, 487, 195, 7, 17,
                       2**20),
        # DECTRIS EIGER 16M: 4 x 8 modules of 1030 x 514 px, 75 um pixels, 10/37 px gaps.
        DetectorPreset("eiger16m", "DECTRIS EIGER 16M", 4150, 4371, 0.075, 1030, 514, 10, 37,
                       2**32 - 2),
        # PSI JUNGFRAU 4M as Jungfraujoch assembles it: 2 x 4 modules of 1030 x 514 px (the
        # double-size pixels between chips split in two), 75 um, gaps of 8 and 36 px
        # (2068 x 2164 px); ~1e4 12-keV photons per pixel with gain switching.
        DetectorPreset("jungfrau4m", "PSI JUNGFRAU 4M (Jungfraujoch layout)", 2068, 2164,
                       0.075, 1030, 514, 8, 36, 10_000),
        # LCLS ePix10k 2M: 16 modules of 384 x 352 px at 100 um, four quadrants turned in a
        # pinwheel (a schematic layout, physics/layouts/epix10k2m.json); ~1e4 photons per pixel.
        _layout_preset("epix10k2m", "LCLS ePix10k 2M (schematic pinwheel)", 10_000),
        # LCLS CSPAD: 64 ASICs of 194 x 185 px at 109.92 um as metrology placed them at LCLS
        # (physics/layouts/cspad.json); ~2,700 8-keV photons per pixel in low gain.
        _layout_preset("cspad", "LCLS CSPAD (64 ASICs, cxi78513 metrology)", 2_700),
        # Small 2 x 2-module detector for tests and laptop presets (PILATUS-like pixels).
        DetectorPreset("test", "small 2x2-module test detector", 256, 256, 0.172, 124, 124, 8, 8,
                       2**20),
        # The nanoBragg reference shots: 1024 x 1024 px of 0.172 mm, no gaps.
        DetectorPreset("ref1024", "1024x1024 gap-free detector of the nanoBragg references",
                       1024, 1024, 0.172, 1024, 1024, 0, 0, 2**20),
    )
}


def detector(name: str) -> DetectorPreset:
    try:
        return DETECTORS[name]
    except KeyError:
        raise ValueError(
            f"unknown detector preset {name!r}; choose one of {sorted(DETECTORS)}"
        ) from None


@dataclass(frozen=True)
class Beamstop:
    """A round beamstop on an arm, seen in projection on the detector (sizes in mm)."""

    radius_mm: float = 1.5
    arm_width_mm: float = 0.8
    arm_angle_deg: float = 90.0  # arm direction from the centre: 0 = +fast, 90 = +slow
    transmission: float = 0.02  # fraction of scattered photons that still reach the shadow

    def shadow(self, x_mm: torch.Tensor, y_mm: torch.Tensor) -> torch.Tensor:
        """True where (x, y) relative to the beam (mm, detector plane) lies in the shadow."""
        disc = x_mm * x_mm + y_mm * y_mm <= self.radius_mm**2
        a = math.radians(self.arm_angle_deg)
        along = x_mm * math.cos(a) + y_mm * math.sin(a)
        across = -x_mm * math.sin(a) + y_mm * math.cos(a)
        arm = (along >= 0) & (across.abs() <= self.arm_width_mm / 2)
        return disc | arm


@dataclass(frozen=True)
class Geometry:
    """A detector at distance D with a monochromatic beam; pixel <-> lab <-> resolution."""

    detector: DetectorPreset
    distance_mm: float
    wavelength_A: float
    beam_center_px: tuple[float, float]  # (f0, s0)
    beamstop: Beamstop | None = field(default=None)

    def __post_init__(self) -> None:
        for name in ("distance_mm", "wavelength_A"):
            v = getattr(self, name)
            if not (math.isfinite(v) and v > 0):
                raise ValueError(f"{name} must be a positive number, got {v!r}")

    # --- basic quantities -------------------------------------------------------------
    @property
    def energy_keV(self) -> float:
        return energy_keV(self.wavelength_A)

    @property
    def pixel_mm(self) -> float:
        return self.detector.pixel_mm

    @property
    def shape(self) -> tuple[int, int]:
        """Frame shape (slow, fast)."""
        return self.detector.shape

    def with_(self, **changes) -> Geometry:
        return replace(self, **changes)

    # --- pixel -> lab -> resolution ---------------------------------------------------
    def xy_mm(self, f, s):
        """Detector-plane coordinates (mm) of pixel position(s) relative to the beam centre."""
        f0, s0 = self.beam_center_px
        p = self.detector.pixel_mm
        return (f - f0) * p, (s - s0) * p

    def two_theta(self, f, s):
        """Scattering angle 2 theta (radians) at pixel position(s) (tensors or arrays)."""
        x, y = self.xy_mm(f, s)
        lib = torch if isinstance(x, torch.Tensor) else np
        return lib.arctan(lib.sqrt(x * x + y * y) / self.distance_mm)

    def d_spacing(self, f, s):
        """Resolution d = lambda / (2 sin theta) in Å (inf at the beam centre)."""
        tth = self.two_theta(f, s)
        lib = torch if isinstance(tth, torch.Tensor) else np
        return self.wavelength_A / (2 * lib.sin(tth / 2))

    def d_map(self, device: torch.device | str | None = None) -> torch.Tensor:
        """Full-frame (slow, fast) float32 map of d (Å) at every pixel centre."""
        s, f = self.pixel_indices(device)
        return self.d_spacing(f, s)

    def pixel_indices(self, device=None) -> tuple[torch.Tensor, torch.Tensor]:
        """Broadcastable (slow[:, None], fast[None, :]) float32 pixel index grids."""
        s = torch.arange(self.detector.n_slow, dtype=torch.float32, device=device)[:, None]
        f = torch.arange(self.detector.n_fast, dtype=torch.float32, device=device)[None, :]
        return s, f

    def two_theta_for_d(self, d_A):
        """2 theta (radians) of resolution d (Bragg's law, lambda = 2 d sin theta)."""
        return 2 * np.arcsin(self.wavelength_A / (2 * np.asarray(d_A, dtype=float)))

    def ring_radius_mm(self, d_A):
        """Radius (mm, in the detector plane) of the resolution ring d: R = D tan(2 theta)."""
        return self.distance_mm * np.tan(self.two_theta_for_d(d_A))

    def project(self, k1: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Pixel position (f, s) where the ray from the sample along k1 (n, 3) meets the
        detector plane z = D. Rays with k1_z <= 0 never reach it: NaN."""
        kz = k1[:, 2]
        t = torch.where(kz > 0, self.distance_mm / kz, torch.full_like(kz, float("nan")))
        f0, s0 = self.beam_center_px
        p = self.detector.pixel_mm
        return k1[:, 0] * t / p + f0, k1[:, 1] * t / p + s0

    # --- masks ------------------------------------------------------------------------
    def beamstop_mask(self, device=None) -> torch.Tensor:
        """(slow, fast) bool, True in the beamstop shadow."""
        s, f = self.pixel_indices(device)
        if self.beamstop is None:
            return torch.zeros(self.detector.shape, dtype=torch.bool, device=device)
        x, y = self.xy_mm(f, s)
        return self.beamstop.shadow(x, y)

    def active_mask(self, device=None) -> torch.Tensor:
        """(slow, fast) bool: pixels that record Bragg spots (not gap, not beamstop)."""
        return ~self.detector.gap_mask_tensor(device) & ~self.beamstop_mask(device)

    def is_active(self, f: torch.Tensor, s: torch.Tensor) -> torch.Tensor:
        """Whether fractional pixel positions fall on an active pixel (on the detector, not in
        a gap, not behind the beamstop)."""
        fi = torch.round(f)
        si = torch.round(s)
        ok = (fi >= 0) & (fi < self.detector.n_fast) & (si >= 0) & (si < self.detector.n_slow)
        ok &= torch.isfinite(f) & torch.isfinite(s)
        fi = torch.where(ok, fi, 0).long()
        si = torch.where(ok, si, 0).long()
        ok &= ~self.detector.is_gap(fi, si)
        if self.beamstop is not None:
            x, y = self.xy_mm(f, s)
            ok &= ~self.beamstop.shadow(x, y)
        return ok

    # --- resolution limits -------------------------------------------------------------
    def _edge_points(self) -> tuple[np.ndarray, np.ndarray]:
        nf, ns = self.detector.n_fast - 1, self.detector.n_slow - 1
        f0, s0 = self.beam_center_px
        fc = float(np.clip(f0, 0, nf))
        sc = float(np.clip(s0, 0, ns))
        # nearest points on the four edges, then the four corners
        f = np.array([0, nf, fc, fc, 0, nf, 0, nf], dtype=float)
        s = np.array([sc, sc, 0, ns, 0, 0, ns, ns], dtype=float)
        return f, s

    @property
    def edge_resolution_A(self) -> float:
        """Resolution (Å) at the edge point closest to the beam: full circles reach this far."""
        f, s = self._edge_points()
        return float(np.max(self.d_spacing(f[:4], s[:4])))

    @property
    def corner_resolution_A(self) -> float:
        """Finest resolution (Å) anywhere on the detector (its farthest corner)."""
        f, s = self._edge_points()
        return float(np.min(self.d_spacing(f[4:], s[4:])))
