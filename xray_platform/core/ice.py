"""Hexagonal-ice powder rings on the hit finder's reciprocal-space grid (numpy only).

A powder ring of spacing d lies at radius 1/d on the grid on every detector (qgrid.py), so the
test is the same for every setup. For each ring of hexagonal ice Ih (physics/simulate.py
``ICE_RINGS_A``, 3.897 ... 1.721 Å) and each of ``sectors`` azimuthal sectors:
1. Background: a quadratic in r (cell radius) fitted to the cells within ``window_cells`` of
   the ring that keep clear of every ice ring, on both sides of it, then refitted on the lowest
   80 % of its residuals (the Bragg spots are in the top). The three rings at 3.90/3.67/3.44 Å
   are 2.5-2.7 cells of HIT_GRID apart, so a straight line from one side or a mean of two
   bands would follow the water ring's curvature (sigma 0.042 1/Å = 6.5 cells) and fake a ring.
2. Excess: the mean of the lowest 80 % of the on-ring cells' residuals (|r - r_ice| <=
   ``half_width_cells``) minus that of the fit's own kept residuals, in
       z_s = excess / sigma_s,  sigma_s^2 = v (1 / n_on + 3 / n_bg),
   v = the residual variance + 0.1 (background + 1), the hit finder's variance floor
   (core/hitfinder.py) for the discrete counts of low backgrounds; 3 for the fit's parameters.
3. A powder ring covers every azimuth, so the ring's significance is the median over sectors,
   Z = median_s(z_s) sqrt(S) / 1.2533 (the median of S standard normals has sd
   1.2533 / sqrt(S)): a streak, a spot-rich sector or a detector edge does not make a ring.
   Its strength is median_s(excess / (background + 1)): the excess in units of the background.
A frame has ice when one ring's Z, or all rings' sum(Z) / sqrt(n), exceeds ``z`` (6).

Cells hold the maximum of the pixels they cover; an ice ring narrower than a cell (sigma
0.001-0.004 1/Å vs 0.0065 1/Å cells) still lifts every cell it crosses, because the ring's pixels
are among them. Figures (benchmarks/ice.py, simulated ``master`` shots):
docs/guide/serving.md. DIALS' per-image analysis excludes the same d-spacings (its ice-ring
filter); Thorn et al. 2017 (Acta D 73, 729, AUSPEX) show how ice rings bias d_min and intensities.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

import numpy as np

from xray_platform.core.hitfinder import HIT_GRID
from xray_platform.physics.qgrid import QGrid
from xray_platform.physics.simulate import ICE_RINGS_A

#: Standard error of a median relative to that of a mean (sqrt(pi / 2)).
MEDIAN_SE = 1.2533
#: Fewest cells a group needs to take part.
MIN_CELLS = 4
#: Each group's mean is over its lowest TRIM of cells (the Bragg spots are in the top).
TRIM = 0.8
#: Ridge on the background's curvature term (relative to the cell count).
RIDGE = 1e-3


@dataclass(frozen=True)
class _Layout:
    d_A: np.ndarray  # (R,) ring spacings on the grid
    on: np.ndarray  # (R, S, L) cells on ring R in sector S, padded with the sentinel H*W
    bg: np.ndarray  # (R, S, M) background cells of the ring's window, same padding
    dr_on: np.ndarray  # (R, S, L) their radius minus the ring's (cells)
    dr_bg: np.ndarray  # (R, S, M)
    near_ice: np.ndarray  # (H*W,) bool: cell within half_width of some ice ring


def _padded(groups: list[list[np.ndarray]], fill: float, dtype) -> np.ndarray:
    width = max(1, max(len(g) for ring in groups for g in ring))
    out = np.full((len(groups), len(groups[0]), width), fill, dtype=dtype)
    for i, ring in enumerate(groups):
        for j, g in enumerate(ring):
            out[i, j, :len(g)] = g
    return out


@lru_cache(maxsize=8)
def _layout(grid: QGrid, half: float, window: float, sectors: int) -> _Layout:
    n = grid.size
    c = np.arange(n, dtype=np.float64) + 0.5 - n / 2.0
    xx, yy = np.meshgrid(c, c)
    r = np.hypot(xx, yy).ravel()  # cells
    sector = ((np.arctan2(yy, xx).ravel() + np.pi) / (2 * np.pi) * sectors).astype(np.int64)
    sector = np.minimum(sector, sectors - 1)
    r_ice = np.array([1.0 / d / grid.cell for d in ICE_RINGS_A])
    inside = r_ice + window < n / 2.0  # rings whose window fits on the grid
    dist = np.abs(r[:, None] - r_ice[None, :]).min(1)
    clear = dist > half + 0.5  # background cells keep clear of every ring
    on, bg = [], []
    for ri in r_ice[inside]:
        on_r, bg_r = np.abs(r - ri) <= half, (np.abs(r - ri) <= window) & clear
        on.append([np.flatnonzero(on_r & (sector == s)) for s in range(sectors)])
        bg.append([np.flatnonzero(bg_r & (sector == s)) for s in range(sectors)])
    on_idx, bg_idx = _padded(on, n * n, np.int64), _padded(bg, n * n, np.int64)
    r_ext = np.append(r, 0.0)
    ri = r_ice[inside][:, None, None]
    lay = _Layout(np.array(ICE_RINGS_A)[inside], on_idx, bg_idx, r_ext[on_idx] - ri,
                  r_ext[bg_idx] - ri, dist <= half)
    for a in (lay.d_A, lay.on, lay.bg, lay.dr_on, lay.dr_bg, lay.near_ice):
        a.setflags(write=False)
    return lay


def _fit(y: np.ndarray, w: np.ndarray, dr: np.ndarray) -> np.ndarray:
    """Weighted least squares of y = c0 + c1 dr + c2 dr^2 per group: (..., 3) coefficients,
    from the moments sum(w dr^k) (a small ridge on c2 keeps one-sided windows stable)."""
    yw = np.where(w > 0, y, 0.0) * w
    m = [w.sum(-1)]
    p = w
    for _ in range(4):
        p = p * dr
        m.append(p.sum(-1))
    a = np.stack([np.stack(m[i:i + 3], -1) for i in range(3)], -2)  # a_ij = sum w dr^(i+j)
    a[..., 2, 2] += RIDGE * np.maximum(m[0], 1.0)
    a += 1e-6 * np.eye(3)  # groups off the detector: c = 0 (and unused)
    b = np.stack([yw.sum(-1), (yw * dr).sum(-1), (yw * dr * dr).sum(-1)], -1)
    return np.linalg.solve(a, b[..., None])[..., 0]


def _eval(c: np.ndarray, dr: np.ndarray) -> np.ndarray:
    return c[..., 0, None] + c[..., 1, None] * dr + c[..., 2, None] * dr * dr


def _low_fraction(res: np.ndarray) -> np.ndarray:
    """Bool mask of each group's lowest TRIM of finite values (the spots are in the top)."""
    n = np.isfinite(res).sum(-1)
    order = np.argsort(np.where(np.isfinite(res), res, np.inf), -1)
    rank = np.empty_like(order)
    np.put_along_axis(rank, order, np.arange(res.shape[-1])[None, None, :].repeat(
        res.shape[0], 0).repeat(res.shape[1], 1), -1)
    return (rank < np.ceil(TRIM * n)[..., None]) & np.isfinite(res)


