"""How many crystal lattices explain a still's spots, given the crystal's unit cell (numpy/scipy).

A classical cross-check of the lattice classifier on real frames, where no label exists:

1. Spots: pixels 6 sigma above the local median background (~9 x 9 px), joined into blobs of at
   least 2 pixels; each spot's reciprocal vector q = s1 - s0 (design.md; flat detector normal
   to the beam), spots at d > ``d_max_A`` (beamstop halo, parasitic scatter) left out.
2. Orientation (real-space grid search, as DIALS' known-cell indexing): a real-space lattice
   vector t of length L has t . q integer for every spot of its lattice, so directions u on a
   hemisphere where sum cos(2 pi L u . q) peaks are the cell edges; c first, then a at 90 deg to
   it, b = c x a (orthogonal cells only: tetragonal, orthorhombic, cubic).
3. Matching, as a still predicts it: every lattice point within ``eps`` (1/Å) of the Ewald sphere
   is projected onto the detector; a spot within ``radius_px`` of a prediction is explained.
   The orientation is refined (the rotation of the least-squares fit to the explained spots'
   indices; the cell stays the known one), and the beam centre and distance by a coordinate
   search on the first lattice's matches (bounded by MAX_BEAM_SHIFT_PX, MAX_DISTANCE_CHANGE).
4. Further lattices are searched among the spots not yet explained. One is accepted only when
   it explains far more spots than random positions would (4 x as many, and a Poisson tail
   < 1e-6; the chance rate is measured by matching uniform random pixels to its predictions).
   The cell is known, so only orientations are fitted (no cell for a chance lattice to bend).

Measured (benchmarks/count_lattices.py): nanoBragg's single-lattice shots: one lattice explains
(almost) every spot; its 3-lattice cubic insulin: three lattices; spots at random azimuths:
none. The real thaumatin grid-scan hit (DLS I24): four lattices 0.6-2 deg apart explain 473 +
281 + 122 + 94 of 1,089 spots (chance 15 / 9 / 5 / 3), and the first alone never explains more
than ~460 above chance at any eps up to 0.024, so the rest is not its mosaic spread. Spot
finding takes ~1 s, the search 1-15 s per frame.
"""

from __future__ import annotations

import functools
import itertools
import math
from dataclasses import dataclass, replace

import numpy as np
from scipy import ndimage
from scipy.spatial import cKDTree

from xray_platform.io.formats.base import Frame, FrameInfo


@dataclass(frozen=True)
class Lattice:
    """One lattice found in a still: real-space basis ``A`` (rows a, b, c in Å, lab frame)."""

    A: np.ndarray
    n_spots: int  # spots it explains that no earlier lattice did
    chance: float  # how many of those random positions would explain


@dataclass(frozen=True)
class Indexing:
    spots: np.ndarray  # (slow, fast) of the spots at d <= d_max
    d_min: float  # the predictions' resolution limit (Å)
    lattices: tuple[Lattice, ...]
    info: FrameInfo  # with the refined beam centre and distance

    @property
    def n_spots(self) -> int:
        return len(self.spots)

    @property
    def n_lattices(self) -> int:
        return len(self.lattices)

    @property
    def explained(self) -> int:
        return sum(lat.n_spots for lat in self.lattices)


def find_spots(image: np.ndarray, sigma: float = 6.0, min_px: int = 2) -> np.ndarray:
    """(slow, fast) centroids of the spots of a frame (negative pixels: gaps, masked)."""
    valid = image >= 0
    bg = _background(np.where(valid, image, 0))
    strong = valid & (image > bg + sigma * np.sqrt(np.maximum(bg, 1.0))) & (image > bg + 5)
    labels, n = ndimage.label(strong, structure=np.ones((3, 3)))
    idx = np.arange(1, n + 1)
    size = ndimage.sum(strong, labels, idx)
    com = np.asarray(ndimage.center_of_mass(np.where(strong, image - bg, 0), labels, idx))
    com = com[size >= min_px].reshape(-1, 2)
    # blocks straddling a gap have a low mean, so spots within 2 px of one are mostly noise
    near_gap = ndimage.binary_dilation(~valid, iterations=2)
    return com[~near_gap[np.round(com[:, 0]).astype(int), np.round(com[:, 1]).astype(int)]]


