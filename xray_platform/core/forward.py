"""The one model forward (training, validation, evaluation, prediction, serving).

On CUDA the network runs as it was trained: inputs in channels_last memory format and bf16
autocast (the outputs come back as float32); on the CPU plainly in float32.
"""

from __future__ import annotations

import numpy as np
import torch

from xray_platform.core.models import XrpNet, p_multi, resolution_from_output


def forward(model: torch.nn.Module, x: torch.Tensor, *, amp: bool = True,
            channels_last: bool = True) -> torch.Tensor:
    """Raw float32 outputs of ``model`` (already on x's device) for inputs (N, 1, H, W)."""
    cuda = x.device.type == "cuda"
    if cuda and channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    with torch.autocast(device_type="cuda", dtype=torch.bfloat16, enabled=cuda and amp):
        return model(x).float()


@torch.no_grad()
def predict(model: XrpNet, x: np.ndarray | torch.Tensor, batch_size: int = 32,
            device: str | torch.device = "cpu") -> dict[str, np.ndarray]:
    """x: (N, H, W) or (N, 1, H, W) normalised inputs. Returns {"p_multi"} for a lattice model,
    {"d_A", "sigma_A"} for a resolution model. The model must already be on ``device``."""
    model.eval()
    x = torch.as_tensor(x, dtype=torch.float32)
    if x.ndim == 3:
        x = x[:, None]
    outs = [forward(model, x[i:i + batch_size].to(device, non_blocking=True)).cpu()
            for i in range(0, len(x), batch_size)]
    out = torch.cat(outs) if outs else torch.zeros((0, 1 if model.task == "lattice" else 2))
    if model.task == "lattice":  # a calibrated model divides its logits by its temperature
        return {"p_multi": p_multi(out / getattr(model, "temperature", 1.0)).numpy()}
    d, s = resolution_from_output(out)
    return {"d_A": d.numpy(), "sigma_A": s.numpy()}
