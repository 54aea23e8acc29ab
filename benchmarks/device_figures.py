r"""Device figures: the simulator and xrp's frame -> answer path on one device (a CUDA GPU),
written as one JSON file. The measuring half of benchmarks/device.sh, which a session lent a
GPU machine runs through the device tool, in one call:

    run(command="bash benchmarks/device.sh", timeout_s=560)

device.sh measures with this module (~2 min), then trains `jobs/zoo_gpu.py lattice` on what is
left of its 525 s (~5 min), then adds the training figures here (--training). Its $OUT comes
back with device.json (these figures, each with its unit; a failed step's error under
"failed", a step the deadline left out under "skipped"), model.pt.part0... , history.json,
summary.json and the two logs. Back here:

    cat model.pt.part* > model.pt
    xrp evaluate model.pt --data data/zoo-lattice-uniform-test     # and -g1, -g5, -g20
    xrp evaluate zoo:lattice --data data/zoo-lattice-uniform-test  # the zoo model, same sets

on the zoo lattice card's test sets (xray_platform/zoo/xrp-zoo-lattice.md says how to simulate
them); ship it (python -m xray_platform.zoo.export lattice model.pt ...) only if it beats the
zoo model there. Quote the figures with the device name they came with.

    python benchmarks/device_figures.py --device cuda --out OUT/device.json [--deadline T]
    python benchmarks/device_figures.py --device cpu --tiny --out /tmp/device.json  # a dry run
    python benchmarks/device_figures.py --training OUT --training-rc RC --out OUT/device.json

Frames are full frames simulated on the device (physics/simulate.py render_frame) wrapped as
io/formats Frame objects with the simulated geometry: PILATUS 6M (2463 x 2527 px, 0.172 mm)
and EIGER 16M (the preset cropped to 4148 x 4362 px, 0.075 mm); the frames of one detector
share one geometry (as a data collection's do), so the first frame pays for the pixel -> grid
map and the percentiles are over the frames after it. The zoo models answer (no MLflow), moved
to the device; core/answer.py maps frames onto the grids and finds spots on the CPU, and
grid_on_device_ms says what mapping on the device would cost. --tiny: the 256 x 256 test
detector, a few shots and frames (a CPU dry run of the script, not figures to quote).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import resource
import statistics
import sys
import time
import traceback
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

#: name -> (simulated detector preset, answered frame shape (slow, fast)); --tiny: test preset
FRAMES = {"pilatus6m": ("pilatus6m", (2527, 2463)), "eiger16m": ("eiger16m", (4362, 4148))}
TINY_FRAMES = {"pilatus6m": ("test", (256, 256)), "eiger16m": ("test", (256, 256))}
#: seconds each step may use at most (full run; --tiny steps are a few shots anyway)
STEP_CAP_S = {"simulate": 40.0, "answer": 30.0}
#: seconds a step needs at least to start before the deadline
STEP_MIN_S = {"simulate": 10.0, "answer": 15.0, "models": 5.0}


class Report:
    """device.json, rewritten after every step so that a later failure or kill loses nothing."""

    def __init__(self, path: Path, deadline: float) -> None:
        self.path, self.deadline = path, deadline
        self.data: dict[str, Any] = json.loads(path.read_text()) if path.is_file() else {}
        for k in ("figures", "details", "failed", "skipped"):
            self.data.setdefault(k, {})

    def left(self) -> float:
        return self.deadline - time.time()

    def figure(self, name: str, value: float, unit: str) -> None:
        self.data["figures"][name] = {"value": round(float(value), 4), "unit": unit}

    def detail(self, name: str, value: Any) -> None:
        self.data["details"][name] = value

    def step(self, name: str, fn: Callable[[], None], min_s: float) -> None:
        """Run one step; its error (or the deadline's skip) is recorded, never raised."""
        if self.left() < min_s:
            self.data["skipped"][name] = f"deadline: {self.left():.0f} s left, needs {min_s:.0f}"
        else:
            t0 = time.perf_counter()
            try:
                fn()
                self.data["details"].setdefault("step_s", {})[name] = round(
                    time.perf_counter() - t0, 1)
            except Exception as e:  # a failed step must not lose the other steps' figures
                self.data["failed"][name] = f"{type(e).__name__}: {e}"[:2000]
                traceback.print_exc()
        self.save()

    def save(self) -> None:
        tmp = self.path.with_name(self.path.name + ".tmp")
        tmp.write_text(json.dumps(self.data, indent=1, default=str))
        os.replace(tmp, self.path)


def environment(device: str, tiny: bool) -> dict[str, Any]:
    """What the figures were measured on."""
    import torch

    cuda = device.startswith("cuda") and torch.cuda.is_available()
    cpu = f"cpu ({platform.processor() or platform.machine()})"
    return {"device": torch.cuda.get_device_name(device) if cuda else cpu,
            "torch_device": device, "torch": torch.__version__,
            "cuda": torch.version.cuda if cuda else None, "cpu_cores": os.cpu_count(),
            "torch_threads": torch.get_num_threads(), "python": platform.python_version(),
            "tiny": tiny, "measured_at": time.strftime("%Y-%m-%dT%H:%M:%S%z")}


def sync(device: str) -> None:
    import torch

    if device.startswith("cuda"):
        torch.cuda.synchronize()


def timed(fn: Callable[[], Any], device: str) -> float:
    """Seconds ``fn`` takes, the device synchronised."""
    t0 = time.perf_counter()
    fn()
    sync(device)
    return time.perf_counter() - t0


def until(n: int, cap_s: float, r: Report) -> Callable[[int, float], bool]:
    """Whether to go on after ``i`` runs taking ``spent`` s: one run at least, then up to ``n``
    within the cap and the deadline."""
    return lambda i, spent: i == 0 or (i < n and spent < cap_s and r.left() > 5)


def simulate_figures(r: Report, device: str, tiny: bool) -> None:
    """Shots/s of the fast path (model input, 512² grid) and of full frames (PILATUS 6M and
    EIGER 16M), random crystals as benchmarks/simulate.py draws them."""
    from xray_platform.physics.qgrid import QGrid
    from xray_platform.physics.sampling import SimConfig, sample_params, shot_seed
    from xray_platform.physics.simulate import predict_reflections, render_frame, render_input

    grid = QGrid(128 if tiny else 512)
    params = [sample_params(shot_seed(123, i), SimConfig(detectors=("test" if tiny else
                                                                     "pilatus6m",)))
              for i in range(4 if tiny else 60)]
    for p in params[:2]:  # warm-up (caches, kernels)
        render_input(p, grid, device)
    sync(device)

    def shot(p) -> None:
        refl = predict_reflections(p, d_min_A=max(grid.d_min_A, p.geometry.corner_resolution_A),
                                   device=device)
        render_input(p, grid, device, refl=refl)

    go, times = until(len(params) - 2, STEP_CAP_S["simulate"] / 2, r), []
    while go(len(times), sum(times)):
        times.append(timed(lambda p=params[2 + len(times)]: shot(p), device))
    r.figure("simulate.fast_path_shots_per_s", len(times) / sum(times), "shots/s")
    r.figure("simulate.fast_path_median_ms", 1e3 * statistics.median(times), "ms/shot")
    r.detail("simulate.fast_path", {"shots": len(times), "grid": grid.size,
                                    "detector": params[0].detector})
    for name, (preset, _) in (TINY_FRAMES if tiny else FRAMES).items():
        cfg = SimConfig(detectors=(preset,))
        ps = [sample_params(shot_seed(321, i), cfg) for i in range(2 if tiny else 6)]
        render_frame(ps[0], device)  # warm-up
        go, times = until(len(ps) - 1, STEP_CAP_S["simulate"] / 4, r), []
        while go(len(times), sum(times)):
            times.append(timed(lambda p=ps[1 + len(times)]: render_frame(p, device), device))
        r.figure(f"simulate.full_frame_{name}_shots_per_s", len(times) / sum(times), "shots/s")
        r.detail(f"simulate.full_frame_{name}", {"shots": len(times), "detector": preset})


def load_zoo(device: str) -> dict:
    """The shipped zoo models (no MLflow: xray_platform/zoo/index.json), on ``device``."""
    from xray_platform.core.answer import load_file
    from xray_platform.zoo import zoo_models

    return {t: load_file(t, z.file, z.source, z.name, z.version).to(device)
            for t, z in zoo_models().items()}


def simulated_frames(preset: str, shape: tuple[int, int], n: int, device: str) -> list:
    """``n`` full frames of ``preset`` (one geometry, different crystals; one or two lattices)
    simulated on ``device``, cropped to ``shape``, as io/formats Frames."""
    from xray_platform.io.formats.base import Frame, FrameInfo
    from xray_platform.physics.geometry import detector
    from xray_platform.physics.sampling import SimConfig, sample_params, shot_seed
    from xray_platform.physics.simulate import render_frame

    cfg = SimConfig(detectors=(preset,), n_lattices={1: 0.5, 2: 0.5})
    ps = [sample_params(shot_seed(2024, i), cfg) for i in range(n)]
    p0, det = ps[0], detector(preset)
    ps = [replace(p, distance_mm=p0.distance_mm, wavelength_A=p0.wavelength_A,
                  beam_center_px=p0.beam_center_px, beamstop=p0.beamstop) for p in ps]
    info = FrameInfo(p0.wavelength_A, p0.distance_mm, det.pixel_mm, p0.beam_center_px,
                     n_fast=shape[1], n_slow=shape[0], detector=f"{det.description} (simulated)",
                     format="simulated", n_frames=n, max_counts=det.max_counts)
    return [Frame(render_frame(p, device)[:shape[0], :shape[1]].float().cpu().numpy(), info,
                  f"simulated:{preset}", i) for i, p in enumerate(ps)]


def answer_figures(r: Report, name: str, models: dict, device: str, tiny: bool) -> None:
    """Frames/s, p50/p99 ms per frame and peak memory of core/answer.predict_frames, one frame
    at a time, with the zoo models on ``device``."""
    import torch

    from xray_platform.core.answer import predict_frames

    preset, shape = (TINY_FRAMES if tiny else FRAMES)[name]
    frames = simulated_frames(preset, shape, 2 if tiny else 6, device)
    cuda = device.startswith("cuda")
    if cuda:
        torch.cuda.reset_peak_memory_stats()
    first = timed(lambda: predict_frames([frames[0]], models), device)  # builds the pixel map
    go, times, answers = until(4 if tiny else 60, STEP_CAP_S["answer"], r), [], []
    while go(len(times), sum(times)):
        f = frames[len(times) % len(frames)]
        times.append(timed(lambda f=f: answers.extend(predict_frames([f], models)), device))
    ms = sorted(1e3 * t for t in times)
    pre = f"answer.{name}"
    r.figure(f"{pre}.frames_per_s", len(times) / sum(times), "frames/s")
    r.figure(f"{pre}.p50_ms", percentile(ms, 50), "ms/frame")
    r.figure(f"{pre}.p99_ms", percentile(ms, 99), "ms/frame")
    r.figure(f"{pre}.first_frame_ms", 1e3 * first, "ms (pixel -> grid map built)")
    if cuda:
        r.figure(f"{pre}.peak_memory_mib", torch.cuda.max_memory_allocated() / 2**20,
                 "MiB (CUDA max_memory_allocated)")
    else:
        r.figure(f"{pre}.peak_memory_mib", resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
                 / 1024, "MiB (process max RSS)")
    r.figure(f"{pre}.grid_on_device_ms", grid_on_device_ms(frames[0], device), "ms/frame")
    steps = {k: round(statistics.median(a["timings_ms"].get(k, 0.0) for a in answers), 2)
             for k in answers[0]["timings_ms"]}
    r.detail(pre, {"shape_slow_fast": list(shape), "pixel_mm": frames[0].info.pixel_size_mm,
                   "simulated_preset": preset, "frames_answered": len(times),
                   "distinct_frames": len(frames), "hits": sum(a["hit"] for a in answers),
                   "median_step_ms": steps, "models": {t: m.source for t, m in models.items()}})


def percentile(sorted_ms: list[float], q: float) -> float:
    """The nearest-rank percentile of sorted values."""
    k = max(0, min(len(sorted_ms) - 1, math.ceil(q / 100 * len(sorted_ms)) - 1))
    return sorted_ms[k]


def grid_on_device_ms(frame, device: str) -> float:
    """Median ms to copy a frame to the device and map it onto the hit finder's grid there
    (core/answer.py maps on the CPU today): what moving the mapping would give."""
    import torch

    from xray_platform.core.hitfinder import HIT_GRID
    from xray_platform.physics.qgrid import frame_to_grid

    geom = frame.geometry()

    def run() -> None:
        frame_to_grid(torch.as_tensor(frame.image).to(device), geom, HIT_GRID)

    timed(run, device)  # the map, built once per geometry
    return 1e3 * statistics.median(timed(run, device) for _ in range(5))


def measure(r: Report, device: str, tiny: bool) -> None:
    """Every measuring step, each on its own."""
    import torch

    r.data = {**environment(device, tiny), **r.data}  # what it ran on, first in the file
    r.save()
    r.step("simulate", lambda: simulate_figures(r, device, tiny), STEP_MIN_S["simulate"])
    models: dict = {}
    r.step("models", lambda: models.update(load_zoo(device)), STEP_MIN_S["models"])
    for name in FRAMES:
        if models:
            r.step(f"answer_{name}", lambda n=name: answer_figures(r, n, models, device, tiny),
                   STEP_MIN_S["answer"])
        if device.startswith("cuda"):
            torch.cuda.empty_cache()


def training_figures(r: Report, out: Path, rc: int) -> None:
    """The figures of a jobs/zoo_gpu.py run that wrote into ``out`` (exit status ``rc``)."""
    summary = out / "summary.json"
    if rc != 0 or not summary.is_file():
        log = out / "train.log"
        tail = log.read_text(errors="replace")[-1500:] if log.is_file() else ""
        raise RuntimeError(f"jobs/zoo_gpu.py exited {rc}"
                           f"{'' if summary.is_file() else ', no summary.json'}: {tail}")
    s = json.loads(summary.read_text())
    meta, history = s["metadata"], s["history"]
    best = max(history, key=lambda h: h["val_score"])
    train_s = 60 * float(meta["train_minutes"])
    r.figure("train.minutes", meta["train_minutes"], "min (training budget)")
    r.figure("train.wall_s", s["wall_s"], "s (start-up, training, calibration, writing)")
    r.figure("train.images", s["images"], "images")
    r.figure("train.img_per_s", s["images"] / max(train_s, 1e-9), "images/s (over the budget)")
    r.figure("train.shots_simulated", s["train_shots"], "shots")
    r.figure("train.best_val_accuracy", best["val_accuracy"], "fraction")
    r.figure("train.best_val_roc_auc", best["val_roc_auc"], "fraction")
    r.detail("train", {"device": meta.get("device"), "best_row": best,
                       "calibration": meta.get("calibration"),
                       "validation": meta["training_data"].get("val_data"),
                       "parts": {p.name: p.stat().st_size
                                 for p in sorted(out.glob("model.pt.part*"))}})


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", type=Path, required=True, help="the JSON file (updated in place)")
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--tiny", action="store_true", help="a CPU dry run: tiny frames, few shots")
    ap.add_argument("--deadline", type=float, default=None,
                    help="epoch seconds: no step starts that cannot end before (default: 5 min)")
    ap.add_argument("--training", type=Path, default=None,
                    help="only add the figures of the jobs/zoo_gpu.py run in this folder")
    ap.add_argument("--training-rc", type=int, default=0, help="that run's exit status")
    a = ap.parse_args()
    a.out.parent.mkdir(parents=True, exist_ok=True)
    r = Report(a.out, a.deadline or time.time() + 300)
    if a.training is not None:
        r.step("train", lambda: training_figures(r, a.training, a.training_rc), 0.0)
    else:
        measure(r, a.device, a.tiny)
    print(json.dumps({k: f"{v['value']} {v['unit']}" for k, v in r.data["figures"].items()},
                     indent=1))
    for k, v in {**r.data["failed"], **r.data["skipped"]}.items():
        print(f"[device] {k}: {v[:300]}")


if __name__ == "__main__":
    main()
