"""Which input grid (size, d_min) and depth? Accuracy vs grid vs cost at a fixed CPU budget.

Every configuration trains through `xrp train` (Ray Train, MLflow) on the same stored data set
(256² to 1.2 Å; coarser grids are derived exactly, core/preprocess.regrid) for about the same
wall time: the number of training shots is the budget times the configuration's measured
training speed. Each model is then scored on the same held-out shots. Prints a markdown table.

    python benchmarks/grid_table.py resolution --data D --val-data V --minutes 8
    python benchmarks/grid_table.py lattice --data D --val-data V --grids 64@1.2,128@2.4
    python benchmarks/grid_table.py lattice --cost-only --grids 64@1.2,128@2.4,256@1.2,512@0.6 \
        --depths 18,34,50 --threads 2      # the cost side alone: img/s, ms, hours per epoch
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import torch

from xray_platform.core.evaluate import predict_dataset
from xray_platform.core.metrics import lattice_metrics, resolution_metrics
from xray_platform.core.models import build_model, lattice_loss
from xray_platform.core.targets import training_target


def train_speed(task: str, depth: int, size: int, threads: int, batch: int = 32) -> float:
    """Training images/s of one forward + backward + AdamW step (no data loading)."""
    torch.set_num_threads(threads)
    m = build_model(task, depth)
    opt = torch.optim.AdamW(m.parameters(), 1e-3)
    x = torch.randn(batch, 1, size, size)
    y = torch.rand(batch)
    if task == "lattice":
        y = (y > 0.5).float()
    steps, t0 = 3, 0.0
    for i in range(steps + 1):
        if i == 1:
            t0 = time.perf_counter()
        out = m(x)
        loss = lattice_loss(out, y) if task == "lattice" else out.square().mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
    return steps * batch / (time.perf_counter() - t0)


@torch.no_grad()
def infer_ms(task: str, depth: int, size: int, threads: int) -> float:
    """Milliseconds of one model forward per shot (batch 1, as xrp predict answers a frame)."""
    torch.set_num_threads(threads)
    m = build_model(task, depth).eval()
    x = torch.randn(1, 1, size, size)
    m(x)
    t0, n = time.perf_counter(), 5
    for _ in range(n):
        m(x)
    return 1e3 * (time.perf_counter() - t0) / n


def cost_table(task: str, grids: list[tuple[int, float]], depths: list[int], threads: int,
               batch: int, epoch_shots: int) -> None:
    """The cost side of the grid choice, no training: a markdown table per grid and depth."""
    print(f"| depth | grid | d_min (Å) | train img/s ({threads} threads) | predict ms/shot | "
          f"hours per epoch of {epoch_shots:,} shots |\n|---|---|---|---|---|---|")
    for depth in depths:
        for size, d_min in grids:
            rate = train_speed(task, depth, size, threads, batch)
            print(f"| {depth} | {size}² | {d_min:g} | {rate:.1f} | "
                  f"{infer_ms(task, depth, size, threads):.1f} | "
                  f"{epoch_shots / rate / 3600:.2f} |", flush=True)


def score(task: str, model: Path, data: Path) -> tuple[dict, float]:
    t0 = time.perf_counter()
    preds, table, _ = predict_dataset(model, data)
    ms = 1e3 * (time.perf_counter() - t0) / len(table["seed"])
    if task == "lattice":
        m = lattice_metrics(preds["p_multi"], np.asarray(table["is_multi"], bool))
        return {"accuracy": m["accuracy"], "roc_auc": m["roc_auc"]}, ms
    y, keep = training_target(table, task)
    m = resolution_metrics(preds["d_A"][keep], preds["sigma_A"][keep], 1.0 / y[keep])
    return {"pearson_r": m["pearson_r"], "mae_A": m["mae_A"],
            "baseline_mae_A": m["baseline_mae_A"]}, ms


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("task", choices=("resolution", "lattice"))
    ap.add_argument("--data", help="training data set (xrp simulate)")
    ap.add_argument("--val-data", help="held-out data set to score on")
    ap.add_argument("--grids", default="64@1.2,128@1.2,256@1.2",
                    help="SIZE@D_MIN,... (Å)")
    ap.add_argument("--depths", default="18")
    ap.add_argument("--minutes", type=float, default=8.0, help="training budget per config")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--lr", type=float, default=1e-3)
    ap.add_argument("--out", default="runs/grid-table")
    ap.add_argument("--mlflow-uri", default=None)
    ap.add_argument("--speeds", default=None, help="SIZE=IMG_PER_S,... measured beforehand on "
                    "an idle machine (default: a probe now, which a busy machine skews)")
    ap.add_argument("--cost-only", action="store_true",
                    help="only the cost per grid and depth (no data sets, no training)")
    ap.add_argument("--epoch-shots", type=int, default=30_000,
                    help="shots per epoch for the hours column of --cost-only")
    a = ap.parse_args()
    grids = [(int(g.split("@")[0]), float(g.split("@")[1])) for g in a.grids.split(",")]
    if a.cost_only:
        cost_table(a.task, grids, [int(d) for d in a.depths.split(",")], a.threads,
                   a.batch_size, a.epoch_shots)
        return
    if not (a.data and a.val_data):
        ap.error("--data and --val-data are needed (or --cost-only)")
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    rows = []
    for depth in (int(d) for d in a.depths.split(",")):
        for size, d_min in grids:
            known = dict(kv.split("=") for kv in a.speeds.split(",")) if a.speeds else {}
            rate = float(known[str(size)]) if str(size) in known else \
                train_speed(a.task, depth, size, a.threads, a.batch_size)
            shots = max(a.batch_size, int(0.8 * rate * 60 * a.minutes))
            name = f"{a.task}-r{depth}-{size}-{d_min}"
            cmd = [sys.executable, "-m", "xray_platform.cli", "train", a.task, "--data", a.data,
                   "--val-data", a.val_data, "--grid-size", str(size), "--d-min", str(d_min),
                   "--depth", str(depth), "--epochs", "1", "--batch-size", str(a.batch_size),
                   "--lr", str(a.lr), "--cpus-per-worker", str(a.threads),
                   "--train-shots", str(shots), "--out", str(out), "--name", name]
            if a.mlflow_uri:
                cmd += ["--mlflow-uri", a.mlflow_uri]
            print(f"[grid-table] {name}: {rate:.1f} img/s -> {shots} training shots", flush=True)
            t0 = time.perf_counter()
            proc = subprocess.run(cmd, capture_output=True, text=True)
            wall = time.perf_counter() - t0
            if proc.returncode:
                print(proc.stdout[-2000:], proc.stderr[-2000:])
                raise SystemExit(f"training {name} failed")
            metrics, ms = score(a.task, out / name / "model.pt", Path(a.val_data))
            row = {"depth": depth, "grid": size, "d_min_A": d_min, "train_img_s": rate,
                   "train_shots": shots, "wall_s": wall, "infer_ms_per_shot": ms, **metrics}
            rows.append(row)
            print("[grid-table] " + json.dumps(row), flush=True)
    keys = list(rows[0])
    print("\n| " + " | ".join(keys) + " |\n|" + "---|" * len(keys))
    for r in rows:
        print("| " + " | ".join(f"{v:.4g}" if isinstance(v, float) else str(v)
                                for v in r.values()) + " |")
    (out / f"{a.task}-table.json").write_text(json.dumps(rows, indent=2))


if __name__ == "__main__":
    main()
