"""Is a stated confidence what it says? Reliability of P(multi-lattice) and temperature scaling
(no Ray).

- :func:`reliability`: the shots binned by predicted probability (10 equal-width bins): per
  bin the mean prediction, the observed fraction of multi-lattice shots and the count, and the
  expected calibration error ECE = sum_b (n_b / n) |observed_b - predicted_b| (Naeini et al.
  2015, AAAI; Guo et al. 2017, ICML "On calibration of modern neural networks").
- :func:`fit_temperature`: one scalar T > 0 for p = sigmoid(logit / T) that minimises the
  negative log-likelihood on validation shots (Guo et al. 2017): T > 1 softens an
  over-confident classifier, T < 1 sharpens a timid one; the ranking (AUC, accuracy at 0.5)
  does not change. The model file stores it (metadata "calibration"), core/forward.py applies it.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np

#: Probabilities are clipped this far from 0 and 1 before taking logits.
EPS = 1e-6
T_RANGE = (0.05, 20.0)


def logits(p: np.ndarray) -> np.ndarray:
    p = np.clip(np.asarray(p, dtype=np.float64), EPS, 1 - EPS)
    return np.log(p / (1 - p))


def nll(z: np.ndarray, y: np.ndarray, temperature: float) -> float:
    """Mean binary cross-entropy of sigmoid(z / T) against labels y (0/1)."""
    s = z / temperature
    # log(1 + exp(-|s|)) + max(s, 0) - y s: stable for any s
    return float(np.mean(np.logaddexp(0.0, s) - y * s))


def fit_temperature(p: np.ndarray, y: np.ndarray) -> float:
    """The T minimising the NLL of the validation shots' recalibrated p (golden-section search
    on log T over T_RANGE; the NLL is convex in 1/T)."""
    z, y = logits(p), np.asarray(y, dtype=np.float64)
    if len(z) == 0 or len(np.unique(y)) < 2:
        raise ValueError("temperature scaling needs validation shots of both classes")
    lo, hi = (math.log(t) for t in T_RANGE)
    g = (math.sqrt(5) - 1) / 2
    a, b = hi - g * (hi - lo), lo + g * (hi - lo)
    fa, fb = nll(z, y, math.exp(a)), nll(z, y, math.exp(b))
    for _ in range(60):
        if fa < fb:
            hi, b, fb = b, a, fa
            a = hi - g * (hi - lo)
            fa = nll(z, y, math.exp(a))
        else:
            lo, a, fa = a, b, fb
            b = lo + g * (hi - lo)
            fb = nll(z, y, math.exp(b))
    return float(math.exp(0.5 * (lo + hi)))


def apply_temperature(p: np.ndarray, temperature: float) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-logits(p) / temperature))


def reliability(p: np.ndarray, y: np.ndarray, n_bins: int = 10) -> dict:
    """Reliability table and ECE of probabilities p against labels y."""
    p, y = np.asarray(p, dtype=np.float64), np.asarray(y, dtype=np.float64)
    if len(p) != len(y):
        raise ValueError(f"{len(p)} probabilities for {len(y)} labels")
    idx = np.minimum((p * n_bins).astype(int), n_bins - 1)
    bins, ece = [], 0.0
    for b in range(n_bins):
        m = idx == b
        if not m.any():
            continue
        pred, obs = float(p[m].mean()), float(y[m].mean())
        ece += m.sum() / max(len(p), 1) * abs(obs - pred)
        bins.append({"lo": b / n_bins, "hi": (b + 1) / n_bins, "n": int(m.sum()),
                     "mean_p": pred, "observed": obs})
    return {"ece": float(ece), "n": int(len(p)), "bins": bins}


def calibrate_lattice_file(model_path: Path, data_path: Path, out: Path,
                           progress: Any = None) -> dict:
    """Fit the temperature of a lattice model file on validation shots (judged like its label:
    on hits for is_multi_hits) and write the model with it to ``out``; returns what changed."""
    import torch

    from xray_platform.core.evaluate import predict_dataset
    from xray_platform.core.models import load_model, save_model, temperature_of
    from xray_platform.core.targets import training_target
    from xray_platform.io.model_file import read_model_file

    preds, table, meta = predict_dataset(model_path, data_path, progress=progress)
    if meta["task"] != "lattice":
        raise ValueError(f"{model_path} is a {meta['task']} model; only lattice models are "
                         "calibrated (resolution models state their own sigma)")
    _, keep = training_target(table, "lattice", meta.get("label"))
    y = np.asarray(table["is_multi"], bool)[keep]
    p = preds["p_multi"][keep]
    t_fit = fit_temperature(p, y)
    p_new = apply_temperature(p, t_fit)
    z = logits(p)
    report = {"temperature": temperature_of(meta) * t_fit, "data": str(data_path), "n": len(y),
              "ece_before": reliability(p, y)["ece"], "ece_after": reliability(p_new, y)["ece"],
              "nll_before": nll(z, y, 1.0), "nll_after": nll(z, y, t_fit)}
    net, meta = load_model(model_path)
    weights, _ = read_model_file(model_path, "cpu")
    fp16 = any(v.dtype == torch.float16 for v in weights.values())
    save_model(out, net, {**meta, "calibration": report}, dtype=torch.float16 if fp16 else None)
    return report
