"""Lattices of a still without a known cell: the basis found from the spots themselves (numpy;
no Ray). A first step of issue 30's unknown-cell path; not yet on the answer path.

1. Real-space vectors by 1-D Fourier analysis (Steller, Bolotovsky & Rossmann 1997, J. Appl.
   Cryst. 30, 1036; DIALS' fft1d): along a direction u parallel to a real lattice vector t of
   length L, the projections u . q of one lattice's spots fall on multiples of 1/L, so the
   Fourier transform of their histogram peaks at L. Every direction of a hemisphere is scored
   by its strongest peak in [``min_cell``, ``max_cell``] Å; the best distinct vectors are kept.
2. A basis: of the best vectors, the non-coplanar triple that puts the most spots on integer
   indices (smallest cell among equals), fitted to those spots by least squares and reduced
   (shortest vectors, pairwise size-reduced: a Buerger-like reduced cell).
3. Counting: the basis's predicted spots (core/lattice.py) matched within ``radius_px``; a
   lattice counts only when it explains MIN_EXCESS x what the same cell in random orientations
   explains (as core/indexing.py); further lattices among the unexplained spots.
"""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass

import numpy as np

from xray_platform.core.indexing import (
    MAX_D_A,
    SEARCH_SPOTS,
    _hemisphere,
    _significant,
    chance,
    explains,
    spot_q,
)
from xray_platform.core.spots import Spots
from xray_platform.physics.geometry import Geometry
from xray_platform.physics.panels import PanelGeometry

MIN_CELL_A = 10.0
MAX_CELL_A = 250.0
INDEX_TOL = 0.15  # |h - round(h)| in every index: a spot indexed by a basis
#: a lattice of a fitted cell needs more spots than one of a known cell (core/indexing.py:
#: 15): the cell's six free parameters bend it onto chance spots (17 of a 29-spot frame)
MIN_SPOTS = 25
SUPERCELL_MARGIN = 0.75  # a cell dividing the best's volume and indexing this fraction wins


@dataclass(frozen=True)
class FoundLattice:
    T: np.ndarray  # real-space basis, rows a, b, c (Å, lab frame), reduced
    n_spots: int
    chance: float

    @property
    def cell(self) -> tuple[float, ...]:
        """a, b, c (Å), alpha, beta, gamma (degrees) of the reduced cell."""
        a, b, c = self.T
        ang = [math.degrees(math.acos(np.clip(x @ y / np.linalg.norm(x) / np.linalg.norm(y),
                                              -1, 1))) for x, y in ((b, c), (a, c), (a, b))]
        return (*np.linalg.norm(self.T, axis=1), *ang)


@dataclass(frozen=True)
class AutoIndexing:
    spots: Spots
    lattices: tuple[FoundLattice, ...]
    explained_by: np.ndarray  # per spot: the lattice that explains it, or -1

    @property
    def n_lattices(self) -> int:
        return len(self.lattices)


def candidate_vectors(q: np.ndarray, min_cell: float = MIN_CELL_A, max_cell: float = MAX_CELL_A,
                      step_deg: float = 1.5, keep: int = 30) -> np.ndarray:
    """The ``keep`` real-space vectors (rows, Å) whose 1-D transforms peak highest, distinct
    (more than 5 deg apart, or of other lengths)."""
    dirs = _hemisphere(step_deg).astype(np.float64)
    qmax = float(np.abs(q).max()) * 1.0001
    delta = 1.0 / (3.0 * max_cell)  # histogram bin (1/Å): a period of 1/max_cell spans 3
    n = int(math.ceil(2 * qmax / delta))
    proj = (dirs @ q.T + qmax) / delta  # (directions, spots) in bins
    rows = np.repeat(np.arange(len(dirs)), q.shape[0])
    hist = np.zeros((len(dirs), n))
    np.add.at(hist, (rows, np.minimum(proj.astype(int).ravel(), n - 1)), 1.0)
    spectrum = np.abs(np.fft.rfft(hist, axis=1))
    lengths = np.arange(spectrum.shape[1]) / (n * delta)  # Å per frequency bin
    band = (lengths >= min_cell) & (lengths <= max_cell)
    best = np.argmax(np.where(band, spectrum, 0.0), axis=1)
    score = spectrum[np.arange(len(dirs)), best]
    vectors: list[np.ndarray] = []
    for i in np.argsort(score)[::-1]:
        t = dirs[i] * lengths[best[i]]
        if all(abs(t @ v) / (np.linalg.norm(t) * np.linalg.norm(v)) < math.cos(math.radians(5))
               or abs(np.linalg.norm(t) / np.linalg.norm(v) - 1) > 0.05 for v in vectors):
            vectors.append(t)
        if len(vectors) == keep:
            break
    return np.array(vectors)


