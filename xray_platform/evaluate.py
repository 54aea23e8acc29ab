"""Evaluation: lattice (single vs multi) and resolution metrics, user-set checks, plots, reports.

The numbers mirror the poster we compare against: lattice accuracy, Pearson r of the predicted
resolution (Fig. 6), and the fraction of user datasets whose mean prediction lies within two
standard deviations of the target resolution (Fig. 7).
"""

from __future__ import annotations

import json
import math
import os
from pathlib import Path
from typing import Any

import matplotlib

from xray_platform.io.atomic import atomic_open

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from scipy.special import erf  # noqa: E402
from scipy.stats import rankdata  # noqa: E402

DEFAULT_SHELLS: tuple[float, ...] = (1.0, 1.5, 2.0, 2.5, 3.0, 4.0, 6.0, np.inf)
# Headline numbers reported by the poster we must beat (for the report's comparison column).
POSTER_TARGETS: dict[str, float] = {
    "accuracy": 0.94,
    "pearson_r": 0.96,
    "fraction_within_2sd": 0.75,
}
DPI = 110
HEXBIN_ABOVE = 2000


# ----------------------------------------------------------------------------- helpers


def _as_1d(x: Any) -> np.ndarray:
    return np.asarray(x, dtype=float).reshape(-1)


def _check_same_length(**arrays: np.ndarray) -> int:
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


def _labels(is_multi: Any) -> np.ndarray:
    raw = np.asarray(is_multi).reshape(-1)
    if raw.dtype == bool:
        return raw
    vals = raw.astype(float)
    if not np.all(np.isin(vals, (0.0, 1.0))):
        raise ValueError("is_multi must be boolean or 0/1")
    return vals.astype(bool)


def _roc_auc(scores: np.ndarray, labels: np.ndarray) -> float:
    """Mann-Whitney AUC with average ranks for ties; NaN when only one class is present."""
    n_pos = int(labels.sum())
    n_neg = len(labels) - n_pos
    if n_pos == 0 or n_neg == 0:
        return float("nan")
    ranks = rankdata(scores, method="average")
    u = float(ranks[labels].sum()) - n_pos * (n_pos + 1) / 2.0
    return u / (n_pos * n_neg)


def _roc_curve(scores: np.ndarray, labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
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


def _save(fig: plt.Figure, out: Path) -> Path:
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    try:
        fig.savefig(out, dpi=DPI, format="png", bbox_inches="tight")
    finally:
        plt.close(fig)
    return out


def _fmt(v: Any, digits: int = 3) -> str:
    if v is None:
        return "n/a"
    if isinstance(v, (bool, np.bool_)):
        return "yes" if v else "no"
    if isinstance(v, (int, np.integer)):
        return str(int(v))
    if isinstance(v, (float, np.floating)):
        return "n/a" if not math.isfinite(float(v)) else f"{float(v):.{digits}f}"
    return str(v)


# ----------------------------------------------------------------------------- metrics


def lattice_metrics(p_multi: np.ndarray, is_multi: np.ndarray, threshold: float = 0.5) -> dict:
    """Single-vs-multi lattice classification metrics; a shot is called multi when p >= threshold.

    Precision/recall/F1 are NaN when undefined (no predicted/true positives); roc_auc is NaN when
    only one class is present. confusion = [[tn, fp], [fn, tp]].
    """
    p = _as_1d(p_multi)
    y = _labels(is_multi)
    n = _check_same_length(p_multi=p, is_multi=y)
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
        "roc_auc": _roc_auc(p, y),
        "confusion": [[tn, fp], [fn, tp]],
        "baseline_accuracy": max(frac_multi, 1.0 - frac_multi),
        "threshold": float(threshold),
    }


