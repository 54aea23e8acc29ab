"""Physics: geometry against hand computation, masks, labels, determinism, fast vs full path."""

from __future__ import annotations

import math
from dataclasses import replace

import numpy as np
import pytest
import torch

from xray_platform.physics.geometry import DETECTORS, Beamstop, Geometry, detector
from xray_platform.physics.labels import b_factor, d_B_from_b_factor, resolution_labels
from xray_platform.physics.qgrid import MASKED, QGrid, frame_to_grid
from xray_platform.physics.sampling import SimConfig, sample_params, shot_seed
from xray_platform.physics.simulate import (
    expected_frame,
    predict_reflections,
    render_frame,
    render_input,
    sample_max_poisson,
    simulate,
    smeared_profile,
    spot_widths,
)

PIL = detector("pilatus6m")


# --- geometry ----------------------------------------------------------------------------
def test_detector_presets_have_real_dimensions() -> None:
    assert (PIL.n_fast, PIL.n_slow, PIL.pixel_mm) == (2463, 2527, 0.172)
    assert PIL.n_modules == (5, 12)
    gaps = PIL.gap_mask()
    # 4 gap columns of 7 px and 11 gap rows of 17 px
    active = (2463 - 4 * 7) * (2527 - 11 * 17)
    assert (~gaps).sum() == active == 60 * 487 * 195
    assert gaps[:, 487:494].all() and not gaps[:195, :487].any()
    assert gaps[195:212, :].all()
    eig = detector("eiger16m")
    assert (eig.n_fast, eig.n_slow, eig.pixel_mm) == (4150, 4371, 0.075)
    assert eig.n_modules == (4, 8)
    assert (~eig.gap_mask()).sum() == 32 * 1030 * 514
    with pytest.raises(ValueError, match="unknown detector"):
        detector("pilatus1m-typo")


def test_bragg_law_and_d_map_by_hand() -> None:
    g = Geometry(PIL, 200.0, 1.0, (1231.0, 1263.0))
    # pixel 500 px along fast: x = 86 mm, 2theta = atan(86 / 200)
    tth = math.atan(500 * 0.172 / 200.0)
    d_hand = 1.0 / (2 * math.sin(tth / 2))
    d = g.d_spacing(torch.tensor([1731.0]), torch.tensor([1263.0]))
    assert float(d[0]) == pytest.approx(d_hand, rel=1e-6)
    dmap = g.d_map()
    assert dmap.shape == (2527, 2463)
    assert float(dmap[1263, 1731]) == pytest.approx(d_hand, rel=1e-5)
    assert math.isinf(float(dmap[1263, 1231]))  # beam centre
    assert g.energy_keV == pytest.approx(12.398, abs=1e-3)
    # corner is finer than the nearest edge
    assert g.corner_resolution_A < g.edge_resolution_A


def test_resolution_rings_have_their_d() -> None:
    g = Geometry(PIL, 250.0, 0.98, (1200.3, 1300.7))
    for d in (4.0, 2.5, 1.8):
        r_px = float(g.ring_radius_mm(d)) / g.pixel_mm
        phi = np.linspace(0, 2 * np.pi, 17)
        f = torch.tensor(1200.3 + r_px * np.cos(phi))
        s = torch.tensor(1300.7 + r_px * np.sin(phi))
        np.testing.assert_allclose(g.d_spacing(f, s).numpy(), d, rtol=1e-9)


def test_projection_inverts_pixel_position() -> None:
    g = Geometry(PIL, 150.0, 1.2, (1000.5, 1100.25))
    f = torch.tensor([10.0, 1000.5, 2400.0], dtype=torch.float64)
    s = torch.tensor([20.0, 1100.25, 2500.0], dtype=torch.float64)
    x, y = g.xy_mm(f, s)
    k1 = torch.stack([x, y, torch.full_like(x, 150.0)], 1) * 3.7  # any length along the ray
    f2, s2 = g.project(k1)
    np.testing.assert_allclose(f2.numpy(), f.numpy())
    np.testing.assert_allclose(s2.numpy(), s.numpy())


