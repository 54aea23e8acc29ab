"""The geometry-invariant model-input grid (design.md "Geometry invariance").

A frame is mapped onto a fixed square grid in reciprocal space: a pixel whose resolution is d and
whose azimuth in the detector plane is phi lands at g = (1/d) (cos phi, sin phi) (1/Å). A ring of
resolution d therefore sits at radius 1/d on any detector, distance and wavelength, so one model
can read shots from any setup. Each cell keeps the MAXIMUM of the pixels that land in it (this
keeps Bragg spots through downsampling); a cell that no pixel centre falls into takes the pixel
under its centre; cells off the detector or on module gaps are masked (value -1).

Cell (row, col) has centre gx = -gmax + (col + 0.5) * cell, gy = -gmax + (row + 0.5) * cell,
gmax = 1 / d_min. Columns follow the fast axis, rows the slow axis, so the grid looks like the
detector image with the beam in the middle.

Pixels per cell (Jacobian of pixel -> g): a detector area dA at scattering angle 2 theta covers
dA * cos^3(2 theta) / (lambda D)^2 of the grid, so a cell of area c^2 holds
k = c^2 (lambda D)^2 / (p^2 cos^3 2theta) pixels of size p.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import lru_cache

import numpy as np
import torch

from xray_platform.physics.geometry import Geometry
from xray_platform.physics.panels import PanelGeometry

#: Value of masked cells in model inputs (and of gap pixels in frames).
MASKED = -1.0


@dataclass(frozen=True)
class QGrid:
    size: int = 512
    d_min_A: float = 1.2

    def __post_init__(self) -> None:
        if self.size < 8:
            raise ValueError(f"grid size must be >= 8, got {self.size}")
        if not (self.d_min_A > 0):
            raise ValueError(f"grid d_min must be > 0 Å, got {self.d_min_A}")

    @property
    def g_max(self) -> float:
        """Half-width of the grid, 1/d_min (1/Å)."""
        return 1.0 / self.d_min_A

    @property
    def cell(self) -> float:
        """Cell width (1/Å)."""
        return 2.0 * self.g_max / self.size

    def centres(self, device=None) -> tuple[torch.Tensor, torch.Tensor]:
        """(gx[None, :], gy[:, None]) of the cell centres (1/Å), broadcastable to (size, size)."""
        c = (torch.arange(self.size, dtype=torch.float32, device=device) + 0.5) * self.cell
        c = c - self.g_max
        return c[None, :], c[:, None]

    def flat_centres(self, device=None) -> tuple[torch.Tensor, torch.Tensor]:
        """Cell centres (gx, gy) flattened in row-major order, (size*size,) each; cached."""
        return _flat_centres(self, str(torch.device(device or "cpu")))

    def cell_index(self, gx: torch.Tensor, gy: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(row, col) integer cell of grid positions; -1 for positions outside the grid."""
        col = torch.floor((gx + self.g_max) / self.cell).long()
        row = torch.floor((gy + self.g_max) / self.cell).long()
        out = (col < 0) | (col >= self.size) | (row < 0) | (row >= self.size)
        out |= ~(torch.isfinite(gx) & torch.isfinite(gy))
        return torch.where(out, -1, row), torch.where(out, -1, col)

    # --- detector <-> grid --------------------------------------------------------------
    def g_of_pixels(self, geom: Geometry, f: torch.Tensor, s: torch.Tensor):
        """Grid position (gx, gy) (1/Å) of detector pixel positions."""
        x, y = geom.xy_mm(f, s)
        rho = torch.sqrt(x * x + y * y)
        two_theta = torch.atan2(rho, torch.full_like(rho, geom.distance_mm))
        inv_d = 2.0 * torch.sin(two_theta / 2) / geom.wavelength_A
        safe = torch.where(rho > 0, rho, torch.ones_like(rho))
        return inv_d * x / safe, inv_d * y / safe

    def pixels_of_cells(self, geom: Geometry, device=None):
        """For every cell centre: the detector position (f, s) it maps to, cos(2 theta) there and
        whether it maps onto the detector plane at all (2 theta < 90 deg).

        Returns (f, s, cos2t, reachable), each flat (size*size,) in row-major cell order."""
        gx, gy = self.flat_centres(device)
        inv_d = torch.sqrt(gx * gx + gy * gy)
        sin_t = inv_d * geom.wavelength_A / 2.0
        reachable = sin_t < math.sqrt(0.5)  # 2 theta < 90 deg
        theta = torch.asin(torch.clamp(sin_t, max=math.sqrt(0.5) - 1e-6))
        two_theta = 2.0 * theta
        radius_mm = geom.distance_mm * torch.tan(two_theta)
        safe = torch.where(inv_d > 0, inv_d, torch.ones_like(inv_d))
        x = radius_mm * gx / safe
        y = radius_mm * gy / safe
        f0, s0 = geom.beam_center_px
        p = geom.detector.pixel_mm
        return x / p + f0, y / p + s0, torch.cos(two_theta), reachable

    def pixels_per_cell(self, geom: Geometry, cos2t: torch.Tensor) -> torch.Tensor:
        """Expected number of detector pixels whose centres fall in each cell (see module doc)."""
        lam_d = geom.wavelength_A * geom.distance_mm
        return (self.cell * lam_d / geom.detector.pixel_mm) ** 2 / cos2t**3