def _resolution_rows(pred_d: Any, sigma_d: Any, true_d: Any
                     ) -> tuple[np.ndarray, np.ndarray | None, np.ndarray, int]:
    """Validated (pred, sigma, true) for rows with a true d, and the number of excluded rows."""
    pred = _as_1d(pred_d)
    true = _as_1d(true_d)
    sig = None if sigma_d is None else _as_1d(sigma_d)
    arrays = {"pred_d": pred, "true_d": true} | ({} if sig is None else {"sigma_d": sig})
    _check_same_length(**arrays)
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
    pred, sig, true, n_excluded = _resolution_rows(pred_d, sigma_d, true_d)
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
            shells.append({"lo": float(lo), "hi": float(hi), "n": int(m.sum()),
                           "mae_A": float(np.mean(np.abs(err[m]))),
                           "bias_A": float(np.mean(err[m]))})
    out["shells"] = shells
    return out


def user_set_metrics(pred_d: np.ndarray, set_id: np.ndarray, target_A: np.ndarray) -> dict:
    """Per user dataset: mean/std (ddof=1)/min/max of predictions; passes if |mean-target| <= 2 std.

    A set with one shot cannot pass (std NaN). Sets are listed in sorted set_id order.
    """
    pred = _as_1d(pred_d)
    ids = np.asarray(set_id).reshape(-1)
    target = _as_1d(target_A)
    _check_same_length(pred_d=pred, set_id=ids, target_A=target)
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


# ----------------------------------------------------------------------------- plots


def _identity(ax: plt.Axes, lo: float, hi: float) -> None:
    ax.plot([lo, hi], [lo, hi], "k--", lw=1, label="y = x")
    ax.set_xlim(lo, hi)
    ax.set_ylim(lo, hi)
    ax.set_aspect("equal")


def plot_pred_vs_true(pred_d: np.ndarray, true_d: np.ndarray, out: Path,
                      sigma_d: np.ndarray | None = None, title: str = "") -> Path:
    """Fig. 6: predicted vs true d (Å), scatter (hexbin above 2000 points), y = x, r and MAE."""
    pred, sig, true, _ = _resolution_rows(pred_d, sigma_d, true_d)
    m = resolution_metrics(pred, sig, true)
    fig, ax = plt.subplots(figsize=(6, 6))
    vals = np.r_[pred, true]
    lo, hi = (float(vals.min()), float(vals.max())) if len(vals) else (0.0, 1.0)
    pad = 0.05 * (hi - lo) + 1e-3
    lo, hi = lo - pad, hi + pad
    stats = f"r = {_fmt(m['pearson_r'])}, MAE = {_fmt(m['mae_A'])} Å, n = {m['n']}"
    if len(true) > HEXBIN_ABOVE:
        hb = ax.hexbin(true, pred, gridsize=60, bins="log", mincnt=1, cmap="viridis",
                       extent=(lo, hi, lo, hi))
        fig.colorbar(hb, ax=ax, shrink=0.8, label="shots")
        ax.plot([], [], " ", label=stats)
    elif sig is not None:
        ax.errorbar(true, pred, yerr=sig, fmt="o", ms=3, alpha=0.6, elinewidth=0.6, label=stats)
    else:
        ax.scatter(true, pred, s=8, alpha=0.6, label=stats)
    _identity(ax, lo, hi)
    ax.set_xlabel("true resolution d (Å)")
    ax.set_ylabel("predicted resolution d (Å)")
    ax.set_title(f"{title + ': ' if title else ''}{stats}", fontsize=10)
    ax.legend(loc="upper left", fontsize=8)
    ax.grid(alpha=0.3)
    return _save(fig, out)


