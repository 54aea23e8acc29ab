"""What a real X-ray diffraction setup can be: the ranges a frame's geometry and shape must lie
in before xrp answers for it (one check for the readers, `xrp predict`, `xrp serve` and its form
fields). A value outside is refused with the value and the range, never answered: a confident
answer from a geometry that makes no sense is the worst outcome a user can get.

The ranges cover the detectors and beamlines xrp knows of, with margin:
- wavelength 0.2-6 Å (62-2 keV): hard XFEL and synchrotron MX (0.5-1.8 Å) to long-wavelength
  beamlines (DLS I23 at 2.7-5.9 Å);
- sample-detector distance 30-3000 mm (the closest MX detectors ~50 mm, XFEL rear detectors ~2.5 m);
- pixel size 0.01-1 mm (Rayonix MX 0.044 unbinned to binned CCDs ~0.2, PILATUS 0.172);
- frame sides 128-20000 px (the smallest module, a CSPAD ASIC, is 185 x 194; an unbinned
  Rayonix MX340 7680 x 7680) and at most 64 M pixels per frame;
- beam centre within one detector width/height beyond each edge of the frame.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from xray_platform.physics.panels import PanelGeometry

WAVELENGTH_A = (0.2, 6.0)
DISTANCE_MM = (30.0, 3000.0)
PIXEL_MM = (0.01, 1.0)
FRAME_SIDE_PX = (128, 20_000)
MAX_FRAME_PIXELS = 64_000_000
#: largest decompressed detector file accepted: the biggest frame in 4-byte pixels plus headers
MAX_FILE_BYTES = 4 * MAX_FRAME_PIXELS + (16 << 20)


class GeometryError(ValueError):
    """A geometry or frame shape outside what real detectors and beamlines have."""


def _in(name: str, value: float, lo: float, hi: float, unit: str) -> None:
    if not (isinstance(value, int | float) and math.isfinite(value)):
        raise GeometryError(f"{name} {value!r} is not a finite number")
    if not lo <= value <= hi:
        raise GeometryError(f"{name} {value:g} {unit} is outside the range real setups have "
                            f"({lo:g}-{hi:g} {unit})")


def check_shape(n_fast: int, n_slow: int) -> None:
    """A frame of n_fast x n_slow pixels is one a real detector can write."""
    lo, hi = FRAME_SIDE_PX
    for name, n in (("frame width (fast)", n_fast), ("frame height (slow)", n_slow)):
        if not lo <= n <= hi:
            raise GeometryError(f"{name} {n} px is outside the range of real detectors "
                                f"({lo}-{hi} px; the smallest module is 185 x 194 px)")
    if n_fast * n_slow > MAX_FRAME_PIXELS:
        raise GeometryError(f"frame of {n_fast} x {n_slow} = {n_fast * n_slow:,} pixels is "
                            f"above the limit of {MAX_FRAME_PIXELS:,}")


def check_wavelength(value: float) -> None:
    _in("wavelength", value, *WAVELENGTH_A, "Å")


def check_distance(value: float) -> None:
    _in("detector distance", value, *DISTANCE_MM, "mm")


def check_pixel_size(value: float) -> None:
    _in("pixel size", value, *PIXEL_MM, "mm")


def check_beam_centre(f0: float, s0: float, n_fast: int, n_slow: int) -> None:
    _in("beam centre x (fast)", f0, -n_fast, 2 * n_fast, "px")
    _in("beam centre y (slow)", s0, -n_slow, 2 * n_slow, "px")


def check_geometry(wavelength_A: float, distance_mm: float, pixel_mm: float,
                   beam_center_px: tuple[float, float], n_fast: int, n_slow: int) -> None:
    """Every part of a frame's geometry (GeometryError names the first that makes no sense)."""
    check_shape(n_fast, n_slow)
    check_wavelength(wavelength_A)
    check_distance(distance_mm)
    check_pixel_size(pixel_mm)
    check_beam_centre(*beam_center_px, n_fast, n_slow)


def check_panel_geometry(geom: PanelGeometry) -> None:
    """A multi-panel detector (physics/panels.py) makes sense: wavelength and pixel size in
    range, the nearest panel plane 30-3000 mm from the sample, every panel of a size real
    modules have, and the beam within one detector extent of the panels (the flat rule, taken
    on the panels' central projection onto the plane z = 1)."""
    check_wavelength(geom.wavelength_A)
    check_pixel_size(geom.pixel_mm)
    check_distance(geom.distance_mm)
    _, ns, nf = geom.shape
    if min(ns, nf) < 16 or nf * ns * len(geom.panels) > MAX_FRAME_PIXELS:
        raise GeometryError(f"{len(geom.panels)} panels of {nf} x {ns} px is not a detector "
                            f"xrp knows of (panels of at least 16 px, at most "
                            f"{MAX_FRAME_PIXELS:,} pixels)")
    c = np.concatenate([p.corners() for p in geom.panels])
    c = c[c[:, 2] > 0]
    if len(c) == 0:
        raise GeometryError("no panel faces the sample from downstream of it (every panel "
                            "corner has z <= 0: the geometry or the beam direction is wrong)")
    u, v = c[:, 0] / c[:, 2], c[:, 1] / c[:, 2]
    for name, lo, hi in (("x", u.min(), u.max()), ("y", v.min(), v.max())):
        w = hi - lo
        if not lo - w <= 0.0 <= hi + w:
            raise GeometryError(f"the beam passes {name} = 0 more than one detector extent "
                                f"off the panels ({lo:.3f}-{hi:.3f} in {name}/z): the panel "
                                "positions make no sense for this beam")
