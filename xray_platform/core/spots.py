"""Bragg spots at full resolution, at a cost that follows the spots, not the pixels (numpy; no Ray).

The answer path already maps every frame onto the hit finder's reciprocal-space grid, where each
cell holds the maximum of the pixels that land in it (qgrid.py), and knows each cell's
background statistics (hitfinder.py). Only the pixels of cells that stand out, and of their
neighbours, are read again at full resolution:

1. Candidate cells: value > group median + ``cell_sigma`` x group sigma (the hit finder's own
   statistics at a lower threshold than its hit count), dilated by one cell.
2. Their pixels, from the inverse of the cached pixel -> cell map (one argsort per geometry).
   Background per cell: the sigma-clipped mean of the valid pixels of the cell and its 8
   neighbours (a spot covers a few of them; cells near the beam hold only a handful of
   pixels). Significance on Anscombe's scale (Poisson counts of ~1 have long tails).
3. Strong pixels: ``pixel_sigma`` above background and > 1 count above it;
   joined into spots by 8-connectivity within their panel.
4. Per spot: the background-subtracted sum ``intensity`` over its strong pixels (the tails
   below ``pixel_sigma`` are left out: a spot of ~100 photons reads ~20 % low), its ``sigma`` =
   sqrt(sum of the raw counts + n_px^2 bg / n_bg) (the summation integration variance, Leslie
   1999 Acta D 55, 1696, with the background's own error), the intensity-weighted centroid
   (panel, slow, fast; pixel centres at integer indices), the lab position, d = lambda /
   (2 sin theta), and ``ice`` (d within DIALS' default ice-ring width, |1/d^2 - 1/d_ice^2| <
   0.002 /Å^2, of a hexagonal-ice line). A spot is kept when its peak pixel is
   ``peak_sigma`` sigma above background and it has ``min_px`` pixels (or a peak twice as
   significant: sharp nanoBragg spots fill one pixel).

Spots of a multi-panel detector never join across panels. Measured by benchmarks/spots.py.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

import numpy as np
import torch
from scipy import ndimage
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import connected_components

from xray_platform.core.hitfinder import HIT_GRID, HitFinder
from xray_platform.physics.geometry import Geometry
from xray_platform.physics.panels import PanelGeometry
from xray_platform.physics.qgrid import QGrid, _frame_map
from xray_platform.physics.simulate import ICE_RINGS_A

#: the background is the mean of the pixels below it + CLIP_SIGMA sqrt(it), iterated
CLIP_SIGMA = 3.0
CLIP_PASSES = 3
#: DIALS' default ice-ring half width (spotfinder.filter.ice_rings.width), in 1/d^2 (1/Å^2)
ICE_WIDTH_INV_D2 = 0.002


@dataclass(frozen=True)
class Spots:
    """The spots of one frame (arrays of one length, brightest first)."""

    panel: np.ndarray  # int
    slow: np.ndarray  # sub-pixel centroid (pixel centres at integer indices)
    fast: np.ndarray
    intensity: np.ndarray  # background-subtracted counts
    sigma: np.ndarray
    n_px: np.ndarray
    xyz_mm: np.ndarray  # (n, 3) lab position of the centroid (beam along +z)
    d_A: np.ndarray
    ice: np.ndarray  # bool: on a hexagonal-ice d-spacing

    def __len__(self) -> int:
        return len(self.intensity)

    def subset(self, mask: np.ndarray) -> Spots:
        """The spots where ``mask`` is true (or at indices ``mask``)."""
        return Spots(*(np.asarray(v)[mask] for v in vars(self).values()))

    def s1(self, wavelength_A: float) -> np.ndarray:
        """Unit scattered-beam directions times 1/lambda (n, 3), 1/Å; q = s1 - s0."""
        r = self.xyz_mm / np.linalg.norm(self.xyz_mm, axis=1, keepdims=True)
        return r / wavelength_A


@dataclass(frozen=True)
class SpotFinder:
    # measured on the zoo's faint, mosaic multi-lattice shots (docs/lattice-verdict.md): at
    # 3 / 3 / 6 sigma the finder saw a fifth to a half of their detectable reflections
    cell_sigma: float = 2.5
    pixel_sigma: float = 2.5
    peak_sigma: float = 4.0
    min_px: int = 2
    grid: QGrid = HIT_GRID

    def find(self, image: np.ndarray, geom: Geometry | PanelGeometry,
             counts: np.ndarray | None = None, hit_finder: HitFinder | None = None) -> Spots:
        """The spots of ``image`` (``[slow, fast]``, or ``[panel, slow, fast]`` for a panel
        geometry; negative = masked); ``counts``: the frame on ``self.grid`` if already
        mapped (answer.py has it)."""
        img = np.asarray(image, np.float32)
        if counts is None:
            from xray_platform.physics.qgrid import frame_to_grid

            counts = frame_to_grid(torch.as_tensor(img), geom, self.grid).numpy()
        cells = _candidate_cells(np.asarray(counts, np.float32).reshape(self.grid.size, -1),
                                 hit_finder or HitFinder(), self.cell_sigma)
        idx, cell_of = _pixels_of(cells, geom, self.grid)
        values = img.reshape(-1)[idx]
        ok = values >= 0
        idx, cell_of, values = idx[ok], cell_of[ok], values[ok]
        bg, var, n_bg = _cell_background(values, cell_of, cells, self.grid.size)
        z = significance(values, bg, var)
        strong = (z > self.pixel_sigma) & (values - bg > 1.0)
        return self._spots(idx[strong], values[strong], bg[strong], n_bg[strong], z[strong],
                           img.shape, geom)

    def _spots(self, idx: np.ndarray, v: np.ndarray, bg: np.ndarray, n_bg: np.ndarray,
               z: np.ndarray, shape: tuple[int, ...], geom) -> Spots:
        nf, ns = shape[-1], shape[-2]
        label = _components(idx, nf, ns)
        n = int(label.max()) + 1 if len(label) else 0
        fast, slow, panel = idx % nf, (idx // nf) % ns, idx // (nf * ns)
        w = v - bg
        total = np.bincount(label, w, n)
        peak = ndimage.maximum(z, label, np.arange(n)) if n else np.zeros(0)
        size = np.bincount(label, minlength=n)
        var = np.bincount(label, v, n) + np.bincount(label, size[label] * bg / n_bg, n)
        keep = (total > 0) & (peak > self.peak_sigma) & (
            (size >= self.min_px) | (peak > 2 * self.peak_sigma))
        with np.errstate(invalid="ignore", divide="ignore"):
            cs = np.bincount(label, w * slow, n) / total
            cf = np.bincount(label, w * fast, n) / total
        pnl = np.zeros(n, np.int64)
        pnl[label] = panel
        order = np.argsort(-total[keep], kind="stable")
        sel = np.flatnonzero(keep)[order]
        xyz = lab_position(geom, pnl[sel], cs[sel], cf[sel])
        d = d_spacing(xyz, geom.wavelength_A)
        return Spots(pnl[sel], cs[sel], cf[sel], total[sel], np.sqrt(np.maximum(var[sel], 1)),
                     size[sel], xyz, d, on_ice(d))


def significance(counts: np.ndarray, background: np.ndarray, variance: np.ndarray
                 ) -> np.ndarray:
    """How many sigma ``counts`` lie above a ``background`` of measured ``variance``: the
    smaller of (counts - background) / sqrt(variance) and the Poisson significance of the
    photons, counts / gain, on Anscombe's variance-stabilised scale 2 sqrt(x + 3/8) (Anscombe
    1948, Biometrika 35, 246). Anscombe keeps Gaussian tails at a background of ~1 photon,
    where (x - b) / sqrt(b) calls noise a spot; the gain (ADU per photon) is the background's
    index of dispersion, variance / mean, where the mean is >= 1 (a pedestal-subtracted
    detector's is ~0: its measured variance, read noise, governs)."""
    gain = np.where(background >= 1.0, np.maximum(variance / np.maximum(background, 1.0), 1.0),
                    1.0)
    poisson = 2.0 * (np.sqrt(np.maximum(counts / gain, 0) + 0.375) -
                     np.sqrt(np.maximum(background / gain, 0) + 0.375))
    measured = (counts - background) / np.sqrt(np.maximum(variance, 1.0))
    return np.minimum(poisson, measured)


def _candidate_cells(counts: np.ndarray, hit_finder: HitFinder, n_sigma: float) -> np.ndarray:
    """Flat indices of the grid cells that stand out (and their 8 neighbours)."""
    med, sigma = hit_finder._stats(counts[None])
    x = counts.reshape(-1)
    bright = (x >= 0) & np.isfinite(sigma[0]) & (
        x - med[0] > np.maximum(n_sigma * sigma[0], hit_finder.min_excess))
    bright = ndimage.binary_dilation(bright.reshape(counts.shape), np.ones((3, 3), bool))
    return np.flatnonzero(bright)


@functools.lru_cache(maxsize=8)
def _inverse_map(geom: Geometry | PanelGeometry, grid: QGrid) -> tuple[np.ndarray, np.ndarray]:
    """(pixels sorted by cell, start of each cell's run): the pixel -> cell map inverted,
    once per geometry and grid."""
    cell = _frame_map(geom, grid, "cpu")[0].numpy()
    order = np.argsort(cell, kind="stable")
    starts = np.searchsorted(cell[order], np.arange(grid.size * grid.size + 2))
    return order, starts


def _pixels_of(cells: np.ndarray, geom, grid: QGrid) -> tuple[np.ndarray, np.ndarray]:
    """Flat pixel indices of ``cells``' pixels and the cell of each."""
    order, starts = _inverse_map(geom, grid)
    lo, hi = starts[cells], starts[cells + 1]
    counts = hi - lo
    if not counts.sum():
        return np.zeros(0, np.int64), np.zeros(0, np.int64)
    cell_of = np.repeat(np.arange(len(cells)), counts)
    pos = np.arange(counts.sum()) - np.repeat(np.cumsum(counts) - counts, counts) + \
        np.repeat(lo, counts)
    return order[pos], cell_of


def _cell_background(values: np.ndarray, cell_of: np.ndarray, cells: np.ndarray, size: int
                     ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per pixel: the background mean and variance of its cell, and how many pixels they were
    measured on. Pooled over the cell and its 8 neighbours (cells near the beam hold only a
    handful of pixels) and sigma-clipped: the mean and variance of the pixels below the last
    estimate + CLIP_SIGMA sigma, from the plain ones, CLIP_PASSES times. The spots' pixels
    drop out and a Poisson mean stays unbiased (a median or trimmed mean of a few counts is
    ~20 % low); the variance is measured, as DIALS' dispersion spot finder does, so detectors
    whose pixels are not photon counts (CSPAD ADUs, pedestal-subtracted) are judged by their
    own noise."""
    if not len(values):
        return values, values, values
    keep = np.ones(len(values), bool)
    for _ in range(CLIP_PASSES + 1):
        mean, var, count = _pooled(cell_of, values, keep, cells, size)
        m, v = mean[cell_of], var[cell_of]
        keep = values <= m + CLIP_SIGMA * np.sqrt(np.maximum(v, np.maximum(m, 1.0))) + 1.0
    return m, v, count[cell_of]


def _pooled(cell_of: np.ndarray, values: np.ndarray, keep: np.ndarray, where: np.ndarray,
            size: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(mean, variance, count) of the kept values over each cell's 3 x 3 neighbourhood."""
    n = len(where)
    box = np.ones((3, 3))
    sums = []
    for weights in (None, values[keep], values[keep] ** 2):
        grid = np.zeros(size * size)
        grid[where] = np.bincount(cell_of[keep], weights, n)
        sums.append(ndimage.correlate(grid.reshape(size, size), box, mode="constant")
                    .reshape(-1)[where])
    count, total, square = sums
    c = np.maximum(count, 1)
    mean = total / c
    return mean, np.maximum(square / c - mean * mean, 0) * c / np.maximum(c - 1, 1), count


def _components(idx: np.ndarray, nf: int, ns: int) -> np.ndarray:
    """Labels 0..k-1 of the 8-connected groups of the flat pixel indices ``idx`` (unique),
    never joining pixels across a row end or a panel."""
    if not len(idx):
        return np.zeros(0, np.int64)
    srt = np.sort(idx)
    f, s = srt % nf, (srt // nf) % ns
    rows, cols = [], []
    for ds, df in ((0, 1), (1, -1), (1, 0), (1, 1)):  # half the neighbours: edges both ways
        ok = (f + df >= 0) & (f + df < nf) & (s + ds < ns)
        nb = srt + ds * nf + df
        j = np.searchsorted(srt, nb)
        ok &= j < len(srt)
        ok[ok] &= srt[j[ok]] == nb[ok]
        rows.append(np.flatnonzero(ok))
        cols.append(j[ok])
    r, c = np.concatenate(rows), np.concatenate(cols)
    graph = coo_matrix((np.ones(len(r), np.int8), (r, c)), shape=(len(srt), len(srt)))
    _, lab = connected_components(graph, directed=False)
    return lab[np.searchsorted(srt, idx)].astype(np.int64)


def lab_position(geom: Geometry | PanelGeometry, panel: np.ndarray, slow: np.ndarray,
                 fast: np.ndarray) -> np.ndarray:
    """(n, 3) lab positions (mm) of fractional pixel positions (design.md conventions)."""
    if isinstance(geom, PanelGeometry):
        out = np.empty((len(panel), 3))
        for i, p in enumerate(geom.panels):
            m = panel == i
            o, fv, sv = (np.asarray(v) for v in (p.origin_mm, p.fast, p.slow))
            out[m] = o + (fast[m, None] * fv + slow[m, None] * sv) * p.pixel_mm
        return out
    x, y = geom.xy_mm(fast, slow)
    return np.stack([x, y, np.full(len(x), geom.distance_mm)], 1)


def d_spacing(xyz: np.ndarray, wavelength_A: float) -> np.ndarray:
    """d = lambda / (2 sin theta) of lab positions (Å; inf on the beam)."""
    r = np.linalg.norm(xyz, axis=1)
    with np.errstate(divide="ignore"):  # 2 sin(theta) = sqrt(2 (1 - cos 2 theta))
        return wavelength_A / np.sqrt(2.0 * (1.0 - xyz[:, 2] / r))


def on_ice(d: np.ndarray) -> np.ndarray:
    """Whether each d lies on a hexagonal-ice line (DIALS' default width)."""
    inv = 1.0 / np.asarray(d, np.float64) ** 2
    lines = 1.0 / np.asarray(ICE_RINGS_A) ** 2
    return (np.abs(inv[:, None] - lines[None, :]) < ICE_WIDTH_INV_D2).any(1)
