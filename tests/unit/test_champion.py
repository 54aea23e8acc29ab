"""The champion decision: an incumbent is scored on the search's validation shots as its own
input sees them, or not at all."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from xray_platform.core.models import build_model, save_model
from xray_platform.core.preprocess import Preprocessing, normalise
from xray_platform.core.training import score_model
from xray_platform.tracking.champion import Incumbent, decide


def test_an_incumbent_that_subtracts_the_background_is_scored_on_its_own_input(
        tmp_path: Path) -> None:
    torch.manual_seed(0)
    prep = Preprocessing(32, 2.4, background="radial-median")
    inc = Incumbent(save_model(tmp_path / "zoo.pt", build_model("lattice", 18),
                               {"preprocessing": prep.to_dict(), "label": "is_multi"}), "zoo")
    rng = np.random.default_rng(0)
    counts = rng.poisson(20.0, (16, 32, 32)).astype(np.float32)
    counts[:, 3:6, 20:23] += 3000.0  # a spot on every shot
    y = (np.arange(16) % 2).astype(np.float32)
    raw = {"x": normalise(counts, Preprocessing(32, 2.4))[:, 0].numpy(), "y": y}
    own = {"x": normalise(counts, prep)[:, 0].numpy(), "y": y}
    cand = {"val_score": -1e9, "val_accuracy": 0.0}
    asked = []

    def rows_for(p: Preprocessing) -> dict:
        asked.append(p)
        return own

    ok, why, champ = decide("lattice", cand, inc, raw, rows_for, False, val_grid=(32, 2.4))
    assert asked == [prep] and not ok  # the same grid, but not the same input
    assert champ["val_score"] == score_model(inc.path, own)["val_score"]
    assert champ["val_score"] != score_model(inc.path, raw)["val_score"]
    # with no way to put the shots on its input, it cannot be compared (kept without --force)
    ok, why, champ = decide("lattice", cand, inc, raw, None, False, val_grid=(32, 2.4))
    assert not ok and champ is None and "radial-median" in why and "--force" in why