def _indexed(T: np.ndarray, q: np.ndarray) -> np.ndarray:
    h = q @ T.T
    return np.all(np.abs(h - np.round(h)) < INDEX_TOL, axis=1)


def _fit(T: np.ndarray, q: np.ndarray) -> np.ndarray:
    """T refined on the spots it indexes: h = T q, least squares (cell and orientation)."""
    for _ in range(3):
        ok = _indexed(T, q)
        h = np.round(q[ok] @ T.T)
        if ok.sum() < 12 or np.linalg.matrix_rank(h) < 3:
            break
        T = np.linalg.lstsq(q[ok], h, rcond=None)[0].T
    return T


def reduce_basis(T: np.ndarray) -> np.ndarray:
    """Shortest vectors first, each size-reduced against the others (a ~ Buerger cell), and a
    right-handed basis."""
    T = T[np.argsort(np.linalg.norm(T, axis=1))].copy()
    for _ in range(50):
        changed = False
        for i, j in itertools.permutations(range(3), 2):
            k = round(float(T[i] @ T[j]) / float(T[j] @ T[j]))
            if k:
                T[i] -= k * T[j]
                changed = True
        T = T[np.argsort(np.linalg.norm(T, axis=1))]
        if not changed:
            break
    return T if np.linalg.det(T) > 0 else T * np.array([[1], [1], [-1]])


def find_basis(q: np.ndarray, n_candidates: int = 15) -> np.ndarray | None:
    """The reduced basis (rows, Å) that indexes the most spots q, or None (too few spots)."""
    if len(q) < 12:
        return None
    vec = candidate_vectors(q)[:n_candidates]
    triples = []  # (spots indexed, volume, basis)
    for i, j, k in itertools.combinations(range(len(vec)), 3):
        T = vec[[i, j, k]]
        volume = abs(np.linalg.det(T))
        if volume >= 0.1 * np.prod(np.linalg.norm(T, axis=1)):  # not (nearly) coplanar
            triples.append((int(_indexed(T, q).sum()), volume, T))
    if not triples:
        return None
    # a supercell (n times the volume) indexes its cell's spots too, and a few more by chance:
    # the smallest cell whose volume divides the best's and that indexes nearly as many
    most, volume, best = max(triples, key=lambda t: (t[0], -t[1]))
    sub = [t for t in triples if t[0] >= SUPERCELL_MARGIN * most and
           abs(volume / t[1] - round(volume / t[1])) < 0.05]
    best = min(sub, key=lambda t: t[1])[2] if sub else best
    return reduce_basis(_fit(reduce_basis(best), q))


def autoindex(spots: Spots, geom: Geometry | PanelGeometry, eps: float = 0.004,
              radius_px: float = 2.5, max_lattices: int = 5) -> AutoIndexing:
    """The lattices that explain ``spots`` with no cell given, one after another among the
    spots still unexplained."""
    spots = spots.subset(spots.d_A <= MAX_D_A)
    d_min = 0.98 * float(spots.d_A.min()) if len(spots) else 1.0
    radius = radius_px * geom.pixel_mm
    left, by = np.ones(len(spots), bool), np.full(len(spots), -1)
    found: list[FoundLattice] = []
    while len(found) < max_lattices and left.sum() >= 15:
        rest = spots.subset(left)
        search = rest.subset(~rest.ice)
        search = search.subset(np.arange(len(search)) < SEARCH_SPOTS)
        T = find_basis(spot_q(search, geom.wavelength_A))
        if T is None:
            break
        T = reduce_basis(_fit(T, spot_q(rest, geom.wavelength_A)))
        edges = np.linalg.norm(T, axis=1)
        if edges.min() < 0.8 * MIN_CELL_A or edges.max() > 1.5 * MAX_CELL_A:
            break  # a fit gone astray (indices from a wrong basis), not a crystal
        A = np.linalg.inv(T)  # q = A h
        hit = explains(A, rest, geom, d_min, eps, radius)
        expected = chance(A, rest, geom, d_min, eps, radius)
        if not _significant(int(hit.sum()), expected, min_spots=MIN_SPOTS):
            break
        found.append(FoundLattice(T, int(hit.sum()), expected))
        idx = np.where(left)[0][hit]
        by[idx] = len(found) - 1
        left[idx] = False
    return AutoIndexing(spots, tuple(found), by)