def test_beamstop_and_gap_masks() -> None:
    bs = Beamstop(radius_mm=2.0, arm_width_mm=1.0, arm_angle_deg=0.0)
    g = Geometry(PIL, 200.0, 1.0, (1231.0, 1263.0), bs)
    shadow = g.beamstop_mask()
    assert bool(shadow[1263, 1231])  # beam centre
    assert bool(shadow[1263, 2400])  # along the arm (+fast)
    assert not bool(shadow[1263, 100])  # opposite side
    disc_px = math.pi * (2.0 / 0.172) ** 2
    assert shadow[:, :1231].sum() == pytest.approx(disc_px / 2, rel=0.1)
    active = g.active_mask()
    assert not bool(active[1263, 1231]) and not bool(active[0, 490])
    fr = render_frame(replace(sample_params(1, SimConfig(detectors=("pilatus6m",))),
                              beamstop=bs, beam_center_px=(1231.0, 1263.0))).numpy()
    assert (fr[PIL.gap_mask()] == -1).all() and (fr[~PIL.gap_mask()] >= 0).all()
    # the shadow sees ~2 % of the scatter around it
    assert fr[shadow.numpy() & ~PIL.gap_mask()].mean() < 0.2 * fr[~PIL.gap_mask()].mean()
    # the labels never count spots behind the beamstop or in gaps
    assert not bool(g.is_active(torch.tensor([1231.0, 490.0]), torch.tensor([1263.0, 0.0])).any())


# --- labels ------------------------------------------------------------------------------
def test_b_factor_definition() -> None:
    assert b_factor(2.0) == 28.0
    assert d_B_from_b_factor(b_factor(3.3)) == pytest.approx(3.3)


def test_resolution_labels_definition() -> None:
    d = np.linspace(5.0, 2.0, 20)
    S = np.full(20, 100.0)
    Bg = np.full(20, 10.0)
    lab = resolution_labels(d, S, Bg)
    assert lab.n_detectable == 20 and lab.hit
    assert lab.d_vis == pytest.approx(1 / np.percentile(1 / d, 98))
    # below I/sigma 3 nothing counts; off-detector centres do not count
    lab = resolution_labels(d, np.full(20, 5.0), np.full(20, 100.0))
    assert lab.n_detectable == 0 and not lab.hit and math.isnan(lab.d_vis)
    on = np.arange(20) < 14
    lab = resolution_labels(d, S, Bg, on_active=on)
    assert lab.n_detectable == 14 and not lab.hit


# --- shots -------------------------------------------------------------------------------
CFG = SimConfig(detectors=("pilatus6m",), log_spot_scale=(300.0, 3000.0), p_hot_pixels=0.0)
GRID = QGrid(256)


def test_seed_determines_a_shot() -> None:
    p1 = sample_params(shot_seed(5, 3), CFG)
    p2 = sample_params(shot_seed(5, 3), CFG)
    assert p1 == p2
    a, b = simulate(p1, GRID), simulate(p2, GRID)
    np.testing.assert_array_equal(a.inputs, b.inputs)
    assert a.record == b.record or all(
        (a.record[k] == b.record[k]) or (isinstance(a.record[k], float)
                                         and math.isnan(a.record[k]) and math.isnan(b.record[k]))
        for k in a.record)
    c = simulate(sample_params(shot_seed(5, 4), CFG), GRID)
    assert not np.array_equal(a.inputs, c.inputs)


def test_larger_b_gives_coarser_labels() -> None:
    fine, coarse = [], []
    for i in range(6):
        p = sample_params(shot_seed(11, i), CFG.with_(n_lattices={1: 1.0}))
        a = simulate(replace(p, d_B=1.8), GRID).record
        b = simulate(replace(p, d_B=3.5), GRID).record
        assert a["B_factor"] < b["B_factor"]
        assert b["n_detectable"] <= a["n_detectable"]
        if a["hit"] and b["hit"]:
            fine.append(a["d_vis"])
            coarse.append(b["d_vis"])
    assert len(fine) >= 3
    assert np.all(np.array(coarse) >= np.array(fine) - 1e-9)
    assert np.mean(coarse) > np.mean(fine) + 0.2


def test_blank_and_multi_lattice_labels() -> None:
    blank = simulate(sample_params(3, CFG.with_(n_lattices={0: 1.0})), GRID)
    r = blank.record
    assert r["n_lattices"] == 0 and not r["is_multi"] and not r["hit"]
    assert math.isnan(r["d_vis"]) and math.isnan(r["d_B"]) and r["n_detectable"] == 0
    assert (blank.inputs[blank.inputs >= 0] < 100).all()  # background only
    multi_cfg = CFG.with_(n_lattices={3: 1.0}, misorientation="uniform")
    m = simulate(sample_params(4, multi_cfg), GRID)
    r = m.record
    assert r["n_lattices"] == 3 and r["is_multi"]
    angles = np.array(eval(r["misorientation_deg"]))  # JSON list of two angles
    assert len(angles) == 2 and (angles >= 1).all() and (angles <= 180).all()
    per = eval(r["n_detectable_per_lattice"])
    assert len(per) == 3 and sum(per) == r["n_detectable"]
    assert set(m.reflections.lattice.tolist()) == {0, 1, 2}


