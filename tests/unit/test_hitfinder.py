"""The classical hit finder (xray_platform/hitfinder.py): spot counts on the reciprocal-space grid
against exact simulated labels, the full-frame path, real frames and edge cases.

Accuracy figures on larger samples: benchmarks/hitfinder.py (not a test).
"""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest
import torch
from helpers import REAL, needs_real

from xray_platform.core.hitfinder import HIT_GRID, HitFinder
from xray_platform.physics.labels import MIN_HIT_SPOTS
from xray_platform.physics.presets import PRESETS
from xray_platform.physics.qgrid import QGrid, frame_to_grid
from xray_platform.physics.sampling import sample_params, shot_seed
from xray_platform.physics.simulate import simulate

FINDER = HitFinder()
#: the fixed-seed sample of the accuracy test (64 shots of the master distribution)
ACCURACY_SEED = 20240
ACCURACY_SHOTS = 64


@pytest.fixture
def one_thread():
    """Simulate on one torch thread: on a loaded 2-core machine two threads oversubscribe and
    the 64 shots take 25-60 s instead of ~2 s (measured)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def _max_of_k_poisson(rng: np.random.Generator, mu: float | np.ndarray, k: int,
                      size: int = 256) -> np.ndarray:
    """A background grid: every cell the maximum of k Poisson(mu) pixels (what a cell holds)."""
    mu = np.broadcast_to(np.asarray(mu, dtype=float), (size, size))
    return rng.poisson(mu[..., None], size=(size, size, k)).max(-1).astype(np.float32)


def _separated_positions(rng: np.random.Generator, n: int, size: int = 256) -> np.ndarray:
    pos: list[tuple[int, int]] = []
    while len(pos) < n:
        y, x = (int(v) for v in rng.integers(8, size - 8, 2))
        if all(abs(y - a) > 4 or abs(x - b) > 4 for a, b in pos):
            pos.append((y, x))
    return np.array(pos)


# --- definitions and validation ----------------------------------------------------------
def test_defaults_share_the_label_definition() -> None:
    assert FINDER.min_spots == MIN_HIT_SPOTS == 15
    assert HIT_GRID == QGrid(256, 1.2)
    with pytest.raises(ValueError):
        HitFinder(min_spots=0)
    with pytest.raises(ValueError):
        HitFinder(n_sigma=float("nan"))
    with pytest.raises(ValueError):
        HitFinder(clip_quantile=0.0)
    with pytest.raises(ValueError):
        HitFinder(ring_width_cells=0.0)


# --- synthetic grids with known answers -------------------------------------------------
@pytest.mark.parametrize(("mu", "k"), [(0.05, 8), (0.5, 4), (2.0, 9), (5.0, 16), (30.0, 200)])
def test_pure_background_has_few_spots(mu: float, k: int) -> None:
    """No spots on a pure max-of-k Poisson background, from near-empty to strong, whatever the
    number of pixels a cell covers (the measured-spread test; module doc step 3)."""
    grid = _max_of_k_poisson(np.random.default_rng(1), mu, k)
    hit, n = FINDER.is_hit(grid)
    assert not hit and n <= 10


def test_sharp_rings_and_polarisation_are_background() -> None:
    """Ice-like rings narrower than a cell and a +-30 % polarisation modulation: no hit."""
    n, sub = 256, 4
    c = (np.arange(n * sub) + 0.5) / sub - n / 2
    xx, yy = np.meshgrid(c, c)
    r, phi = np.hypot(xx, yy), np.arctan2(yy, xx)
    mu = (3.0 * (1 + 0.3 * np.cos(2 * phi)) + 50 * np.exp(-0.5 * ((r - 80.3) / 0.25) ** 2)
          + 25 * np.exp(-0.5 * ((r - 101.7) / 0.25) ** 2))
    mu = mu.reshape(n, sub, n, sub).max(axis=(1, 3))  # a cell sees the ring if it crosses it
    grid = _max_of_k_poisson(np.random.default_rng(2), mu, 16)
    assert FINDER.count_spots(grid) <= 10


def test_injected_spots_are_counted_once_and_masked_cells_ignored() -> None:
    rng = np.random.default_rng(3)
    grid = _max_of_k_poisson(rng, 2.0, 20)
    ys, xs = _separated_positions(rng, 40).T
    grid[ys, xs] += 30.0
    mask = FINDER.spot_mask(grid)
    assert mask[ys, xs].all()  # every injected spot found
    n = FINDER.count_spots(grid)
    assert 40 <= n <= 45  # plus at most a few noise peaks
    assert FINDER.is_hit(grid) == (True, n)
    # a spot split over two cells (a cell boundary) counts once
    y, x = int(ys[0]), int(xs[0])
    split = grid.copy()
    split[y, x + 1] = split[y, x]
    assert FINDER.count_spots(split) == n
    # spots under masked cells do not count
    half = grid.copy()
    half[:, :128] = -1.0
    inside = int((xs >= 128).sum())
    assert inside <= FINDER.count_spots(half) <= inside + 3


# --- edge cases --------------------------------------------------------------------------
def test_edge_cases() -> None:
    masked = np.full((256, 256), -1.0, dtype=np.float32)
    assert FINDER.count_spots(masked) == 0
    assert FINDER.is_hit(masked) == (False, 0)
    assert FINDER.count_spots_batch(np.stack([masked, masked])).tolist() == [0, 0]
    assert FINDER.count_spots(np.zeros((256, 256))) == 0  # all-zero, no spread

    bad = np.zeros((256, 256), dtype=np.float32)
    bad[3, 4] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        FINDER.count_spots(bad)
    with pytest.raises(ValueError, match="NaN"):
        FINDER.count_spots_batch(bad[None])
    with pytest.raises(ValueError):
        FINDER.count_spots(np.zeros((2, 64, 64)))  # a batch to the single-grid call
    with pytest.raises(ValueError):
        FINDER.count_spots(np.zeros(64))
    with pytest.raises(ValueError):
        FINDER.count_spots_batch(np.zeros((64, 64)))  # one grid to the batch call
    assert FINDER.count_spots_batch(np.zeros((0, 256, 256))).shape == (0,)


def test_batch_equals_single_and_torch_equals_numpy() -> None:
    rng = np.random.default_rng(4)
    grids, spots = [], []
    for i, mu in enumerate((0.3, 2.0, 8.0, 1.0, 0.0, 4.0, 20.0)):  # > the batch chunk
        g = _max_of_k_poisson(rng, mu, 10)
        ys, xs = _separated_positions(rng, 5 * i).T if i else (np.zeros(0, int),) * 2
        g[ys, xs] += 10 * (mu + 3)
        g[:, 200:] = -1.0 if i % 2 else g[:, 200:]
        grids.append(g)
        spots.append((ys, xs))
    batch = np.stack(grids)
    single = [FINDER.count_spots(g) for g in grids]
    assert FINDER.count_spots_batch(batch).tolist() == single
    assert FINDER.count_spots_batch(torch.from_numpy(batch)).tolist() == single
    assert FINDER.count_spots(torch.from_numpy(grids[3])) == single[3]
    hits, n = FINDER.is_hit_batch(batch)
    assert n.tolist() == single and hits.tolist() == [v >= MIN_HIT_SPOTS for v in single]
    # any grid size works (the background groups are laid out per shape): a crop finds the
    # spots inside it, and at most a few noise peaks more
    ys, xs = spots[5]  # 25 spots on a mean-4 background
    inside = int(((ys < 128) & (xs < 160)).sum())
    assert inside >= 5
    assert inside <= FINDER.count_spots(batch[5, :128, :160]) <= inside + 3


# --- simulated shots with exact labels ---------------------------------------------------
def test_accuracy_on_simulated_shots(one_thread: None) -> None:
    """is_hit vs the exact label (>= 15 reflections with I/sigma >= 3) on a fixed sample of the
    master distribution (both detectors, 5 % blanks, crystals from very weak to very strong).
    Measured: 61/64 = 0.953 on this sample; ~0.95-0.96 on 1,500 shots (benchmarks/hitfinder.py).
    """
    cfg = PRESETS["master"].sim
    grids, truth = [], []
    for i in range(ACCURACY_SHOTS):
        shot = simulate(sample_params(shot_seed(ACCURACY_SEED, i), cfg), HIT_GRID)
        grids.append(shot.inputs)
        truth.append(shot.record["hit"])
    truth_a = np.array(truth)
    assert 10 <= truth_a.sum() <= ACCURACY_SHOTS - 10  # both classes, well represented
    hit, _ = FINDER.is_hit_batch(np.stack(grids))
    accuracy = float((hit == truth_a).mean())
    assert accuracy >= 0.9, f"accuracy {accuracy:.3f}"
    # neither class is sacrificed for the other
    assert (hit & truth_a).sum() / truth_a.sum() >= 0.85  # recall
    assert (~hit & ~truth_a).sum() / (~truth_a).sum() >= 0.85  # specificity


def test_fast_path_agrees_with_full_frame(one_thread: None) -> None:
    """The simulator's fast path (grid drawn directly) and the exact path (full detector frame
    mapped by frame_to_grid) give the same hit decision and spot counts within 20 %."""
    cfg = PRESETS["master"].sim.with_(detectors=("pilatus6m",))  # the cheaper full frame
    picked: dict[str, object] = {}
    for i in range(40):
        p = sample_params(shot_seed(99, i), cfg)
        n = FINDER.count_spots(simulate(p, HIT_GRID).inputs)
        kind = "strong" if n >= 200 else "hit" if 30 <= n <= 150 else "miss" if n <= 5 else ""
        if kind and kind not in picked:
            picked[kind] = p
        if len(picked) == 3:
            break
    assert set(picked) == {"strong", "hit", "miss"}
    for kind, p in picked.items():
        shot = simulate(p, HIT_GRID, full_frame=True)
        full = frame_to_grid(torch.from_numpy(shot.frame), p.geometry, HIT_GRID)
        fast_hit, n_fast = FINDER.is_hit(shot.inputs)
        full_hit, n_full = FINDER.is_hit(full)
        assert fast_hit == full_hit, (kind, n_fast, n_full)
        assert abs(n_fast - n_full) <= max(3, 0.2 * n_fast), (kind, n_fast, n_full)


# --- real frames -------------------------------------------------------------------------
def _real_counts(name: str) -> np.ndarray:
    from xray_platform.core.preprocess import Preprocessing, frame_to_counts
    from xray_platform.io.formats import read_frame

    frame = read_frame(REAL / name)
    return frame_to_counts(frame.image, frame.geometry(),
                           Preprocessing(HIT_GRID.size, HIT_GRID.d_min_A)).numpy()


@needs_real
def test_real_thaumatin_hit_and_miss(one_thread: None) -> None:
    """thau_3_2_0002: a thaumatin still with dense lunes of spots to ~2 Å (measured: ~590
    spots); thau_3_2_0017: same grid scan, no crystal (measured: 1)."""
    hit, n = FINDER.is_hit(_real_counts("thau_3_2_0002.cbf.bz2"))
    assert hit and n >= 200, n
    hit, n = FINDER.is_hit(_real_counts("thau_3_2_0017.cbf.bz2"))
    assert not hit and n <= 5, n


def test_threshold_is_finite_where_there_is_background() -> None:
    grid = _max_of_k_poisson(np.random.default_rng(6), 3.0, 20)
    grid[:, :64] = -1.0
    thr = FINDER.threshold(grid)
    assert thr.shape == grid.shape
    ring = thr[40:90, 100:200]  # away from the masked columns and the few central cells
    assert np.isfinite(ring).all() and (ring > 3.0).all()
    grid[:, 64] = -2.0  # any negative value is masked (PILATUS writes -1 and -2)
    assert not FINDER.spot_mask(grid)[:, :65].any()
    assert replace(FINDER, n_sigma=3.0).count_spots(grid) >= FINDER.count_spots(grid)
