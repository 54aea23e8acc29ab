"""Lattices of a still without a known cell: the basis found from the spots themselves (numpy;
no Ray). Every hit's answer without ``--cell`` (core/answer.py).

1. Real-space vectors by 1-D Fourier analysis (Steller, Bolotovsky & Rossmann 1997, J. Appl.
   Cryst. 30, 1036; DIALS' fft1d): along a direction u parallel to a real lattice vector t of
   length L, the projections u . q of one lattice's spots fall on multiples of 1/L, so the
   Fourier transform of their histogram peaks at L. Every direction of a hemisphere is scored
   by its most prominent peak in [``min_cell``, ``max_cell``] Å; the best distinct vectors are
   kept.
2. A basis: the non-coplanar triples of the best vectors that put the most spots on integer
   indices, fitted to those spots by least squares, made primitive and reduced (shortest
   vectors, pairwise size-reduced: a Buerger-like reduced cell), judged by the spots they
   explain beyond chance (``near_lattice``; the smallest cell among near equals).
3. Counting: the basis's predicted spots (core/lattice.py) matched within ``radius_px``; a
   lattice counts only when it explains MIN_EXCESS x what the same cell in random orientations
   explains (as core/indexing.py); further lattices among the unexplained spots, first with
   the first lattice's cell (core/indexing.orient), then without.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import scipy.fft
from scipy.spatial.transform import Rotation

from xray_platform.core.indexing import (
    EWALD_EPS,
    MAX_D_A,
    MIN_RELATIVE,
    MOSAIC_EPS,
    SEARCH_SPOTS,
    Guess,
    Indexing,
    _hemisphere,
    _significant,
    as_cell,
    basis,
    cell_orientations,
    chance,
    explains,
    index_spots,
    orient,
    spot_q,
)
from xray_platform.core.lattice import cell_of
from xray_platform.core.spots import Spots
from xray_platform.physics.crystal import UnitCell
from xray_platform.physics.geometry import Geometry
from xray_platform.physics.panels import PanelGeometry

MIN_CELL_A = 10.0
MAX_CELL_A = 250.0
INDEX_TOL = 0.15  # |h - round(h)| in every index: a spot indexed by a basis
#: a lattice of a fitted cell needs more spots than one of a known cell (core/indexing.py:
#: 15): the cell's six free parameters bend it onto chance spots (17 of a 29-spot frame)
MIN_SPOTS = 25
SUPERCELL_MARGIN = 0.75  # a cell dividing the best's volume and indexing this fraction wins
#: below this fraction of the spots indexed by the 1-D search's best triple, the best pairs
#: are completed by third_vector's 2-D search too
COMPLETE_FRACTION = 0.6
THIRD_SPOTS = 150  # spots (nearest the beam) third_vector searches with
THIRD_MAX_INDEX = 31  # and their largest index along the pair's vectors
THIRD_HEIGHTS = 400  # and the most heights it tries
#: a 1-D transform's peak is scored over the mean of the spectrum this many bins either side
PEAK_BASE_BINS = 3
#: triples (the most spots on integer indices first) fitted and judged by their predictions
SCORED = 8
#: of the judged bases, the smallest cell explaining this fraction of the best's spots wins
SUPERCELL_SCORE = 0.9


@dataclass(frozen=True)
class FoundLattice:
    T: np.ndarray  # real-space basis, rows a, b, c (Å, lab frame), reduced
    n_spots: int
    chance: float

    @property
    def cell(self) -> tuple[float, ...]:
        """a, b, c (Å), alpha, beta, gamma (degrees) of the reduced cell."""
        return cell_of(self.T)


@dataclass(frozen=True)
class AutoIndexing:
    spots: Spots
    lattices: tuple[FoundLattice, ...]
    explained_by: np.ndarray  # per spot: the lattice that explains it, or -1
    #: the best further lattice turned down (spots it explained, chance's), or None
    rejected: tuple[int, float] | None = None

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
    proj = np.clip(((dirs @ q.T + qmax) / delta).astype(np.int64), 0, n - 1)  # bins
    flat = (np.arange(len(dirs))[:, None] * n + proj).ravel()
    hist = np.bincount(flat, minlength=len(dirs) * n).reshape(len(dirs), n)
    spectrum = np.abs(scipy.fft.rfft(hist.astype(np.float32), axis=1))
    # a peak's height over the spectrum PEAK_BASE_BINS either side: where the spots'
    # projections bunch (directions near the beam, along which a still's q barely spreads)
    # the transform of that envelope swamps the short lengths, and falls smoothly
    prominence = spectrum - 0.5 * (np.roll(spectrum, PEAK_BASE_BINS, axis=1) +
                                   np.roll(spectrum, -PEAK_BASE_BINS, axis=1))
    lengths = np.arange(spectrum.shape[1]) / (n * delta)  # Å per frequency bin
    band = (lengths >= min_cell) & (lengths <= max_cell)
    best = np.argmax(np.where(band, prominence, -np.inf), axis=1)
    score = prominence[np.arange(len(dirs)), best]
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


def refine_vector(t: np.ndarray, q: np.ndarray, tol: float = 0.2) -> np.ndarray:
    """A real-space vector t fitted to the spots q: t . q = n (integers), by least squares over
    ever wider resolution shells (a direction from a 1.5 deg grid puts a 2 Å spot's index a
    whole order off along an 80 Å vector; near the beam it is right)."""
    order = np.argsort(np.linalg.norm(q, axis=1))
    for frac in (0.25, 0.5, 0.75, 1.0):
        qs = q[order[:max(12, int(frac * len(q)))]]
        x = qs @ t
        ok = np.abs(x - np.round(x)) < tol
        if ok.sum() < 6:
            break
        t = np.linalg.lstsq(qs[ok], np.round(x[ok]), rcond=None)[0]
    return t


def primitive(T: np.ndarray, q: np.ndarray, min_fraction: float = 0.95) -> np.ndarray:
    """The basis of the smallest lattice containing T's that still indexes its spots: a
    centred cell (C, I, F) found as a conventional one indexes only reflections whose indices
    obey the centring condition n . h even, and its volume (twice or four times the
    primitive's) lets random spots reach its predictions (ferritin's F cubic: 3.2 x chance)."""
    halves = [np.array(n) for n in itertools.product((0, 1), repeat=3) if any(n)]
    for _ in range(2):
        ok = _indexed(T, q)
        h = np.round(q[ok] @ T.T).astype(int)
        if len(h) < 12:
            break
        for n in halves:
            if np.mean((h @ n) % 2 == 0) >= min_fraction:
                i = int(np.flatnonzero(n)[0])
                T = T.copy()
                T[i] = (n @ T) / 2.0  # (n . [a, b, c]) / 2 is a lattice vector: a new basis
                break
        else:
            break
    return T


def third_vector(a: np.ndarray, b: np.ndarray, q: np.ndarray, min_height: float = 3.0,
                 max_height: float = MAX_CELL_A) -> np.ndarray | None:
    """The lattice vector c completing a and b: c = z n + u a + v b (n the unit normal of the
    a, b plane, z the cell's height over it, u, v in [0, 1)) with c . q = z (n . q) + u h + v k
    integer for the spots on a and b's rows (h = a . q, k = b . q integers). For each height
    z the sum of exp(2 pi i c . q) over (u, v) is a 2-D Fourier transform of the spots'
    phases at their integer (h, k): one FFT per height. Finds the third vector where the 1-D
    search cannot: with c near the beam a still's spots all sit on a few layers l, and its
    direction needs ~0.1 deg to index them (the real thaumatin hit)."""
    n = np.cross(a, b)
    n /= np.linalg.norm(n)
    x, y = q @ a, q @ b
    on = (np.abs(x - np.round(x)) < INDEX_TOL) & (np.abs(y - np.round(y)) < INDEX_TOL)
    if on.sum() < 12:
        return None
    # the spots nearest the beam: the fewest heights and (h, k) to search; refine_vector
    # extends c to the rest
    on = np.flatnonzero(on)
    on = on[np.argsort(np.linalg.norm(q[on], axis=1))[:THIRD_SPOTS]]
    # the cost is heights x m^2: indices within +-THIRD_MAX_INDEX, heights at most
    # THIRD_HEIGHTS (max_height x span / 0.2, below)
    on = on[(np.abs(np.round(x[on])) <= THIRD_MAX_INDEX) &
            (np.abs(np.round(y[on])) <= THIRD_MAX_INDEX) &
            (np.abs(q[on] @ n) <= THIRD_HEIGHTS * 0.2 / max_height)]
    if len(on) < 12:
        return None
    h, k, p = np.round(x[on]).astype(int), np.round(y[on]).astype(int), q[on] @ n
    m = 1 << max(5, int(np.ceil(np.log2(2 * max(np.abs(h).max(), np.abs(k).max()) + 1))))
    span = float(np.abs(p).max())
    step = 0.2 / max(span, 1e-6)  # z changes c . q by <= 0.2
    # heights below 2 / span leave c . q within +-2 of 0 for every spot: untested, trivially
    # coherent; above it the spots' l span several orders
    heights = np.arange(max(min_height, 2.0 / max(span, 1e-6)), max_height, step)
    if not len(heights):
        return None
    cell = (h % m) * m + (k % m)
    flat = (np.arange(len(heights))[:, None] * m * m + cell[None, :]).ravel()
    phase = 2 * np.pi * heights[:, None] * p[None, :]
    size = len(heights) * m * m
    grid = (np.bincount(flat, np.cos(phase).ravel(), size) +
            1j * np.bincount(flat, np.sin(phase).ravel(), size)).reshape(-1, m, m)
    power = np.abs(scipy.fft.fft2(grid.astype(np.complex64))).reshape(len(heights), -1)
    # F[u', v'] = sum w exp(-2 pi i (h u' + k v') / m): each height's best (u, v) = -(u', v')/m
    iu, iv = np.unravel_index(np.argmax(power, axis=1), (m, m))
    cs = heights[:, None] * n + ((-iu / m) % 1.0)[:, None] * a + ((-iv / m) % 1.0)[:, None] * b
    # judged by the spots indexed beyond chance (2 INDEX_TOL of those it tests), not by the
    # power: a short c leaves c . q near 0 for most spots, which the power counts as
    # coherent; a spot tests height z only when |z (n . q)| >= 1/2. A supercell (height k z)
    # indexes z's spots and more by chance: the best height's integer fractions that index
    # nearly as many win.
    lc = q[on] @ cs.T
    tested = np.abs(heights[None, :] * p[:, None]) >= 0.5
    count = ((np.abs(lc - np.round(lc)) < INDEX_TOL) & tested).sum(0) - \
        2 * INDEX_TOL * tested.sum(0)
    best = int(np.argmax(count))
    ratio = heights[best] / heights
    sub = (np.abs(ratio - np.round(ratio)) * heights < step) & (np.round(ratio) >= 2) & \
        (count >= SUPERCELL_MARGIN * count[best])
    c = cs[int(np.flatnonzero(sub)[0])] if sub.any() else cs[best]
    c = refine_vector(c, q)  # (a fit to indices all 0 is the zero vector)
    return c if np.isfinite(c).all() and np.linalg.norm(c) >= 0.5 * MIN_CELL_A else None


def _pairs(vec: np.ndarray, q: np.ndarray, n: int = 3) -> list[tuple[np.ndarray, np.ndarray]]:
    """The ``n`` non-collinear pairs of candidate vectors that index the most spots together."""
    scored = []
    for i, j in itertools.combinations(range(len(vec)), 2):
        cos = abs(vec[i] @ vec[j]) / (np.linalg.norm(vec[i]) * np.linalg.norm(vec[j]))
        if cos < 0.95:
            x, y = q @ vec[i], q @ vec[j]
            both = (np.abs(x - np.round(x)) < INDEX_TOL) & (np.abs(y - np.round(y)) < INDEX_TOL)
            scored.append((int(both.sum()), i, j))
    return [(vec[i], vec[j]) for _, i, j in sorted(scored, reverse=True)[:n]]


def _triples(bases: list[np.ndarray], q: np.ndarray) -> list[tuple[int, float, np.ndarray]]:
    """(spots indexed, volume, basis) of the bases that are not (nearly) coplanar."""
    out = []
    for T in bases:
        volume = abs(np.linalg.det(T))
        if np.isfinite(volume) and volume > 0 and \
                volume >= 0.1 * np.prod(np.linalg.norm(T, axis=1)):
            out.append((int(_indexed(T, q).sum()), volume, T))
    return out


def find_basis(q: np.ndarray, n_candidates: int = 15,
               score: Callable[[np.ndarray], int] | None = None) -> np.ndarray | None:
    """The reduced primitive basis (rows, Å) that indexes the most spots q, or None (too few
    spots). With ``score`` (a basis -> the spots its predictions explain), the SCORED bases
    that index the most spots are fitted and judged by it instead: where several lattices
    share a frame, a triple of vectors from different ones can put the most spots near
    integer indices and predict none of them."""
    if len(q) < 12:
        return None
    vec = np.array([refine_vector(t, q) for t in candidate_vectors(q)[:n_candidates]])
    vec = vec[np.isfinite(vec).all(1) & (np.linalg.norm(vec, axis=1) >= MIN_CELL_A)]
    triples = _triples([vec[list(ijk)] for ijk in itertools.combinations(range(len(vec)), 3)],
                       q)
    if not triples or max(t[0] for t in triples) < COMPLETE_FRACTION * len(q):
        # the 1-D search missed a vector (the third of a still's zone): complete the pairs
        for a, b in _pairs(vec, q):
            c = third_vector(a, b, q)
            triples += _triples([np.stack([a, b, c])], q) if c is not None else []
            if triples and max(t[0] for t in triples) >= COMPLETE_FRACTION * len(q):
                break
    if not triples:
        return None
    bases = [_basis(_smallest(triples), q)]
    if score is not None:
        ranked = sorted(triples, key=lambda t: (-t[0], t[1]))
        bases += [_basis(t[2], q) for t in ranked[:SCORED]]
        bases = _distinct_bases([T for T in bases if T is not None])
        if not bases:
            return None
        scored = [(score(T), abs(np.linalg.det(T)), T) for T in bases]
        most = max(s for s, _, _ in scored)
        if not most > 0:
            return None
        # a supercell predicts its cell's spots and more: the smallest cell explaining ~as many
        return min((t for t in scored if t[0] >= SUPERCELL_SCORE * most), key=lambda t: t[1])[2]
    return bases[0]


def _smallest(triples: list[tuple[int, float, np.ndarray]]) -> np.ndarray:
    """The triple indexing the most spots, or the smallest cell whose volume divides its and
    that indexes nearly as many (a supercell indexes its cell's spots and more by chance)."""
    most, volume, best = max(triples, key=lambda t: (t[0], -t[1]))
    sub = [t for t in triples if t[0] >= SUPERCELL_MARGIN * most and
           abs(volume / t[1] - round(volume / t[1])) < 0.05]
    return min(sub, key=lambda t: t[1])[2] if sub else best


def _basis(T: np.ndarray, q: np.ndarray) -> np.ndarray | None:
    """A triple fitted to the spots it indexes, made primitive and reduced (None: collapsed)."""
    T = _fit(reduce_basis(T), q)
    if not _usable(T):
        return None
    T = _fit(reduce_basis(primitive(T, q)), q)
    return reduce_basis(T) if _usable(T) else None


def _distinct_bases(bases: list[np.ndarray]) -> list[np.ndarray]:
    """``bases`` without repeats (the same reduced vectors within 1 %)."""
    out: list[np.ndarray] = []
    for T in bases:
        if all(np.abs(T - U).max() > 0.01 * np.abs(U).max() for U in out):
            out.append(T)
    return out


def _usable(T: np.ndarray) -> bool:
    """A basis of three finite, independent vectors (a fit to too few spots can collapse)."""
    return bool(np.isfinite(T).all() and abs(np.linalg.det(T)) > 1e-3 * np.prod(
        np.linalg.norm(T, axis=1)))


def _sane(T: np.ndarray) -> bool:
    edges = np.linalg.norm(T, axis=1)  # beyond these: a fit gone astray, not a crystal
    return bool(edges.min() >= 0.8 * MIN_CELL_A and edges.max() <= 1.5 * MAX_CELL_A)


def near_lattice(A: np.ndarray, q: np.ndarray, wavelength_A: float, eps: float,
                 tol_q: np.ndarray) -> np.ndarray:
    """Per spot q: whether its nearest lattice point of A (q = A h) lies within ``tol_q``
    (1/Å) of it and within ``eps`` of the Ewald sphere: what ``explains`` asks, from the
    spots' side (no reflection list: one rounding per spot)."""
    h = np.round(q @ np.linalg.inv(A).T)
    g = h @ A.T
    k1 = g + np.array([0.0, 0.0, 1.0 / wavelength_A])
    return (np.linalg.norm(g - q, axis=1) < tol_q) & h.any(1) & (
        np.abs(np.linalg.norm(k1, axis=1) - 1.0 / wavelength_A) < eps)


def search_basis(rest: Spots, geom: Geometry | PanelGeometry, eps: float = EWALD_EPS,
                 radius: float | None = None) -> np.ndarray | None:
    """The best basis (find_basis, judged by the spots each explains beyond chance) for the
    strongest SEARCH_SPOTS of ``rest`` off the ice rings; None: no basis. ``radius``: the
    spots' position tolerance (mm; default 2.5 pixels)."""
    search = rest.subset(~rest.ice)
    search = search.subset(np.arange(len(search)) < SEARCH_SPOTS)
    q = spot_q(search, geom.wavelength_A)
    radius = 2.5 * geom.pixel_mm if radius is None else radius
    # a spot's position error of ``radius`` mm, as a distance in reciprocal space (1/Å)
    tol_q = radius / (np.linalg.norm(search.xyz_mm, axis=1) * geom.wavelength_A)
    turns = Rotation.random(3, random_state=0).as_matrix()

    def excess(T: np.ndarray) -> float:  # explained beyond chance (3 random orientations)
        if not _sane(T):
            return -np.inf
        A = np.linalg.inv(T)
        return float(near_lattice(A, q, geom.wavelength_A, eps, tol_q).sum() - np.mean(
            [near_lattice(R @ A, q, geom.wavelength_A, eps, tol_q).sum() for R in turns]))

    return find_basis(q, score=excess)


def next_lattice(rest: Spots, geom: Geometry | PanelGeometry, d_min: float, eps: float,
                 radius: float) -> tuple[np.ndarray, np.ndarray, float] | None:
    """The best basis for the spots ``rest`` (search_basis), the spots it explains and how
    many it would by chance; None: no basis."""
    T = search_basis(rest, geom, eps, radius)
    if T is None:
        return None
    q_rest = spot_q(rest, geom.wavelength_A)
    T = _fit(primitive(T, q_rest), q_rest)
    if not _usable(T):
        return None
    T = reduce_basis(T)
    if not _sane(T):
        return None
    A = np.linalg.inv(T)  # q = A h
    return T, explains(A, rest, geom, d_min, eps, radius), chance(A, rest, geom, d_min, eps,
                                                                  radius)


def guess_orientations(cell: UnitCell) -> Guess:
    """For known-cell indexing (index_spots' ``guess``): the orientations of ``cell`` that
    match the basis the spots give without it (search_basis, cell_orientations): ~50 ms
    where the cell's own grid search takes ~250 ms."""
    def guess(spots: Spots, geom: Geometry | PanelGeometry) -> list[np.ndarray]:
        T = search_basis(spots, geom)
        return [] if T is None else cell_orientations(T, cell)

    return guess


def index_with_cell(spots: Spots, geom: Geometry | PanelGeometry,
                    cell: UnitCell | tuple[float, ...], **options) -> Indexing:
    """The lattices of a known ``cell`` (core/indexing.index_spots), each orientation guessed
    from the spots' own basis first (guess_orientations), the cell's grid search where that
    finds none significant (too few spots, a cell the spots' basis does not match)."""
    cell = as_cell(cell)
    return index_spots(spots.subset(spots.d_A <= MAX_D_A), geom, cell,
                       guess=guess_orientations(cell), **options)


def _with_cell(T: np.ndarray, rest: Spots, geom: Geometry | PanelGeometry, d_min: float,
               eps: float, radius_px: float) -> tuple[np.ndarray, np.ndarray, float] | None:
    """A further lattice of the first's cell among the spots ``rest`` (the crystals of one
    sample share a cell): its basis, the spots it explains, chance; None: no orientation."""
    cell = as_cell(cell_of(T))
    best = orient(rest, geom, cell, d_min, eps, radius_px)
    if best is None:
        return None
    U, hit, expected = best
    if expected is None:
        expected = chance(U @ cell.B(), rest, geom, d_min, eps, radius_px * geom.pixel_mm)
    return reduce_basis(basis(U, cell)), hit, expected


def sigma_above(n: int, expected: float) -> float:
    """How far n explained spots lie above chance's ``expected``, in Poisson sigma."""
    return (n - expected) / math.sqrt(max(expected, 1.0))


def _better(a: tuple[int, float] | None, b: tuple[int, float]) -> tuple[int, float]:
    return b if a is None or sigma_above(*b) > sigma_above(*a) else a


def autoindex(spots: Spots, geom: Geometry | PanelGeometry, eps: float = EWALD_EPS,
              radius_px: float = 2.5, max_lattices: int = 5) -> AutoIndexing:
    """The lattices that explain ``spots`` with no cell given, one after another among the
    spots still unexplained."""
    spots = spots.subset(spots.d_A <= MAX_D_A)
    d_min = 0.98 * float(spots.d_A.min()) if len(spots) else 1.0
    radius = radius_px * geom.pixel_mm
    left, by = np.ones(len(spots), bool), np.full(len(spots), -1)
    found: list[FoundLattice] = []
    first, rejected = 0, None
    while len(found) < max_lattices and left.sum() >= 15:
        rest = spots.subset(left)
        # a further lattice of the first's cell is judged as a known cell's (core/indexing.py:
        # three free parameters, not nine: 15 spots), any other as a fitted cell's
        attempt = _with_cell(found[0].T, rest, geom, d_min, eps, radius_px) if found else None
        if attempt is not None and not _significant(int(attempt[1].sum()), attempt[2]):
            rejected, attempt = _better(rejected, (int(attempt[1].sum()), attempt[2])), None
        if attempt is None:
            attempt = next_lattice(rest, geom, d_min, eps, radius)
            if attempt is None:
                break
            if not _significant(int(attempt[1].sum()), attempt[2], min_spots=MIN_SPOTS):
                rejected = _better(rejected, (int(attempt[1].sum()), attempt[2]))
                break
        T, hit, expected = attempt
        if found and hit.sum() < MIN_RELATIVE * first:
            rejected = _better(rejected, (int(hit.sum()), expected))
            break
        first = first if found else int(hit.sum())  # the first lattice's, within eps
        # and its reflections further from the Ewald sphere (mosaic spread, bandwidth: a
        # strong crystal's partials), which a slightly turned copy would otherwise claim
        hit |= explains(np.linalg.inv(T), rest, geom, d_min, MOSAIC_EPS * eps, radius)
        found.append(FoundLattice(T, int(hit.sum()), expected))
        idx = np.where(left)[0][hit]
        by[idx] = len(found) - 1
        left[idx] = False
    return AutoIndexing(spots, tuple(found), by, rejected)
