"""Hit finder accuracy and speed on simulated shots with exact labels (and on the real frames).

Draws ``--n`` shots from a preset's distribution (default ``master``: both detectors, 5 %
blanks, crystals from very weak to very strong, so hits and non-hits both occur), renders each on
the hit finder's grid with the simulator's fast path, and compares ``HitFinder.is_hit`` with the
exact label ``record['hit']`` (>= 15 reflections with I/sigma >= 3, physics/labels.py). Prints the
confusion counts, accuracy, precision, recall, and ms per grid (one grid at a time and batched).

    python benchmarks/hitfinder.py                         # 300 shots, seed 2024, 256 grid
    python benchmarks/hitfinder.py --n 400 --seed 1 --n-sigma 2 2.25 2.5 3   # sweep n_sigma
    python benchmarks/hitfinder.py --size 512 --n-sigma 2.5 2.75 3           # the 512 grid
    python benchmarks/hitfinder.py --real                  # + spot counts of the real frames

Not a test: it prints figures. Timings are on one CPU core (torch and numpy are not threaded
here) and are noisy on a shared machine: repeat them.
"""

from __future__ import annotations

import argparse
import statistics
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch

from xray_platform.core.hitfinder import HIT_GRID, HitFinder
from xray_platform.physics.presets import preset
from xray_platform.physics.qgrid import QGrid
from xray_platform.physics.sampling import sample_params, shot_seed
from xray_platform.physics.simulate import simulate

REAL_DIR = Path(__file__).resolve().parents[2] / "shared" / "data" / "real"
REAL_FRAMES = ("thau_3_2_0002.cbf.bz2", "thau_3_2_0017.cbf.bz2", "DLS_I03_smargon_0001.cbf.gz",
               "dlsnxs2cbf_therm_0001.cbf.gz")


def simulate_set(preset_name: str, n: int, seed: int, grid: QGrid) -> tuple[np.ndarray, list]:
    cfg = preset(preset_name).sim
    grids, records = [], []
    for i in range(n):
        shot = simulate(sample_params(shot_seed(seed, i), cfg), grid)
        grids.append(shot.inputs)
        records.append(shot.record)
    return np.stack(grids), records


def report(finder: HitFinder, grids: np.ndarray, records: list) -> None:
    truth = np.array([r["hit"] for r in records])
    n_spots = finder.count_spots_batch(grids)
    pred = n_spots >= finder.min_spots
    tp = int((pred & truth).sum())
    fp = int((pred & ~truth).sum())
    fn = int((~pred & truth).sum())
    tn = int((~pred & ~truth).sum())
    acc = (tp + tn) / len(truth)
    prec = tp / max(tp + fp, 1)
    rec = tp / max(tp + fn, 1)
    nd = np.array([r["n_detectable"] for r in records])
    hit = nd >= 15
    ratio = n_spots[hit] / nd[hit]
    print(f"n_sigma={finder.n_sigma:<5} accuracy {acc:.3f}  precision {prec:.3f}  "
          f"recall {rec:.3f}  (TP {tp}  FP {fp}  FN {fn}  TN {tn})  "
          f"spots/detectable on hits: median {np.median(ratio):.2f}")


def timing(finder: HitFinder, grids: np.ndarray, batch: int, repeats: int = 3) -> None:
    single = []
    for _ in range(repeats):
        t = time.perf_counter()
        for g in grids:
            finder.count_spots(g)
        single.append((time.perf_counter() - t) / len(grids))
    batched = []
    for _ in range(repeats):
        t = time.perf_counter()
        for i in range(0, len(grids), batch):
            finder.count_spots_batch(grids[i:i + batch])
        batched.append((time.perf_counter() - t) / len(grids))
    t = time.perf_counter()
    finder.count_spots_batch(torch.from_numpy(grids[:batch]))
    tb = time.perf_counter() - t
    print(f"time per grid ({grids.shape[1]}^2, 1 core): one at a time {min(single) * 1e3:.2f} ms "
          f"(median of runs {statistics.median(single) * 1e3:.2f}); batches of {batch}: "
          f"{min(batched) * 1e3:.2f} ms/grid; one batch of {min(batch, len(grids))} "
          f"from torch: {tb * 1e3:.1f} ms")


def real_frames(finder: HitFinder, grid: QGrid) -> None:
    from xray_platform.core.preprocess import Preprocessing, frame_to_counts
    from xray_platform.io.formats import read_frame

    if not REAL_DIR.is_dir():
        print(f"real frames: {REAL_DIR} absent, skipped")
        return
    for name in REAL_FRAMES:
        path = REAL_DIR / name
        if not path.exists():
            print(f"{name}: absent")
            continue
        frame = read_frame(path)
        counts = frame_to_counts(frame.image, frame.geometry(),
                                 Preprocessing(grid.size, grid.d_min_A))
        hit, n = finder.is_hit(counts)
        print(f"{name:32s} spots {n:5d}  hit {hit}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=300, help="simulated shots")
    ap.add_argument("--seed", type=int, default=2024, help="data set seed (shot i: shot_seed)")
    ap.add_argument("--preset", default="master", help="preset whose SimConfig shots come from")
    ap.add_argument("--size", type=int, default=HIT_GRID.size, help="grid size (256 or 512)")
    ap.add_argument("--n-sigma", type=float, nargs="+", default=[HitFinder.n_sigma],
                    help="significance thresholds to evaluate (a sweep)")
    ap.add_argument("--batch", type=int, default=32, help="batch size for the batched timing")
    ap.add_argument("--real", action="store_true", help="also count spots on the real frames")
    ap.add_argument("--threads", type=int, default=1, help="torch CPU threads")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    grid = QGrid(args.size, HIT_GRID.d_min_A)
    t = time.perf_counter()
    grids, records = simulate_set(args.preset, args.n, args.seed, grid)
    n_hits = sum(r["hit"] for r in records)
    print(f"{args.n} shots from preset {args.preset!r} (seed {args.seed}) on a {grid.size}^2 "
          f"grid to {grid.d_min_A} Å: {n_hits} hits, {args.n - n_hits} non-hits "
          f"(simulated in {time.perf_counter() - t:.1f} s)")
    finder = HitFinder()
    for ns in args.n_sigma:
        report(replace(finder, n_sigma=ns), grids, records)
    timing(replace(finder, n_sigma=args.n_sigma[0]), grids, args.batch)
    if args.real:
        real_frames(replace(finder, n_sigma=args.n_sigma[0]), grid)


if __name__ == "__main__":
    main()