@lru_cache(maxsize=16)
def _flat_centres(grid: QGrid, device: str) -> tuple[torch.Tensor, torch.Tensor]:
    gx, gy = grid.centres(device)
    n = grid.size
    return gx.expand(n, n).reshape(-1).contiguous(), gy.expand(n, n).reshape(-1).contiguous()


def grid_on_detector(geom: Geometry, f: torch.Tensor, s: torch.Tensor) -> torch.Tensor:
    """Whether fractional pixel positions fall on a detector pixel that is not a gap."""
    det = geom.detector
    fi = torch.round(f)
    si = torch.round(s)
    ok = (fi >= 0) & (fi < det.n_fast) & (si >= 0) & (si < det.n_slow)
    return ok & ~det.is_gap(fi, si)


def _pixel_cells(geom: Geometry, grid: QGrid, device: str) -> torch.Tensor:
    """The flat cell index of every pixel (pixels off the grid: the spill cell size²).

    A pixel at (x, y) mm from the beam, R = sqrt(x² + y² + D²), lands at g = k (x, y) with
    k = |g| / rho = 2 sin(theta) / (lambda rho) = sqrt(2 / (R (R + D))) / lambda, because
    1 - cos(2 theta) = 1 - D/R = rho² / (R (R + D)) (no cancellation near the beam, no
    division by rho). The flat detector makes x depend on the fast index only and y on the slow
    one: a few broadcast operations per pixel, in place, instead of trigonometry."""
    det = geom.detector
    f0, s0 = geom.beam_center_px
    p, dist = det.pixel_mm, geom.distance_mm
    x = (torch.arange(det.n_fast, dtype=torch.float32, device=device) - f0) * p
    y = (torch.arange(det.n_slow, dtype=torch.float32, device=device) - s0) * p
    r = torch.add((y * y + dist * dist)[:, None], (x * x)[None, :])  # R² (slow, fast)
    r.sqrt_()
    k = r.add(dist).mul_(r).reciprocal_().mul_(2.0).sqrt_()  # sqrt(2 / (R (R + D)))
    del r
    inv = 1.0 / (geom.wavelength_A * grid.cell)  # k / lambda in cells per mm
    off = grid.g_max / grid.cell
    col = torch.mul(k, x[None, :] * inv).add_(off).floor_()
    row = k.mul_(y[:, None] * inv).add_(off).floor_()
    n = grid.size
    out = (col < 0) | (col >= n) | (row < 0) | (row >= n)
    cell = row.mul_(n).add_(col).to(torch.int64)
    return cell.masked_fill_(out, n * n).reshape(-1)


def _lab_cells(xyz: np.ndarray, wavelength_A: float, grid: QGrid) -> torch.Tensor:
    """The flat cell index of pixels at lab positions xyz (n, 3) mm, as :func:`_pixel_cells`
    does for the flat detector: g = k (x, y), k = sqrt(2 / (R (R + z))) / lambda. Pixels at
    2 theta >= 90 deg (z <= 0) and off the grid go to the spill cell size²."""
    x, y, z = xyz[:, 0], xyz[:, 1], xyz[:, 2]
    r = np.sqrt(x * x + y * y + z * z)
    with np.errstate(divide="ignore", invalid="ignore"):
        k = np.sqrt(2.0 / (r * (r + z))) / (wavelength_A * grid.cell)
    off = grid.g_max / grid.cell
    col = np.floor(k * x + off)
    row = np.floor(k * y + off)
    n = grid.size
    out = ~((col >= 0) & (col < n) & (row >= 0) & (row < n) & (z > 0))
    cell = np.where(out, n * n, row * n + col).astype(np.int64)
    return torch.from_numpy(cell)


