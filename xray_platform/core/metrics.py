"""Metrics of the two tasks: lattice (single vs multi) and resolution (d in Å), and user sets.

The numbers mirror the poster we compare against: lattice accuracy, Pearson r of the predicted
resolution (Fig. 6), and the fraction of user datasets whose mean prediction lies within two
standard deviations of the target resolution (Fig. 7). numpy/scipy only.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
from scipy.stats import rankdata

DEFAULT_SHELLS: tuple[float, ...] = (1.0, 1.5, 2.0, 2.5, 3.0, 4.0, 6.0, np.inf)
def headline(task: str) -> tuple[str, str, str]:
    """(validation metric key, label, direction) people read per task: MAE in Å (lower is
    better) or accuracy (higher); the val_score used for selection is higher-is-better."""
    return ("val_mae_A", "validation MAE (Å)", "min") if task == "resolution" else \
        ("val_accuracy", "validation accuracy", "max")


# Headline numbers reported by the poster we must beat (for the report's comparison column).
POSTER_TARGETS: dict[str, float] = {
    "accuracy": 0.94,
    "pearson_r": 0.96,
    "fraction_within_2sd": 0.75,
}


def as_1d(x: Any) -> np.ndarray:
    return np.asarray(x, dtype=float).reshape(-1)


def check_same_length(**arrays: np.ndarray) -> int:
    lengths = {k: len(v) for k, v in arrays.items()}
    if len(set(lengths.values())) > 1:
        raise ValueError(f"arrays differ in length: {lengths}")
    return next(iter(lengths.values()))


def _pearson(x: np.ndarray, y: np.ndarray) -> float:
    """Pearson r; NaN for fewer than two points or a constant input."""
    if len(x) < 2:
        return float("nan")
    xc, yc = x - x.mean(), y - y.mean()
    den = math.sqrt(float(np.dot(xc, xc)) * float(np.dot(yc, yc)))
    return float(np.dot(xc, yc) / den) if den > 0 else float("nan")


def labels_bool(is_multi: Any) -> np.ndarray:
    raw = np.asarray(is_multi).reshape(-1)
    if raw.dtype == bool:
        return raw
    vals = raw.astype(float)
    if not np.all(np.isin(vals, (0.0, 1.0))):
        raise ValueError("is_multi must be boolean or 0/1")
    return vals.astype(bool)


def roc_auc(scores: np.ndarray, labels: np.ndarray) -> float:
    """Mann-Whitney AUC with average ranks for ties; NaN when only one class is present."""
    n_pos = int(labels.sum())
    n_neg = len(labels) - n_pos
    if n_pos == 0 or n_neg == 0:
        return float("nan")
    ranks = rankdata(scores, method="average")
    u = float(ranks[labels].sum()) - n_pos * (n_pos + 1) / 2.0
    return u / (n_pos * n_neg)


def roc_curve(scores: np.ndarray, labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(fpr, tpr) at every distinct threshold, tied scores taken together, from (0,0) to (1,1)."""
    order = np.argsort(-scores, kind="mergesort")
    s, y = scores[order], labels[order]
    last_of_tie = np.r_[np.nonzero(np.diff(s))[0], len(s) - 1]
    tp = np.cumsum(y)[last_of_tie]
    fp = (last_of_tie + 1) - tp
    n_pos, n_neg = max(int(y.sum()), 1), max(len(y) - int(y.sum()), 1)
    return np.r_[0.0, fp / n_neg], np.r_[0.0, tp / n_pos]


def _safe_div(a: float, b: float) -> float:
    return a / b if b else float("nan")