def _background(image: np.ndarray, block: int = 3) -> np.ndarray:
    """The local median background over ~9 x 9 px: the median of 3 x 3 blocks' means (a
    spot of 1-2 px raises one block's mean, not the median; 10 x faster than a 9 x 9 median)."""
    h, w = (image.shape[0] // block) * block, (image.shape[1] // block) * block
    means = image[:h, :w].reshape(h // block, block, w // block, block).mean((1, 3))
    med = np.repeat(np.repeat(ndimage.median_filter(means, size=3), block, 0), block, 1)
    return np.pad(med, ((0, image.shape[0] - h), (0, image.shape[1] - w)), mode="edge")


def spot_q(yx: np.ndarray, info: FrameInfo) -> np.ndarray:
    """Reciprocal vectors q = s1 - s0 (1/Å) of detector positions (slow, fast)."""
    bx, by = info.beam_center_px
    r = np.stack([(yx[:, 1] - bx) * info.pixel_size_mm, (yx[:, 0] - by) * info.pixel_size_mm,
                  np.full(len(yx), info.distance_mm)], 1)
    s1 = r / np.linalg.norm(r, axis=1, keepdims=True) / info.wavelength_A
    return s1 - np.array([0.0, 0.0, 1.0 / info.wavelength_A])


@functools.lru_cache(maxsize=8)
def _indices(hmax: tuple[int, ...], metric: tuple[float, ...], d_min: float) -> np.ndarray:
    """Every hkl with |h| <= hmax[0], |k| <= hmax[1], |l| <= hmax[2] (float, for products)
    inside the 1/d_min sphere (0.1 % margin), by the metric tensor G = A A^T (row-major 3 x 3):
    |q|^2 = h^T G^-1 h whatever the orientation, so one set serves every rotation of a cell."""
    hkl = np.stack(np.meshgrid(*[np.arange(-m, m + 1) for m in hmax], indexing="ij"),
                   -1).reshape(-1, 3).astype(np.float64)
    q2 = np.einsum("ij,jk,ik->i", hkl, np.linalg.inv(np.reshape(metric, (3, 3))), hkl)
    return hkl[q2 < 1.002 * d_min ** -2]


def predict_spots(A: np.ndarray, info: FrameInfo, d_min: float, eps: float,
                  with_hkl: bool = False):
    """(slow, fast) of the lattice points of ``A`` within ``eps`` (1/Å) of the Ewald sphere
    (and their hkl with ``with_hkl``)."""
    s0 = np.array([0.0, 0.0, 1.0 / info.wavelength_A])
    hmax = tuple(int(m) for m in np.ceil(np.linalg.norm(A, axis=1) / d_min))
    hkl = _indices(hmax, tuple(np.round(A @ A.T, 3).ravel()), round(d_min, 6))
    k = hkl @ np.linalg.inv(A).T + s0  # q = A^-1 h; k1 = s0 + q
    keep = (np.abs(np.sqrt(np.einsum("ij,ij->i", k, k)) - 1 / info.wavelength_A) < eps) & (
        k[:, 2] > 0)
    k, hkl = k[keep], hkl[keep]
    q2 = np.einsum("ij,ij->i", k - s0, k - s0)
    keep = (q2 > 0) & (q2 < d_min ** -2)
    k, hkl = k[keep], hkl[keep]
    bx, by = info.beam_center_px
    f = k[:, 0] / k[:, 2] * info.distance_mm / info.pixel_size_mm + bx
    s = k[:, 1] / k[:, 2] * info.distance_mm / info.pixel_size_mm + by
    on = (f >= 0) & (f < info.n_fast) & (s >= 0) & (s < info.n_slow)
    yx = np.stack([s[on], f[on]], 1)
    return (yx, hkl[on]) if with_hkl else yx


def near(points: np.ndarray, pred: np.ndarray, radius: float) -> np.ndarray:
    """True where a point lies within ``radius`` px of a predicted spot."""
    if not len(pred) or not len(points):
        return np.zeros(len(points), bool)
    return cKDTree(pred).query(points)[0] < radius


def _hemisphere(step_deg: float) -> np.ndarray:
    """Unit vectors ~step_deg apart over the upper hemisphere (a Fibonacci spiral)."""
    n = int(2 * math.pi / math.radians(step_deg) ** 2)
    i = np.arange(n) + 0.5
    z, phi = i / n, math.pi * (1 + 5 ** 0.5) * i
    s = np.sqrt(1 - z ** 2)
    return np.stack([s * np.cos(phi), s * np.sin(phi), z], 1).astype(np.float32)


def _periodicity(dirs: np.ndarray, q: np.ndarray, length: float) -> np.ndarray:
    """sum over spots of cos(2 pi L u . q) per direction u: ~ the spots u's lattice row indexes."""
    out = np.empty(len(dirs), np.float32)
    qs = (2 * math.pi * length * q).astype(np.float32).T
    for k in range(0, len(dirs), 8192):
        out[k:k + 8192] = np.cos(dirs[k:k + 8192] @ qs).sum(1)
    return out


def _polish(u: np.ndarray, q: np.ndarray, length: float, step_deg: float) -> np.ndarray:
    """The best direction on ever finer 7 x 7 grids around u."""
    for _ in range(3):
        e1 = np.cross(u, [1.0, 0, 0] if abs(u[0]) < 0.9 else [0, 1.0, 0])
        e1 /= np.linalg.norm(e1)
        e2 = np.cross(u, e1)
        t = math.radians(step_deg) * np.linspace(-1, 1, 7)
        cand = np.array([u + x * e1 + y * e2 for x in t for y in t], np.float32)
        cand /= np.linalg.norm(cand, axis=1, keepdims=True)
        u = cand[np.argmax(_periodicity(cand, q, length))].astype(np.float64)
        step_deg /= 3
    return u


def _fit_rotation(A: np.ndarray, q: np.ndarray, h: np.ndarray) -> np.ndarray:
    """The basis of A's cell (row lengths kept) rotated to fit h = q A^T best: the rotation of
    the least-squares fit (polar decomposition), or A unchanged when the indices cannot fix
    one (fewer than 12 spots, or all in one plane of indices)."""
    if len(h) < 12 or np.linalg.matrix_rank(h) < 3:
        return A
    fit = np.linalg.lstsq(q, h, rcond=None)[0].T
    lengths = np.linalg.norm(A, axis=1)
    u, _, vt = np.linalg.svd(fit / lengths[:, None])  # rows: unit axes, near-orthonormal
    return lengths[:, None] * (u @ vt)


def _refine(A: np.ndarray, q: np.ndarray, tol: float = 0.15) -> tuple[np.ndarray, int]:
    """The orientation fitted to the spots within ``tol`` of integer indices, and their count
    (the cell is known: only the rotation is fitted, so a chance lattice has no cell to bend)."""
    for _ in range(4):
        h = q @ A.T
        ok = np.all(np.abs(h - np.round(h)) < tol, axis=1)
        if ok.sum() < 12:
            break
        A = _fit_rotation(A, q[ok], np.round(h[ok]))
    h = q @ A.T
    return A, int(np.all(np.abs(h - np.round(h)) < tol, axis=1).sum())


def search_orientation(q: np.ndarray, cell: tuple[float, float, float], step_deg: float = 0.3,
                       keep: int = 10) -> list[np.ndarray]:
    """Bases (rows a, b, c) of the orthogonal cell ``cell`` (a, b, c in Å) that put the most
    spots q on integer indices, the best ``keep`` distinct ones (more than 0.2 deg apart) first
    (empty when there are too few spots)."""
    if len(q) < 12:
        return []
    a, b, c = cell
    dirs = _hemisphere(step_deg)
    pc, pa = _periodicity(dirs, q, c), _periodicity(dirs, q, a)
    found: list[tuple[int, np.ndarray]] = []
    for ic in np.argsort(pc)[::-1][:16]:
        cdir = _polish(dirs[ic].astype(np.float64), q, c, step_deg)
        perp = np.where(np.abs(dirs @ cdir) < 0.03)[0]
        for ia in perp[np.argsort(pa[perp])[::-1][:4]]:
            adir = _polish(dirs[ia].astype(np.float64), q, a, step_deg)
            adir -= (adir @ cdir) * cdir
            adir /= np.linalg.norm(adir)
            A, n = _refine(np.stack([adir * a, np.cross(cdir, adir) * b, cdir * c]), q)
            found.append((n, A))
    found.sort(key=lambda t: -t[0])
    distinct: list[np.ndarray] = []  # neighbouring grid directions refine to one orientation
    for _, A in found:
        if len(distinct) == keep:
            break
        if all(misorientation_deg(A, B) > 0.2 for B in distinct):
            distinct.append(A)
    return distinct


def _explained(A: np.ndarray, yx: np.ndarray, info: FrameInfo, d_min: float, eps: float,
               radius: float) -> tuple[np.ndarray, np.ndarray]:
    """Refine ``A`` on the spots its predictions explain; (A, explained mask)."""
    q = spot_q(yx, info)
    for _ in range(2):
        A, _ = _refine(A, q)
        pred, hkl = predict_spots(A, info, d_min, eps, with_hkl=True)
        if len(pred):  # each explained spot's indices: its prediction's, not rounded ones
            dist, j = cKDTree(pred).query(yx)
            A = _fit_rotation(A, q[dist < radius], hkl[j[dist < radius]])
    return A, near(yx, predict_spots(A, info, d_min, eps), radius)


def _refine_geometry(A: np.ndarray, yx: np.ndarray, info: FrameInfo, d_min: float,
                     eps: float, radius: float) -> tuple[np.ndarray, FrameInfo]:
    """Coordinate search of beam centre (px) and distance (mm) for the most explained spots,
    within ``MAX_BEAM_SHIFT_PX`` and ``MAX_DISTANCE_CHANGE`` of the header's."""
    A, hit = _explained(A, yx, info, d_min, eps, radius)
    best, start = hit.sum(), info
    for step in (2.0, 1.0, 0.5):
        moved = True
        while moved:
            moved = False
            for df, ds, dd in ((step, 0, 0), (-step, 0, 0), (0, step, 0), (0, -step, 0),
                               (0, 0, 2 * step), (0, 0, -2 * step)):
                f0, s0 = info.beam_center_px
                trial = replace(info, beam_center_px=(f0 + df, s0 + ds),
                                distance_mm=info.distance_mm + dd)
                if not _within(trial, start):
                    continue
                A2, hit2 = _explained(A, yx, trial, d_min, eps, radius)
                if hit2.sum() > best:
                    A, info, best, moved = A2, trial, hit2.sum(), True
    return A, info


MAX_BEAM_SHIFT_PX = 6.0
MAX_DISTANCE_CHANGE = 0.03  # relative


def _within(info: FrameInfo, start: FrameInfo) -> bool:
    shift = np.hypot(*np.subtract(info.beam_center_px, start.beam_center_px))
    return bool(shift <= MAX_BEAM_SHIFT_PX and abs(info.distance_mm / start.distance_mm - 1)
                <= MAX_DISTANCE_CHANGE)


def chance(pred: np.ndarray, yx: np.ndarray, n: int, radius: float, seed: int = 0) -> float:
    """Expected spots among ``n`` that random positions (uniform over the spots' bounding box)
    would put within ``radius`` of a prediction."""
    rng = np.random.default_rng(seed)
    lo, hi = yx.min(0), yx.max(0)
    pts = rng.uniform(lo, hi, size=(20_000, 2))
    return float(near(pts, pred, radius).mean() * n)


#: a lattice must explain this many times the spots chance would: the search (64 orientation
#: candidates, beam centre and distance) lets random spots reach 2.9 x (tests/unit/test_indexing)
MIN_EXCESS = 4.0


def _significant(n: int, expected: float, p: float = 1e-6, min_spots: int = 15) -> bool:
    """n explained spots are more than chance: at least MIN_EXCESS x the ``expected`` by
    chance and Poisson P(X >= n | expected) < p."""
    if n < max(min_spots, MIN_EXCESS * expected):
        return False
    from scipy.stats import poisson

    return bool(poisson.sf(n - 1, max(expected, 1e-3)) < p)


def count_lattices(frame: Frame, cell: tuple[float, float, float], d_max_A: float = 30.0,
                   **options) -> Indexing:
    """The lattices of the orthogonal cell ``cell`` (a, b, c in Å) that explain the spots of a
    still (module doc: the method); ``options`` as :func:`index_spots`."""
    frame.geometry()  # GeometryMissing / GeometryError name a header that cannot be used
    info = frame.info
    if info.panels:
        raise ValueError("count_lattices handles single-panel detectors only")
    yx = find_spots(np.asarray(frame.image, np.float64))
    d = 1 / np.maximum(np.linalg.norm(spot_q(yx, info), axis=1), 1e-9)
    return index_spots(yx[d <= d_max_A], info, cell, **options)


def index_spots(yx: np.ndarray, info: FrameInfo, cell: tuple[float, float, float],
                eps: float = 0.004, radius_px: float = 2.5, max_lattices: int = 5,
                refine_geometry: bool = True) -> Indexing:
    """The lattices of ``cell`` that explain spots at ``yx`` (slow, fast), one after another
    among the spots still unexplained; the beam centre and distance are refined on the first
    (the header's are kept when no lattice is found)."""
    d = 1 / np.maximum(np.linalg.norm(spot_q(yx, info), axis=1), 1e-9)
    d_min = 0.98 * float(d.min()) if len(yx) else 1.0
    header, left = info, np.ones(len(yx), bool)
    found: list[Lattice] = []
    while len(found) < max_lattices and left.sum() >= 15:
        candidates = search_orientation(spot_q(yx[left], info), cell)
        if not candidates:
            break
        # the candidate whose predicted spots explain the most
        A, hit = max((_explained(A, yx[left], info, d_min, eps, radius_px) for A in candidates),
                     key=lambda t: t[1].sum())
        if not found and refine_geometry:
            A, info = _refine_geometry(A, yx[left], info, d_min, eps, radius_px)
            A, hit = _explained(A, yx[left], info, d_min, eps, radius_px)
        expected = chance(predict_spots(A, info, d_min, eps), yx, int(left.sum()), radius_px)
        if not _significant(int(hit.sum()), expected):
            break
        found.append(Lattice(A, int(hit.sum()), expected))
        left[np.where(left)[0][hit]] = False
    return Indexing(yx, d_min, tuple(found), info if found else header)


def misorientation_deg(A: np.ndarray, B: np.ndarray) -> float:
    """The smallest rotation (deg) taking basis A's axes onto basis B's, over the symmetry of
    an orthogonal cell's axes: signed permutations that swap only axes of equal length (a <-> b
    when a = b, all three when cubic), of the bases' handedness."""
    def rot(M: np.ndarray) -> np.ndarray:
        u, _, vt = np.linalg.svd(M / np.linalg.norm(M, axis=1, keepdims=True))
        return u @ vt

    ra, rb = rot(A), rot(B)
    lengths = np.linalg.norm(A, axis=1)
    best = 180.0
    for perm in itertools.permutations(range(3)):
        if not np.allclose(lengths[list(perm)], lengths, rtol=0.02):
            continue
        for signs in itertools.product((1, -1), repeat=3):
            S = np.zeros((3, 3))
            S[range(3), perm] = signs
            if np.linalg.det(S) * np.linalg.det(ra) * np.linalg.det(rb) > 0:
                cos = (np.trace(rb.T @ S @ ra) - 1) / 2
                best = min(best, math.degrees(math.acos(np.clip(cos, -1, 1))))
    return best
