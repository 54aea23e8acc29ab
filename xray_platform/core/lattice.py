"""A lattice on a still, for any unit cell and any detector layout (numpy; no Ray): where its
reflections land, and the orientation that best explains indexed spots.

Conventions (design.md): q = A h with A = U B (columns a*, b*, c* in 1/Å, lab frame, beam along
+z), k0 = (0, 0, 1/lambda), k1 = k0 + q. A still records the reflections within ``eps`` of the
Ewald sphere, | |k1| - 1/lambda | < eps, where the ray along k1 meets a panel (the first panel
it meets; a flat detector is one panel). Positions are compared in the lab (mm), so one code
path serves flat, tiled (CSPAD), stacked (JUNGFRAU) and curved (PILATUS 12M) detectors.
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass

import numpy as np

from xray_platform.physics.geometry import Geometry
from xray_platform.physics.panels import PanelGeometry, panels_of


@dataclass(frozen=True)
class Predicted:
    """The reflections of one lattice that land on the detector."""

    hkl: np.ndarray  # (n, 3) float (integers)
    q: np.ndarray  # (n, 3) 1/Å, lab frame
    xyz_mm: np.ndarray  # (n, 3) lab position where k1 meets the detector
    panel: np.ndarray  # (n,) int
    fast: np.ndarray  # fractional pixel position on that panel
    slow: np.ndarray


@functools.lru_cache(maxsize=16)
def _hkl(metric: tuple[float, ...], d_min: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Every hkl (float) with d >= d_min for the reciprocal metric G* = B^T B (row-major), the
    same as three float32 rows (fast dot products), and |q|^2 = h^T G* h, which no orientation
    changes: one list serves every U of a cell."""
    g = np.reshape(metric, (3, 3))
    inv = np.linalg.inv(g)  # the real-space metric: |h_i| <= |a_i| / d_min
    hmax = np.ceil(np.sqrt(np.diag(inv)) / d_min).astype(int)
    grids = np.meshgrid(*[np.arange(-m, m + 1) for m in hmax], indexing="ij")
    h = np.stack(grids, -1).reshape(-1, 3).astype(np.float64)
    q2 = np.einsum("ij,jk,ik->i", h, g, h)
    keep = (q2 > 0) & (q2 <= d_min ** -2)
    h = h[keep]
    return h, np.ascontiguousarray(h.T, np.float32), q2[keep].astype(np.float32)


#: the most lattice points a prediction lists: a 184 Å face-centred cubic cell has 4 million
#: to 1.2 Å (7 s and ~1 GB to list); a denser lattice is predicted to d_listed(A, d_min)
MAX_POINTS = 1_000_000


def d_listed(A: np.ndarray, d_min: float) -> float:
    """The resolution (Å) to which ``A``'s lattice points are listed: ``d_min``, or coarser
    where the sphere of radius 1/d_min holds more than MAX_POINTS of them (its volume
    4 pi / (3 d^3) times the real cell's volume 1 / |det A| points)."""
    cell_volume = 1.0 / abs(float(np.linalg.det(A)))
    return max(float(d_min), (4 * math.pi * cell_volume / (3 * MAX_POINTS)) ** (1 / 3))


def reflections(A: np.ndarray, d_min: float) -> tuple[np.ndarray, np.ndarray]:
    """(hkl, q) of every lattice point of ``A`` (q = A h) with d >= ``d_min`` (Å; at most
    MAX_POINTS of them: d_listed)."""
    h = _cached(A, d_min)[0]
    return h, h @ A.T