def lattice_metrics(p_multi: np.ndarray, is_multi: np.ndarray, threshold: float = 0.5) -> dict:
    """Single-vs-multi lattice classification metrics; a shot is called multi when p >= threshold.

    Precision/recall/F1 are NaN when undefined (no predicted/true positives); roc_auc is NaN when
    only one class is present. confusion = [[tn, fp], [fn, tp]].
    """
    p = as_1d(p_multi)
    y = labels_bool(is_multi)
    n = check_same_length(p_multi=p, is_multi=y)
    if n == 0:
        raise ValueError("no samples")
    if not np.all(np.isfinite(p)):
        raise ValueError(f"{int((~np.isfinite(p)).sum())} non-finite p_multi values")
    if np.any((p < 0) | (p > 1)):
        raise ValueError(f"{int(((p < 0) | (p > 1)).sum())} p_multi values outside [0, 1]")
    pred = p >= threshold
    tp = int(np.sum(pred & y))
    fp = int(np.sum(pred & ~y))
    fn = int(np.sum(~pred & y))
    tn = int(np.sum(~pred & ~y))
    precision = _safe_div(tp, tp + fp)
    recall = _safe_div(tp, tp + fn)
    if math.isnan(precision) or math.isnan(recall):
        f1 = float("nan")
    else:
        f1 = _safe_div(2 * precision * recall, precision + recall)
        f1 = 0.0 if math.isnan(f1) else f1
    frac_multi = float(y.mean())
    return {
        "n": n,
        "accuracy": (tp + tn) / n,
        "precision": precision,
        "recall": recall,
        "f1": f1,
        "roc_auc": roc_auc(p, y),
        "confusion": [[tn, fp], [fn, tp]],
        "baseline_accuracy": max(frac_multi, 1.0 - frac_multi),
        "threshold": float(threshold),
    }


def resolution_rows(pred_d: Any, sigma_d: Any, true_d: Any
                     ) -> tuple[np.ndarray, np.ndarray | None, np.ndarray, int]:
    """Validated (pred, sigma, true) for rows with a true d, and the number of excluded rows."""
    pred = as_1d(pred_d)
    true = as_1d(true_d)
    sig = None if sigma_d is None else as_1d(sigma_d)
    arrays = {"pred_d": pred, "true_d": true} | ({} if sig is None else {"sigma_d": sig})
    check_same_length(**arrays)
    keep = ~np.isnan(true)
    pred, true = pred[keep], true[keep]
    sig = None if sig is None else sig[keep]
    bad = int((~np.isfinite(pred)).sum())
    if bad:
        raise ValueError(f"{bad} non-finite resolution predictions (rows with a true d)")
    if np.any(~np.isfinite(true) | (true <= 0)):
        raise ValueError("true_d must be positive and finite (NaN marks blanks)")
    if sig is not None and np.any(~np.isfinite(sig) | (sig < 0)):
        bad = int((~np.isfinite(sig) | (sig < 0)).sum())
        raise ValueError(f"{bad} non-finite or negative sigma_d values")
    return pred, sig, true, int((~keep).sum())


def resolution_metrics(pred_d: np.ndarray, sigma_d: np.ndarray | None, true_d: np.ndarray,
                       shell_edges: tuple[float, ...] = DEFAULT_SHELLS) -> dict:
    """Resolution regression metrics (d in Å) over rows with a true d; NaN true_d marks blanks.

    Shells are [lo, hi) in true d; rows outside [edges[0], edges[-1]) fall in no shell.
    pearson_r_inv_d is NaN if any prediction is <= 0.
    """
    edges = np.asarray(shell_edges, dtype=float)
    if edges.ndim != 1 or len(edges) < 2 or np.any(np.diff(edges) <= 0):
        raise ValueError("shell_edges must be at least two strictly increasing values")
    pred, sig, true, n_excluded = resolution_rows(pred_d, sigma_d, true_d)
    n = len(true)
    err = pred - true
    nan = float("nan")
    out: dict[str, Any] = {"n": n, "n_excluded": n_excluded}
    if n == 0:
        out |= dict.fromkeys(("pearson_r", "pearson_r_inv_d", "spearman_r", "mae_A",
                              "median_abs_err_A", "rmse_A", "bias_A", "baseline_mae_A"), nan)
    else:
        out |= {
            "pearson_r": _pearson(pred, true),
            "pearson_r_inv_d": _pearson(1.0 / pred, 1.0 / true) if np.all(pred > 0) else nan,
            "spearman_r": _pearson(rankdata(pred), rankdata(true)),
            "mae_A": float(np.mean(np.abs(err))),
            "median_abs_err_A": float(np.median(np.abs(err))),
            "rmse_A": float(np.sqrt(np.mean(err**2))),
            "bias_A": float(np.mean(err)),
            "baseline_mae_A": float(np.mean(np.abs(true - true.mean()))),
        }
    if sig is not None:
        absr = np.abs(err)
        out |= {
            "frac_within_1sigma": float(np.mean(absr <= sig)) if n else nan,
            "frac_within_2sigma": float(np.mean(absr <= 2 * sig)) if n else nan,
            "mean_sigma_A": float(np.mean(sig)) if n else nan,
        }
    shells = []
    for lo, hi in zip(edges[:-1], edges[1:], strict=True):
        m = (true >= lo) & (true < hi)
        if m.any():
            row = {"lo": float(lo), "hi": float(hi), "n": int(m.sum()),
                   "mae_A": float(np.mean(np.abs(err[m]))), "bias_A": float(np.mean(err[m]))}
            if sig is not None:  # is sigma right in every shell, not only on average?
                row |= {"frac_within_1sigma": float(np.mean(np.abs(err[m]) <= sig[m])),
                        "frac_within_2sigma": float(np.mean(np.abs(err[m]) <= 2 * sig[m]))}
            shells.append(row)
    out["shells"] = shells
    return out


