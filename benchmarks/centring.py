"""Grid-scan centring figures (live/centre.py): the error of the found crystal centre against
the known one, in cells and in µm, on simulated grids.

1. Model grids (many, fast): spherical crystals at random sub-cell positions, radius 0.8-3
   cells, in a 10 x 12 snake grid of 20 x 20 µm cells; a cell's spots are Poisson around
   ``peak`` times the crystal thickness its beam crosses (sqrt(R² - d²) / R averaged over the
   cell), a hit at >= 15 spots. One crystal per grid, then two crystals at least one empty
   cell apart (are they listed apart, and where).
2. Real frames: grid scans simulated frame by frame (live/publisher.py GridScan: the lattice's
   strength falls off from the crystal's centre) answered by xrp's own hit finder
   (core/answer.py, no model), one crystal and two crystals in one grid.

    .venv/bin/python benchmarks/centring.py [--n 500] [--seed 0] [--no-frames]
"""

from __future__ import annotations

import argparse
import math
import time

import numpy as np

from xray_platform.live.centre import cell_of, centre

STEP_UM = (20.0, 20.0)
ROWS, COLS = 10, 12


def model_spots(rows: int, cols: int, crystals: list[tuple[float, float, float]],
                peak: float, rng: np.random.Generator) -> np.ndarray:
    """Poisson spot counts per cell over spherical crystals (row, col, radius; cells)."""
    k = 12
    sub = (np.arange(k) + 0.5) / k - 0.5
    rr = np.arange(rows)[:, None, None, None] + sub[None, None, :, None]
    cc = np.arange(cols)[None, :, None, None] + sub[None, None, None, :]
    thick = np.zeros((rows, cols, k, k))
    for r0, c0, rad in crystals:
        thick += np.sqrt(np.clip(rad ** 2 - (rr - r0) ** 2 - (cc - c0) ** 2, 0, None)) / rad
    return rng.poisson(peak * thick.mean(axis=(2, 3)) + 2.0)  # + background false spots


def answers_of(spots: np.ndarray, snake: bool) -> list[dict]:
    rows, cols = spots.shape
    return [{"file": "tcp://sim#series-1", "frame": i, "hit": bool(spots[cell_of(i, cols,
                                                                                snake)] >= 15),
             "n_spots": int(spots[cell_of(i, cols, snake)])} for i in range(rows * cols)]


def errors(found: dict, truth: tuple[float, float]) -> tuple[float, float]:
    """(cells, µm) between a region's centre and the truth (row, col)."""
    dr, dc = found["centre"]["row"] - truth[0], found["centre"]["col"] - truth[1]
    return math.hypot(dr, dc), math.hypot(dc * STEP_UM[0], dr * STEP_UM[1])


def summary(name: str, e: list[tuple[float, float]]) -> str:
    c, u = np.array([x[0] for x in e]), np.array([x[1] for x in e])
    return (f"{name}: n={len(e)}; error cells median {np.median(c):.3f}, p90 "
            f"{np.percentile(c, 90):.3f}, max {c.max():.3f}; µm median {np.median(u):.2f}, "
            f"p90 {np.percentile(u, 90):.2f}, max {u.max():.2f}")


def model_grids(n: int, seed: int) -> None:
    rng = np.random.default_rng(seed)
    one, found_one = [], 0
    for _ in range(n):
        rad = rng.uniform(0.8, 3.0)
        truth = (rng.uniform(rad, ROWS - 1 - rad), rng.uniform(rad, COLS - 1 - rad))
        spots = model_spots(ROWS, COLS, [(*truth, rad)], rng.uniform(150, 600), rng)
        c = centre(answers_of(spots, True), ROWS, COLS, True, STEP_UM)
        if c["regions"]:
            found_one += len(c["regions"]) == 1
            one.append(errors(c["regions"][0], truth))
    print(f"model grids {ROWS}x{COLS} snake, {STEP_UM[0]:g} x {STEP_UM[1]:g} µm cells, "
          f"one crystal (radius 0.8-3 cells): found as one region in {found_one}/{n}")
    print("  " + summary("one crystal", one))
    two, apart, tried = [], 0, 0
    while tried < n:
        r1, r2 = rng.uniform(0.8, 2.0, 2)
        a = (rng.uniform(r1, ROWS - 1 - r1), rng.uniform(r1, COLS - 1 - r1))
        b = (rng.uniform(r2, ROWS - 1 - r2), rng.uniform(r2, COLS - 1 - r2))
        if math.hypot(a[0] - b[0], a[1] - b[1]) < r1 + r2 + 2.5:  # an empty cell between
            continue
        tried += 1
        spots = model_spots(ROWS, COLS, [(*a, r1), (*b, r2)], 400.0, rng)
        c = centre(answers_of(spots, True), ROWS, COLS, True, STEP_UM)
        if len(c["regions"]) != 2:
            continue
        apart += 1
        for t in (a, b):  # each truth against the region nearest to it
            two.append(min((errors(g, t) for g in c["regions"]), key=lambda x: x[0]))
    print(f"  two crystals (radius 0.8-2 cells, >= 2.5 cells between edges): listed apart "
          f"in {apart}/{n}")
    print("  " + summary("two crystals, each", two))