def plot_user_sets(user: dict, out: Path) -> Path:
    """Fig. 7: per user set mean ± std and max prediction vs target, coloured by pass/fail."""
    sets = user.get("sets", [])
    fig, ax = plt.subplots(figsize=(6.5, 6))
    labelled: set[str] = set()
    for s in sets:
        ok = bool(s["within_2sd"])
        colour = "tab:green" if ok else "tab:red"
        key = "within 2 sd" if ok else "outside 2 sd"
        std = s["std_A"] if s["std_A"] is not None and math.isfinite(s["std_A"]) else 0.0
        ax.errorbar(s["target_A"], s["mean_A"], yerr=std, fmt="o", color=colour, capsize=3,
                    ms=5, label=f"mean ± sd ({key})" if key not in labelled else None)
        labelled.add(key)
        ax.scatter(s["target_A"], s["max_A"], marker="^", facecolors="none", edgecolors=colour,
                   s=30, label="max" if "max" not in labelled else None)
        labelled.add("max")
    vals = [v for s in sets for v in (s["target_A"], s["mean_A"], s["max_A"], s["min_A"])]
    lo, hi = (min(vals), max(vals)) if vals else (0.0, 1.0)
    pad = 0.08 * (hi - lo) + 0.1
    _identity(ax, lo - pad, hi + pad)
    ax.set_xlabel("target resolution (Å)")
    ax.set_ylabel("predicted resolution (Å)")
    frac = user.get("fraction_within_2sd", float("nan"))
    pct = "n/a" if frac is None or not math.isfinite(frac) else f"{100 * frac:.0f} %"
    ax.set_title(f"user sets within 2 sd of target: {user.get('n_within_2sd', 0)}"
                 f"/{user.get('n_sets', len(sets))} ({pct})", fontsize=10)
    ax.legend(loc="upper left", fontsize=8)
    ax.grid(alpha=0.3)
    return _save(fig, out)


def plot_confusion(metrics: dict, out: Path) -> Path:
    """2x2 confusion matrix (rows = true, columns = predicted) with counts and % of true class."""
    cm = np.asarray(metrics["confusion"], dtype=float)
    if cm.shape != (2, 2):
        raise ValueError(f"confusion must be 2x2, got shape {cm.shape}")
    rows = cm.sum(axis=1, keepdims=True)
    frac = np.divide(cm, rows, out=np.zeros_like(cm), where=rows > 0)
    total = cm.sum()
    fig, ax = plt.subplots(figsize=(4.8, 4.2))
    im = ax.imshow(frac, cmap="Blues", vmin=0, vmax=1)
    fig.colorbar(im, ax=ax, label="fraction of true class")
    for i in range(2):
        for j in range(2):
            pct_all = 100 * cm[i, j] / total if total else 0.0
            ax.text(j, i, f"{int(cm[i, j])}\n{100 * frac[i, j]:.1f} % of row\n"
                    f"({pct_all:.1f} % of all)", ha="center", va="center", fontsize=9,
                    color="white" if frac[i, j] > 0.5 else "black")
    names = ["single", "multi"]
    ax.set_xticks([0, 1], names)
    ax.set_yticks([0, 1], names)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    acc = metrics.get("accuracy")
    ax.set_title(f"lattice confusion (accuracy {_fmt(acc)})", fontsize=10)
    return _save(fig, out)


def plot_roc(p_multi: np.ndarray, is_multi: np.ndarray, out: Path) -> Path:
    """ROC curve for 'multi' as the positive class, AUC in the legend."""
    p = _as_1d(p_multi)
    y = _labels(is_multi)
    _check_same_length(p_multi=p, is_multi=y)
    auc = _roc_auc(p, y)
    fig, ax = plt.subplots(figsize=(5, 5))
    ax.plot([0, 1], [0, 1], "k--", lw=1, label="chance")
    if math.isfinite(auc):
        fpr, tpr = _roc_curve(p, y)
        ax.plot(fpr, tpr, lw=2, label=f"AUC = {auc:.3f}")
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1.01)
    ax.set_xlabel("false positive rate (single called multi)")
    ax.set_ylabel("true positive rate (multi called multi)")
    ax.set_title(f"ROC, multi lattice (AUC {_fmt(auc)}, n = {len(p)})", fontsize=10)
    ax.legend(loc="lower right")
    ax.grid(alpha=0.3)
    return _save(fig, out)