def user_set_metrics(pred_d: np.ndarray, set_id: np.ndarray, target_A: np.ndarray) -> dict:
    """Per user dataset: mean/std (ddof=1)/min/max of predictions; passes if |mean-target| <= 2 std.

    A set with one shot cannot pass (std NaN). Sets are listed in sorted set_id order.
    """
    pred = as_1d(pred_d)
    ids = np.asarray(set_id).reshape(-1)
    target = as_1d(target_A)
    check_same_length(pred_d=pred, set_id=ids, target_A=target)
    bad = int((~np.isfinite(pred)).sum())
    if bad:
        raise ValueError(f"{bad} non-finite resolution predictions")
    if not np.all(np.isfinite(target)):
        raise ValueError("target_A must be finite")
    uniq, inverse = np.unique(ids, return_inverse=True)
    sets = []
    for k, sid in enumerate(uniq):
        m = inverse == k
        t, p = target[m], pred[m]
        if np.ptp(t) > 1e-9 * max(1.0, float(np.abs(t).max())):
            targets = sorted(set(t.tolist()))
            raise ValueError(f"user set {sid!r} has inconsistent targets: {targets}")
        tgt = float(t[0])
        mean = float(p.mean())
        std = float(p.std(ddof=1)) if len(p) >= 2 else float("nan")
        diff = mean - tgt
        if math.isnan(std):
            z, within = float("nan"), False
        elif std > 0:
            z, within = diff / std, abs(diff) <= 2 * std
        else:
            z = 0.0 if diff == 0 else math.copysign(math.inf, diff)
            within = diff == 0
        sets.append({"set_id": sid.item() if isinstance(sid, np.generic) else sid,
                     "target_A": tgt, "n": int(len(p)), "mean_A": mean, "std_A": std,
                     "max_A": float(p.max()), "min_A": float(p.min()),
                     "within_2sd": bool(within), "z": float(z)})
    n_within = sum(s["within_2sd"] for s in sets)
    return {"n_sets": len(sets), "n_within_2sd": int(n_within),
            "fraction_within_2sd": n_within / len(sets) if sets else float("nan"), "sets": sets}


# ----------------------------------------------------------------------------- where models fail

#: spot strength (spot_scale, photons of a full |F|^2 = 1 reflection) decades and misorientation
#: bins (deg) of the breakdown tables
STRENGTH_EDGES = (0.0, 30.0, 300.0, 3e3, 3e4, np.inf)
MISORIENTATION_EDGES = (0.0, 3.0, 10.0, 30.0, 90.0, 180.0)
VISIBLE_SPOTS = 15  # a lattice "shows" when at least this many of its reflections are detectable


