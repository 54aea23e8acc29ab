"""The training step without Ray: schedule, augmentation, one epoch, validation metrics."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from xray_platform.core.models import build_model, save_model
from xray_platform.core.preprocess import Preprocessing
from xray_platform.core.training import (
    VAL_SEED_OFFSET,
    lr_factor,
    optimiser,
    random_flips,
    score_model,
    train_epoch,
    val_metrics,
    val_seed,
)


def test_schedule_warms_up_then_decays_to_zero() -> None:
    total = 1000
    f = [lr_factor(s, total) for s in range(total + 1)]
    warm = int(0.03 * total)
    assert f[0] == pytest.approx(1 / warm) and f[warm - 1] == pytest.approx(1.0)
    assert all(a <= b for a, b in zip(f[:warm - 1], f[1:warm], strict=True))  # rises
    assert all(a >= b for a, b in zip(f[warm:-1], f[warm + 1:], strict=True))  # then falls
    assert f[total] == pytest.approx(0.0, abs=1e-9)
    assert lr_factor(warm + (total - warm) // 2, total) == pytest.approx(0.5, abs=0.01)
    assert lr_factor(5 * total, total) == pytest.approx(0.0)  # past the end it stays at 0


def test_random_flips_only_flip() -> None:
    torch.manual_seed(0)
    x = torch.arange(4 * 5 * 6, dtype=torch.float32).reshape(4, 1, 5, 6).repeat(16, 1, 1, 1)
    y = random_flips(x)
    seen = set()
    for a, b in zip(x, y, strict=True):
        kinds = [k for k, t in (("none", a), ("x", a.flip(-1)), ("y", a.flip(-2)),
                                ("xy", a.flip(-1).flip(-2))) if torch.equal(t, b)]
        assert kinds, "not a flip of its input"
        seen.add(kinds[0])
    assert seen == {"none", "x", "y", "xy"}  # 64 grids: every flip occurs


def _batches(n: int, size: int, seed: int) -> list[dict]:
    g = torch.Generator().manual_seed(seed)
    x = torch.rand(n, size, size, generator=g)
    y = 0.3 + 0.4 * x.mean(dim=(1, 2))  # 1/d depends on the input
    return [{"x": x[i:i + 8], "y": y[i:i + 8]} for i in range(0, n, 8)]


def test_an_epoch_steps_the_optimiser_and_the_schedule() -> None:
    torch.manual_seed(1)
    model = build_model("resolution", 18)
    batches = _batches(32, 32, seed=2)
    opt, sched = optimiser(model, 1e-3, 1e-4, total_steps=3 * len(batches))
    seen = []
    st = train_epoch(model, batches, opt, sched, "resolution", augment=True,
                     on_batch=lambda s: seen.append(s.batches))
    assert st.images == 32 and st.batches == 4 and seen == [1, 2, 3, 4]
    assert math.isfinite(st.loss) and st.compute_s > 0
    assert sched.last_epoch == 4  # one schedule step per optimiser step


def test_validation_metrics_of_both_tasks() -> None:
    out = torch.tensor([[3.0], [-3.0], [2.0], [-1.0]])
    m = val_metrics("lattice", out, torch.tensor([1.0, 0.0, 0.0, 0.0]))
    assert m["val_accuracy"] == pytest.approx(0.75) and m["val_score"] == m["val_accuracy"]
    raw = torch.tensor([[0.0, 0.0], [1.0, 0.0], [-1.0, 0.0]])
    from xray_platform.core.models import resolution_params

    mu, _ = resolution_params(raw)
    m = val_metrics("resolution", raw, mu)  # the targets are the predicted 1/d: no error
    assert m["val_mae_A"] == pytest.approx(0.0, abs=1e-5) and m["val_score"] == -m["val_mae_A"]


def test_score_model_matches_val_metrics(tmp_path) -> None:
    torch.manual_seed(3)
    model = build_model("lattice", 18).eval()
    path = save_model(tmp_path / "m.pt", model, {"preprocessing": Preprocessing(32).to_dict(),
                                                 "label": "is_multi"})
    rows = {"x": np.random.default_rng(0).random((10, 32, 32), dtype=np.float32),
            "y": np.array([0, 1] * 5, np.float32)}
    with torch.no_grad():
        out = model(torch.as_tensor(rows["x"])[:, None])
    assert score_model(path, rows) == pytest.approx(val_metrics("lattice", out,
                                                                torch.as_tensor(rows["y"])))
    with pytest.raises(ValueError, match="takes 32"):
        score_model(path, {"x": rows["x"][:, :16, :16], "y": rows["y"]})


def test_validation_seed_is_offset() -> None:
    assert val_seed(5) == 5 + VAL_SEED_OFFSET != 5


def test_a_low_resolution_mask_inside_the_grid_is_refused_before_any_ray_work() -> None:
    """--d-max must lie beyond the grid's d_min: said by the driver, not by a Ray worker."""
    from xray_platform.orchestration.train import TrainSettings, data_sources

    s = TrainSettings(task="lattice", data="quick-lattice", d_max_A=1.0)
    s.validate()  # > 0: a resolution, so far fine
    with pytest.raises(ValueError, match="must exceed the grid's d_min"):
        data_sources(s)
    with pytest.raises(ValueError, match="--d-max"):
        TrainSettings(task="lattice", data="quick-lattice", d_max_A=-3.0).validate()
