"""The training step, its schedule and augmentation, and validation metrics (no Ray).

orchestration/train.py runs these inside Ray Train workers; benchmarks/train.py times them
alone. One epoch = :func:`train_epoch` over batches of {"x": (N, H, W), "y": (N,)}.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from xray_platform.core.forward import forward
from xray_platform.core.metrics import lattice_metrics, resolution_metrics
from xray_platform.core.models import (
    beta_nll,
    gaussian_nll,
    lattice_loss,
    load_model,
    model_preprocessing,
    p_multi,
    resolution_from_output,
)

#: The fixed validation shots of a preset are simulated with the run's seed plus this offset,
#: so they are never among the training shots (those take fresh random seeds every epoch).
VAL_SEED_OFFSET = 7919


def val_seed(seed: int) -> int:
    """The seed of the fixed validation shots of a run (or search) with seed ``seed``."""
    return seed + VAL_SEED_OFFSET


#: Fraction of the optimiser steps that ramp the learning rate up linearly before the cosine.
WARMUP_FRACTION = 0.03


def lr_factor(step: int, total: int) -> float:
    """Learning-rate multiplier per optimiser step: linear warm-up, then cosine to 0."""
    warm = max(1, int(WARMUP_FRACTION * total))
    if step < warm:
        return (step + 1) / warm
    t = min(1.0, (step - warm) / max(1, total - warm))
    return 0.5 * (1.0 + math.cos(math.pi * t))


def optimiser(model: torch.nn.Module, lr: float, weight_decay: float, total_steps: int
              ) -> tuple[torch.optim.Optimizer, torch.optim.lr_scheduler.LRScheduler]:
    """AdamW with warm-up + cosine over ``total_steps`` optimiser steps."""
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=weight_decay)
    total = max(1, total_steps)
    return opt, torch.optim.lr_scheduler.LambdaLR(opt, lambda step: lr_factor(step, total))


def random_flips(x: torch.Tensor) -> torch.Tensor:
    """Flip each grid of a batch (N, 1, H, W) along qx and/or qy at random: the grid is centred
    on the beam and the background (polarisation cos 2 phi) is symmetric under both flips."""
    n = x.shape[0]
    fx = torch.rand(n, device=x.device) < 0.5
    fy = torch.rand(n, device=x.device) < 0.5
    x = torch.where(fx[:, None, None, None], x.flip(-1), x)
    return torch.where(fy[:, None, None, None], x.flip(-2), x)


def loss_function(task: str) -> Callable[[torch.Tensor, torch.Tensor], torch.Tensor]:
    """Training loss: BCE for the lattice logit, beta-NLL for the resolution Gaussian."""
    return lattice_loss if task == "lattice" else beta_nll


@dataclass
class EpochStats:
    images: int = 0
    loss_sum: float = 0.0
    batches: int = 0
    data_s: float = 0.0
    compute_s: float = 0.0

    @property
    def loss(self) -> float:
        return self.loss_sum / max(self.images, 1)


def train_epoch(model: torch.nn.Module, batches: Iterable[dict], opt: torch.optim.Optimizer,
                sched: torch.optim.lr_scheduler.LRScheduler, task: str, *,
                augment: bool = False, amp: bool = True, channels_last: bool = True,
                on_batch: Callable[[EpochStats], None] | None = None) -> EpochStats:
    """One pass of optimiser steps (the schedule steps per batch); returns its stats."""
    model.train()
    loss_fn = loss_function(task)
    st = EpochStats()
    t0 = time.perf_counter()
    for batch in batches:
        t1 = time.perf_counter()
        st.data_s += t1 - t0
        x, y = batch["x"][:, None], batch["y"]
        if augment:
            x = random_flips(x)
        loss = loss_fn(forward(model, x, amp=amp, channels_last=channels_last), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
        st.loss_sum += float(loss.detach()) * len(y)
        st.images += len(y)
        st.batches += 1
        t0 = time.perf_counter()
        st.compute_s += t0 - t1
        if on_batch:
            on_batch(st)
    return st


@torch.no_grad()
def predict_batches(model: torch.nn.Module, batches: Iterable[dict], width: int, *,
                    amp: bool = True, channels_last: bool = True
                    ) -> tuple[torch.Tensor, torch.Tensor]:
    """(raw outputs, targets) over validation batches, on the CPU."""
    model.eval()
    outs, ys = [], []
    for batch in batches:
        outs.append(forward(model, batch["x"][:, None], amp=amp,
                            channels_last=channels_last).cpu())
        ys.append(batch["y"].cpu())
    return (torch.cat(outs) if outs else torch.zeros(0, width),
            torch.cat(ys) if ys else torch.zeros(0))


def val_metrics(task: str, out: torch.Tensor, y: torch.Tensor) -> dict:
    """Validation loss and headline metrics; ``val_score`` is what higher-is-better selection
    uses (accuracy, or minus the MAE in Å)."""
    if task == "lattice":
        loss = float(lattice_loss(out, y))
        m = lattice_metrics(p_multi(out).numpy(), y.numpy() > 0.5)
        return {"val_loss": loss, "val_accuracy": m["accuracy"], "val_roc_auc": m["roc_auc"],
                "val_baseline_accuracy": m["baseline_accuracy"], "val_score": m["accuracy"]}
    loss = float(gaussian_nll(out, y))
    d, s = resolution_from_output(out)
    m = resolution_metrics(d.numpy(), s.numpy(), 1.0 / y.numpy())
    return {"val_loss": loss, "val_mae_A": m["mae_A"], "val_pearson_r": m["pearson_r"],
            "val_within_2sigma": m.get("frac_within_2sigma", float("nan")),
            "val_baseline_mae_A": m["baseline_mae_A"], "val_score": -m["mae_A"]}


def score_model(model_path: str | Path, val_rows: dict[str, np.ndarray]) -> dict[str, float]:
    """Validation metrics (as in training: val_score higher is better) of a model file on the
    validation inputs ``val_rows`` {"x": (N, H, W), "y": (N,)}: one definition of "better"
    for trials and champions."""
    model, meta = load_model(model_path)
    size = model_preprocessing(meta).grid_size
    if val_rows["x"].shape[-1] != size:
        raise ValueError(f"{model_path} takes {size}^2 inputs, the validation shots are "
                         f"{val_rows['x'].shape[-1]}^2")
    x = torch.as_tensor(val_rows["x"], dtype=torch.float32)
    y = torch.as_tensor(val_rows["y"], dtype=torch.float32)
    batches = ({"x": x[i:i + 32], "y": y[i:i + 32]} for i in range(0, len(x), 32))
    out, _ = predict_batches(model, batches, 1 if model.task == "lattice" else 2)
    return val_metrics(model.task, out, y)