def _bins(values: np.ndarray, edges: tuple[float, ...], unit: str) -> list[tuple[str, np.ndarray]]:
    out = []
    for lo, hi in zip(edges[:-1], edges[1:], strict=True):
        m = (values >= lo) & ((values < hi) | ((hi == edges[-1]) & (values == hi)))
        hi_txt = "inf" if not np.isfinite(hi) else f"{hi:g}"
        out.append((f"{lo:g}-{hi_txt} {unit}".strip(), m))
    return out


def _groups(table: dict, keep: np.ndarray) -> dict[str, list[tuple[str, np.ndarray]]]:
    """The ways shots are grouped in the breakdowns, each a list of (name, mask)."""
    g: dict[str, list[tuple[str, np.ndarray]]] = {}
    if "spot_scale" in table:
        g["spot strength"] = _bins(np.asarray(table["spot_scale"], float), STRENGTH_EDGES,
                                   "photons")
    if "detector" in table:
        dets = np.asarray(table["detector"]).astype(str)
        g["detector"] = [(d, dets == d) for d in sorted(set(dets[keep]))]
    if "n_lattices" in table:
        n = np.asarray(table["n_lattices"], int)
        g["lattices"] = [(str(k), n == k) for k in sorted(set(n[keep]))]
    if "ice" in table:
        ice = np.asarray(table["ice"], float) > 0
        g["ice rings"] = [("no ice", ~ice), ("ice", ice)]
    return {k: [(name, m & keep) for name, m in v if (m & keep).any()] for k, v in g.items()}


def lattice_visible(table: dict) -> np.ndarray:
    """Shots whose every lattice shows (>= VISIBLE_SPOTS detectable reflections each)."""
    import json

    per = [json.loads(x) if isinstance(x, str) else list(x)
           for x in np.asarray(table["n_detectable_per_lattice"]).astype(str)]
    return np.array([len(p) > 0 and min(p) >= VISIBLE_SPOTS for p in per])


def lattice_breakdown(p_multi: np.ndarray, table: dict) -> dict:
    """Accuracy on all shots, on hits, on hits whose lattices all show; then on hits by
    misorientation (multi), spot strength, detector, number of lattices."""
    y = labels_bool(table["is_multi"])
    p = as_1d(p_multi)
    pred = p >= 0.5
    hit = np.asarray(table["hit"], bool)
    subsets = {"all shots": np.ones(len(y), bool), "hits": hit}
    if "n_detectable_per_lattice" in table:
        subsets["hits whose lattices all show"] = hit & lattice_visible(table)
    out = {"subsets": {k: _acc_row(pred, y, m) for k, m in subsets.items()}, "groups": {}}
    groups = _groups(table, hit)
    if "max_misorientation_deg" in table:
        mis = np.asarray(table["max_misorientation_deg"], float)
        groups = {"misorientation (multi-lattice hits)":
                  [(n, m & hit & y) for n, m in _bins(mis, MISORIENTATION_EDGES, "deg")
                   if (m & hit & y).any()], **groups}
    out["groups"] = {k: [{"group": n, **_acc_row(pred, y, m)} for n, m in v]
                     for k, v in groups.items()}
    return out


def _acc_row(pred: np.ndarray, y: np.ndarray, m: np.ndarray) -> dict:
    n = int(m.sum())
    return {"n": n, "accuracy": float(np.mean(pred[m] == y[m])) if n else float("nan"),
            "frac_multi": float(np.mean(y[m])) if n else float("nan")}


def resolution_breakdown(pred_d: np.ndarray, true_d: np.ndarray, table: dict) -> dict:
    """MAE and Pearson r of the shots with a true d, by spot strength, detector, number of
    lattices and ice rings."""
    pred, true = as_1d(pred_d), as_1d(true_d)
    keep = np.isfinite(true)
    out = {}
    for k, v in _groups(table, keep).items():
        rows = []
        for name, m in v:
            e = pred[m] - true[m]
            rows.append({"group": name, "n": int(m.sum()), "mae_A": float(np.mean(np.abs(e))),
                         "bias_A": float(np.mean(e)), "pearson_r": _pearson(pred[m], true[m])})
        out[k] = rows
    return out
