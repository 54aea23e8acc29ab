"""Simulator speed: shots/s for the PILATUS 6M geometry producing the 512 x 512 model input.

Prints shots/s on one CPU core (torch limited to 1 thread) or on a CUDA device, for the fast
path (model input only) and the full-frame path, the split between reflection prediction and
rendering, and peak memory. Not a test: it prints figures.

Figures it prints (docs/guide/benchmarks.md): shots/s on the fast path (median, max ms per
shot) and for full PILATUS 6M frames; with --spot-profile mosaic, the cost of mosaic spots
against the default round ones (same seeds).

    python benchmarks/simulate.py [--n 40] [--size 512] [--device cpu|cuda] [--full 3]
    python benchmarks/simulate.py --full 0 --spot-profile mosaic
"""

from __future__ import annotations

import argparse
import resource
import statistics
import time

import torch

from xray_platform.physics.qgrid import QGrid
from xray_platform.physics.sampling import SimConfig, sample_params, shot_seed
from xray_platform.physics.simulate import predict_reflections, render_frame, render_input


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=40, help="shots for the fast path")
    ap.add_argument("--full", type=int, default=3, help="shots for the full-frame path")
    ap.add_argument("--size", type=int, default=512, help="model-input grid size")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--detector", default="pilatus6m")
    ap.add_argument("--threads", type=int, default=1, help="torch CPU threads (per core: 1)")
    ap.add_argument("--spot-profile", default="round", choices=("round", "mosaic"),
                    help="spot shape (physics/simulate.py; the presets use round)")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    dev = torch.device(args.device)
    sync = torch.cuda.synchronize if dev.type == "cuda" else (lambda: None)
    cfg = SimConfig(detectors=(args.detector,), spot_profile=args.spot_profile)
    grid = QGrid(args.size)
    params = [sample_params(shot_seed(123, i), cfg) for i in range(args.n + 2)]
    for p in params[:2]:  # warm-up (caches, kernels)
        render_input(p, grid, dev)
    sync()
    t_pred, t_all, n_refl = [], [], []
    for p in params[2:]:
        t0 = time.perf_counter()
        refl = predict_reflections(p, d_min_A=max(grid.d_min_A, p.geometry.corner_resolution_A),
                                   device=dev)
        sync()
        t1 = time.perf_counter()
        render_input(p, grid, dev, refl=refl)
        sync()
        t2 = time.perf_counter()
        t_pred.append(t1 - t0)
        t_all.append(t2 - t0)
        n_refl.append(len(refl))
    total = sum(t_all)
    print(f"device {dev}, torch threads {torch.get_num_threads()}, detector {args.detector}, "
          f"grid {args.size}x{args.size}, {args.n} shots (random crystals, 5 % blanks), "
          f"{args.spot_profile} spots")
    print(f"fast path (model input): {args.n / total:.1f} shots/s, "
          f"median {1000 * statistics.median(t_all):.1f} ms/shot, "
          f"p90 {1000 * sorted(t_all)[int(0.9 * len(t_all))]:.1f} ms, "
          f"max {1000 * max(t_all):.0f} ms "
          f"(reflection prediction {1000 * statistics.median(t_pred):.1f} ms median, "
          f"{statistics.median(n_refl):.0f} reflections median)")
    if args.full:
        t = []
        for p in params[2:2 + args.full]:
            t0 = time.perf_counter()
            render_frame(p, dev)
            sync()
            t.append(time.perf_counter() - t0)
        print(f"full frame path: {len(t) / sum(t):.2f} shots/s, "
              f"median {1000 * statistics.median(t):.0f} ms/shot")
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"peak memory: {rss:.0f} MB RSS"
          + (f", {torch.cuda.max_memory_allocated() / 2**20:.0f} MB CUDA"
             if dev.type == "cuda" else ""))


if __name__ == "__main__":
    main()