def test_every_preset_config_draws_valid_shots() -> None:
    from xray_platform.physics.presets import PRESETS

    for name, pre in PRESETS.items():
        for i in (0, pre.n_shots - 1):
            p = pre.params(1, i)
            assert 100 <= p.distance_mm <= 400 and 0.7 <= p.wavelength_A <= 1.5, name
            assert p.detector in DETECTORS
            if p.n_lattices:
                assert p.crystal_form and not math.isnan(p.d_B)


def test_max_poisson_sampler_matches_brute_force() -> None:
    g = torch.Generator().manual_seed(0)
    rng = np.random.default_rng(0)
    for mu, n in ((0.05, 3), (0.8, 12), (3.0, 40), (25.0, 7), (60.0, 5)):
        draws = sample_max_poisson(torch.full((40000,), mu), torch.full((40000,), float(n)), g)
        brute = rng.poisson(mu, size=(40000, n)).max(axis=1)
        assert draws.mean().item() == pytest.approx(brute.mean(), rel=0.03, abs=0.02), (mu, n)
        assert draws.std().item() == pytest.approx(brute.std(), rel=0.06, abs=0.03), (mu, n)


def test_fast_path_agrees_with_full_frame_mapping() -> None:
    """render_input (fast) vs frame_to_grid(render_frame) (exact slow path): same masked
    cells, same background level, spots in the same cells."""
    cfg = CFG.with_(n_lattices={1: 1.0}, p_ice=0.0)
    p = replace(sample_params(shot_seed(2, 0), cfg), spot_scale=3000.0, d_B=2.0)
    grid = QGrid(192)
    fast = render_input(p, grid).numpy()
    slow = frame_to_grid(torch.as_tensor(render_frame(p)), p.geometry, grid).numpy()
    mask_f, mask_s = fast == MASKED, slow == MASKED
    assert (mask_f != mask_s).mean() < 0.01
    both = ~mask_f & ~mask_s
    assert np.median(fast[both]) == pytest.approx(np.median(slow[both]), rel=0.25, abs=1.0)
    # strong-spot cells: where the slow path shows bright cells, the fast path does too
    thr = np.percentile(slow[both], 99.7)
    bright = both & (slow > thr)
    assert bright.sum() > 10
    assert (fast[bright] > np.percentile(fast[both], 97)).mean() > 0.7


def test_same_crystal_at_two_distances_gives_nearly_the_same_input() -> None:
    p = replace(sample_params(shot_seed(9, 1), CFG.with_(n_lattices={1: 1.0})),
                spot_scale=3000.0, d_B=2.5, beamstop=None, hot_pixels=0)
    a = render_input(replace(p, distance_mm=150.0), GRID).numpy()
    b = render_input(replace(p, distance_mm=300.0), GRID).numpy()
    common = (a >= 0) & (b >= 0)

    def spots(x: np.ndarray) -> np.ndarray:  # cells far above their background
        return common & (x > 4 * np.median(x[common]) + 15)

    sa, sb = spots(a), spots(b)
    assert min(sa.sum(), sb.sum()) > 20
    # the grid is in resolution, not pixels: the same spots land in the same cells
    assert (sa & sb).sum() > 0.7 * min(sa.sum(), sb.sum())


@pytest.mark.parametrize("device", ["cpu", pytest.param("cuda", marks=pytest.mark.skipif(
    not torch.cuda.is_available(), reason="no CUDA device"))])
def test_same_code_runs_on_an_explicit_device(device: str) -> None:
    """The simulator takes a device; labels do not depend on it (pixel noise may)."""
    p = replace(sample_params(shot_seed(8, 2), CFG.with_(n_lattices={2: 1.0})), hot_pixels=2)
    ref = simulate(p, QGrid(128), full_frame=False)
    shot = simulate(p, QGrid(128), full_frame=True, device=device)
    assert shot.inputs.shape == (128, 128) and shot.frame.shape == PIL.shape
    for k in ("n_detectable", "hit", "n_lattices", "is_multi"):
        assert shot.record[k] == ref.record[k], k
    assert shot.record["d_vis"] == pytest.approx(ref.record["d_vis"], rel=1e-4, nan_ok=True)
    assert ((shot.inputs == MASKED) == (ref.inputs == MASKED)).mean() > 0.999


