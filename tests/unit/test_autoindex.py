"""Lattices without a known cell (core/autoindex.py): the basis nanoBragg's crystals were made
with is found from the spots alone (tetragonal to monoclinic, hexagonal, body-centred cubic),
three insulin lattices are counted, random spots index on nothing, and real frames of a
64-ASIC CSPAD and a 24-panel PILATUS 12M give their crystals' cells."""

from __future__ import annotations

import json

import numpy as np
import pytest
from helpers import NANOBRAGG, REAL, at_random_azimuths, needs_nanobragg, needs_real

from xray_platform.core.autoindex import autoindex, reduce_basis
from xray_platform.core.spots import SpotFinder
from xray_platform.io.formats import read_frame


def _run(path):
    frame = read_frame(path)
    geom = frame.geometry()
    return autoindex(SpotFinder().find(frame.image, geom), geom), geom


def test_reduction_undoes_a_shear() -> None:
    T = np.diag([40.0, 55.0, 120.0])
    sheared = T.copy()
    sheared[2] += 3 * T[0] - 2 * T[1]
    sheared[1] += T[0]
    np.testing.assert_allclose(np.linalg.norm(reduce_basis(sheared), axis=1), [40, 55, 120])
    assert np.linalg.det(reduce_basis(sheared)) > 0


@needs_nanobragg
@pytest.mark.parametrize("shot", range(5))
def test_a_single_crystal_s_cell_is_found_from_its_spots(shot: int) -> None:
    path = NANOBRAGG / f"ref_{shot:03d}.cbf"
    truth = json.loads(path.with_suffix(".json").read_text())
    r, _ = _run(path)
    assert r.n_lattices == 1, r.lattices
    lat = r.lattices[0]
    assert lat.n_spots >= 0.9 * len(r.spots) and lat.n_spots > 5 * lat.chance
    true_edges = np.sort(np.linalg.norm(reduce_basis(np.linalg.inv(
        np.asarray(truth["A_matrices"][0]))), axis=1))
    np.testing.assert_allclose(np.sort(lat.cell[:3]), true_edges, rtol=0.02)


@needs_nanobragg
def test_three_lattices_and_a_blank() -> None:
    r, _ = _run(NANOBRAGG / "ref_006.cbf")  # cubic insulin, I213: 3 lattices
    assert r.n_lattices == 3, r.lattices
    assert _run(NANOBRAGG / "ref_007.cbf")[0].n_lattices == 0


@needs_nanobragg
def test_spots_at_random_positions_index_on_nothing() -> None:
    r, geom = _run(NANOBRAGG / "ref_001.cbf")
    for seed in (0, 1, 2):
        assert autoindex(at_random_azimuths(r.spots, geom, seed), geom).n_lattices == 0


@needs_real
@pytest.mark.parametrize("name,edges", [
    ("cspad_thermolysin_0401.cbf", (93.0, 93.0, 130.4)),  # 64 ASICs; thermolysin P6122
    ("DLS_I23_P12M_thau_00001.cbf.gz", (57.8, 57.8, 150.2)),  # 24 panels; thaumatin
])
def test_real_multi_panel_frames_give_their_crystal_s_cell(name: str, edges) -> None:
    r, _ = _run(REAL / name)
    assert r.n_lattices >= 1
    np.testing.assert_allclose(np.sort(r.lattices[0].cell[:3]), edges, rtol=0.02)


@needs_real
def test_the_real_thaumatin_hit_s_close_lattices_are_found_without_the_cell() -> None:
    """The DLS I24 grid-scan hit: with thaumatin's cell, four lattices 0.6-2 deg apart
    (core/indexing.py). Without it, the 1-D search finds only vectors of the a-b plane; the
    2-D search of the third vector (third_vector) completes them. The header's distance is
    ~1.5 % long (the known-cell search refines it), so the cells come out ~1.5 % large."""
    r, geom = _run(REAL / "thau_3_2_0002.cbf.bz2")
    assert r.n_lattices >= 2, r.lattices
    for lat in r.lattices:
        np.testing.assert_allclose(np.sort(lat.cell[:3]), (57.8, 57.8, 150.2), rtol=0.035)
        np.testing.assert_allclose(lat.cell[3:], 90.0, atol=1.5)
        assert lat.n_spots > 4 * lat.chance
    for seed in (0, 1):  # its 893 spots at random azimuths: dense, and no lattice
        assert autoindex(at_random_azimuths(r.spots, geom, seed), geom).n_lattices == 0


def _spots_of(T: np.ndarray, seed: int, centring=None) -> tuple[np.ndarray, np.ndarray]:
    """Reciprocal vectors q (1/Å) of a lattice of real basis T (rows) in a random orientation
    on a still's Ewald sphere (1 Å, eps 0.004 /Å) to 2.5 Å, obeying ``centring`` (hkl ->
    bool) if given; and the rotated basis."""
    rng = np.random.default_rng(seed)
    R, _ = np.linalg.qr(rng.normal(size=(3, 3)))
    A = np.linalg.inv(T @ R.T)  # q = A h
    r = np.arange(-80, 81)
    hkl = np.stack(np.meshgrid(r, r, r, indexing="ij"), -1).reshape(-1, 3)
    if centring is not None:
        hkl = hkl[centring(hkl)]
    q = hkl @ A.T
    s0 = np.array([0, 0, 1.0])
    near = (np.abs(np.linalg.norm(q + s0, axis=1) - 1.0) < 0.004) & \
        (np.linalg.norm(q, axis=1) < 0.4) & (np.linalg.norm(q, axis=1) > 0)
    return q[near], T @ R.T