def plot_calibration(pred_d: np.ndarray, sigma_d: np.ndarray, true_d: np.ndarray,
                     out: Path) -> Path:
    """Observed fraction with |pred - true| <= k sigma vs Gaussian erf(k / sqrt 2), k in 0..3."""
    if sigma_d is None:
        raise ValueError("plot_calibration needs sigma_d")
    pred, sig, true, _ = _resolution_rows(pred_d, sigma_d, true_d)
    assert sig is not None
    k = np.linspace(0.0, 3.0, 61)
    absr = np.abs(pred - true)
    observed = ((absr[None, :] <= k[:, None] * sig[None, :]).mean(axis=1) if len(absr)
                else np.full_like(k, np.nan))
    fig, ax = plt.subplots(figsize=(5.5, 4.5))
    ax.plot(k, erf(k / np.sqrt(2.0)), "k--", label="Gaussian expectation")
    ax.plot(k, observed, lw=2, label="observed")
    for kk in (1, 2):
        obs = float(np.mean(absr <= kk * sig)) if len(absr) else float("nan")
        ax.annotate(f"{_fmt(obs, 2)} (exp {math.erf(kk / math.sqrt(2)):.2f})",
                    (kk, obs if math.isfinite(obs) else 0), textcoords="offset points",
                    xytext=(5, -14), fontsize=8)
    ax.set_xlim(0, 3)
    ax.set_ylim(0, 1.02)
    ax.set_xlabel("k (multiples of predicted sigma)")
    ax.set_ylabel("fraction with |pred - true| <= k sigma")
    ax.set_title(f"resolution uncertainty calibration (n = {len(absr)})", fontsize=10)
    ax.legend(loc="lower right")
    ax.grid(alpha=0.3)
    return _save(fig, out)


# ----------------------------------------------------------------------------- report


def _jsonable(obj: Any) -> Any:
    """Plain-Python, strict-JSON copy: numpy -> Python, non-finite floats -> None, Path -> str."""
    if isinstance(obj, dict):
        return {str(k): _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_jsonable(v) for v in obj]
    if isinstance(obj, np.ndarray):
        return _jsonable(obj.tolist())
    if isinstance(obj, np.generic):
        return _jsonable(obj.item())
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, Path):
        return str(obj)
    return obj


def _atomic_write(path: Path, text: str) -> None:
    with atomic_open(path) as fh:
        fh.write(text)


def _find_sections(metrics: dict) -> dict[str, tuple[str, dict]]:
    """Locate the lattice / resolution / user-set dicts, at top level or one level down."""
    signatures = {"lattice": "accuracy", "resolution": "pearson_r", "user": "n_sets"}
    candidates: list[tuple[str, dict]] = [("", metrics)]
    candidates += [(str(k), v) for k, v in metrics.items() if isinstance(v, dict)]
    found: dict[str, tuple[str, dict]] = {}
    for kind, key in signatures.items():
        for name, d in candidates:
            if key in d:
                found[kind] = (name, d)
                break
    return found


