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
