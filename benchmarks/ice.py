"""Ice-ring detection (core/ice.py) on simulated shots with exact labels, and on the real frames.

Draws ``--n`` shots of a preset (default ``master``: both detectors, hits and blanks, every
background level); every other shot gets hexagonal-ice rings of a strength drawn log-uniformly
over ``--ice`` (the simulator's ``ice`` parameter: ring height relative to the dimensionless
background profile, physics/simulate.py), the others none. Prints the false-alarm rate on the
ice-free shots, recall by strength, and ms per grid; ``--real`` adds the verdicts on the frames
in ../shared/data/real.

    python benchmarks/ice.py                  # 400 shots, seed 78
    python benchmarks/ice.py --n 1000 --seed 5 --real
"""

from __future__ import annotations

import argparse
import time
from dataclasses import replace
from pathlib import Path

import numpy as np

from xray_platform.core.hitfinder import HIT_GRID
from xray_platform.core.ice import IceFinder
from xray_platform.physics.presets import preset
from xray_platform.physics.sampling import sample_params, shot_seed
from xray_platform.physics.simulate import simulate

REAL_DIR = Path(__file__).resolve().parents[2] / "shared" / "data" / "real"
SHELLS = ((0.03, 0.1), (0.1, 0.3), (0.3, 1.0), (1.0, 3.0), (3.0, 10.0))


def run(n: int, seed: int, ice_range: tuple[float, float], finder: IceFinder) -> None:
    cfg = preset("master").sim
    rng = np.random.default_rng(seed)
    strength, found, bg, ms = [], [], [], []
    for i in range(n):
        p = sample_params(shot_seed(seed, i), cfg)
        ice = 0.0 if i % 2 == 0 else float(np.exp(rng.uniform(*np.log(ice_range))))
        grid = simulate(replace(p, ice=ice), HIT_GRID).inputs
        t = time.perf_counter()
        flag, _ = finder.find(grid)
        ms.append(1e3 * (time.perf_counter() - t))
        strength.append(ice)
        found.append(flag)
        bg.append(p.bg_level)
    s, f, b = np.array(strength), np.array(found), np.array(bg)
    no = s == 0
    tp, fp = int((f & ~no).sum()), int((f & no).sum())
    print(f"{n} shots (seed {seed}): false alarms {fp}/{int(no.sum())} "
          f"({100 * fp / max(no.sum(), 1):.1f} %), precision {tp / max(tp + fp, 1):.3f}, "
          f"recall {tp / max((~no).sum(), 1):.3f}; {np.median(ms):.1f} ms per grid (p50)")
    print("| ice strength | shots | recall | recall, background >= 1 photon/px |")
    print("|---|---|---|---|")
    for lo, hi in SHELLS:
        m = (s >= lo) & (s < hi)
        mb = m & (b >= 1.0)
        if m.any():
            print(f"| {lo}-{hi} | {int(m.sum())} | {f[m].mean():.2f} | "
                  f"{f[mb].mean() if mb.any() else float('nan'):.2f} ({int(mb.sum())}) |")


def real(finder: IceFinder) -> None:
    from xray_platform.core.answer import map_grids
    from xray_platform.io.formats import read_frame

    for path in sorted(REAL_DIR.glob("*.cbf*")):
        try:
            frame = read_frame(path)
            geom = frame.geometry()
        except ValueError as e:
            print(f"{path.name}: not read ({str(e)[len(str(path)) + 2:][:70]})")
            continue
        grid = map_grids(frame.image, geom, [HIT_GRID])[HIT_GRID]
        flag, rings = finder.find(grid)
        listed = ", ".join(f"{r['d_A']} Å (x{r['strength']}, Z {r['z']})" for r in rings)
        print(f"{path.name}: ice {flag}{': ' + listed if listed else ''}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=400)
    ap.add_argument("--seed", type=int, default=78)
    ap.add_argument("--ice", type=float, nargs=2, default=(0.03, 10.0), metavar=("LO", "HI"))
    ap.add_argument("--z", type=float, default=IceFinder.z)
    ap.add_argument("--real", action="store_true", help="also the real frames")
    a = ap.parse_args()
    finder = IceFinder(z=a.z)
    run(a.n, a.seed, tuple(a.ice), finder)
    if a.real:
        real(finder)


if __name__ == "__main__":
    main()
