"""Classical per-image d_min from spots (core/dmin.py) and the zoo resolution network, side by
side on the same simulated hits, against the exact d_vis labels.

Draws ``--n`` shots of a preset (default ``master``), keeps the hits, and per hit computes the
classical estimate (percentile and DIALS two-line methods, ice-ring spots excluded) and the
shipped zoo model's answer. Prints Spearman, MAE and bias overall and by d_vis shell, the
fraction within 1 and 2 sigma, how often the two disagree beyond their uncertainties, and ms.
``--nanobragg`` adds the same comparison on nanoBragg's reference hits (another simulator;
../shared/data/nanobragg-ref, d_vis from their JSON labels), frame -> answer as `xrp predict`
answers them.

Figures it prints: the classical d_min paragraph of docs/guide/serving.md (Spearman, MAE by
shell, within 2 sigma, disagreements, ms) and, with --nanobragg, how much finer the zoo
resolution model reads nanoBragg's shots (docs/guide/models.md, "Where the models stand").

    python benchmarks/dmin.py                 # 400 shots, seed 91
    python benchmarks/dmin.py --n 1000 --seed 3
    python benchmarks/dmin.py --n 0 --nanobragg   # nanoBragg's hits only
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np

from xray_platform.core.answer import load_file, resolution
from xray_platform.core.dmin import SpotResolution, disagree
from xray_platform.core.hitfinder import HIT_GRID, HitFinder
from xray_platform.core.ice import IceFinder
from xray_platform.core.preprocess import normalise, regrid
from xray_platform.physics.presets import preset
from xray_platform.physics.sampling import sample_params, shot_seed
from xray_platform.physics.simulate import simulate
from xray_platform.zoo import zoo_model

SHELLS = ((0.0, 2.0), (2.0, 3.0), (3.0, 4.5), (4.5, 99.0))
NANOBRAGG = Path(__file__).resolve().parents[2] / "shared" / "data" / "nanobragg-ref"


def spearman(a: np.ndarray, b: np.ndarray) -> float:
    ra, rb = np.argsort(np.argsort(a)), np.argsort(np.argsort(b))
    return float(np.corrcoef(ra, rb)[0, 1])


def line(name: str, truth: np.ndarray, est: np.ndarray, sig: np.ndarray) -> str:
    m = np.isfinite(est)
    t, e, s = truth[m], est[m], sig[m]
    within = [np.mean(np.abs(e - t) <= k * s) for k in (1, 2)]
    return (f"| {name} | {m.sum()} | {spearman(t, e):.3f} | {np.abs(e - t).mean():.3f} | "
            f"{(e - t).mean():+.3f} | {100 * within[0]:.0f} % | {100 * within[1]:.0f} % |")


def nanobragg(folder: Path, model) -> None:
    """The zoo network and the classical estimate on nanoBragg's hits against their d_vis."""
    from xray_platform.core.answer import predict_frames
    from xray_platform.io.formats import read_frame

    rows = []
    print(f"\nnanoBragg reference hits ({folder}): d_vis | network | classical (Å)")
    for js in sorted(folder.glob("ref_*.json")):
        ref = json.loads(js.read_text())
        if not ref.get("hit"):
            continue
        a = predict_frames([read_frame(folder / ref["file"])], {"resolution": model})[0]
        rows.append((ref["d_vis"], a["resolution_A"], a["d_min_spots_A"]))
        print(f"  {ref['name']} {ref['crystal_form']:12} {ref['n_lattices']} lattice(s): "
              f"{ref['d_vis']:.2f} | {a['resolution_A']:.2f} ± {a['resolution_sigma_A']:.2f} | "
              + (f"{a['d_min_spots_A']:.2f}" if a["d_min_spots_A"] else "-"))
    if not rows:
        print("  none found")
        return
    t = np.array([r[0] for r in rows])
    for name, k in (("network", 1), ("classical", 2)):
        e = np.array([np.nan if r[k] is None else r[k] for r in rows])
        m = np.isfinite(e)
        diff = e[m] - t[m]
        print(f"{name}: {m.sum()} hits, Spearman {spearman(t[m], e[m]):.3f}, bias "
              f"{diff.mean():+.3f} Å (from {diff.min():+.2f} to {diff.max():+.2f}), "
              f"MAE {np.abs(diff).mean():.3f} Å")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=400)
    ap.add_argument("--seed", type=int, default=91)
    ap.add_argument("--preset", default="master")
    ap.add_argument("--nanobragg", nargs="?", type=Path, const=NANOBRAGG, default=None,
                    metavar="DIR", help=f"also nanoBragg's reference hits (default {NANOBRAGG})")
    a = ap.parse_args()
    cfg = preset(a.preset).sim
    hf, near = HitFinder(), IceFinder().near_ice()
    methods = {m: SpotResolution(method=m) for m in ("percentile", "dials")}
    model = load_file("resolution", zoo_model("resolution").file)
    truth, est, net, ms = [], {m: [] for m in methods}, [], []
    for i in range(a.n):
        p = sample_params(shot_seed(a.seed, i), cfg)
        shot = simulate(p, HIT_GRID)
        if not shot.record["hit"]:
            continue
        truth.append(shot.record["d_vis"])
        t = time.perf_counter()
        rows, cols, sig = hf.spot_list(shot.inputs)
        for m, e in methods.items():
            est[m].append(e.estimate(rows, cols, sig, near))
        ms.append(1e3 * (time.perf_counter() - t))
        # the model's grid pooled from the 256² one, as serving and the stored data sets do
        x = normalise(regrid(shot.inputs, HIT_GRID, model.prep.grid), model.prep)[0, 0].numpy()
        d, s = resolution(model, x[None])
        net.append((float(d[0]), float(s[0])))
    if truth:
        t_ = np.array(truth)
        nd, ns = np.array(net).T
        print(f"{len(t_)} hits of {a.n} shots ({a.preset}, seed {a.seed}); spot list + both "
              f"estimates {np.median(ms):.1f} ms per grid (p50)")
        print("| estimate | hits | Spearman | MAE Å | bias Å | within 1 sigma | within 2 sigma |")
        print("|---|---|---|---|---|---|---|")
        cls = {}
        for m, vals in est.items():
            d = np.array([v[0] if v[0] is not None else np.nan for v in vals])
            s = np.array([v[1] if v[1] is not None else np.nan for v in vals])
            cls[m] = (d, s)
            print(line(f"classical, {m}", t_, d, s))
        print(line("zoo network", t_, nd, ns))
        d, s = cls["percentile"]
        print("\nby d_vis shell (MAE Å: classical percentile / network)")
        for lo, hi in SHELLS:
            m = (t_ >= lo) & (t_ < hi) & np.isfinite(d)
            if m.any():
                print(f"  {lo}-{hi} Å: {m.sum()} hits, {np.abs(d[m] - t_[m]).mean():.3f} / "
                      f"{np.abs(nd[m] - t_[m]).mean():.3f}")
        flags = [disagree(nd[i], ns[i], *(None if np.isnan(v) else v for v in (d[i], s[i])))
                 for i in range(len(t_))]
        known = [f for f in flags if f is not None]
        print("\nnetwork and classical disagree beyond 2 combined sigma: "
              f"{sum(known)}/{len(known)}")
    if a.nanobragg is not None:
        nanobragg(a.nanobragg, model)


if __name__ == "__main__":
    main()
