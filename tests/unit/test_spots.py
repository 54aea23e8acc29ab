"""Spots at full resolution (core/spots.py): against nanoBragg's reflection lists (another
simulator's truth), on synthetic frames with spots at known sub-pixel positions, on pure noise
(photon counts and ADUs), and on real frames of every detector layout."""

from __future__ import annotations

import json

import numpy as np
import pytest
from helpers import NANOBRAGG, REAL, needs_nanobragg, needs_real
from scipy.spatial import cKDTree

from xray_platform.core.spots import SpotFinder, d_spacing, lab_position, on_ice
from xray_platform.io.formats import read_frame
from xray_platform.physics.geometry import DetectorPreset, Geometry

FINDER = SpotFinder()


def _flat(seed: int, background: float, spots: list[tuple[float, float, float]],
          gain: float = 1.0) -> tuple[np.ndarray, Geometry]:
    """A 1000 x 1000 frame (0.172 mm, 200 mm, 1 Å): Poisson background + Gaussian spots
    (slow, fast, photons; sigma 0.7 px), times ``gain`` (ADU per photon)."""
    geom = Geometry(_square(), 200.0, 1.0, (480.3, 510.7))
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:1000, :1000]
    mean = np.full((1000, 1000), background)
    for s, f, photons in spots:
        mean += photons / (2 * np.pi * 0.49) * np.exp(-((yy - s) ** 2 + (xx - f) ** 2) / 0.98)
    return (rng.poisson(mean) * gain).astype(np.float32), geom


def _square() -> DetectorPreset:
    return DetectorPreset("square", "1000 x 1000 test panel", 1000, 1000, 0.172, 1000, 1000,
                          0, 0, 10**6)


def test_spots_at_known_positions_are_found_to_a_tenth_of_a_pixel() -> None:
    rng = np.random.default_rng(1)
    truth = [(s, f, p) for s, f, p in zip(rng.uniform(60, 940, 60), rng.uniform(60, 940, 60),
                                          rng.uniform(80, 2000, 60), strict=True)]
    img, geom = _flat(2, 1.5, truth)
    spots = FINDER.find(img, geom)
    found = np.stack([spots.slow, spots.fast], 1)
    dist, j = cKDTree(found).query([(s, f) for s, f, _ in truth])
    assert (dist < 0.5).all() and np.median(dist) < 0.1, np.sort(dist)[-5:]
    assert len(spots) == len(truth)  # and nothing else
    photons = np.array([p for _, _, p in truth])
    bright = photons > 500  # the tails of a spot below 3 sigma are not summed: weak ones low
    np.testing.assert_allclose(spots.intensity[j][bright], photons[bright], rtol=0.1)
    np.testing.assert_allclose(spots.intensity[j], photons, rtol=0.25)
    assert np.all(spots.panel == 0) and np.all(spots.n_px >= 2)


@pytest.mark.parametrize("background,gain", [(0.05, 1.0), (1.0, 1.0), (20.0, 1.0), (1.0, 30.0)])
def test_noise_alone_gives_almost_no_spots(background: float, gain: float) -> None:
    img, geom = _flat(3, background, [], gain)
    assert len(FINDER.find(img, geom)) <= 2  # 10^6 pixels of Poisson noise (or ADUs of it)


def test_lab_positions_and_resolution_follow_the_geometry() -> None:
    geom = Geometry(_square(), 200.0, 1.0, (480.3, 510.7))
    f, s = np.array([480.3, 900.0, 10.0]), np.array([510.7, 100.0, 990.0])
    xyz = lab_position(geom, np.zeros(3, int), s, f)
    np.testing.assert_allclose(xyz[0], [0, 0, 200])
    np.testing.assert_allclose(d_spacing(xyz[1:], 1.0), geom.d_spacing(f[1:], s[1:]), rtol=1e-9)
    assert list(on_ice(np.array([3.897, 3.55, 2.25]))) == [True, False, True]


@needs_nanobragg
@pytest.mark.parametrize("shot", range(8))
def test_nanobragg_reflections_are_found_where_they_are(shot: int) -> None:
    path = NANOBRAGG / f"ref_{shot:03d}.cbf"
    frame = read_frame(path)
    spots = FINDER.find(frame.image, frame.geometry())
    ref = json.loads(path.with_suffix(".json").read_text())
    col = {c: i for i, c in enumerate(ref["reflection_columns"])}
    r = np.array(ref["reflections"]).reshape(-1, len(col))
    if not ref["hit"]:
        assert len(spots) <= 2
        return
    strong = r[r[:, col["I_over_sigma"]] >= 5]
    at = np.stack([spots.slow, spots.fast], 1)
    dist, _ = cKDTree(at).query(strong[:, [col["s"], col["f"]]])
    assert (dist < 1.5).mean() >= 0.85  # recall of the clear reflections
    assert np.median(dist[dist < 1.5]) < 0.5  # sub-pixel
    near, _ = cKDTree(r[:, [col["s"], col["f"]]]).query(at)
    assert (near < 1.5).mean() >= 0.9  # precision: spots are reflections


@needs_real
@pytest.mark.parametrize("name,low,high", [
    ("thau_3_2_0002.cbf.bz2", 500, 3000),  # the real grid-scan hit (PILATUS3 6M)
    ("thau_3_2_0017.cbf.bz2", 0, 5),  # the real miss
    ("cspad_thermolysin_0401.cbf", 300, 5000),  # 64 CSPAD ASICs in ADUs
    ("DLS_I23_P12M_thau_00001.cbf.gz", 50, 2000),  # 24 panels on a cylinder
])
def test_real_frames(name: str, low: int, high: int) -> None:
    frame = read_frame(REAL / name)
    geom = frame.geometry()
    spots = FINDER.find(frame.image, geom)
    assert low <= len(spots) <= high, len(spots)
    if not len(spots):
        return
    assert np.all(spots.d_A > 1.0) and np.all(np.isfinite(spots.d_A))
    if frame.info.panels:  # spots on many panels, each inside its own panel
        assert len(np.unique(spots.panel)) > 5
        _, ns, nf = geom.shape
        assert np.all((spots.fast > -0.5) & (spots.fast < nf - 0.5))
        assert np.all((spots.slow > -0.5) & (spots.slow < ns - 0.5))