def _panel_centres(geom: PanelGeometry, grid: QGrid) -> tuple[torch.Tensor, torch.Tensor]:
    """For every cell centre: the flat frame index of the pixel the ray through it meets first
    (over all panels), and whether it meets one at all (else the cell is masked)."""
    gx, gy = (t.double().numpy() for t in grid.flat_centres())
    inv_d = np.hypot(gx, gy)
    sin_t = inv_d * geom.wavelength_A / 2.0
    reachable = sin_t < math.sqrt(0.5)  # 2 theta < 90 deg
    tth = 2.0 * np.arcsin(np.clip(sin_t, 0.0, math.sqrt(0.5) - 1e-9))
    safe = np.where(inv_d > 0, inv_d, 1.0)
    u = np.stack([np.sin(tth) * gx / safe, np.sin(tth) * gy / safe, np.cos(tth)], axis=1)
    best_t = np.full(len(gx), np.inf)
    best = np.zeros(len(gx), dtype=np.int64)
    _, ns, nf = geom.shape
    for i, panel in enumerate(geom.panels):
        t, f, s = panel.where(u)
        fi, si = np.round(f), np.round(s)
        inside = (fi >= 0) & (fi < nf) & (si >= 0) & (si < ns) & (t < best_t)
        best_t = np.where(inside, t, best_t)
        best = np.where(inside, (i * ns + si.clip(0, ns - 1)) * nf + fi.clip(0, nf - 1), best)
    ok = reachable & np.isfinite(best_t)
    return torch.from_numpy(best.astype(np.int64)), torch.from_numpy(ok)


def _frame_map(geom: Geometry | PanelGeometry, grid: QGrid, device: str
               ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Per geometry and grid (cached: a detector's frames share it): the cell of every pixel
    (flat; pixels off the grid go to a spill cell at index size²), and for every cell the flat
    index of the pixel under its centre and whether that pixel is on the active detector.
    A one-panel :class:`PanelGeometry` perpendicular to the beam takes the flat path."""
    if isinstance(geom, PanelGeometry):
        flat = geom.flat()
        return _flat_frame_map(flat, grid, device) if flat is not None else \
            _panels_frame_map(geom, grid, device)
    return _flat_frame_map(geom, grid, device)


@lru_cache(maxsize=8)
def _panels_frame_map(geom: PanelGeometry, grid: QGrid, device: str
                      ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    cell = _lab_cells(geom.lab_xyz(), geom.wavelength_A, grid)
    centre, ok = _panel_centres(geom, grid)
    return cell.to(device), centre.to(device), ok.to(device)


@lru_cache(maxsize=8)
def _flat_frame_map(geom: Geometry, grid: QGrid, device: str
                    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    cell = _pixel_cells(geom, grid, device)
    fc, sc, _, reachable = grid.pixels_of_cells(geom, device)
    centre_ok = reachable & grid_on_detector(geom, fc, sc)
    fi = torch.round(fc).long().clamp(0, geom.detector.n_fast - 1)
    si = torch.round(sc).long().clamp(0, geom.detector.n_slow - 1)
    return cell, si * geom.detector.n_fast + fi, centre_ok


def frame_to_grid(frame: torch.Tensor, geom: Geometry | PanelGeometry, grid: QGrid
                  ) -> torch.Tensor:
    """Map a full detector frame (slow, fast, or panel, slow, fast for a PanelGeometry;
    negative = gap) onto the grid (the exact, slow path used for real frames and to validate
    the simulator's fast path).

    Each cell keeps the maximum of the pixels whose centres land in it, or of the pixel under its
    centre if none does; cells with no valid pixel are MASKED."""
    device = frame.device
    flat = frame.to(torch.float32).reshape(-1)
    cell, centre, centre_ok = _frame_map(geom, grid, str(device))
    n = grid.size * grid.size
    # gap pixels are negative: starting from MASKED (-1), amax lets only valid pixels (>= 0) in
    out = torch.full((n + 1,), MASKED, dtype=torch.float32, device=device)
    out.scatter_reduce_(0, cell, flat, reduce="amax", include_self=True)
    out = out[:n]
    # a cell is masked when the pixel under its centre is a gap or off the detector (the
    # simulator's fast path uses the same rule); otherwise it also sees that pixel, so cells
    # that no pixel centre falls into take its value
    centre_val = flat[centre]
    ok = centre_ok & (centre_val >= 0)
    out = torch.where(ok, torch.maximum(out, centre_val), torch.full_like(out, MASKED))
    return out.view(grid.size, grid.size)
