"""Run a model on network inputs (no Ray): lattice -> p_multi, resolution -> d and sigma (Å)."""

from __future__ import annotations

import numpy as np
import torch

from xray_platform.models import XrpNet, p_multi, resolution_from_output


@torch.no_grad()
def predict(model: XrpNet, x: np.ndarray | torch.Tensor, batch_size: int = 32,
            device: str | torch.device = "cpu") -> dict[str, np.ndarray]:
    """x: (N, H, W) or (N, 1, H, W) normalised inputs. Returns {"p_multi"} for a lattice model,
    {"d_A", "sigma_A"} for a resolution model. The model must already be on ``device``."""
    model.eval()
    x = torch.as_tensor(x, dtype=torch.float32)
    if x.ndim == 3:
        x = x[:, None]
    cuda = torch.device(device).type == "cuda"
    outs = []
    for i in range(0, len(x), batch_size):
        xb = x[i:i + batch_size].to(device, non_blocking=True)
        if cuda:  # as in training: channels_last + bf16 autocast
            xb = xb.contiguous(memory_format=torch.channels_last)
        with torch.autocast(device_type="cuda", dtype=torch.bfloat16, enabled=cuda):
            outs.append(model(xb).float().cpu())
    out = torch.cat(outs) if outs else torch.zeros((0, 1 if model.task == "lattice" else 2))
    if model.task == "lattice":
        return {"p_multi": p_multi(out).numpy()}
    d, s = resolution_from_output(out)
    return {"d_A": d.numpy(), "sigma_A": s.numpy()}
