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
3. ``--positions``: centring from motor positions (live/centre.py centre_at): the same model
   crystals (µm, at an absolute stage offset) scanned at positions that are not a nominal
   grid: a raster with jittered read-back positions (inferred as a raster), a raster turned
   by 20 degrees, staggered rows (hexagonal), and a uniform random scatter (centred by
   distance); each frame's spots come from the crystal under its beam (a square of one step),
   so the error is against the true centre in µm. Prints mean, median, p90 and max error.

    .venv/bin/python benchmarks/centring.py [--n 500] [--seed 0] [--no-frames]
    .venv/bin/python benchmarks/centring.py --positions [--n 500] [--seed 0]
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


STEP = 20.0  # µm between scan positions (the layouts below)
ORIGIN = np.array([1523.7, -842.1])  # the stage position of the scan's first point (µm)


def layout(kind: str, rng: np.random.Generator, rows: int = ROWS, cols: int = COLS
           ) -> np.ndarray:
    """(n, 2) µm positions of a scan of about rows x cols points, STEP apart."""
    r, c = np.divmod(np.arange(rows * cols), cols)
    if kind == "jittered raster":  # read-back positions: +-15 % of a step on each axis
        return np.stack([c, r], 1) * STEP + rng.uniform(-0.15, 0.15, (r.size, 2)) * STEP
    if kind == "turned raster":  # the stage axes 20 degrees from x and y
        t = np.radians(20.0)
        x, y = c * STEP, r * STEP
        return np.stack([x * np.cos(t) - y * np.sin(t), x * np.sin(t) + y * np.cos(t)], 1)
    if kind == "staggered rows":  # hexagonal: odd rows shifted half a step
        return np.stack([(c + 0.5 * (r % 2)) * STEP, r * STEP * math.sqrt(3) / 2], 1)
    if kind == "random scatter":  # the same density, no pattern
        return rng.uniform(0, 1, (r.size, 2)) * [cols * STEP, rows * STEP]
    raise ValueError(kind)


def spots_at(xy: np.ndarray, crystals: list[tuple[float, float, float]], peak: float,
             rng: np.random.Generator) -> np.ndarray:
    """Poisson spots of beams (squares of one STEP) at ``xy`` over spheres (x, y, radius µm)."""
    k = 12
    sub = ((np.arange(k) + 0.5) / k - 0.5) * STEP
    px = xy[:, 0, None, None] + sub[None, :, None]
    py = xy[:, 1, None, None] + sub[None, None, :]
    thick = np.zeros((len(xy), k, k))
    for x0, y0, rad in crystals:
        thick += np.sqrt(np.clip(rad ** 2 - (px - x0) ** 2 - (py - y0) ** 2, 0, None)) / rad
    return rng.poisson(peak * thick.mean(axis=(1, 2)) + 2.0)


def position_answers(spots: np.ndarray) -> list[dict]:
    return [{"file": "tcp://sim#series-1", "frame": i, "hit": bool(n >= 15),
             "n_spots": int(n)} for i, n in enumerate(spots)]


def inside(xy: np.ndarray, rad: float, rng: np.random.Generator, hull=None
           ) -> tuple[float, float]:
    """A crystal centre whose whole disc (radius ``rad``) lies within the scanned area (the
    positions' convex hull; ``hull``: its Delaunay triangulation, made once per layout)."""
    from scipy.spatial import Delaunay

    hull = hull if hull is not None else Delaunay(xy)
    ring = np.linspace(0, 2 * np.pi, 16, endpoint=False)
    while True:
        c = rng.uniform(xy.min(axis=0), xy.max(axis=0))
        edge = c + rad * np.stack([np.cos(ring), np.sin(ring)], 1)
        if np.all(hull.find_simplex(np.vstack([edge, c])) >= 0):
            return float(c[0]), float(c[1])


