"""Spots at full resolution (core/spots.py): ms per frame and what is found, on the real frames
of ../shared/data/real and the nanoBragg reference shots (recall of their reflections with
I/sigma >= 5 within 1.5 px, precision: spots within 1.5 px of a listed reflection, median
centroid error). One thread; the hit finder's grid mapping (done once per frame on the answer
path) is timed apart.

    python benchmarks/spots.py [--repeat 5] [--threads 1]
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

import numpy as np
import torch
from scipy.spatial import cKDTree

from xray_platform.core.hitfinder import HIT_GRID
from xray_platform.core.spots import SpotFinder
from xray_platform.io.formats import read_frame
from xray_platform.physics.qgrid import frame_to_grid

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data"


def _timed(fn, *args, repeat: int) -> tuple[object, float]:
    fn(*args)  # the first call builds the per-geometry maps (cached)
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        out = fn(*args)
        times.append(time.perf_counter() - t0)
    return out, 1e3 * statistics.median(times)


def _grid(image: np.ndarray, geom) -> np.ndarray:
    return frame_to_grid(torch.as_tensor(image), geom, HIT_GRID).numpy()


def _against_reflections(path: Path, spots) -> str:
    ref = json.loads(path.with_suffix(".json").read_text())
    col = {c: i for i, c in enumerate(ref["reflection_columns"])}
    r = np.array(ref["reflections"]).reshape(-1, len(col))
    if not len(spots) or not len(r):
        return ""
    at = np.stack([spots.slow, spots.fast], 1)
    strong = r[r[:, col["I_over_sigma"]] >= 5][:, [col["s"], col["f"]]]
    dist, _ = cKDTree(at).query(strong)
    near, _ = cKDTree(r[:, [col["s"], col["f"]]]).query(at)
    return (f"recall {np.mean(dist < 1.5):.2f} of {len(strong)}, precision "
            f"{np.mean(near < 1.5):.2f}, centroid {np.median(dist[dist < 1.5]):.2f} px")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--repeat", type=int, default=5)
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    finder = SpotFinder()
    files = sorted((SHARED / "real").glob("*.cbf*")) + sorted(
        (SHARED / "nanobragg-ref").glob("ref_*.cbf"))
    print(f"{'frame':34s} {'pixels':>9s} {'grid ms':>8s} {'spots ms':>9s} {'spots':>6s} "
          f"{'panels':>6s} {'ice':>4s} {'d_min':>6s}  vs nanoBragg's reflections")
    for path in files:
        frame = read_frame(path)
        geom = frame.geometry()
        image = np.asarray(frame.image, np.float32)
        counts, grid_ms = _timed(_grid, image, geom, repeat=args.repeat)
        spots, ms = _timed(finder.find, image, geom, counts, repeat=args.repeat)
        d_min = f"{spots.d_A.min():.2f}" if len(spots) else "-"
        extra = _against_reflections(path, spots) if "nanobragg" in str(path) else ""
        print(f"{path.name:34s} {image.size:9,d} {grid_ms:8.1f} {ms:9.1f} {len(spots):6d} "
              f"{len(np.unique(spots.panel)):6d} {int(spots.ice.sum()):4d} {d_min:>6s}  "
              f"{extra}")


if __name__ == "__main__":
    main()
