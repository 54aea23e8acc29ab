"""Known-cell lattice counting (core/indexing.py) on shots whose lattices are known (nanoBragg's,
an independent simulator: tetragonal, hexagonal, orthorhombic, monoclinic and cubic cells), on
spots at random positions, on a 64-panel CSPAD frame, and on the real thaumatin grid-scan
hit."""

from __future__ import annotations

import json

import numpy as np
import pytest
from helpers import NANOBRAGG, REAL, at_random_azimuths, needs_nanobragg, needs_real

from xray_platform.core.indexing import as_cell, count_lattices, index_spots, misorientation_deg
from xray_platform.io.formats import read_frame
from xray_platform.physics import crystal as xtal

THAUMATIN = xtal.CRYSTAL_FORMS["thaumatin"].cell.edges


def ref(name: str) -> tuple[dict, object]:
    return json.loads((NANOBRAGG / f"{name}.json").read_text()), read_frame(
        NANOBRAGG / f"{name}.cbf")


@needs_nanobragg
def test_a_single_lattice_explains_every_spot_in_the_orientation_nanobragg_used() -> None:
    truth, frame = ref("ref_001")  # thaumatin, one lattice
    assert tuple(truth["unit_cell"][:3]) == THAUMATIN and truth["n_lattices"] == 1
    r = count_lattices(frame, THAUMATIN)
    assert r.n_lattices == 1 and r.explained >= 0.95 * r.n_spots > 100, r
    real_space = np.linalg.inv(np.asarray(truth["A_matrices"][0]))  # rows a, b, c (h = A^-1 q)
    assert misorientation_deg(r.lattices[0].A, real_space) < 0.3
    assert r.geom.distance_mm == pytest.approx(truth["distance_mm"], abs=0.5)


@needs_nanobragg
@pytest.mark.parametrize("name", ["ref_002", "ref_003", "ref_004"])
def test_cells_of_every_shape_index(name: str) -> None:
    """Hexagonal thermolysin (gamma 120), orthorhombic trypsin, monoclinic myoglobin (beta
    105.8): one lattice explains almost every spot, in nanoBragg's orientation."""
    truth, frame = ref(name)
    r = count_lattices(frame, truth["unit_cell"])
    assert r.n_lattices == 1 and r.explained >= 0.9 * r.n_spots, r.lattices
    real_space = np.linalg.inv(np.asarray(truth["A_matrices"][0]))
    assert misorientation_deg(r.lattices[0].A, real_space) < 0.3


@needs_nanobragg
def test_three_lattices_are_counted_and_a_blank_has_none() -> None:
    truth, frame = ref("ref_006")  # cubic insulin, three lattices
    cell = tuple(truth["unit_cell"][:3])
    r = count_lattices(frame, cell)
    assert truth["n_lattices"] == 3 and r.n_lattices == 3, r.lattices
    assert all(lat.n_spots > 5 * lat.chance for lat in r.lattices)
    _, blank = ref("ref_007")
    assert count_lattices(blank, cell).n_lattices == 0


def test_misorientation_is_the_rotation_between_bases_up_to_the_cell_axes() -> None:
    A = np.diag(THAUMATIN)
    rng = np.random.default_rng(3)
    for angle in (0.5, 2.0, 20.0):
        R = xtal.axis_angle_matrix(xtal.random_axis(rng), angle)
        assert misorientation_deg(A, A @ R.T) == pytest.approx(angle, abs=1e-6)
    swapped = A[[1, 0, 2]] * np.array([[1], [-1], [1]])  # a <-> b, a 4-fold about c
    assert misorientation_deg(A, swapped) == pytest.approx(0.0, abs=1e-6)
    assert misorientation_deg(A, A * np.array([[1], [1], [-1]])) == pytest.approx(0.0, abs=1e-6)
    ortho = np.diag([40.0, 60.0, 80.0])  # a != b: a turn of 90 deg about c is not symmetry
    assert misorientation_deg(ortho, ortho[[1, 0, 2]] * np.array([[1], [-1], [1]])) == \
        pytest.approx(90.0, abs=1e-6)


@needs_nanobragg
def test_spots_at_random_positions_index_on_no_lattice() -> None:
    """The significance test with geometry refinement on: a real shot's spots moved to random
    azimuths at their own radii."""
    truth, frame = ref("ref_006")
    geom = frame.geometry()
    r = count_lattices(frame, truth["unit_cell"])
    for seed in (0, 2, 3):
        null = index_spots(at_random_azimuths(r.spots, geom, seed), geom, truth["unit_cell"])
        assert null.n_lattices == 0 and null.geom == geom, null.lattices