# --- mosaic-smeared spots ------------------------------------------------------------------
def _moments(w: torch.Tensor, f0: float, s0: float, lo_f: float, lo_s: float) -> np.ndarray:
    """Second-moment matrix (fast, slow) of a box of weights about (f0, s0)."""
    w = w.double().numpy()
    ss, ff = np.mgrid[0:w.shape[0], 0:w.shape[1]]
    d = np.stack([(ff + lo_f - f0).ravel(), (ss + lo_s - s0).ravel()])
    return (d * w.ravel()) @ d.T / w.sum()


@pytest.mark.parametrize("angle_deg", [0.0, 45.0, 120.0])
def test_a_mosaic_spot_is_smeared_along_the_azimuth_by_rho_eta(angle_deg: float) -> None:
    """sigma_t^2 = s0^2 + (rho eta / cos t)^2 (+ divergence): a spot 600 px from the beam with
    1 deg of mosaic spread is ~4.5 px long along the azimuth and stays narrow radially."""
    base = sample_params(shot_seed(3, 0), CFG.with_(n_lattices={1: 1.0}))
    p = replace(base, distance_mm=250.0, mosaic_deg=1.0, bandwidth=1e-4, divergence_mrad=0.01,
                spot_sigma_px=0.8, spot_profile="mosaic")
    geom = p.geometry
    f0, s0 = geom.beam_center_px
    a = math.radians(angle_deg)
    f = torch.tensor([f0 + 600 * math.cos(a)], dtype=torch.float64)
    s = torch.tensor([s0 + 600 * math.sin(a)], dtype=torch.float64)
    sr, st = (float(t) for t in spot_widths(p, geom, f, s))
    eta = math.radians(1.0) / 2.3548
    theta = 0.5 * math.atan(600 * PIL.pixel_mm / 250.0)
    assert st == pytest.approx(math.hypot(0.8, 600 * eta / math.cos(theta)), rel=0.01)
    assert sr < 1.0
    n = 41
    lo_f, lo_s = torch.round(f) - n // 2, torch.round(s) - n // 2
    w = smeared_profile(p, geom, f, s, lo_f, lo_s, n)[0]
    assert float(w.sum()) == pytest.approx(1.0, abs=2e-3)  # the whole spot is in the box
    m = _moments(w, float(f), float(s), float(lo_f), float(lo_s))
    radial = np.array([math.cos(a), math.sin(a)])
    tangential = np.array([-math.sin(a), math.cos(a)])
    assert radial @ m @ radial == pytest.approx(sr**2 + 1 / 12, rel=0.03)
    assert tangential @ m @ tangential == pytest.approx(st**2 + 1 / 12, rel=0.03)


def test_mosaic_spots_keep_their_photons_and_the_seed_keeps_its_other_numbers() -> None:
    cfg = CFG.with_(n_lattices={1: 1.0}, p_ice=0.0)
    p = sample_params(shot_seed(4, 0), cfg.with_(spot_profile="mosaic"))
    assert replace(p, spot_profile="round") == sample_params(shot_seed(4, 0), cfg)
    p = replace(p, mosaic_deg=0.8)
    refl = predict_reflections(p)
    spots, _ = expected_frame(p, refl=refl)
    kept = refl.photons >= 0.05  # what is rendered
    # (pixels expected to get < 0.05 spot photons are left out: a smeared weak spot loses more)
    assert float(spots.sum()) == pytest.approx(float(refl.photons[kept].sum()), rel=0.05)
    # the same shot's spots, round: the same photons on fewer pixels
    round_spots, _ = expected_frame(replace(p, spot_profile="round"))
    assert float(round_spots.sum()) == pytest.approx(float(spots.sum()), rel=0.05)
    assert int((spots > 1).sum()) > int((round_spots > 1).sum())
    with pytest.raises(ValueError, match="spot profile"):
        replace(p, spot_profile="square")
    with pytest.raises(ValueError, match="spot_profile"):
        cfg.with_(spot_profile="square")


def test_a_round_profile_data_set_reads_as_one_written_before_spot_profiles() -> None:
    """Data set manifests record SimConfig.to_dict(): the default profile adds no key, so older
    data sets still resume and grow; a mosaic one is recorded."""
    assert "spot_profile" not in CFG.to_dict()
    assert CFG.with_(spot_profile="mosaic").to_dict()["spot_profile"] == "mosaic"