def _cached(A: np.ndarray, d_min: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    return _hkl(tuple(np.round(A.T @ A, 12).ravel()), round(d_listed(A, d_min), 6))


def predict(A: np.ndarray, geom: Geometry | PanelGeometry, d_min: float, eps: float
            ) -> Predicted:
    """The reflections of ``A`` within ``eps`` (1/Å) of the Ewald sphere at d >= ``d_min``
    (d_listed: at most MAX_POINTS lattice points are tried) that land on the detector."""
    h, rows, q2 = _cached(A, d_min)
    inv_wl = 1.0 / geom.wavelength_A
    # |k0 + q|^2 - 1/lambda^2 = |q|^2 + 2 q_z / lambda: only q_z depends on the orientation,
    # so the Ewald test costs one dot product per lattice point (a generous first cut in
    # float32, then the exact one on the few that pass)
    az = (2.0 * inv_wl * A[2]).astype(np.float32)
    ewald = q2 + az[0] * rows[0] + az[1] * rows[1] + az[2] * rows[2]
    near = np.flatnonzero(np.abs(ewald) < np.float32(2.5 * eps * (inv_wl + eps)))
    h = h[near]
    q = h @ A.T
    k1 = q + np.array([0.0, 0.0, inv_wl])
    on = np.abs(np.linalg.norm(k1, axis=1) - inv_wl) < eps
    h, q, k1 = h[on], q[on], k1[on]
    panel, fast, slow, xyz = _project(k1, geom)
    keep = panel >= 0
    return Predicted(h[keep], q[keep], xyz[keep], panel[keep], fast[keep], slow[keep])


def _project(k1: np.ndarray, geom: Geometry | PanelGeometry
             ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(panel or -1, fast, slow, lab xyz) where rays along k1 first meet a panel."""
    if isinstance(geom, Geometry):  # one flat panel normal to the beam: no loop
        with np.errstate(divide="ignore", invalid="ignore"):
            t = np.where(k1[:, 2] > 0, geom.distance_mm / k1[:, 2], np.nan)
        xyz = k1 * t[:, None]
        f0, s0 = geom.beam_center_px
        p = geom.pixel_mm
        fast, slow = xyz[:, 0] / p + f0, xyz[:, 1] / p + s0
        ns, nf = geom.shape
        inside = np.isfinite(t) & (fast > -0.5) & (fast < nf - 0.5) & (slow > -0.5) & (
            slow < ns - 0.5)
        fi = np.clip(np.round(fast), 0, nf - 1).astype(int)
        si = np.clip(np.round(slow), 0, ns - 1).astype(int)
        inside &= ~geom.detector.gap_mask()[si, fi]
        return np.where(inside, 0, -1), fast, slow, xyz
    u = k1 / np.linalg.norm(k1, axis=1, keepdims=True)
    best = np.full(len(u), np.inf)
    panel = np.full(len(u), -1)
    fast, slow = np.zeros(len(u)), np.zeros(len(u))
    for i, pn in enumerate(geom.panels):
        t, f, s = pn.where(u)
        inside = (t < best) & (f > -0.5) & (f < pn.n_fast - 0.5) & (s > -0.5) & (
            s < pn.n_slow - 0.5)
        best = np.where(inside, t, best)
        panel = np.where(inside, i, panel)
        fast, slow = np.where(inside, f, fast), np.where(inside, s, slow)
    xyz = u * np.where(np.isfinite(best), best, 0.0)[:, None]
    return panel, fast, slow, xyz


def fit_orientation(B: np.ndarray, q: np.ndarray, hkl: np.ndarray,
                    wavelength_A: float | None = None, passes: int = 3) -> np.ndarray:
    """The rotation U that best maps B h onto the observed q = s1 - s0 (Wahba's problem, solved
    by the SVD of sum q (B h)^T; Markley 1988, J. Astronaut. Sci. 36, 245). On a still a spot
    is where the ray through the lattice point meets the detector, not the point itself, which
    lies off the Ewald sphere by its excitation error: with ``wavelength_A`` each observed ray
    is moved to the length |k0 + U B h| of its lattice point's and U fitted again, ``passes``
    times, so the fit matches directions (on nanoBragg's shots: 0.05-0.25 deg closer)."""
    p = hkl @ B.T
    U = _wahba(q, p)
    if wavelength_A is None:
        return U
    k0 = np.array([0.0, 0.0, 1.0 / wavelength_A])
    ray = (q + k0) / np.linalg.norm(q + k0, axis=1, keepdims=True)
    for _ in range(passes):
        length = np.linalg.norm(p @ U.T + k0, axis=1, keepdims=True)
        U = _wahba(ray * length - k0, p)
    return U


def _wahba(q: np.ndarray, p: np.ndarray) -> np.ndarray:
    u, _, vt = np.linalg.svd(q.T @ p)
    d = np.sign(np.linalg.det(u @ vt))  # a proper rotation, never a reflection
    return u @ np.diag([1.0, 1.0, d]) @ vt


def angle_deg(U: np.ndarray, V: np.ndarray) -> float:
    """The angle of the rotation taking U to V (degrees)."""
    cos = (np.trace(U.T @ V) - 1.0) / 2.0
    return math.degrees(math.acos(float(np.clip(cos, -1.0, 1.0))))


def as_panels(geom: Geometry | PanelGeometry) -> PanelGeometry:
    """The geometry as panels (a flat detector: one panel)."""
    return geom if isinstance(geom, PanelGeometry) else panels_of(geom)


def cell_of(T: np.ndarray) -> tuple[float, ...]:
    """a, b, c (Å), alpha, beta, gamma (deg) of a real-space basis (rows a, b, c)."""
    a, b, c = np.linalg.norm(T, axis=1)
    G = T @ T.T
    ang = [float(np.degrees(np.arccos(np.clip(G[i, j] / (n1 * n2), -1, 1))))
           for i, j, n1, n2 in ((1, 2, b, c), (0, 2, a, c), (0, 1, a, b))]
    return (float(a), float(b), float(c), *ang)