@needs_real
def test_a_multi_panel_detector_indexes() -> None:
    """A CSPAD thermolysin still (64 ASICs, hexagonal cell): one lattice, far above chance
    (~830 spots, of which a random orientation explains ~40: 15 Poisson sigma above that)."""
    frame = read_frame(REAL / "cspad_thermolysin_0401.cbf")
    r = count_lattices(frame, xtal.CRYSTAL_FORMS["thermolysin"].cell)
    assert r.n_lattices >= 1, r.lattices
    n, chance = r.lattices[0].n_spots, r.lattices[0].chance
    assert n > 4 * chance and n > chance + 15 * np.sqrt(chance), r.lattices
    assert len(np.unique(r.spots.panel[r.explained_by == 0])) > 10  # across many panels


@needs_real
def test_the_real_thaumatin_hit_holds_more_than_one_lattice() -> None:
    """The DLS I24 grid-scan hit: one thaumatin lattice explains under half of its spots, and
    further lattices 0.3-5 deg from it explain most of the rest, far above chance."""
    r = count_lattices(read_frame(REAL / "thau_3_2_0002.cbf.bz2"), THAUMATIN)
    assert r.n_lattices >= 2, r
    first, second = r.lattices[:2]
    assert first.n_spots < 0.6 * r.n_spots and r.explained > 0.75 * r.n_spots, r
    assert second.n_spots > 10 * second.chance
    assert 0.3 < misorientation_deg(first.A, second.A) < 5
    assert r.geom.distance_mm == pytest.approx(351.0, rel=0.03)  # the header's, refined


@pytest.mark.parametrize("form", ["myoglobin", "ferritin_cubic", "thermolysin"])
def test_a_cells_orientation_is_read_from_the_basis_found_without_it(form: str) -> None:
    """cell_orientations: the known cell's orientation from a reduced primitive basis of its
    lattice (monoclinic; face-centred, whose reduced cell is rhombohedral; hexagonal), with
    the found basis's fitting errors; a cell the lattice does not have gives none."""
    from scipy.spatial.transform import Rotation

    from xray_platform.core.autoindex import reduce_basis
    from xray_platform.core.indexing import basis, cell_orientations

    cell = xtal.CRYSTAL_FORMS[form].cell
    U = Rotation.from_euler("zyx", [31, -57, 112], degrees=True).as_matrix()
    conventional = basis(U, cell)
    centring = {"ferritin_cubic": np.array([[0, .5, .5], [.5, 0, .5], [.5, .5, 0]])}
    primitive = centring.get(form, np.eye(3)) @ conventional
    noisy = reduce_basis(primitive) * (1 + np.array([[0.004], [-0.003], [0.002]]))
    found = cell_orientations(noisy, cell)
    assert found and misorientation_deg(basis(found[0], cell), conventional) < 0.5
    wrong = xtal.UnitCell(cell.a * 1.1, cell.b, cell.c, cell.alpha, cell.beta, cell.gamma)
    assert cell_orientations(noisy, wrong) == []


@needs_nanobragg
@pytest.mark.parametrize("name", ["ref_004", "ref_005"])
def test_known_cell_indexing_from_the_spots_own_basis_finds_what_the_search_does(
        name: str) -> None:
    """index_with_cell (the answer's known-cell path: the spots' own basis matched to the
    cell, the grid search only where that fails) finds the lattices count_lattices' grid
    search finds, in the same orientation (monoclinic myoglobin; proteinase K's two)."""
    from xray_platform.core.autoindex import guess_orientations, index_with_cell
    from xray_platform.core.spots import SpotFinder

    truth, frame = ref(name)
    geom = frame.geometry()
    spots = SpotFinder().find(frame.image, geom)
    searched = count_lattices(frame, truth["unit_cell"], spots=spots)
    fast = index_with_cell(spots, geom, truth["unit_cell"])
    assert fast.n_lattices == searched.n_lattices >= 1
    assert abs(fast.explained - searched.explained) <= 0.05 * searched.explained
    assert misorientation_deg(fast.lattices[0].A, searched.lattices[0].A) < 0.3
    guessed = guess_orientations(as_cell(truth["unit_cell"]))(spots.subset(~spots.ice), geom)
    assert guessed, "the spots' own basis did not match the cell: the fast path was not taken"
