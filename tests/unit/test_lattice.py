"""A lattice on a still (core/lattice.py), checked against nanoBragg's truth: its A matrices
predict its reflection list where nanoBragg put it, on the flat detector and on the same
detector described as a tilted panel; the orientation fitted to indexed spots is nanoBragg's U,
for every crystal system of the reference shots."""

from __future__ import annotations

import json

import numpy as np
import pytest
from helpers import NANOBRAGG, needs_nanobragg
from scipy.spatial import cKDTree

from xray_platform.core.lattice import angle_deg, as_panels, fit_orientation, predict
from xray_platform.core.spots import SpotFinder
from xray_platform.io.formats import read_frame
from xray_platform.physics.crystal import UnitCell
from xray_platform.physics.panels import Panel, PanelGeometry, rotation

pytestmark = needs_nanobragg


def _ref(shot: int) -> tuple[dict, np.ndarray, dict]:
    ref = json.loads((NANOBRAGG / f"ref_{shot:03d}.json").read_text())
    col = {c: i for i, c in enumerate(ref["reflection_columns"])}
    return ref, np.array(ref["reflections"]).reshape(-1, len(col)), col


@pytest.mark.parametrize("shot", [0, 2, 5, 6])
def test_truth_predicts_the_reflection_list(shot: int) -> None:
    ref, r, col = _ref(shot)
    geom = read_frame(NANOBRAGG / f"ref_{shot:03d}.cbf").geometry()
    strong = r[r[:, col["I_over_sigma"]] >= 5]
    for lat, A in enumerate(ref["A_matrices"]):
        mine = strong[strong[:, col["lattice"]] == lat]
        pred = predict(np.array(A), geom, d_min=0.98 * mine[:, col["d_A"]].min(), eps=0.004)
        by_hkl = {tuple(h): (s, f) for h, s, f in zip(pred.hkl.astype(int), pred.slow,
                                                      pred.fast, strict=True)}
        got = np.array([by_hkl.get(tuple(h.astype(int)), (np.nan, np.nan))
                        for h in mine[:, [col["h"], col["k"], col["l"]]]])
        off = np.hypot(*(got - mine[:, [col["s"], col["f"]]]).T)
        assert np.nanmax(off) < 0.05, f"lattice {lat}: {np.nanmax(off)} px"  # same positions
        assert np.isfinite(off).mean() > 0.95  # and (almost) all of them within eps


def test_a_tilted_panel_predicts_what_the_flat_detector_does() -> None:
    ref, _, _ = _ref(1)
    geom = read_frame(NANOBRAGG / "ref_001.cbf").geometry()
    A = np.array(ref["A_matrices"][0])
    flat = predict(A, geom, 2.0, 0.004)
    one = as_panels(geom)  # the same detector as one panel, then turned about the beam
    R = rotation((0, 0, 1), 30.0)
    p = one.panels[0]
    turned = Panel(tuple(R @ np.array(p.origin_mm)), tuple(R @ np.array(p.fast)),
                   tuple(R @ np.array(p.slow)), p.pixel_mm, p.n_fast, p.n_slow)
    geom_t = PanelGeometry((turned,), one.wavelength_A, "turned", one.max_counts)
    pred = predict(rotation((0, 0, 1), 30.0) @ A, geom_t, 2.0, 0.004)  # crystal turned too
    np.testing.assert_allclose(pred.xyz_mm, (R @ flat.xyz_mm.T).T, atol=1e-9)
    np.testing.assert_allclose(pred.fast, flat.fast, atol=1e-9)


@pytest.mark.parametrize("shot", range(7))
def test_the_orientation_fitted_to_indexed_spots_is_nanobraggs(shot: int) -> None:
    """Spots found in the image, indexed by their nearest prediction of the true lattice: the
    fitted U puts its predictions on the spots as well as nanoBragg's U does, and lies within
    0.5 deg of it (a still pins rotations about the beam; about axes across it, which only
    change excitation errors, mosaic spots leave ~0.1-0.3 deg of play)."""
    ref, _, _ = _ref(shot)
    frame = read_frame(NANOBRAGG / f"ref_{shot:03d}.cbf")
    geom = frame.geometry()
    spots = SpotFinder().find(frame.image, geom)
    B = np.array(ref["B_matrix"])
    np.testing.assert_allclose(UnitCell(*ref["unit_cell"]).B(), B, rtol=1e-6, atol=1e-12)
    U = np.array(ref["U_matrices"][0])
    d_min = 0.98 * spots.d_A.min()
    pred = predict(U @ B, geom, d_min, 0.004)
    dist, j = cKDTree(pred.xyz_mm).query(spots.xyz_mm)
    near = dist < 1.5 * geom.pixel_mm
    assert near.sum() >= 30
    q = spots.s1(geom.wavelength_A) - np.array([0, 0, 1 / geom.wavelength_A])
    fitted = fit_orientation(B, q[near], pred.hkl[j[near]], geom.wavelength_A)
    assert angle_deg(fitted, U) < 0.5, angle_deg(fitted, U)

    def residual(R: np.ndarray) -> float:  # px from each indexed spot to its own prediction
        p = predict(R @ B, geom, d_min, 0.01)
        at = {tuple(h): x for h, x in zip(p.hkl.astype(int), p.xyz_mm, strict=True)}
        off = [np.linalg.norm(at[tuple(h)] - x) for h, x in zip(
            pred.hkl[j[near]].astype(int), spots.xyz_mm[near], strict=True) if tuple(h) in at]
        return float(np.median(off)) / geom.pixel_mm

    assert residual(fitted) <= residual(U) + 0.05
