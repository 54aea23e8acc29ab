"""The classical per-image d_min from spots (core/dmin.py)."""

from __future__ import annotations

import numpy as np
import pytest

from xray_platform.core.dmin import SpotResolution, disagree
from xray_platform.core.hitfinder import HIT_GRID, HitFinder
from xray_platform.core.ice import IceFinder
from xray_platform.physics.presets import preset
from xray_platform.physics.sampling import sample_params, shot_seed
from xray_platform.physics.simulate import simulate

N, CELL = HIT_GRID.size, HIT_GRID.cell


def _spots(d_min: float, n: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """n spot cells uniform over the disc out to 1/d_min (as a still's spots on the grid),
    with I/sigma falling with d*^2."""
    rng = np.random.default_rng(seed)
    s = np.sqrt(rng.uniform(0, 1, n)) / d_min  # d* (1/Å): area-uniform in the disc
    phi = rng.uniform(0, 2 * np.pi, n)
    rows = np.floor(N / 2 + s * np.sin(phi) / CELL).astype(int)
    cols = np.floor(N / 2 + s * np.cos(phi) / CELL).astype(int)
    sig = 6.0 + 200.0 * np.exp(-4.0 * (s * d_min) ** 2) * rng.uniform(0.2, 1.0, n)
    return rows, cols, sig


@pytest.mark.parametrize("d_min", [1.6, 2.5, 4.0])
def test_spots_out_to_a_resolution_give_it_back(d_min) -> None:
    d, sigma = SpotResolution().estimate(*_spots(d_min, 300))
    # the 98th percentile of d* of a disc out to 1/d_min is at sqrt(0.98) of it
    assert d == pytest.approx(d_min / np.sqrt(0.98), rel=0.03)
    assert 0.05 <= sigma < 0.1 * d_min


def test_few_spots_give_no_estimate_and_ice_ring_spots_do_not_count() -> None:
    rows, cols, sig = _spots(2.0, 14)
    assert SpotResolution().estimate(rows, cols, sig) == (None, None)
    rows, cols, sig = _spots(2.0, 200)
    near = np.zeros((N, N), bool)
    r = np.hypot(rows + 0.5 - N / 2, cols + 0.5 - N / 2) * CELL
    outer = r > 0.45  # spots beyond 2.2 Å, treated as on an excluded ring
    near[rows[outer], cols[outer]] = True
    d, _ = SpotResolution().estimate(rows, cols, sig, exclude=near)
    assert d > 2.2
    with pytest.raises(ValueError, match="method"):
        SpotResolution(method="magic")


def test_the_dials_two_line_method_meets_where_the_strongest_spots_fade() -> None:
    d, sigma = SpotResolution(method="dials").estimate(*_spots(2.0, 400))
    assert 1.8 < d < 2.4 and sigma >= 0.05


def test_disagreement_needs_both_answers_and_a_gap_beyond_their_sigmas() -> None:
    assert disagree(2.0, 0.1, 2.1, 0.1) is False
    assert disagree(2.0, 0.1, 3.0, 0.1) is True
    assert disagree(2.0, 0.1, None, None) is None


def test_on_simulated_hits_it_follows_the_d_vis_label() -> None:
    cfg, hf, near = preset("master").sim, HitFinder(), IceFinder().near_ice()
    truth, est = [], []
    for i in range(80):
        shot = simulate(sample_params(shot_seed(7, i), cfg), HIT_GRID)
        if shot.record["hit"]:
            d, _ = SpotResolution().estimate(*hf.spot_list(shot.inputs), exclude=near)
            if d is not None:
                truth.append(shot.record["d_vis"])
                est.append(d)
    assert len(truth) >= 30
    rank = np.corrcoef(np.argsort(np.argsort(truth)), np.argsort(np.argsort(est)))[0, 1]
    assert rank > 0.6  # 0.85 on 281 hits (benchmarks/dmin.py); random spots give ~0
