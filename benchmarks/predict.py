"""`xrp predict` figures: frames/s and per-step ms over (a) many frames of one geometry and
(b) frames of distinct geometries, as plain .cbf and as .cbf.bz2, through the real command (Ray
Data actors); and the cost of building the pixel -> grid map of a new geometry (PILATUS 6M,
EIGER 16M).

Per set it prints the wall-clock frames/s of the whole command (Ray start-up included), each
step's median and max ms from the table's timing columns, and "steady frames/s (1 core)":
1000 / the median over frames of the sum of every step the per-frame answer path of
`xrp predict` times (core/answer.py, orchestration/predict.py): decode, grid (mapping onto
every model's grid and the hit finder's), hit finder, ice rings, classical d_min, lattice model
and resolution model (the models per frame of their batch). Left out: Ray Data's scheduling
and the table writing, which are not per frame. The figure in docs/guide/benchmarks.md "With
both zoo models `xrp predict` answers a plain-CBF PILATUS 6M frame in ~N ms" is the "one
geometry, .cbf" set's steady figure.

    python benchmarks/predict.py                     # 16 frames per set, the zoo models
    python benchmarks/predict.py --frames 48 --models random --grid 128
    python benchmarks/predict.py --map-only
    python benchmarks/predict.py --frames 8 --sets one-cbf   # the guide's steady figure only

Frames are simulated PILATUS 6M shots (full frames, xrp's physics) written as PILATUS miniCBF.
"""

from __future__ import annotations

import argparse
import csv
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path

#: the frame sets: (one geometry?, .cbf.bz2?)
SETS = {"one-cbf": (True, False), "one-bz2": (True, True), "distinct-cbf": (False, False),
        "distinct-bz2": (False, True)}


def write_set(folder: Path, n: int, same_geometry: bool, compress: bool, seed: int) -> Path:
    from xray_platform.io.cbf import write_cbf
    from xray_platform.physics.presets import preset
    from xray_platform.physics.simulate import simulate

    folder.mkdir(parents=True, exist_ok=True)
    p0 = preset("resmos2").with_detector("pilatus6m")
    first = p0.params(seed, 0)
    for i in range(n):
        p = p0.params(seed, i)
        if same_geometry:  # one beamline setup, new crystals
            p = replace(p, distance_mm=first.distance_mm, wavelength_A=first.wavelength_A,
                        beam_center_px=first.beam_center_px, beamstop=first.beamstop)
        frame = simulate(p, full_frame=True).frame
        g = p.geometry
        name = folder / f"frame_{i:04d}.cbf{'.bz2' if compress else ''}"
        write_cbf(name, frame, wavelength_A=g.wavelength_A, distance_mm=g.distance_mm,
                  pixel_size_mm=g.pixel_mm, beam_center_px=g.beam_center_px)
    return folder


def random_models(tmp: Path, grid: int) -> dict[str, str]:
    import torch

    from xray_platform.core.models import build_model, save_model
    from xray_platform.core.preprocess import Preprocessing

    torch.manual_seed(0)
    out = {}
    for task, label in (("lattice", "is_multi"), ("resolution", "d_vis")):
        out[task] = str(save_model(tmp / f"{task}.pt", build_model(task, 18),
                                   {"label": label, "preprocessing": Preprocessing(grid)}))
    return out


def run_predict(folder: Path, models: dict[str, str], out: Path) -> dict[str, float]:
    t0 = time.perf_counter()
    r = subprocess.run([sys.executable, "-m", "xray_platform.cli", "predict", str(folder),
                        "--out", str(out), "--lattice-model", models["lattice"],
                        "--resolution-model", models["resolution"], "--always-resolution"],
                       capture_output=True, text=True)
    wall = time.perf_counter() - t0
    if r.returncode:
        raise SystemExit(r.stdout[-2000:] + r.stderr[-2000:])
    rows = list(csv.DictReader(out.open()))
    res = {"frames": len(rows), "hits": sum(x["hit"] == "True" for x in rows), "wall_s": wall,
           "frames_per_s": len(rows) / wall}
    # every step of the per-frame answer (the table's timing columns, core/schema.py COLUMNS)
    steps = ("decode_ms", "grid_ms", "hitfinder_ms", "ice_ms", "d_min_spots_ms", "spots_ms",
             "indexing_ms", "lattice_ms", "resolution_ms")
    for k in steps:
        vals = [float(x[k]) for x in rows if x[k]]
        if vals:  # spots and indexing: hits only
            res[f"{k} p50"] = statistics.median(vals)
            res[f"{k} max"] = max(vals)
    per_frame = [sum(float(x[k]) for k in steps if x[k]) for x in rows]
    res["steady ms per frame (sum of the steps)"] = statistics.median(per_frame)
    res["steady frames/s (1 core)"] = 1e3 / statistics.median(per_frame)
    return res


def map_build_ms(repeats: int = 3) -> dict[str, float]:
    """ms to build the pixel -> cell map of a new geometry on one core (median of repeats)."""
    import torch

    from xray_platform.physics.geometry import Geometry, detector
    from xray_platform.physics.qgrid import QGrid, _frame_map

    torch.set_num_threads(1)
    out = {}
    for det, centre in (("pilatus6m", (1231.0, 1263.0)), ("eiger16m", (2075.0, 2185.0))):
        ts = []
        for i in range(repeats):
            g = Geometry(detector(det), 200.0 + 7.3 * i, 1.0, centre)  # new geometry each time
            t0 = time.perf_counter()
            _frame_map(g, QGrid(256, 1.2), "cpu")
            ts.append(1e3 * (time.perf_counter() - t0))
        out[f"{det} map build ms (256² grid)"] = statistics.median(ts)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--frames", type=int, default=16, help="frames per set")
    ap.add_argument("--models", default="zoo", help="zoo, or random (random-weight ResNet-18s)")
    ap.add_argument("--grid", type=int, default=128, help="random models: input grid")
    ap.add_argument("--map-only", action="store_true")
    ap.add_argument("--sets", default=",".join(SETS),
                    help=f"comma-separated subset of {', '.join(SETS)}")
    a = ap.parse_args()
    sets = a.sets.split(",")
    unknown = set(sets) - set(SETS)
    if unknown:
        ap.error(f"unknown sets {sorted(unknown)}; known: {', '.join(SETS)}")
    for k, v in map_build_ms().items():
        print(f"{k}: {v:.0f}")
    if a.map_only:
        return
    with tempfile.TemporaryDirectory() as d:
        tmp = Path(d)
        from xray_platform.zoo import zoo_model

        models = random_models(tmp, a.grid) if a.models == "random" else \
            {t: "zoo" if zoo_model(t) else "none" for t in ("lattice", "resolution")}
        for key in sets:
            same, comp = SETS[key]
            name = f"{'one geometry' if same else 'distinct geometries'}, " \
                   f"{'.cbf.bz2' if comp else '.cbf'}"
            folder = write_set(tmp / key, a.frames, same, comp, seed=1)
            res = run_predict(folder, models, tmp / "t.csv")
            print(f"\n{name}: {res['frames']} frames")
            for k, v in res.items():
                if k != "frames":
                    print(f"  {k}: {v:.2f}")


if __name__ == "__main__":
    main()
