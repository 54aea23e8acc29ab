"""Training speed: model compute (images/s), data (simulated shots/s), and an end-to-end Ray
Train run (images/s per worker, time waiting for data vs computing).

    python benchmarks/train.py                       # CPU: ResNet-18 at 64 and 256, 1 thread
    python benchmarks/train.py --device cuda --size 512 --batch 256   # bf16 + channels_last
    python benchmarks/train.py --ray --workers 2     # + an end-to-end xrp train run

Not a test: it prints figures.
"""

from __future__ import annotations

import argparse
import tempfile
import time

import numpy as np
import torch

from xray_platform.core.models import build_model, gaussian_nll
from xray_platform.orchestration.data import SimulateShots
from xray_platform.physics.presets import preset


def compute_rate(depth: int, size: int, batch: int, device: str, steps: int) -> float:
    """Training images/s of one process (forward + backward + AdamW step)."""
    dev = torch.device(device)
    cuda = dev.type == "cuda"
    model = build_model("resolution", depth).to(dev)
    if cuda:
        model = model.to(memory_format=torch.channels_last)
    opt = torch.optim.AdamW(model.parameters(), 1e-3)
    x = torch.rand(batch, 1, size, size, device=dev)
    if cuda:
        x = x.contiguous(memory_format=torch.channels_last)
    y = torch.full((batch,), 0.4, device=dev)

    def step() -> None:
        with torch.autocast(device_type="cuda", dtype=torch.bfloat16, enabled=cuda):
            out = model(x)
        loss = gaussian_nll(out.float(), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    for _ in range(2):
        step()
    if cuda:
        torch.cuda.synchronize()
    t0 = time.perf_counter()
    for _ in range(steps):
        step()
    if cuda:
        torch.cuda.synchronize()
    return steps * batch / (time.perf_counter() - t0)


def data_rate(preset_name: str, n: int) -> float:
    """Preprocessed, labelled simulated shots/s of one Ray Data UDF instance (one core)."""
    udf = SimulateShots(preset(preset_name), "resolution", None, seed=0, fresh=True)
    udf({"id": np.arange(2)})
    t0 = time.perf_counter()
    udf({"id": np.arange(n)})
    return n / (time.perf_counter() - t0)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--depth", type=int, default=18)
    ap.add_argument("--size", type=int, nargs="*", default=[64, 256])
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--steps", type=int, default=5)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--ray", action="store_true", help="also run one xrp train epoch on Ray")
    ap.add_argument("--workers", type=int, default=2)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    print(f"device {args.device}, torch threads {torch.get_num_threads()}")
    for size in args.size:
        r = compute_rate(args.depth, size, args.batch, args.device, args.steps)
        print(f"compute: ResNet-{args.depth} at {size}x{size}, batch {args.batch}: "
              f"{r:.1f} training images/s")
    print(f"data: quick-resolution (64x64) {data_rate('quick-resolution', 16):.1f} shots/s, "
          f"resmos2 (512x512) {data_rate('resmos2', 8):.1f} shots/s per core")
    if args.ray:
        from xray_platform.orchestration.env import prepare_ray_env

        prepare_ray_env(None)
        from xray_platform.orchestration.train import TrainSettings, run_training

        with tempfile.TemporaryDirectory() as d:
            s = TrainSettings(task="resolution", data="quick-resolution", epochs=3,
                              batch_size=8, workers=args.workers, shots_per_epoch=128,
                              val_shots=16, out=d, name="bench",
                              mlflow_uri=f"sqlite:///{d}/mlflow.db")
            m = run_training(s)["metrics"]
        print(f"ray train ({args.workers} workers, 128 fresh 64x64 shots per epoch; the 3rd "
              "epoch, after start-up): "
              f"{m['images_per_s_per_worker']:.1f} images/s per worker, waiting for data "
              f"{m['data_wait_s']:.1f} s, computing {m['compute_s']:.1f} s")


if __name__ == "__main__":
    main()