def test_a_face_centred_cell_is_reduced_to_its_primitive_cell() -> None:
    """Ferritin-like F cubic (184 Å): only h, k, l all even or all odd reflect; the cell
    found indexes them and is the primitive one (a quarter of the volume: 130 Å, 60 deg)."""
    from xray_platform.core.autoindex import find_basis

    q, _ = _spots_of(np.diag([184.0] * 3), 0,
                     lambda h: (h % 2 == 0).all(1) | (h % 2 == 1).all(1))
    T = find_basis(q)
    assert T is not None
    assert abs(np.linalg.det(T)) == pytest.approx(184.0 ** 3 / 4, rel=0.03)
    np.testing.assert_allclose(np.linalg.norm(T, axis=1), 184 / 2 ** 0.5, rtol=0.03)


def test_the_third_vector_of_a_zone_is_found_from_two() -> None:
    """Given a and b of a triclinic cell, the 2-D search returns a vector c with (a, b, c) a
    basis of the lattice: the same volume, every spot on integer indices."""
    from xray_platform.core.autoindex import _indexed, third_vector

    q, T = _spots_of(np.array([[52.0, 0, 0], [-9.0, 61.0, 0], [14.0, -7.0, 83.0]]), 3)
    c = third_vector(T[0], T[1], q)
    found = np.stack([T[0], T[1], c])
    assert abs(np.linalg.det(found)) == pytest.approx(abs(np.linalg.det(T)), rel=0.01)
    assert _indexed(found, q).mean() > 0.95


def test_a_strong_single_crystal_is_one_lattice(monkeypatch: pytest.MonkeyPatch) -> None:
    """A simulated glucose isomerase still with ~4,000 spots (one lattice): its partials and
    leftovers are its own, not turned copies of it (MOSAIC_EPS, MIN_RELATIVE); without those
    two rules the same spots give further lattices."""
    from dataclasses import replace

    from xray_platform.core import autoindex as ai
    from xray_platform.core.verdict_data import simulated_frame
    from xray_platform.physics.presets import preset
    from xray_platform.physics.simulate import simulate

    p0 = preset("resmos2").with_detector("pilatus6m")
    first = p0.params(1, 0)  # benchmarks/predict.py's one-geometry set, its shot 11
    p = replace(p0.params(1, 11), distance_mm=first.distance_mm,
                wavelength_A=first.wavelength_A, beam_center_px=first.beam_center_px,
                beamstop=first.beamstop)
    assert p.n_lattices == 1 and p.crystal_form == "glucose_isomerase"
    frame = simulated_frame(p, simulate(p, full_frame=True).frame)
    geom = frame.geometry()
    spots = SpotFinder().find(frame.image, geom)
    assert len(spots) > 3000
    assert autoindex(spots, geom).n_lattices == 1
    monkeypatch.setattr(ai, "MIN_RELATIVE", 0.0)
    monkeypatch.setattr(ai, "MOSAIC_EPS", 1.0)
    assert autoindex(spots, geom).n_lattices > 1


@pytest.mark.parametrize("index", [7, 38])
def test_faint_lattices_sharing_a_frame_are_each_found(index: int) -> None:
    """Held-out zoo shots that indexed on nothing before 2026-12-08: four faint carbonic
    anhydrase lattices on a PILATUS 6M (37-116 spots each; the triple of candidate vectors
    that puts the most spots on integer indices mixes lattices and predicts none), and two
    proteinase K lattices on a CSPAD (34 and 48 spots; the second needs the first's cell).
    Each lattice found is one of the shot's own (most of its spots are that lattice's)."""
    from xray_platform.core.indexing import explains
    from xray_platform.physics.presets import preset
    from xray_platform.physics.simulate import simulate

    p = preset("zoo-lattice-uniform@2026.12").params(2, index)
    geom = p.geometry
    r = autoindex(SpotFinder().find(simulate(p, full_frame=True).frame, geom), geom)
    assert r.n_lattices >= 2, r.lattices
    d_min = 0.98 * float(r.spots.d_A.min())
    truth = [explains(A, r.spots, geom, d_min, 0.012, 2.5 * geom.pixel_mm)
             for A in p.A_matrices()]
    matched = set()
    for k in range(r.n_lattices):
        mine = r.explained_by == k
        overlap = [int((t & mine).sum()) for t in truth]
        assert max(overlap) >= 0.8 * mine.sum(), (k, overlap, mine.sum())
        matched.add(int(np.argmax(overlap)))
    assert len(matched) >= 2


@needs_nanobragg
def test_a_lattice_turned_down_is_reported_with_its_significance() -> None:
    """The verdict reads the best lattice autoindex turned down: a crystal with too few spots
    to accept (20 of myoglobin's, under MIN_SPOTS) is turned down far above chance; random
    spots beside a crystal give a further lattice no better than chance."""
    from dataclasses import fields, replace

    from xray_platform.core.autoindex import MIN_SPOTS, sigma_above

    frame = read_frame(NANOBRAGG / "ref_004.cbf")
    geom = frame.geometry()
    spots = SpotFinder().find(frame.image, geom)
    few = spots.subset(np.arange(len(spots)) < MIN_SPOTS - 5)
    r = autoindex(few, geom)
    assert r.n_lattices == 0 and r.rejected is not None and sigma_above(*r.rejected) > 10
    noise = at_random_azimuths(spots.subset(np.arange(len(spots)) < 40), geom, seed=3)
    both = replace(spots, **{f.name: np.concatenate([getattr(spots, f.name),
                                                      getattr(noise, f.name)])
                             for f in fields(spots)})
    r = autoindex(both, geom)
    assert r.n_lattices == 1 and r.rejected is not None and sigma_above(*r.rejected) < 6
