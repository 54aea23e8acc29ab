"""Multi-panel geometry: the one-panel case is the flat detector, any layout maps a reflection
onto the same grid cell, geometries that make no sense are refused."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from xray_platform.physics.geometry import Geometry, detector
from xray_platform.physics.limits import GeometryError, check_panel_geometry
from xray_platform.physics.panels import Panel, PanelGeometry, panels_of
from xray_platform.physics.qgrid import (
    MASKED,
    QGrid,
    _flat_frame_map,
    _panels_frame_map,
    frame_to_grid,
)

GRID = QGrid(256, 1.2)
WAVELENGTH = 1.0


def _rot(axis, deg: float) -> np.ndarray:
    k = np.asarray(axis, float) / np.linalg.norm(axis)
    a = math.radians(deg)
    kx = np.array([[0, -k[2], k[1]], [k[2], 0, -k[0]], [-k[1], k[0], 0]])
    return np.eye(3) + math.sin(a) * kx + (1 - math.cos(a)) * (kx @ kx)


def _panel(centre, fast, slow, n=400, p=0.1, name="") -> Panel:
    """A square panel of n x n pixels of p mm whose middle is at ``centre``."""
    fast, slow = np.asarray(fast, float), np.asarray(slow, float)
    origin = np.asarray(centre, float) - (n - 1) / 2 * p * (fast + slow)
    return Panel(tuple(origin), tuple(fast), tuple(slow), p, n, n, name)


def layouts() -> dict[str, PanelGeometry]:
    """Three very different detectors around the same sample."""
    quads = []  # four panels, each turned in its plane and one tilted by 25 deg
    for i, (cx, cy) in enumerate(((-21, -21), (21, -21), (21, 21), (-21, 21))):
        r = _rot((0, 0, 1), 90 * i + 3)
        if i == 2:
            r = _rot((1, -1, 0), 25) @ r
        quads.append(_panel(r @ (0, 0, 0) + (cx, cy, 120), r @ (1, 0, 0), r @ (0, 1, 0),
                            name=f"q{i}"))
    ring = []  # 12 panels on a cylinder of 150 mm about the x axis, from -60 to +60 deg
    for j in range(12):
        a = math.radians(-55 + 10 * j)
        slow = (0, math.cos(a), -math.sin(a))
        centre = 150 * np.array([0, math.sin(a), math.cos(a)])
        ring.append(_panel(centre, (1, 0, 0), slow, n=250, p=0.1, name=f"row{j}"))
    flat = Geometry(detector("pilatus6m"), 200.0, WAVELENGTH, (1231.0, 1263.0))
    return {"flat": panels_of(flat), "quads": PanelGeometry(tuple(quads), WAVELENGTH),
            "cylinder": PanelGeometry(tuple(ring), WAVELENGTH)}


def _spot_frame(geom: PanelGeometry, u: np.ndarray) -> np.ndarray | None:
    """A frame of background 1 with one bright pixel where the ray along u meets the detector
    (the nearest panel it hits), or None if it meets none."""
    img = np.ones(geom.shape, dtype=np.float32)
    best = None
    for i, p in enumerate(geom.panels):
        t, f, s = p.where(u[None])
        fi, si = round(float(f[0])), round(float(s[0]))
        if np.isfinite(t[0]) and 0 <= fi < p.n_fast and 0 <= si < p.n_slow and (
                best is None or t[0] < best[0]):
            best = (t[0], i, si, fi)
    if best is None:
        return None
    img[best[1:]] = 1000.0
    return img


def test_one_flat_panel_is_the_flat_detector() -> None:
    g = Geometry(detector("pilatus6m"), 180.0, 0.98, (1228.8, 1300.2))
    pg = panels_of(g)
    assert pg.flat() == Geometry(pg.flat().detector, 180.0, 0.98, (1228.8, 1300.2))
    assert pg.distance_mm == pytest.approx(180.0)
    assert pg.beam_center_px == pytest.approx((1228.8, 1300.2))
    rng = np.random.default_rng(0)
    img = rng.poisson(2.0, g.shape).astype(np.float32)
    img[g.detector.gap_mask()] = -1
    frame = torch.from_numpy(img)
    assert torch.equal(frame_to_grid(frame, pg, GRID), frame_to_grid(frame, g, GRID))
    # the general panel path, forced, agrees with the flat path's map
    flat_cell, flat_centre, flat_ok = _flat_frame_map(g, GRID, "cpu")
    cell, centre, ok = _panels_frame_map(pg, GRID, "cpu")
    assert (cell != flat_cell).float().mean() < 1e-4  # float32 vs float64 at cell edges
    both = ok & flat_ok
    assert (centre[both] != flat_centre[both]).float().mean() < 1e-3
    gap = torch.from_numpy(g.detector.gap_mask().reshape(-1).copy())
    assert torch.equal(ok & ~gap[centre], flat_ok)  # the flat map also masks gap pixels


def test_a_reflection_lands_on_the_same_cell_whichever_layout_records_it() -> None:
    det = layouts()
    gx, gy = (t.double().numpy() for t in GRID.flat_centres())
    rng = np.random.default_rng(4)
    seen = {name: 0 for name in det}
    for cell in rng.choice(GRID.size**2, 400, replace=False):
        inv_d = math.hypot(gx[cell], gy[cell])
        tth = 2 * math.asin(min(inv_d * WAVELENGTH / 2, 0.99))
        u = np.array([math.sin(tth) * gx[cell] / inv_d, math.sin(tth) * gy[cell] / inv_d,
                      math.cos(tth)])
        for name, geom in det.items():
            img = _spot_frame(geom, u)
            if img is None:
                continue
            counts = frame_to_grid(torch.from_numpy(img), geom, GRID).reshape(-1)
            assert int(torch.argmax(counts)) == cell, (name, cell)
            seen[name] += 1
    assert all(n >= 20 for n in seen.values()), seen  # every layout recorded some


def test_panels_off_the_grid_and_between_panels_are_masked() -> None:
    g = layouts()["quads"]
    counts = frame_to_grid(torch.ones(g.shape), g, GRID)
    assert (counts == MASKED).any() and (counts == 1).any()
    assert counts[128, 128] == MASKED  # the beam passes the hole in the middle
    assert set(torch.unique(counts).tolist()) == {MASKED, 1.0}


def test_geometries_that_make_no_sense_are_refused() -> None:
    g = layouts()["quads"]
    check_panel_geometry(g)
    with pytest.raises(GeometryError, match="detector distance .* outside"):
        check_panel_geometry(g.shifted(-110.0))  # panels 10 mm from the sample
    with pytest.raises(GeometryError, match="wavelength 0.025"):
        check_panel_geometry(PanelGeometry(g.panels, 0.025))  # an electron wavelength
    far = tuple(Panel((p.origin_mm[0] + 600, p.origin_mm[1], p.origin_mm[2]), p.fast, p.slow,
                      p.pixel_mm, p.n_fast, p.n_slow) for p in g.panels)
    with pytest.raises(GeometryError, match="beam passes x = 0"):
        check_panel_geometry(PanelGeometry(far, WAVELENGTH))
    with pytest.raises(ValueError, match="not perpendicular"):
        Panel((0, 0, 100), (1, 0, 0), (1, 1, 0), 0.1, 10, 10)
    with pytest.raises(ValueError, match="different sizes"):
        PanelGeometry((g.panels[0], _panel((0, 0, 100), (1, 0, 0), (0, 1, 0), n=10)), 1.0)