def um_summary(name: str, e: list[float]) -> str:
    u = np.array(e)
    return (f"{name}: n={len(u)}; error µm mean {u.mean():.2f}, median {np.median(u):.2f}, "
            f"p90 {np.percentile(u, 90):.2f}, max {u.max():.2f} ({u.mean() / STEP:.3f} steps "
            f"mean, {u.max() / STEP:.3f} max)")


def positions_one(kind: str, n: int, rng: np.random.Generator) -> None:
    from scipy.spatial import Delaunay

    from xray_platform.live.centre import centre_at

    errs, nominal, one, layouts = [], [], 0, set()
    for _ in range(n):
        xy = layout(kind, rng)
        rad = rng.uniform(0.8, 3.0) * STEP
        truth = inside(xy, rad, rng, Delaunay(xy))
        spots = spots_at(xy, [(*truth, rad)], rng.uniform(150, 600), rng)
        c = centre_at(position_answers(spots), xy + ORIGIN)
        layouts.add(c["layout"])
        if not c["regions"]:
            continue
        one += len(c["regions"]) == 1
        g = c["regions"][0]["centre_um"]
        errs.append(math.hypot(g["x"] - truth[0] - ORIGIN[0], g["y"] - truth[1] - ORIGIN[1]))
        if kind == "jittered raster":  # the same frames read as the nominal grid
            q = centre(position_answers(spots), ROWS, COLS, False, (STEP, STEP))["centre_um"]
            nominal.append(math.hypot(q["x"] - truth[0], q["y"] - truth[1]))
    print(f"{kind} (layout found: {', '.join(sorted(map(str, layouts)))}), one crystal "
          f"(radius 0.8-3 steps): one region in {one}/{n}")
    print("  " + um_summary("centre from positions", errs))
    if nominal:
        print("  " + um_summary("the same read as the nominal grid (--grid --step-um)",
                                nominal))


def positions_two(kind: str, n: int, rng: np.random.Generator) -> None:
    from scipy.spatial import Delaunay

    from xray_platform.live.centre import centre_at

    errs, apart = [], 0
    for _ in range(n):
        xy = layout(kind, rng)
        hull = Delaunay(xy)
        while True:  # an empty beam's width and more between their edges
            r1, r2 = rng.uniform(0.8, 2.0, 2) * STEP
            a, b = inside(xy, r1, rng, hull), inside(xy, r2, rng, hull)
            if math.dist(a, b) >= r1 + r2 + 2.5 * STEP:
                break
        c = centre_at(position_answers(spots_at(xy, [(*a, r1), (*b, r2)], 400.0, rng)),
                      xy + ORIGIN)
        if len(c["regions"]) != 2:
            continue
        apart += 1
        for t in (a, b):
            errs.append(min(math.hypot(g["centre_um"]["x"] - t[0] - ORIGIN[0],
                                       g["centre_um"]["y"] - t[1] - ORIGIN[1])
                            for g in c["regions"]))
    print(f"  two crystals (radius 0.8-2 steps, >= 2.5 steps between edges): listed apart in "
          f"{apart}/{n}")
    if errs:
        print("  " + um_summary("two crystals, each", errs))


def positions(n: int, seed: int) -> None:
    rng = np.random.default_rng(seed)
    print(f"centring from motor positions: ~{ROWS}x{COLS} points {STEP:g} µm apart at stage "
          f"offset {ORIGIN[0]:g}, {ORIGIN[1]:g} µm; beam one step square")
    for kind in ("jittered raster", "turned raster", "staggered rows", "random scatter"):
        positions_one(kind, n, rng)
        positions_two(kind, n, rng)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--n", type=int, default=500, help="model grids per case")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--no-frames", action="store_true", help="model grids only")
    p.add_argument("--positions", action="store_true", help="centring from motor positions "
                   "(scattered, jittered, turned layouts) only")
    a = p.parse_args()
    if a.positions:
        positions(a.n, a.seed)
        return
    model_grids(a.n, a.seed)
    if not a.no_frames:
        real_frames()


if __name__ == "__main__":
    main()