def _headline_rows(sections: dict[str, tuple[str, dict]]) -> list[tuple[str, str, str]]:
    rows: list[tuple[str, str, str]] = []

    def add(d: dict, key: str, label: str) -> None:
        if key in d:
            poster = POSTER_TARGETS.get(key)
            rows.append((label, _fmt(d[key]), "" if poster is None else _fmt(poster, 2)))

    if "lattice" in sections:
        d = sections["lattice"][1]
        for key, label in (("n", "lattice: shots"), ("accuracy", "lattice accuracy"),
                           ("baseline_accuracy", "lattice accuracy, majority baseline"),
                           ("precision", "lattice precision (multi)"),
                           ("recall", "lattice recall (multi)"), ("f1", "lattice F1"),
                           ("roc_auc", "lattice ROC AUC")):
            add(d, key, label)
    if "resolution" in sections:
        d = sections["resolution"][1]
        for key, label in (("n", "resolution: shots"),
                           ("n_excluded", "resolution: blanks excluded"),
                           ("pearson_r", "resolution Pearson r (d)"),
                           ("pearson_r_inv_d", "resolution Pearson r (1/d)"),
                           ("spearman_r", "resolution Spearman r"), ("mae_A", "MAE (Å)"),
                           ("baseline_mae_A", "MAE, predict-the-mean baseline (Å)"),
                           ("median_abs_err_A", "median abs error (Å)"), ("rmse_A", "RMSE (Å)"),
                           ("bias_A", "bias, pred - true (Å)"),
                           ("frac_within_1sigma", "within 1 sigma (expect 0.683)"),
                           ("frac_within_2sigma", "within 2 sigma (expect 0.954)"),
                           ("mean_sigma_A", "mean sigma (Å)")):
            add(d, key, label)
    if "user" in sections:
        d = sections["user"][1]
        if "n_within_2sd" in d:
            rows.append(("user sets passed (within 2 sd)",
                         f"{_fmt(d['n_within_2sd'])}/{_fmt(d['n_sets'])}", ""))
        add(d, "fraction_within_2sd", "user sets, fraction within 2 sd")
    return rows


def _table(header: list[str], rows: list[list[str]]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(c.replace("|", "\\|") for c in r) + " |" for r in rows]
    return lines