def real_frames() -> None:
    from xray_platform.core.answer import predict_frames
    from xray_platform.io.formats import Frame, FrameInfo
    from xray_platform.live.publisher import GridScan, grid_scan_frames

    def answer(frames, geometry) -> list[dict]:
        g = geometry
        info = FrameInfo(wavelength_A=g.wavelength_A, distance_mm=g.distance_mm,
                         pixel_size_mm=g.detector.pixel_mm, beam_center_px=g.beam_center_px,
                         n_fast=g.detector.n_fast, n_slow=g.detector.n_slow,
                         detector=g.detector.name, format="npy", n_frames=len(frames))
        fr = [Frame(np.where(f == np.iinfo(np.uint32).max, -1, f).astype(np.float32), info,
                    "sim", i) for i, f in enumerate(frames)]
        return predict_frames(fr, {}, index=False)

    t0 = time.time()
    # distance 100 mm: every sampled crystal puts spots on the small test detector (at the
    # sampled distances some seeds' lattices show fewer than the hit finder's 15 spots)
    scans = [GridScan(rows=6, cols=7, crystal=(2.3, 3.6), radius=1.7, snake=True, seed=3,
                      distance_mm=100.0),
             GridScan(rows=6, cols=7, crystal=(3.45, 2.2), radius=1.3, snake=True, seed=7,
                      distance_mm=100.0)]
    for s in scans:
        frames, geometry = grid_scan_frames(s)
        answers = answer(frames, geometry)
        c = centre(answers, s.rows, s.cols, True, STEP_UM)
        truth_hits = sum(s.is_hit(i) for i in range(s.n))
        right = sum(bool(a["hit"]) == s.is_hit(i) for i, a in enumerate(answers))
        head = (f"real frames {s.rows}x{s.cols} snake, crystal at row {s.crystal[0]}, col "
                f"{s.crystal[1]} (radius {s.radius}; {truth_hits} crystal cells, hit finder "
                f"right on {right}/{s.n}, spots per hit "
                f"{min(a['n_spots'] for a in answers if a['hit'])}-"
                f"{max(a['n_spots'] for a in answers if a['hit'])}): ") if c["regions"] \
            else f"real frames {s.rows}x{s.cols}: "
        if not c["regions"]:
            print(head + "no hit found")
            continue
        e = errors(c["regions"][0], s.crystal)
        print(head + f"{len(c['regions'])} region(s), centre row {c['centre']['row']:.2f}, "
              f"col {c['centre']['col']:.2f}; error {e[0]:.3f} cells, {e[1]:.2f} µm")
    a = GridScan(rows=6, cols=8, crystal=(1.2, 1.4), radius=1.2, snake=True, seed=7,
                 distance_mm=100.0)
    b = GridScan(rows=6, cols=8, crystal=(4.1, 5.8), radius=1.5, snake=True, seed=7,
                 distance_mm=100.0)
    fa, geometry = grid_scan_frames(a)
    fb, _ = grid_scan_frames(b)  # same seed: the same geometry
    frames = [fa[i] if a.is_hit(i) else fb[i] for i in range(a.n)]
    c = centre(answer(frames, geometry), a.rows, a.cols, True, STEP_UM)
    print(f"real frames, two crystals at {a.crystal} and {b.crystal} (row, col) in a 6x8 "
          f"snake grid: {len(c['regions'])} region(s)")
    for t in (a.crystal, b.crystal) if c["regions"] else ():
        g = min(c["regions"], key=lambda g: errors(g, t)[0])
        e = errors(g, t)
        print(f"  crystal at {t}: found crystal {g['crystal']} at row {g['centre']['row']:.2f}"
              f", col {g['centre']['col']:.2f} ({g['n_cells']} cells); error {e[0]:.3f} "
              f"cells, {e[1]:.2f} µm")
    print(f"  ({time.time() - t0:.0f} s for {2 * 42 + 2 * 48} simulated frames)")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--n", type=int, default=500, help="model grids per case")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--no-frames", action="store_true", help="model grids only")
    a = p.parse_args()
    model_grids(a.n, a.seed)
    if not a.no_frames:
        real_frames()


if __name__ == "__main__":
    main()
