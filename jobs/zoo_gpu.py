r"""A zoo recipe on one GPU machine in a fixed time, without Ray or MLflow (the device machine
lent to some sessions has torch but neither): all CPU cores simulate the recipe's shots without
pause while the GPU trains on every shot made so far (bf16 autocast, channels_last), then the
model is calibrated (lattice), scored on the validation shots and written in fp16.

    python jobs/zoo_gpu.py lattice --out OUT --minutes 8          # on the GPU machine
    python jobs/zoo_gpu.py lattice --out /tmp/t --minutes 1 --device cpu --workers 1   # a try

The shots are the recipe's own: shot i of the training set is shot i of `xrp simulate PRESET
--seed 0` (the stream simply goes on past n_train), validation shots are seed 1. The learning
rate follows warm-up + cosine over the time budget, not over a step count, so the run ends
annealed whenever the budget runs out. OUT receives model.pt (fp16; also cut into parts of at
most 15 MiB, model.pt.part0..., for transfers with a file-size limit), history.json (one row per
pass: shots so far, images trained, img/s, validation metrics) and summary.json. Join the parts
with `cat model.pt.part* > model.pt`, then `xrp evaluate` and `python -m xray_platform.zoo.export`
as for a CPU run. With ``--deadline`` (epoch seconds) the whole run ends by then: a slow start
shortens the training (benchmarks/device.sh runs it so, beside its device figures).
"""

from __future__ import annotations

import argparse
import json
import math
import multiprocessing as mp
import os
import sys
import time
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from xray_platform.core.preprocess import InputOptions

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

#: the largest part of the model file written beside it (the device tool returns files <= 16 MiB)
PART_BYTES = 15 * 2**20
#: seconds kept before --deadline for the last validation, calibration and writing the model
FINISH_S = 25.0
#: the least training a run gets, however late it starts (seconds)
MIN_TRAIN_S = 6.0


def simulate_chunk(args: tuple) -> dict:
    """Shots [start, start + count) of preset ``name`` with seed ``seed``, as network inputs
    (fp16, the model's grid) and training targets; only the shots that carry the label."""
    import numpy as np
    import torch

    from xray_platform.core.preprocess import Preprocessing, normalise, regrid, regrid_plan
    from xray_platform.core.targets import training_target
    from xray_platform.physics.presets import preset
    from xray_platform.physics.qgrid import QGrid
    from xray_platform.physics.sampling import sample_params, shot_seed
    from xray_platform.physics.simulate import simulate

    name, seed, start, count, task, label, size, d_min, opts = args
    torch.set_num_threads(1)
    p, grid = preset(name), QGrid(size, d_min)
    sim_grid = p.grid if regrid_plan(p.grid, grid) is not None else grid
    counts, records = [], []
    for i in range(start, start + count):
        shot = simulate(sample_params(shot_seed(seed, i), p.sim), sim_grid)
        counts.append(shot.inputs)
        records.append(shot.record)
    table = {k: np.array([r[k] for r in records]) for k in ("is_multi", "hit", "d_vis", "d_B")}
    y, keep = training_target(table, task, label)
    c = np.stack(counts)[keep]
    if sim_grid != grid and len(c):
        c = regrid(c, sim_grid, grid)
    prep = Preprocessing.for_grid(grid, opts)
    x = normalise(c, prep)[:, 0] if len(c) else torch.zeros(0, size, size)
    return {"x": x.half().numpy(), "y": y[keep], "shots": count}


def train_minutes(minutes: float, deadline: float | None, now: float) -> float:
    """The training budget: ``minutes``, or less when a ``deadline`` (epoch seconds) for the
    whole run leaves less once the finishing work (FINISH_S) is set aside."""
    if deadline is None:
        return minutes
    return max(MIN_TRAIN_S / 60, min(minutes, (deadline - now - FINISH_S) / 60))


def lr_at(elapsed_s: float, budget_s: float) -> float:
    """Learning-rate factor at ``elapsed_s`` of a ``budget_s`` run: core.training's warm-up +
    cosine schedule, with milliseconds of the budget as its steps."""
    from xray_platform.core.training import lr_factor

    return lr_factor(int(1000 * elapsed_s), max(1, int(1000 * budget_s)))