def write_report(out_dir: Path, metrics: dict, plots: dict[str, Path],
                 title: str) -> tuple[Path, Path]:
    """Write report.json (the metrics, strict JSON) and report.md (tables and plots), atomically.

    `metrics` may hold the lattice / resolution / user-set dicts at top level or nested one level
    (e.g. {"lattice": ..., "resolution": ..., "user_sets": ...}).
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    json_path, md_path = out_dir / "report.json", out_dir / "report.md"
    _atomic_write(json_path, json.dumps(_jsonable(metrics), indent=2, allow_nan=False) + "\n")

    sections = _find_sections(metrics)
    lines = [f"# {title}", ""]
    headline = _headline_rows(sections)
    if headline:
        lines += ["## Headline numbers", ""]
        lines += _table(["metric", "value", "poster"], [list(r) for r in headline]) + [""]
    shells = sections.get("resolution", ("", {}))[1].get("shells") or []
    if shells:
        lines += ["## Resolution by true-d shell", ""]
        hi_txt = [_fmt(s["hi"], 2) if s["hi"] is not None and s["hi"] < np.inf else "inf"
                  for s in shells]
        lines += _table(["shell (Å)", "n", "MAE (Å)", "bias (Å)"],
                        [[f"{_fmt(s['lo'], 2)} - {h}", _fmt(s["n"]), _fmt(s["mae_A"]),
                          _fmt(s["bias_A"])] for s, h in zip(shells, hi_txt, strict=True)])
        lines.append("")
    sets = sections.get("user", ("", {}))[1].get("sets") or []
    if sets:
        lines += ["## User datasets", ""]
        lines += _table(["set", "target (Å)", "n", "mean (Å)", "sd (Å)", "min (Å)", "max (Å)",
                         "z", "within 2 sd"],
                        [[str(s["set_id"]), _fmt(s["target_A"], 2), _fmt(s["n"]),
                          _fmt(s["mean_A"]), _fmt(s["std_A"]), _fmt(s["min_A"]),
                          _fmt(s["max_A"]), _fmt(s["z"], 2), _fmt(s["within_2sd"])]
                         for s in sets])
        lines.append("")
    if plots:
        lines += ["## Plots", ""]
        for name, path in plots.items():
            rel = Path(os.path.relpath(Path(path).resolve(), out_dir.resolve())).as_posix()
            lines += [f"### {name}", "", f"![{name}]({rel})", ""]
    _atomic_write(md_path, "\n".join(lines).rstrip() + "\n")
    return json_path, md_path


# ----------------------------------------------------------------------------------------
# evaluating a model file on a data set (xrp evaluate)
# ----------------------------------------------------------------------------------------
def predict_dataset(model_path: Path, data_path: Path, batch_size: int = 32,
                    progress: Any = None) -> tuple[dict, dict, dict]:
    """Run a model over every shot of an HDF5 shot data set.

    Returns (predictions, labels table, model metadata). ``progress(done, total)`` is called
    after each batch."""
    import torch

    from xray_platform.inference import predict
    from xray_platform.io.shots import ShotDataset
    from xray_platform.models import load_model
    from xray_platform.preprocess import Preprocessing, normalise, regrid, regrid_plan

    model, meta = load_model(model_path)
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
    return {k: np.concatenate(v) for k, v in preds.items()}, ds.table, meta


def evaluate_predictions(task: str, label: str, preds: dict, table: dict, out_dir: Path,
                         title: str) -> dict:
    """Metrics, plots and the report for predictions over a labels table."""
    from xray_platform.targets import training_target

    out_dir = Path(out_dir)
    plots: dict[str, Path] = {}
    metrics: dict[str, Any] = {}
    if task == "lattice":
        is_multi = np.asarray(table["is_multi"], bool)
        m = lattice_metrics(preds["p_multi"], is_multi)
        metrics["lattice"] = m
        plots["confusion"] = plot_confusion(m, out_dir / "confusion.png")
        plots["roc"] = plot_roc(preds["p_multi"], is_multi, out_dir / "roc.png")
    else:
        y, keep = training_target(table, task, label)
        true_d = np.where(keep, 1.0 / np.where(keep, y, 1.0), np.nan)
        m = resolution_metrics(preds["d_A"], preds["sigma_A"], true_d)
        metrics["resolution"] = m
        plots["pred_vs_true"] = plot_pred_vs_true(preds["d_A"], true_d,
                                                  out_dir / "pred_vs_true.png",
                                                  sigma_d=preds["sigma_A"], title=title)
        if np.any(keep):
            plots["calibration"] = plot_calibration(preds["d_A"][keep], preds["sigma_A"][keep],
                                                    true_d[keep], out_dir / "calibration.png")
        if "set_id" in table:
            hits = np.asarray(table["hit"], bool)
            if hits.any():
                u = user_set_metrics(preds["d_A"][hits], np.asarray(table["set_id"])[hits],
                                     np.asarray(table["target_resolution_A"])[hits])
                metrics["user_sets"] = u
                plots["user_sets"] = plot_user_sets(u, out_dir / "user_sets.png")
    write_report(out_dir, metrics, plots, title)
    return {"metrics": metrics, "plots": {k: str(v) for k, v in plots.items()},
            "report": str(out_dir / "report.md")}


def plot_history(history_csv: Path, out: Path) -> Path:
    """Training curves: train/val loss and the validation metrics per epoch."""
    lines = Path(history_csv).read_text().strip().splitlines()
    cols = lines[0].split(",")
    data = np.array([[float(v) for v in ln.split(",")] for ln in lines[1:]], dtype=float)
    data = data.reshape(-1, len(cols))
    col = {c: data[:, i] for i, c in enumerate(cols)}
    metric_keys = [k for k in ("val_accuracy", "val_roc_auc", "val_mae_A", "val_pearson_r",
                               "val_within_2sigma") if k in col]
    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    for k in ("train_loss", "val_loss"):
        if k in col:
            axes[0].plot(col["epoch"], col[k], marker="o", label=k)
    axes[0].set_xlabel("epoch")
    axes[0].set_ylabel("loss")
    axes[0].legend()
    for k in metric_keys:
        axes[1].plot(col["epoch"], col[k], marker="o", label=k)
    for k in ("val_baseline_accuracy", "val_baseline_mae_A"):
        if k in col:
            axes[1].plot(col["epoch"], col[k], ls="--", color="grey", label=k)
    axes[1].set_xlabel("epoch")
    axes[1].legend(fontsize=8)
    for ax in axes:
        ax.grid(alpha=0.3)
    fig.suptitle("training history")
    return _save(fig, Path(out))
