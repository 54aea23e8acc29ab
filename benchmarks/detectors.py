"""Every detector: per-format decode and map costs with the answers on the real frames, and the
shipped models on simulated frames of each detector preset.

    python benchmarks/detectors.py                 # both parts
    python benchmarks/detectors.py --shots 300     # more simulated shots per detector
    python benchmarks/detectors.py --no-sim        # the real frames only

Real frames: ../shared/data/real (or --real DIR). "map, first" is the first frame of a geometry
(the pixel -> cell maps are built, then cached); "map" a later frame of the same geometry;
"edge" the finest resolution anywhere on the detector (its farthest corner).

Simulated: single-lattice shots of the zoo's distribution (ice, beamstop, weak to strong) on
each detector; the resolution model is scored on the hits against d_vis (Pearson r, MAE), the
hit finder on all shots against the label.

Figures it prints (docs/guide/detectors.md): the table (decode, map ms and answers of the real
frames), the detectors' edge resolutions beside it, and the simulated per-detector figures
(Pearson r / MAE / bias / hit-finder accuracy).
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
import torch

from xray_platform.core.answer import map_grids, predict_frames
from xray_platform.core.forward import predict
from xray_platform.core.hitfinder import HIT_GRID, HitFinder
from xray_platform.core.preprocess import normalise, regrid
from xray_platform.io.formats import FormatError, read_frame
from xray_platform.physics import qgrid
from xray_platform.physics.presets import ZOO_DETECTORS, ZOO_GRID, preset
from xray_platform.physics.sampling import sample_params
from xray_platform.physics.simulate import simulate
from xray_platform.tracking.resolve import load

ROOT = Path(__file__).resolve().parents[1]


def edge_resolution_A(geom) -> float:
    """Finest d (Å) on the detector: a flat one's farthest corner, a multi-panel one's largest
    scattering angle over its panels' corners."""
    if hasattr(geom, "corner_resolution_A"):
        return float(geom.corner_resolution_A)
    return float(geom.wavelength_A / (2 * np.sin(geom.two_theta_range()[1] / 2)))


def real_frames(folder: Path, models: dict) -> None:
    print(f"\nReal frames ({folder}), 1 frame each, 2-core CPU, zoo models")
    print(f"{'file':34} {'panels':>6} {'decode ms':>9} {'map, first':>10} {'map ms':>7}  "
          "answer")
    grids = [m.prep.grid for m in models.values()] + [HIT_GRID]
    for path in sorted(p for p in folder.iterdir() if p.name != "README.md"):
        qgrid._flat_frame_map.cache_clear()
        qgrid._panels_frame_map.cache_clear()
        t0 = time.perf_counter()
        try:
            frame = read_frame(path)
            geom = frame.geometry()
        except (FormatError, ValueError) as e:
            print(f"{path.name:34} {'':>6} {'':>9} {'':>10} {'':>7}  refused: {str(e)[-90:]}")
            continue
        t1 = time.perf_counter()
        image = torch.as_tensor(frame.image)
        map_grids(image, geom, grids)
        t2 = time.perf_counter()
        map_grids(image, geom, grids)
        t3 = time.perf_counter()
        a = predict_frames([frame], models)[0]
        n_panels = len(frame.info.panels) if frame.info.panels else 1
        res = f"{a['resolution_A']:.2f} ± {a['resolution_sigma_A']:.2f} Å" \
            if a.get("resolution_A") else "-"
        dmin = f"{a['d_min_spots_A']:.2f} ± {a['d_min_spots_sigma_A']:.2f} Å" \
            if a.get("d_min_spots_A") else "-"
        print(f"{path.name:34} {n_panels:>6} {1e3 * (t1 - t0):>9.0f} {1e3 * (t2 - t1):>10.0f} "
              f"{1e3 * (t3 - t2):>7.0f}  hit={a['hit']} spots={a['n_spots']} "
              f"resolution={res} classical d_min={dmin} "
              f"(D {geom.distance_mm:.1f} mm, λ {geom.wavelength_A:.4f} Å, "
              f"edge {edge_resolution_A(geom):.2f} Å)")


def simulated(n_shots: int, models: dict) -> None:
    model = models["resolution"]
    print(f"\nSimulated single-lattice shots of the zoo distribution, {n_shots} per detector; "
          f"model {model.source}")
    print(f"{'detector':12} {'hits':>5} {'Pearson r':>9} {'MAE Å':>6} {'bias Å':>7} "
          f"{'hit acc.':>8} {'sim shots/s':>11}")
    base = preset("zoo-resolution").sim.with_(n_lattices={0: 0.05, 1: 0.95})
    finder = HitFinder()
    for det in ZOO_DETECTORS:
        cfg = base.with_(detectors=(det,))
        t0 = time.perf_counter()
        shots = [simulate(sample_params(50_000 + i, cfg), ZOO_GRID) for i in range(n_shots)]
        rate = n_shots / (time.perf_counter() - t0)
        counts = np.stack([s.inputs for s in shots])
        label_hit = np.array([bool(s.record["hit"]) for s in shots])
        d_vis = np.array([float(s.record["d_vis"]) for s in shots])
        found, _ = finder.is_hit_batch(regrid(counts, ZOO_GRID, HIT_GRID))
        x = normalise(regrid(counts[label_hit], ZOO_GRID, model.prep.grid), model.prep)
        d = predict(model.model, x[:, 0].numpy())["d_A"]
        t = d_vis[label_hit]
        r = float(np.corrcoef(d, t)[0, 1]) if len(t) > 2 else float("nan")
        print(f"{det:12} {label_hit.sum():>5} {r:>9.3f} {np.mean(np.abs(d - t)):>6.3f} "
              f"{np.mean(d - t):>+7.3f} {np.mean(found == label_hit):>8.3f} {rate:>11.1f}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--real", type=Path, default=ROOT.parent / "shared" / "data" / "real")
    ap.add_argument("--shots", type=int, default=150)
    ap.add_argument("--no-sim", action="store_true")
    ap.add_argument("--no-real", action="store_true")
    args = ap.parse_args()
    torch.set_num_threads(2)
    models = {"resolution": load("resolution", "zoo")}
    if not args.no_real and args.real.is_dir():
        real_frames(args.real, models)
    if not args.no_sim:
        simulated(args.shots, models)


if __name__ == "__main__":
    main()