class Stream:
    """Chunks of training shots simulated ahead by a process pool, gathered into growing
    tensors on the device (the oldest pending chunk is always the next one taken)."""

    def __init__(self, pool, name: str, seed: int, task: str, label, size: int, d_min: float,
                 opts: InputOptions, chunk: int, ahead: int, device) -> None:
        import torch

        self.torch, self.device, self.pool = torch, device, pool
        self.job = (name, seed, task, label, size, d_min, opts, chunk)
        self.x = torch.zeros(0, size, size, dtype=torch.float16, device=device)
        self.y = torch.zeros(0, dtype=torch.float32, device=device)
        self.shots, self.next_chunk, self.pending = 0, 0, []
        for _ in range(ahead):
            self._submit()

    def _submit(self) -> None:
        name, seed, task, label, size, d_min, opts, chunk = self.job
        args = (name, seed, self.next_chunk * chunk, chunk, task, label, size, d_min, opts)
        self.pending.append(self.pool.apply_async(simulate_chunk, (args,)))
        self.next_chunk += 1

    def ready(self) -> bool:
        return bool(self.pending) and self.pending[0].ready()

    def take(self, n_chunks: int) -> None:
        """Wait for the next ``n_chunks`` chunks, add them, and ask for as many new ones."""
        xs, ys = [self.x], [self.y]
        for _ in range(n_chunks):
            r = self.pending.pop(0).get()
            self._submit()
            xs.append(self.torch.from_numpy(r["x"]).to(self.device))
            ys.append(self.torch.from_numpy(r["y"]).to(self.device))
            self.shots += r["shots"]
        self.x, self.y = self.torch.cat(xs), self.torch.cat(ys)


def validation_set(pool, name: str, n: int, task: str, label, size: int, d_min: float,
                   opts: InputOptions, chunk: int) -> tuple:
    """The recipe's validation shots (seed 1), all of them."""
    import numpy as np

    jobs = [(name, 1, s, min(chunk, n - s), task, label, size, d_min, opts)
            for s in range(0, n, chunk)]
    parts = pool.map(simulate_chunk, jobs)
    return np.concatenate([p["x"] for p in parts]), np.concatenate([p["y"] for p in parts])


def evaluate(model, x, y, task: str, batch: int) -> tuple:
    """(validation metrics, raw outputs, targets) of ``model`` on inputs ``x``."""
    import torch

    from xray_platform.core.training import predict_batches, val_metrics

    batches = ({"x": x[i:i + batch].float(), "y": y[i:i + batch]} for i in range(0, len(x), batch))
    out, yy = predict_batches(model, batches, 1 if task == "lattice" else 2)
    return val_metrics(task, out, yy), out, yy.to(torch.float32)


def _steps(model, opt, stream: Stream, a: argparse.Namespace, t0: float, budget: float,
           until: float) -> tuple[int, float]:
    """Optimiser steps over shuffled batches of every shot so far, until ``until`` seconds
    (from ``t0``) or one pass; returns (images, last loss)."""
    import torch

    from xray_platform.core.forward import forward
    from xray_platform.core.training import loss_function, random_flips

    model.train()
    loss_fn, n, loss = loss_function(a.task), 0, torch.zeros(())
    for idx in torch.randperm(len(stream.y), device=stream.device).split(a.batch_size):
        elapsed = time.perf_counter() - t0
        if elapsed >= until:
            break
        for g in opt.param_groups:
            g["lr"] = a.lr * lr_at(elapsed, budget)
        loss = loss_fn(forward(model, random_flips(stream.x[idx].float()[:, None])),
                       stream.y[idx])
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        n += len(idx)
    return n, float(loss.detach())


