"""The PILATUS 12M of Diamond beamline I23 (S/N 120-0100): 24 rows of 5 modules on a cylinder
around the sample, a layout its miniCBF header does not describe.

The layout is the one dxtbx's FormatCBFMiniPilatusDLS12M uses (unchanged since 2017), written
here from its description: the image (2463 x 5071 px, 0.172 mm) holds 24 module rows of 195 px
separated by 17 gap rows; row j is a flat panel of 2463 x 195 px (its 7-px gaps between modules
are -1 in the data) whose slow axis runs round the cylinder. In dxtbx's lab frame (beam along
-z, corner-of-first-pixel origins), with a_j = -12.2 + 7.903 / 2 + j (7.903 + 0.441) deg, the
header's Beam_xy (bx, by) and distance D:

    fast = (-1, 0, 0),  slow = (0, sin a, -cos a),  normal = fast x slow
    origin = 250 normal - 184.9 fast - 16.8 slow + (-D z + 0.172 (1075 - bx) x'
             + 0.172 (2594 - by) y),  x' = (-1, 0, 0)

i.e. a cylinder of 250 mm radius about an axis parallel to x through (0, 0.172 (2594 - by),
-D): the header distance (10 mm) and beam position only shift it. design.md's frame is dxtbx's
turned by 180 deg about x: (x, y, z) -> (x, -y, -z). Parallax is not corrected (0.32 mm Si).
"""

from __future__ import annotations

import math
import re

import numpy as np

from xray_platform.physics.panels import Panel

PIXEL_MM = 0.172
N_FAST, N_SLOW = 2463, 5071
ROW_PX, ROW_GAP_PX, N_ROWS = 195, 17, 24
RADIUS_MM = 250.0
MODULE_DEG, GAP_DEG, START_DEG = 7.903, 0.441, -12.2
IDEAL_BEAM_PX = (1075.0, 2594.0)
OFFSET_FAST_MM, OFFSET_SLOW_MM = 184.9, 16.8

#: serial numbers of PILATUS 12M detectors whose layout xrp knows
KNOWN = re.compile(r"PILATUS3? ?12M.*S/N\s*120-0100", re.IGNORECASE)
_TO_LAB = np.diag([1.0, -1.0, -1.0])


def panels(beam_xy_px: tuple[float, float], distance_mm: float) -> tuple[Panel, ...]:
    """The 24 row panels in design.md's lab frame from the header's Beam_xy (corner convention,
    as PILATUS writes it) and Detector_distance (mm)."""
    x, y, z = np.eye(3)
    shift = (-distance_mm * z + PIXEL_MM * (IDEAL_BEAM_PX[0] - beam_xy_px[0]) * -x
             + PIXEL_MM * (IDEAL_BEAM_PX[1] - beam_xy_px[1]) * y)
    out = []
    for j in range(N_ROWS):
        a = math.radians(START_DEG + 0.5 * MODULE_DEG + j * (MODULE_DEG + GAP_DEG))
        fast = np.array([1.0, 0.0, 0.0]) * -1
        slow = np.array([0.0, math.sin(a), -math.cos(a)])
        normal = np.cross(fast, slow)
        corner = RADIUS_MM * normal - OFFSET_FAST_MM * fast - OFFSET_SLOW_MM * slow + shift
        centre = corner + 0.5 * PIXEL_MM * (fast + slow)  # first pixel's centre
        out.append(Panel(tuple(_TO_LAB @ centre), tuple(_TO_LAB @ fast), tuple(_TO_LAB @ slow),
                         PIXEL_MM, N_FAST, ROW_PX, f"row-{j:02d}"))
    return tuple(out)


def split_rows(image: np.ndarray) -> np.ndarray:
    """(5071, 2463) image -> (24, 195, 2463) stacked row panels (the gap rows dropped)."""
    starts = np.arange(N_ROWS) * (ROW_PX + ROW_GAP_PX)
    return np.stack([image[s:s + ROW_PX] for s in starts])
