"""Run a model over every shot of a stored data set (no Ray, no plots)."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    from xray_platform.core.models import XrpNet


def predict_dataset(model_path: Path, data_path: Path, batch_size: int = 32,
                    progress: Any = None) -> tuple[dict, dict, dict]:
    """Run a model file over every shot of an HDF5 shot data set.

    Returns (predictions, labels table, model metadata). ``progress(done, total)`` is called
    after each batch."""
    from xray_platform.core.models import load_model

    model, meta = load_model(model_path)
    preds, table = predict_loaded(model, meta, data_path, batch_size, progress)
    return preds, table, meta


def predict_loaded(model: XrpNet, meta: dict, data_path: Path, batch_size: int = 32,
                   progress: Any = None) -> tuple[dict, dict]:
    """Run a loaded model (``meta``: its file's metadata, which holds its preprocessing) over
    every shot of an HDF5 shot data set: (predictions, labels table)."""
    import torch

    from xray_platform.core.forward import predict
    from xray_platform.core.preprocess import Preprocessing, normalise, regrid, regrid_plan
    from xray_platform.io.shots import ShotDataset

    prep = Preprocessing.from_dict(meta["preprocessing"])
    ds = ShotDataset(data_path)
    stored = ds.grid
    if regrid_plan(stored, prep.grid) is None:
        raise ValueError(f"{data_path} holds {stored.size} x {stored.size} inputs to "
                         f"{stored.d_min_A} Å but the model reads {prep.grid_size} x "
                         f"{prep.grid_size} to {prep.d_min_A} Å, which cannot be derived from "
                         "them; simulate data on the model's grid")
    torch.set_num_threads(max(1, torch.get_num_threads()))
    preds: dict[str, list[np.ndarray]] = {}
    n = len(ds)
    for start in range(0, n, batch_size):
        counts = np.stack([ds[i].inputs for i in range(start, min(n, start + batch_size))])
        x = normalise(regrid(counts, stored, prep.grid), prep)
        for k, v in predict(model, x, batch_size).items():
            preds.setdefault(k, []).append(v)
        if progress:
            progress(min(n, start + batch_size), n)
    return {k: np.concatenate(v) for k, v in preds.items()}, ds.table