def _fit(model, stream: Stream, vx, vy, a: argparse.Namespace) -> tuple[list[dict], dict]:
    """Train for ``a.minutes``, validating every ``a.val_every_s`` seconds; returns (history,
    the weights of the best validation score)."""
    import torch

    import xray_platform.core.training  # noqa: F401  (imported before the clock starts)

    opt = torch.optim.AdamW(model.parameters(), lr=a.lr, weight_decay=1e-4)
    budget, t0 = 60.0 * a.minutes, time.perf_counter()
    history, best, best_state, images = [], -math.inf, None, 0
    while (start := time.perf_counter() - t0) < budget:
        t_val, n = min(start + a.val_every_s, budget), 0
        while time.perf_counter() - t0 < t_val:
            k, loss = _steps(model, opt, stream, a, t0, budget, t_val)
            n += k
            while stream.ready():  # take the shots simulated meanwhile, never waiting
                stream.take(1)
        images += n
        m, _, _ = evaluate(model, vx, vy, a.task, 4 * a.batch_size)
        row = {"elapsed_s": round(time.perf_counter() - t0, 1), "train_shots": stream.shots,
               "train_rows": len(stream.y), "images": images,
               "img_per_s": round(n / max(time.perf_counter() - t0 - start, 1e-9), 1),
               "train_loss": loss, **m}
        history.append(row)
        print("[zoo-gpu] " + json.dumps(row), flush=True)
        if m["val_score"] > best:
            best = m["val_score"]
            best_state = {k: v.detach().clone() for k, v in model.state_dict().items()}
    return history, best_state


def _provenance(a: argparse.Namespace, train_set: str, val_set: str, n_train: int,
                n_val: int, size: int, d_min: float, init: str) -> dict:
    """The model file's provenance block (io/provenance.py), as xrp train writes it."""
    from xray_platform.io.provenance import preset_data, training_provenance
    from xray_platform.physics.presets import preset
    from xray_platform.zoo.recipes import RECIPES

    r = RECIPES[a.task]
    hyper = {"task": a.task, "depth": a.depth or r.depth, "init": init, "grid_size": size,
             "d_min_A": d_min, "batch_size": a.batch_size, "lr": a.lr, "weight_decay": 1e-4,
             "minutes": a.minutes,
             "label": r.label, "device": a.device, "workers": a.workers}
    return training_provenance(hyper, {"seed": r.seed, "train_data_seed": 0, "val_seed": 1},
                               preset_data(preset(train_set), 0, shots=n_train),
                               preset_data(preset(val_set), 1, shots=n_val))


def train(a: argparse.Namespace) -> dict:
    import torch

    from xray_platform import __version__
    from xray_platform.core.models import build_model, save_model
    from xray_platform.core.targets import check_task_label
    from xray_platform.zoo.recipes import RECIPES

    r = RECIPES[a.task]
    train_set, val_set = r.preset(r.train), r.preset(r.val)  # the release's frozen presets
    prep = replace(r.preprocessing(),  # the recipe's model input, from the start here
                   grid_size=a.grid_size or r.grid_size, d_min_A=a.d_min or r.d_min_A)
    size, d_min, opts = prep.grid_size, prep.d_min_A, prep.options
    device = torch.device(a.device)
    torch.manual_seed(r.seed)
    t_start = time.perf_counter()
    init = "transfer" if r.transfer_from and not a.scratch else "scratch"
    model = build_model(a.task, a.depth or r.depth, init,
                        transfer_from=r.trunk(a.runs) if init == "transfer" else None)
    model = model.to(device)
    if device.type == "cuda":
        model = model.to(memory_format=torch.channels_last)
    with mp.get_context("spawn").Pool(a.workers) as pool:
        stream = Stream(pool, train_set, 0, a.task, r.label, size, d_min, opts, a.chunk,
                        3 * a.workers, device)
        vx, vy = validation_set(pool, val_set, a.n_val or r.n_val, a.task, r.label, size,
                                d_min, opts, a.chunk)
        vx, vy = torch.from_numpy(vx).to(device), torch.from_numpy(vy).to(device)
        while len(stream.y) < a.min_start and not _late(a):
            stream.take(1)
        while not len(stream.y):  # late or not, a step needs rows
            stream.take(1)
        a.minutes = train_minutes(a.minutes, a.deadline, time.time())
        print(f"[zoo-gpu] {len(vy)} validation rows; training starts on {len(stream.y)} rows "
              f"of {stream.shots} shots after {time.perf_counter() - t_start:.0f} s, for "
              f"{a.minutes:.2f} min", flush=True)
        history, best_state = _fit(model, stream, vx, vy, a)
        pool.terminate()
    model.load_state_dict(best_state)
    meta = {"task": a.task, "depth": model.depth, "init": init,
            "label": check_task_label(a.task, r.label),
        "preprocessing": prep.to_dict(),
        "training_data": {"source": "simulated stream (jobs/zoo_gpu.py)", "path": train_set,
                          "n_shots": stream.shots, "val_data": f"{val_set} seed 1",
                          "val_shots": len(vy)},
        "provenance": _provenance(a, train_set, val_set, stream.shots, len(vy), size, d_min,
                                  init),
        "xrp_version": __version__, "device": torch.cuda.get_device_name(device)
        if device.type == "cuda" else "cpu", "train_minutes": a.minutes,
        "images": history[-1]["images"] if history else 0,
        "target": "is_multi (logit)" if a.task == "lattice" else "1/d_vis in 1/Å"}
    if a.task == "lattice":
        meta["calibration"] = _calibrate(model, vx, vy, a.batch_size)
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    path = save_model(out / "model.pt", model.float().cpu(), meta, dtype=torch.float16)
    _split(path)
    summary = {"wall_s": round(time.perf_counter() - t_start, 1),
               "best_val_score": max(h["val_score"] for h in history),
               "train_shots": stream.shots, "images": meta["images"], "history": history}
    (out / "history.json").write_text(json.dumps(history, indent=1))
    (out / "summary.json").write_text(json.dumps({**summary, "metadata": meta}, indent=1,
                                                 default=str))
    return summary