@dataclass(frozen=True)
class IceFinder:
    """Ice rings on grid counts (module doc: the method).

    grid: the grid the counts are on (HIT_GRID, the hit finder's).
    half_width_cells: cells whose centre is this close to a ring radius are on the ring.
    window_cells: the background is fitted over cells this close to the ring (and clear of
        every ice ring).
    sectors: azimuthal sectors; a ring must be bright in most of them.
    z: significance that flags ice, for one ring or all combined (Z ~ N(0, 1) without ice).
    z_ring: significance a ring needs to be listed once there is ice.
    """

    grid: QGrid = HIT_GRID
    half_width_cells: float = 0.75
    window_cells: float = 6.0
    sectors: int = 16
    z: float = 6.0
    z_ring: float = 3.0

    def layout(self) -> _Layout:
        return _layout(self.grid, float(self.half_width_cells), float(self.window_cells),
                       int(self.sectors))

    def measure(self, counts: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(d_A (R,), significance Z (R,), strength (R,)) of every ice ring on one (H, W) grid
        (NaN where too few cells are on the detector)."""
        lay = self.layout()
        flat = np.asarray(counts, dtype=np.float64).reshape(-1)
        if flat.size != self.grid.size ** 2:
            raise ValueError(f"counts of {flat.size} cells, the grid has {self.grid.size}²")
        ext = np.append(np.where(flat >= 0, flat, np.nan), np.nan)  # masked/sentinel: NaN
        y_bg, y_on = ext[lay.bg], ext[lay.on]
        w = np.isfinite(y_bg).astype(np.float64)
        c = _fit(y_bg, w, lay.dr_bg)  # pass 1, then refit on the lowest TRIM of residuals
        keep = _low_fraction(y_bg - _eval(c, lay.dr_bg))
        c = _fit(y_bg, keep.astype(np.float64), lay.dr_bg)
        res_bg = np.where(keep, y_bg - _eval(c, lay.dr_bg), np.nan)
        res_on = y_on - _eval(c, lay.dr_on)
        low_on = _low_fraction(res_on)
        k_on, n_bg = low_on.sum(-1), keep.sum(-1)
        with np.errstate(invalid="ignore", divide="ignore"), _quiet():
            excess = np.where(low_on, res_on, 0.0).sum(-1) / np.maximum(k_on, 1)
            excess -= np.nanmean(res_bg, -1)  # the trimmed mean of the fit's own residuals
            level = np.maximum(c[..., 0], 0.0)
            v = np.nanvar(res_bg, -1) + 0.1 * (level + 1.0)
            sigma = np.sqrt(v * (1.0 / np.maximum(k_on, 1) + 3.0 / np.maximum(n_bg, 1)))
            sides = np.minimum((keep & (lay.dr_bg < 0)).sum(-1), (keep & (lay.dr_bg > 0)).sum(-1))
            ok = (k_on >= MIN_CELLS) & (sides >= MIN_CELLS)  # background on both sides
            z_s = np.where(ok, excess / sigma, np.nan)
            rel = np.where(ok, excess / (level + 1.0), np.nan)
            n_sec = ok.sum(-1)
            zed = np.nanmedian(z_s, -1) * np.sqrt(n_sec) / MEDIAN_SE
            strength = np.nanmedian(rel, -1)
        few = n_sec < 3
        return lay.d_A, np.where(few, np.nan, zed), np.where(few, np.nan, strength)

    def find(self, counts: np.ndarray) -> tuple[bool, list[dict[str, float]]]:
        """(ice, rings) of one grid: ice when one ring's Z or the rings' combined
        sum(Z) / sqrt(n) exceeds ``z``; rings: those with Z > ``z_ring`` when there is ice,
        [{"d_A", "strength", "z"}], strongest first."""
        d, zed, strength = self.measure(counts)
        seen = np.isfinite(zed)
        if not seen.any():
            return False, []
        combined = float(zed[seen].sum() / np.sqrt(seen.sum()))
        if not (np.nanmax(zed) > self.z or combined > self.z):
            return False, []
        rings = [{"d_A": float(di), "strength": round(float(si), 3), "z": round(float(zi), 1)}
                 for di, zi, si in zip(d[seen], zed[seen], strength[seen], strict=True)
                 if zi > self.z_ring]
        return True, sorted(rings, key=lambda x: -x["strength"])

    def near_ice(self) -> np.ndarray:
        """(H, W) bool: cells on an ice ring's d-spacing (spots there are not counted in
        ``n_spots_no_ice``, present ice or not, as DIALS' ice-ring filter)."""
        n = self.grid.size
        return self.layout().near_ice.reshape(n, n)


class _quiet:
    """Silence numpy's all-NaN-slice warnings (groups off the detector are NaN on purpose)."""

    def __enter__(self) -> None:
        import warnings

        self._w = warnings.catch_warnings()
        self._w.__enter__()
        warnings.simplefilter("ignore", RuntimeWarning)

    def __exit__(self, *exc) -> None:
        self._w.__exit__(*exc)
