"""How many crystal lattices explain a still's spots, given the crystal's unit cell: any crystal
system, any detector layout (numpy/scipy; no Ray).

1. Spots at full resolution (core/spots.py), each a reciprocal vector q = s1 - s0 through the
   frame's own panel geometry (design.md); spots at d > ``d_max_A`` (beamstop halo, parasitic
   scatter) and on ice rings left out of the search.
2. Orientation (a real-space grid search, as DIALS' known-cell indexing): a real-space lattice
   vector t of length L has t . q integer for every spot of its lattice, so directions u where
   sum cos(2 pi L u . q) peaks are the cell's edges. c first (over a hemisphere), then a on
   the cone at beta from c, then b from alpha and gamma (right-handed): every crystal system.
3. Matching, as a still predicts it (core/lattice.py): the lattice points within ``eps`` (1/Å)
   of the Ewald sphere, projected onto the panels; a spot within ``radius_px`` of a
   prediction (compared in the lab, mm) is explained. The orientation is refined on the
   explained spots' indices (the cell stays the known one), and on a flat detector the beam
   centre and distance by a coordinate search (bounded by MAX_BEAM_SHIFT_PX,
   MAX_DISTANCE_CHANGE).
4. Further lattices are searched among the spots not yet explained. One is accepted only when
   it explains far more spots than the same cell in random orientations would (MIN_EXCESS x as
   many, and a Poisson tail < 1e-6).

Measured by benchmarks/count_lattices.py on nanoBragg's shots (whose lattices are known) and
the real thaumatin grid-scan hit.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace

import numpy as np
from scipy.spatial import cKDTree
from scipy.spatial.transform import Rotation

from xray_platform.core.lattice import fit_orientation, predict
from xray_platform.core.spots import SpotFinder, Spots
from xray_platform.io.formats.base import Frame, FrameInfo
from xray_platform.physics.crystal import UnitCell
from xray_platform.physics.geometry import Geometry
from xray_platform.physics.panels import PanelGeometry

MAX_BEAM_SHIFT_PX = 6.0
MAX_DISTANCE_CHANGE = 0.03  # relative
#: a lattice must explain this many times the spots chance would: the search (orientation
#: candidates, beam centre and distance) lets random spots reach ~3 x (tests/unit/test_indexing)
MIN_EXCESS = 4.0
MIN_MARGIN = 10.0  # or this many Poisson sigma above chance (_significant)
#: a further lattice must explain this fraction of the spots the first does: a strong
#: crystal's own leftovers (split spots, partials past the mosaic tolerance, high-resolution
#: spots its fitted cell misplaces) let a turned copy of it explain a few dozen of thousands
MIN_RELATIVE = 0.05
#: orientation candidates (the most spots on integer indices first) matched by prediction
CANDIDATES = 4
#: strongest spots the orientation search uses (all are matched afterwards)
SEARCH_SPOTS = 400
#: spots at lower resolution (beamstop halo, parasitic scatter) are left out (Å)
MAX_D_A = 30.0
#: a still records the reflections this close to the Ewald sphere (1/Å; core/lattice.py)
EWALD_EPS = 0.004
#: a lattice found also takes the spots its predictions explain at this x the Ewald
#: tolerance before further lattices are searched (its partial reflections: mosaic spread and
#: bandwidth put a strong crystal's spots further out, where a turned copy would claim them)
MOSAIC_EPS = 3.0


@dataclass(frozen=True)
class Lattice:
    """One lattice found in a still: orientation ``U`` (A = U B) and its real-space basis
    ``A`` (rows a, b, c in Å, lab frame)."""

    U: np.ndarray
    A: np.ndarray
    n_spots: int  # spots it explains that no earlier lattice did
    chance: float  # how many of those the same cell in random orientations explains


@dataclass(frozen=True)
class Indexing:
    spots: Spots  # the spots at d <= d_max
    d_min: float  # the predictions' resolution limit (Å)
    lattices: tuple[Lattice, ...]
    geom: Geometry | PanelGeometry  # with the refined beam centre and distance (flat)
    explained_by: np.ndarray  # per spot: the lattice (0, 1, ...) that explains it, or -1
    #: the best further lattice turned down (spots it explained, chance's), or None
    rejected: tuple[int, float] | None = None

    @property
    def n_spots(self) -> int:
        return len(self.spots)

    @property
    def n_lattices(self) -> int:
        return len(self.lattices)

    @property
    def explained(self) -> int:
        return sum(lat.n_spots for lat in self.lattices)


def as_cell(cell: UnitCell | str | Sequence[float]) -> UnitCell:
    """A UnitCell from a UnitCell, (a, b, c) (angles 90), (a, b, c, alpha, beta, gamma), or
    the same as a comma-separated string (--cell, the service's form and app arg)."""
    if isinstance(cell, UnitCell):
        return cell
    if isinstance(cell, str):
        try:
            cell = [float(v) for v in cell.split(",") if v.strip()]
        except ValueError:
            raise ValueError(f"a unit cell is a,b,c[,alpha,beta,gamma] in Å and degrees; got "
                             f"{cell!r}") from None
    values = tuple(float(x) for x in cell)
    if len(values) == 3:
        values += (90.0, 90.0, 90.0)
    if len(values) != 6:
        raise ValueError(f"a unit cell is a,b,c[,alpha,beta,gamma]; got {len(values)} numbers")
    return UnitCell(*values)


def spot_q(spots: Spots, wavelength_A: float) -> np.ndarray:
    """Reciprocal vectors q = s1 - s0 (1/Å) of the spots."""
    return spots.s1(wavelength_A) - np.array([0.0, 0.0, 1.0 / wavelength_A])


# --- orientation search ------------------------------------------------------------------
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


def _on_cone(u: np.ndarray, axis: np.ndarray, cos_angle: float) -> np.ndarray:
    """u moved onto the cone of half-angle acos(cos_angle) about the unit ``axis``."""
    perp = u - (u @ axis) * axis
    perp /= np.linalg.norm(perp)
    return cos_angle * axis + math.sqrt(max(0.0, 1 - cos_angle ** 2)) * perp


def _third(a: np.ndarray, c: np.ndarray, cos_alpha: float, cos_beta: float,
           cos_gamma: float) -> np.ndarray:
    """The unit b with b . a = cos gamma, b . c = cos alpha and (a x b) . c > 0 (a, c unit,
    a . c = cos beta)."""
    det = 1.0 - cos_beta ** 2
    p = (cos_gamma - cos_alpha * cos_beta) / det
    r = (cos_alpha - cos_gamma * cos_beta) / det
    n = np.cross(a, c)
    n /= np.linalg.norm(n)
    inplane = p * a + r * c
    s = math.sqrt(max(0.0, 1.0 - inplane @ inplane))
    b = inplane + s * n
    return b if np.cross(a, b) @ c > 0 else inplane - s * n


def _rotation_of(basis_rows: np.ndarray, cell: UnitCell) -> np.ndarray:
    """The rotation U closest to taking the cell's standard basis to ``basis_rows``."""
    u, _, vt = np.linalg.svd(basis_rows.T @ np.linalg.inv(cell.orthogonalization()))
    return u @ vt if np.linalg.det(u @ vt) > 0 else u @ np.diag([1, 1, -1]) @ vt


def _refine(U: np.ndarray, cell: UnitCell, q: np.ndarray, wavelength_A: float,
            tol: float = 0.15) -> tuple[np.ndarray, int]:
    """The orientation fitted to the spots within ``tol`` of integer indices, and their count
    (only the rotation is fitted: a chance lattice has no cell to bend)."""
    M, B = cell.orthogonalization(), cell.B()
    for _ in range(4):
        h = q @ (U @ M)
        ok = np.all(np.abs(h - np.round(h)) < tol, axis=1)
        if ok.sum() < 12 or np.linalg.matrix_rank(np.round(h[ok])) < 3:
            break
        U = fit_orientation(B, q[ok], np.round(h[ok]), wavelength_A)
    h = q @ (U @ M)
    return U, int(np.all(np.abs(h - np.round(h)) < tol, axis=1).sum())


def _coarse(q: np.ndarray, length: float, step_deg: float, min_spots: int = 40) -> np.ndarray:
    """The spots whose periodicity peak along a lattice row of ``length`` is broader than the
    search step: |q| < 1.5 / (2 pi L step), where the phase 2 pi L u . q moves by < 1.5 rad
    between neighbouring directions (at least the ``min_spots`` nearest the beam)."""
    qn = np.linalg.norm(q, axis=1)
    cut = 1.5 / (2 * math.pi * length * math.radians(step_deg))
    keep = qn < cut
    if keep.sum() < min_spots:
        keep = qn <= np.sort(qn)[min(min_spots, len(qn)) - 1]
    return q[keep]


def search_orientation(q: np.ndarray, cell: UnitCell, wavelength_A: float,
                       step_deg: float = 0.6, keep: int = 10) -> list[np.ndarray]:
    """Orientations U of ``cell`` that put the most spots q on integer indices, the best
    ``keep`` distinct ones (more than 0.2 deg apart) first (empty with too few spots)."""
    if len(q) < 12:
        return []
    a, b, c = cell.edges
    ca, cb, cg = (math.cos(math.radians(x)) for x in (cell.alpha, cell.beta, cell.gamma))
    dirs = _hemisphere(step_deg)
    pc, pa = (_periodicity(dirs, _coarse(q, L, step_deg), L) for L in (c, a))
    found: list[tuple[int, np.ndarray]] = []
    for ic in np.argsort(pc)[::-1][:16]:
        cdir = _polish(dirs[ic].astype(np.float64), q, c, step_deg)
        dots = dirs @ cdir
        cone = np.where(np.abs(np.abs(dots) - abs(cb)) < 0.03)[0]
        for ia in cone[np.argsort(pa[cone])[::-1][:4]]:
            u = dirs[ia].astype(np.float64)
            if cb * (u @ cdir) < 0:  # the hemisphere holds +-u: the one at beta from c
                u = -u
            adir = _on_cone(_polish(u, q, a, step_deg), cdir, cb)
            bdir = _third(adir, cdir, ca, cb, cg)
            U = _rotation_of(np.stack([adir * a, bdir * b, cdir * c]), cell)
            found.append(_refine(U, cell, q, wavelength_A)[::-1])
    found.sort(key=lambda t: -t[0])  # neighbouring grid directions refine to one orientation
    return _distinct([U for _, U in found], cell, keep)


def basis(U: np.ndarray, cell: UnitCell) -> np.ndarray:
    """The real-space basis (rows a, b, c in Å, lab frame) of orientation U."""
    return (U @ cell.orthogonalization()).T


# --- matching --------------------------------------------------------------------------------
def _radius_mm(geom: Geometry | PanelGeometry, radius_px: float) -> float:
    return radius_px * geom.pixel_mm


def _explained(U: np.ndarray, cell: UnitCell, spots: Spots, geom, d_min: float, eps: float,
               radius_px: float) -> tuple[np.ndarray, np.ndarray]:
    """Refine ``U`` on the spots its predictions explain; (U, explained mask)."""
    B, wl = cell.B(), geom.wavelength_A
    q = spot_q(spots, wl)
    radius = _radius_mm(geom, radius_px)
    for _ in range(2):
        U, _ = _refine(U, cell, q, wl)
        pred = predict(U @ B, geom, d_min, eps)
        if len(pred.hkl) >= 3:  # each explained spot's indices: its prediction's
            dist, j = cKDTree(pred.xyz_mm).query(spots.xyz_mm)
            ok = dist < radius
            if ok.sum() >= 12 and np.linalg.matrix_rank(pred.hkl[j[ok]]) == 3:
                U = fit_orientation(B, q[ok], pred.hkl[j[ok]], wl)
    return U, explains(U @ B, spots, geom, d_min, eps, radius)


def explains(A: np.ndarray, spots: Spots, geom, d_min: float, eps: float,
             radius_mm: float) -> np.ndarray:
    """Per spot: whether a predicted spot of the lattice A (q = A h) lies within
    ``radius_mm`` of it (in the lab: any detector layout)."""
    pred = predict(A, geom, d_min, eps).xyz_mm
    if not len(pred) or not len(spots):
        return np.zeros(len(spots), bool)
    return cKDTree(pred).query(spots.xyz_mm)[0] < radius_mm


def chance(A: np.ndarray, spots: Spots, geom, d_min: float, eps: float, radius_mm: float,
           n_rotations: int = 8, seed: int = 0) -> float:
    """Spots the same lattice A explains on average in ``n_rotations`` random orientations:
    what a lattice unrelated to the crystal would explain on this detector, at this spot
    density."""
    rotations = Rotation.random(n_rotations, random_state=seed).as_matrix()
    return float(np.mean([explains(R @ A, spots, geom, d_min, eps, radius_mm).sum()
                          for R in rotations]))


def _significant(n: int, expected: float, p: float = 1e-6, min_spots: int = 15) -> bool:
    """n explained spots are more than chance: Poisson P(X >= n | expected) < p, and at least
    MIN_EXCESS x the ``expected`` by chance or, where chance is high (dense lattices: long
    cells, wide mosaic), MIN_MARGIN sigma above it (the best of ~1e6 searched orientations of
    a random lattice lies ~5 sigma above its mean)."""
    if n < min_spots or n < min(MIN_EXCESS * expected,
                                expected + MIN_MARGIN * math.sqrt(max(expected, 0.0))):
        return False
    from scipy.stats import poisson

    return bool(poisson.sf(n - 1, max(expected, 1e-3)) < p)


# --- geometry refinement (flat detectors) ----------------------------------------------------
def _moved(spots: Spots, geom: Geometry) -> Spots:
    """The spots' lab positions and d under another beam centre and distance."""
    from xray_platform.core.spots import d_spacing, lab_position

    xyz = lab_position(geom, spots.panel, spots.slow, spots.fast)
    return replace(spots, xyz_mm=xyz, d_A=d_spacing(xyz, geom.wavelength_A))


def _within(geom: Geometry, start: Geometry) -> bool:
    shift = np.hypot(*np.subtract(geom.beam_center_px, start.beam_center_px))
    return bool(shift <= MAX_BEAM_SHIFT_PX and abs(geom.distance_mm / start.distance_mm - 1)
                <= MAX_DISTANCE_CHANGE)


def _refine_geometry(U: np.ndarray, cell: UnitCell, spots: Spots, geom: Geometry, d_min: float,
                     eps: float, radius: float) -> tuple[np.ndarray, Geometry, Spots]:
    """Coordinate search of beam centre (px) and distance (mm) for the most explained spots,
    within MAX_BEAM_SHIFT_PX and MAX_DISTANCE_CHANGE of the header's. (Counting spots near
    integer indices instead of predicting is 10 x cheaper per trial but settles the real
    thaumatin hit on a geometry that explains half as many spots.)"""
    U, hit = _explained(U, cell, spots, geom, d_min, eps, radius)
    best, start = hit.sum(), geom
    B, r_mm = cell.B(), _radius_mm(geom, radius)
    for step in (2.0, 1.0, 0.5):
        moved = True
        while moved:
            moved = False
            for df, ds, dd in ((step, 0, 0), (-step, 0, 0), (0, step, 0), (0, -step, 0),
                               (0, 0, 2 * step), (0, 0, -2 * step)):
                f0, s0 = geom.beam_center_px
                trial = replace(geom, beam_center_px=(f0 + df, s0 + ds),
                                distance_mm=geom.distance_mm + dd)
                if not _within(trial, start):
                    continue
                # a trial keeps the orientation (one prediction); an accepted one refits it
                n = int(explains(U @ B, _moved(spots, trial), trial, d_min, eps, r_mm).sum())
                if n > best:
                    U, hit = _explained(U, cell, _moved(spots, trial), trial, d_min, eps,
                                        radius)
                    geom, best, moved = trial, max(n, int(hit.sum())), True
    return U, geom, _moved(spots, geom)


# --- the lattices of a still -----------------------------------------------------------------
def count_lattices(frame: Frame, cell: UnitCell | tuple[float, ...],
                   d_max_A: float = MAX_D_A, spots: Spots | None = None, **options) -> Indexing:
    """The lattices of ``cell`` (a UnitCell, or a,b,c[,alpha,beta,gamma]) that explain the
    spots of a still (module doc: the method); ``options`` as :func:`index_spots`."""
    geom = frame.geometry()  # GeometryMissing / GeometryError name a header that cannot be used
    if spots is None:
        spots = SpotFinder().find(frame.image, geom)
    return index_spots(spots.subset(spots.d_A <= d_max_A), geom, cell, **options)


#: orientations proposed by a guess (index_spots' ``guess``) -> the candidates' best or None
Guess = Callable[[Spots, "Geometry | PanelGeometry"], list[np.ndarray]]


def orient(spots: Spots, geom: Geometry | PanelGeometry, cell: UnitCell, d_min: float,
           eps: float, radius_px: float, guess: Guess | None = None
           ) -> tuple[np.ndarray, np.ndarray, float | None] | None:
    """The orientation of ``cell`` that explains the most ``spots`` (searched on the strongest
    SEARCH_SPOTS off the ice rings), the spots it explains, and what chance would where it
    was judged here (else None); None: too few spots. With ``guess`` (spots, geom ->
    orientations), its orientations are tried first, judged against chance, and the search
    runs only when none explains significantly more spots than chance."""
    search = spots.subset(~spots.ice)
    search = search.subset(np.arange(len(search)) < SEARCH_SPOTS)  # brightest first
    if guess is not None and len(search) >= 12:
        tried = [_explained(U, cell, spots, geom, d_min, eps, radius_px)
                 for U in guess(search, geom)[:CANDIDATES]]
        if tried:
            U, hit = max(tried, key=lambda t: t[1].sum())
            expected = chance(U @ cell.B(), spots, geom, d_min, eps, _radius_mm(geom, radius_px))
            if _significant(int(hit.sum()), expected):
                return U, hit, expected
    candidates = search_orientation(spot_q(search, geom.wavelength_A), cell, geom.wavelength_A)
    if not candidates:
        return None
    # of the candidates that index the most spots, the one whose predictions explain most
    U, hit = max((_explained(U, cell, spots, geom, d_min, eps, radius_px)
                  for U in candidates[:CANDIDATES]), key=lambda t: t[1].sum())
    return U, hit, None


def cell_orientations(T: np.ndarray, cell: UnitCell, tol: float = 0.04, tol_deg: float = 4.0,
                      max_index: int = 2) -> list[np.ndarray]:
    """Orientations U of ``cell`` whose edges are vectors of the lattice of basis ``T`` (rows,
    Å, lab frame; found without the cell, core/autoindex.py): edges of the cell's lengths
    (within ``tol``) and angles (within ``tol_deg``) among the lattice vectors of indices up
    to ``max_index`` (a centred cell's edges are short sums of a primitive basis's), spanning
    the cell's volume (a supercell's vectors do not); distinct orientations only."""
    n = np.array([m for m in itertools.product(range(-max_index, max_index + 1), repeat=3)
                  if any(m)], float)
    v = n @ T
    length = np.linalg.norm(v, axis=1)
    unit = v / length[:, None]
    near = [np.where(np.abs(length - x) < tol * x)[0] for x in cell.edges]
    cos = [math.cos(math.radians(x)) for x in (cell.alpha, cell.beta, cell.gamma)]
    slack = math.sin(math.radians(tol_deg))
    found = []
    for i in near[0]:
        for k in near[2][np.abs(unit[near[2]] @ unit[i] - cos[1]) < slack]:
            js = near[1][(np.abs(unit[near[1]] @ unit[i] - cos[2]) < slack) &
                         (np.abs(unit[near[1]] @ unit[k] - cos[0]) < slack)]
            for j in js:
                rows = np.stack([v[i], v[j], v[k]])
                if abs(np.linalg.det(rows) - cell.volume) < tol * cell.volume:
                    found.append(_rotation_of(rows, cell))
    return _distinct(found, cell, CANDIDATES)


def index_spots(spots: Spots, geom: Geometry | PanelGeometry,
                cell: UnitCell | tuple[float, ...], eps: float = EWALD_EPS, radius_px: float = 2.5,
                max_lattices: int = 5, refine_geometry: bool = True,
                guess: Guess | None = None) -> Indexing:
    """The lattices of ``cell`` that explain ``spots``, one after another among the spots
    still unexplained; on a flat detector the beam centre and distance are refined on the
    first (the header's are kept when no lattice is found). ``guess``: orientations to try
    before the cell's grid search (orient)."""
    cell = as_cell(cell)
    d_min = 0.98 * float(spots.d_A.min()) if len(spots) else 1.0
    header, left = geom, np.ones(len(spots), bool)
    by, rejected, first = np.full(len(spots), -1), None, 0
    found: list[Lattice] = []
    while len(found) < max_lattices and left.sum() >= 15:
        rest = spots.subset(left)
        best = orient(rest, geom, cell, d_min, eps, radius_px, guess)
        if best is None:
            break
        U, hit, expected = best
        if not found and refine_geometry and isinstance(geom, Geometry):
            U, geom, spots = _refine_geometry(U, cell, spots, geom, d_min, eps, radius_px)
            rest = spots  # no lattice yet: every spot is left
            U, hit = _explained(U, cell, rest, geom, d_min, eps, radius_px)
            expected = None  # judged again in the refined geometry
        if expected is None:
            expected = chance(U @ cell.B(), rest, geom, d_min, eps, _radius_mm(geom, radius_px))
        if not _significant(int(hit.sum()), expected) or \
                (found and hit.sum() < MIN_RELATIVE * first):
            rejected = (int(hit.sum()), expected)
            break
        first = first if found else int(hit.sum())  # the first lattice's, within eps
        hit |= explains(U @ cell.B(), rest, geom, d_min, MOSAIC_EPS * eps,
                        _radius_mm(geom, radius_px))  # and its partials (MOSAIC_EPS)
        found.append(Lattice(U, basis(U, cell), int(hit.sum()), expected))
        idx = np.where(left)[0][hit]
        by[idx] = len(found) - 1
        left[idx] = False
    return Indexing(spots, d_min, tuple(found), geom if found else header, by, rejected)


def frame_info(frame: Frame, result: Indexing) -> FrameInfo:
    """The frame's header info with the refined beam centre and distance (flat detectors)."""
    g = result.geom
    if isinstance(g, Geometry):
        return replace(frame.info, beam_center_px=g.beam_center_px, distance_mm=g.distance_mm)
    return frame.info


# --- comparing lattices ------------------------------------------------------------------------
_UNIMODULAR = np.array([m for m in itertools.product((-1, 0, 1), repeat=9)
                        if round(abs(np.linalg.det(np.reshape(m, (3, 3))))) == 1],
                       float).reshape(-1, 3, 3)


def _axis_symmetry(metric: np.ndarray) -> np.ndarray:
    """The integer changes of basis S (entries -1, 0, 1; det +-1) that leave the lattice's
    metric (rows a, b, c: G = A A^T) unchanged within 2 %: the axis swaps and sign changes of
    a = b or cubic cells, and the pseudo-symmetry of cells such as myoglobin's (|a + c| ~ |a|
    at beta 105.8 deg), whose bases index the same lattice points."""
    got = np.einsum("nij,jk,nlk->nil", _UNIMODULAR, metric, _UNIMODULAR)
    ok = np.abs(got - metric).reshape(len(got), -1).max(1) <= 0.02 * np.abs(metric).max()
    return _UNIMODULAR[ok]


def misorientation_deg(A: np.ndarray, B: np.ndarray) -> float:
    """The smallest rotation (deg) taking basis A (rows a, b, c) onto basis B, over the changes
    of basis that leave the cell's metric A A^T unchanged (_axis_symmetry), of the bases'
    handedness."""
    best = 180.0
    for S in _axis_symmetry(A @ A.T):
        if np.linalg.det(S) * np.linalg.det(A) * np.linalg.det(B) <= 0:
            continue
        u, _, vt = np.linalg.svd(np.linalg.solve(S @ A, B).T)  # rows b_i = R (S a)_i
        cos = (np.trace(u @ vt) - 1) / 2
        best = min(best, math.degrees(math.acos(np.clip(cos, -1, 1))))
    return best


def _distinct(Us: list[np.ndarray], cell: UnitCell, keep: int, min_deg: float = 0.2
              ) -> list[np.ndarray]:
    """The first ``keep`` orientations more than ``min_deg`` apart (up to the cell's axis
    symmetry): the rotations U K of one orientation, K = M S^T M^-1, are the same lattice."""
    M = cell.orthogonalization()
    Mi = np.linalg.inv(M)
    ks = np.array([M @ S.T @ Mi for S in _axis_symmetry(M.T @ M) if np.linalg.det(S) > 0])
    limit = 2 * math.cos(math.radians(min_deg)) + 1  # trace of a rotation by min_deg
    out: list[np.ndarray] = []
    for U in Us:
        if len(out) == keep:
            break
        # trace(V^T U K) over every kept V and symmetry K: the cosine of the angle between
        traces = np.einsum("vij,ik,nkj->vn", np.array(out), U, ks) if out else np.zeros(0)
        if traces.size and traces.max() > limit:
            continue
        out.append(U)
    return out