def _late(a: argparse.Namespace) -> bool:
    """Whether waiting for more rows would eat into the least training before the deadline."""
    return a.deadline is not None and time.time() > a.deadline - FINISH_S - MIN_TRAIN_S


def _calibrate(model, vx, vy, batch: int) -> dict:
    """Temperature fitted on the validation hits (core/calibration.py), as `xrp models
    calibrate` does."""
    from xray_platform.core.calibration import (
        apply_temperature,
        fit_temperature,
        logits,
        nll,
        reliability,
    )
    from xray_platform.core.models import p_multi

    _, out, yy = evaluate(model, vx, vy, "lattice", batch)
    p, y = p_multi(out).numpy(), yy.numpy() > 0.5
    t = fit_temperature(p, y)
    return {"temperature": t, "data": "validation shots", "n": len(y),
            "ece_before": reliability(p, y)["ece"],
            "ece_after": reliability(apply_temperature(p, t), y)["ece"],
            "nll_before": nll(logits(p), y, 1.0), "nll_after": nll(logits(p), y, t)}


def _split(path: Path) -> None:
    data = path.read_bytes()
    for i in range(0, len(data), PART_BYTES):
        path.with_name(f"{path.name}.part{i // PART_BYTES}").write_bytes(data[i:i + PART_BYTES])


def main() -> None:
    from xray_platform.zoo.recipes import RECIPES

    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("task", choices=sorted(RECIPES))
    ap.add_argument("--out", required=True, help="folder for model.pt, history.json")
    ap.add_argument("--minutes", type=float, default=8.0, help="training time (minutes)")
    ap.add_argument("--deadline", type=float, default=None,
                    help="epoch seconds by which the run must have written its model: training "
                    "gets less than --minutes when a slow start leaves less")
    ap.add_argument("--workers", type=int, default=max(1, (os.cpu_count() or 2) - 1),
                    help="simulating processes (default: all cores but one)")
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--batch-size", type=int, default=128)
    ap.add_argument("--lr", type=float, default=1e-3, help="peak AdamW learning rate")
    ap.add_argument("--grid-size", type=int, default=None, help="default: the recipe's")
    ap.add_argument("--d-min", type=float, default=None, help="grid edge, Å (the recipe's)")
    ap.add_argument("--depth", type=int, default=None, help="ResNet depth (the recipe's)")
    ap.add_argument("--n-val", type=int, default=None, help="validation shots (the recipe's)")
    ap.add_argument("--chunk", type=int, default=32, help="shots per simulation task")
    ap.add_argument("--min-start", type=int, default=2000,
                    help="training rows to wait for before the first step")
    ap.add_argument("--val-every-s", type=float, default=20.0,
                    help="seconds of training between validations")
    ap.add_argument("--scratch", action="store_true", help="no transferred trunk")
    ap.add_argument("--runs", default="runs", help="where a CPU zoo run of the trunk may be")
    a = ap.parse_args()
    s = train(a)
    print(f"[zoo-gpu] done in {s['wall_s']} s: {s['train_shots']} shots simulated, "
          f"{s['images']} images trained, best val_score {s['best_val_score']:.4f}", flush=True)


if __name__ == "__main__":
    main()
