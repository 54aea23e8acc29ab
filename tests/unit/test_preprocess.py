"""The one preprocessing: frame + geometry -> grid counts -> network input."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from helpers import REAL, needs_real

from xray_platform.core.preprocess import (
    LOG_SCALE,
    InputOptions,
    Preprocessing,
    frame_to_counts,
    model_input,
    normalise,
    radial_background,
)
from xray_platform.physics.geometry import Geometry, detector
from xray_platform.physics.qgrid import QGrid

PIL = detector("pilatus6m")
GEOM = Geometry(PIL, 250.0, 1.0, (1231.0, 1263.0))
PREP = Preprocessing(128, 1.2)


def _frame(value: float = 2.0) -> np.ndarray:
    frame = np.full(PIL.shape, value, dtype=np.int32)
    frame[PIL.gap_mask()] = -1
    return frame


def test_a_single_bright_pixel_survives_downsampling() -> None:
    frame = _frame()
    s, f = 700, 1600  # a pixel on a module, away from the gaps
    frame[s, f] = 5000
    counts = frame_to_counts(frame, GEOM, PREP)
    assert counts.shape == (128, 128)
    gx, gy = PREP.grid.g_of_pixels(GEOM, torch.tensor([float(f)]), torch.tensor([float(s)]))
    row, col = PREP.grid.cell_index(gx, gy)
    assert float(counts[row, col]) == 5000.0  # max pooling keeps the spot's peak
    assert float(counts.max()) == 5000.0
    # elsewhere the flat background stays the background
    valid = counts >= 0
    assert float(torch.median(counts[valid])) == 2.0


def test_gaps_are_masked_and_normalised_to_zero() -> None:
    counts = frame_to_counts(_frame(), GEOM, PREP)
    assert (counts == -1).any() and (counts == 2).any()
    x = normalise(counts, PREP)
    assert x.shape == (1, 1, 128, 128) and x.dtype == torch.float32
    assert float(x[0, 0][counts == -1].abs().max()) == 0.0
    assert float(x.max()) == pytest.approx(np.log1p(2.0) / PREP.scale)


def test_model_input_and_bad_frames() -> None:
    assert model_input(_frame(), GEOM, PREP).shape == (1, 1, 128, 128)
    bad = _frame().astype(np.float32)
    bad[10, 10] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        frame_to_counts(bad, GEOM, PREP)
    with pytest.raises(ValueError, match="does not match the geometry"):
        frame_to_counts(np.zeros((100, 100)), GEOM, PREP)
    with pytest.raises(ValueError, match="does not match the model"):
        normalise(np.zeros((64, 64)), PREP)
    with pytest.raises(ValueError, match="unknown input transform"):
        Preprocessing(128, 1.2, transform="sqrt")
    assert Preprocessing.from_dict(PREP.to_dict()) == PREP


# --- deriving one grid from another (stored data sets, the hit finder's grid) -----------------
def test_regrid_plans() -> None:
    from xray_platform.core.preprocess import regrid_plan
    from xray_platform.physics.qgrid import QGrid

    src = QGrid(256, 1.2)
    assert regrid_plan(src, QGrid(128, 1.2)) == (0, 2)  # pooled by 2
    assert regrid_plan(src, QGrid(64, 1.2)) == (0, 4)
    assert regrid_plan(src, QGrid(128, 2.4)) == (64, 1)  # the centre, same cells
    assert regrid_plan(src, QGrid(64, 2.4)) == (64, 2)
    assert regrid_plan(src, src) == (0, 1)
    for dst in (QGrid(512, 1.2), QGrid(128, 2.0), QGrid(100, 1.2), QGrid(256, 1.0)):
        assert regrid_plan(src, dst) is None, dst


def test_regrid_is_crop_then_max_pool() -> None:
    from xray_platform.core.preprocess import regrid
    from xray_platform.physics.qgrid import QGrid

    rng = np.random.default_rng(3)
    x = rng.integers(-1, 100, (3, 256, 256)).astype(np.float32)
    pooled = regrid(x, QGrid(256, 1.2), QGrid(64, 2.4))  # centre 128, pooled by 2
    want = x[:, 64:192, 64:192].reshape(3, 64, 2, 64, 2).max(axis=(2, 4))
    assert np.array_equal(pooled, want)
    assert np.array_equal(regrid(x[0], QGrid(256, 1.2), QGrid(256, 1.2)), x[0])
    all_masked = np.full((256, 256), -1.0, np.float32)
    assert (regrid(all_masked, QGrid(256, 1.2), QGrid(128, 1.2)) == -1).all()
    with pytest.raises(ValueError, match="cannot be derived"):
        regrid(x[0], QGrid(256, 1.2), QGrid(100, 1.2))
    with pytest.raises(ValueError, match="do not match"):
        regrid(x[0, :128], QGrid(256, 1.2), QGrid(128, 1.2))


@needs_real
def test_a_derived_grid_matches_the_direct_mapping_of_a_real_frame() -> None:
    """The thaumatin hit mapped onto 256² and pooled to 128² agrees with mapping it onto 128²
    directly: the masks differ only on cells at the edges of the detector and its gaps (a
    derived cell is masked when all its source cells are, a direct one when the pixel under its
    centre is), the values only where the pixel-under-the-centre rule sees another pixel."""
    from xray_platform.core.preprocess import regrid
    from xray_platform.io.formats import read_frame
    from xray_platform.physics.qgrid import QGrid, frame_to_grid

    frame = read_frame(REAL / "thau_3_2_0002.cbf.bz2")
    img = torch.as_tensor(frame.image)
    geom = frame.geometry()
    fine, coarse = QGrid(256, 1.2), QGrid(128, 1.2)
    derived = regrid(frame_to_grid(img, geom, fine).numpy(), fine, coarse)
    direct = frame_to_grid(img, geom, coarse).numpy()
    assert np.mean((derived < 0) == (direct < 0)) > 0.95
    both = (derived >= 0) & (direct >= 0)
    assert both.mean() > 0.3 and np.mean(derived[both] == direct[both]) > 0.98


def test_the_fast_pixel_map_equals_the_trigonometric_one() -> None:
    """qgrid._pixel_cells (a few broadcast operations) puts every pixel in the cell that
    g_of_pixels + cell_index (the definition) does, up to float32 ties on cell edges."""
    from xray_platform.physics.geometry import Geometry, detector
    from xray_platform.physics.qgrid import QGrid, _pixel_cells

    for det, dist, lam, centre in (("pilatus6m", 150.0, 0.8, (1200.3, 1290.7)),
                                   ("eiger16m", 380.0, 1.4, (2100.0, 2150.5)),
                                   ("test", 100.0, 1.0, (-40.0, 30.0))):
        d = detector(det)
        g = Geometry(d, dist, lam, centre)
        grid = QGrid(128, 1.2)
        s, f = g.pixel_indices()
        shape = (d.n_slow, d.n_fast)
        gx, gy = grid.g_of_pixels(g, f.expand(shape), s.expand(shape))
        row, col = grid.cell_index(gx, gy)
        want = torch.where(row >= 0, row * grid.size + col, grid.size**2).reshape(-1)
        got = _pixel_cells(g, grid, "cpu")
        assert (got != want).float().mean() < 1e-4, det


def test_the_radial_background_is_each_rings_median_and_spares_the_spots() -> None:
    size = 64
    c = torch.arange(size, dtype=torch.float32) + 0.5 - size / 2
    r = torch.sqrt(c[None, :] ** 2 + c[:, None] ** 2)
    diffuse = 200.0 / (1.0 + r.floor())  # constant on each 1-cell ring, falling outwards
    counts = diffuse.clone()
    counts[10, 40] += 5000.0  # a Bragg spot
    counts[:, :8] = -1.0  # a masked strip (off the detector)
    prep = Preprocessing(size, 2.4, background="radial-median")
    bg = radial_background(counts[None])[0]
    on = counts >= 0
    assert torch.allclose(bg[on], diffuse[on])  # the spot does not move its ring's median
    x = normalise(counts, prep)[0, 0]
    assert float(x[10, 40]) == pytest.approx(np.log1p(5000.0) / prep.scale)
    others = on.clone()
    others[10, 40] = False
    assert float(x[others].abs().max()) == 0.0 and float(x[~on].abs().max()) == 0.0
    # without the subtraction the diffuse level is the input
    assert float(normalise(counts, Preprocessing(size, 2.4))[0, 0][others].max()) > 0.4
    # a ring with no unmasked cell has no background (0), and masked cells stay masked
    assert float(radial_background(torch.full((1, size, size), -1.0)).abs().max()) == 0.0


def test_the_background_is_recorded_and_checked() -> None:
    prep = Preprocessing(128, 2.4, background="radial-median")
    assert Preprocessing.from_dict(prep.to_dict()) == prep
    old = {k: v for k, v in prep.to_dict().items() if k != "background"}  # files before it
    assert Preprocessing.from_dict(old).background == "none"
    with pytest.raises(ValueError, match="unknown background"):
        Preprocessing(128, 2.4, background="rolling-ball")


def test_training_rows_carry_the_models_background_subtraction() -> None:
    from xray_platform.orchestration.data import SimulateShots
    from xray_platform.physics.presets import preset
    from xray_platform.physics.sampling import sample_params, shot_seed
    from xray_platform.physics.simulate import simulate

    p = preset("quick-lattice")
    opts = InputOptions("radial-median", d_max_A=12.0)
    rows = SimulateShots(p, "lattice", None, 3, fresh=False, options=opts)({"id": np.arange(2)})
    raw = SimulateShots(p, "lattice", None, 3, fresh=False)({"id": np.arange(2)})
    counts = np.stack([simulate(sample_params(shot_seed(3, i), p.sim), p.grid).inputs
                       for i in range(2)])
    prep = Preprocessing.for_grid(p.grid, opts)
    assert prep.options == opts
    assert np.allclose(rows["x"], normalise(counts, prep)[:, 0].numpy())
    assert np.allclose(raw["x"], normalise(counts, Preprocessing.for_grid(p.grid))[:, 0].numpy())
    assert (rows["x"] < raw["x"] - 1e-3).any()  # the background came off


def test_d_max_masks_the_low_resolution_cells_and_only_those() -> None:
    grid = QGrid(64, 2.4)
    counts = np.full((64, 64), 50.0, np.float32)
    prep = Preprocessing.for_grid(grid, InputOptions(d_max_A=10.0))
    x = normalise(counts, prep)[0, 0].numpy()
    gx, gy = (t.numpy() for t in grid.centres())
    inv_d = np.sqrt(gx ** 2 + gy ** 2) * np.ones((64, 64))
    assert (x[inv_d < 0.1] == 0).all() and (inv_d < 0.1).sum() > 20  # d > 10 Å: masked
    assert np.allclose(x[inv_d >= 0.1], np.log1p(50.0) / LOG_SCALE)
    assert Preprocessing.from_dict(prep.to_dict()) == prep
    assert Preprocessing.from_dict({"grid_size": 64, "d_min_A": 2.4}).d_max_A is None
    with pytest.raises(ValueError, match="must exceed the grid's d_min"):
        Preprocessing(64, 2.4, d_max_A=2.0)
