"""The poster's figures (matplotlib lives in reports/ only): prediction vs truth, user sets,
confusion matrix, ROC, sigma calibration, training history."""

from __future__ import annotations

import math
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from scipy.special import erf  # noqa: E402

from xray_platform.core.metrics import (  # noqa: E402
    as_1d,
    check_same_length,
    labels_bool,
    resolution_metrics,
    resolution_rows,
    roc_auc,
    roc_curve,
)
from xray_platform.reports.report import _fmt  # noqa: E402

DPI = 110
HEXBIN_ABOVE = 2000


def _save(fig: plt.Figure, out: Path) -> Path:
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    try:
        fig.savefig(out, dpi=DPI, format="png", bbox_inches="tight")
    finally:
        plt.close(fig)
    return out


def _identity(ax: plt.Axes, lo: float, hi: float) -> None:
    ax.plot([lo, hi], [lo, hi], "k--", lw=1, label="y = x")
    ax.set_xlim(lo, hi)
    ax.set_ylim(lo, hi)
    ax.set_aspect("equal")


def plot_pred_vs_true(pred_d: np.ndarray, true_d: np.ndarray, out: Path,
                      sigma_d: np.ndarray | None = None, title: str = "") -> Path:
    """Fig. 6: predicted vs true d (Å), scatter (hexbin above 2000 points), y = x, r and MAE."""
    pred, sig, true, _ = resolution_rows(pred_d, sigma_d, true_d)
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
    p = as_1d(p_multi)
    y = labels_bool(is_multi)
    check_same_length(p_multi=p, is_multi=y)
    auc = roc_auc(p, y)
    fig, ax = plt.subplots(figsize=(5, 5))
    ax.plot([0, 1], [0, 1], "k--", lw=1, label="chance")
    if math.isfinite(auc):
        fpr, tpr = roc_curve(p, y)
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
    pred, sig, true, _ = resolution_rows(pred_d, sigma_d, true_d)
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


def plot_reliability(rel: dict, out: Path) -> Path:
    """Reliability diagram of P(multi): observed fraction vs mean prediction per bin."""
    bins = rel["bins"]
    fig, ax = plt.subplots(figsize=(5.5, 4.5))
    ax.plot([0, 1], [0, 1], "k--", label="perfectly calibrated")
    if bins:
        x = [b["mean_p"] for b in bins]
        ax.plot(x, [b["observed"] for b in bins], "o-", lw=2, label="observed")
        for b in bins:
            ax.annotate(str(b["n"]), (b["mean_p"], b["observed"]), textcoords="offset points",
                        xytext=(4, -10), fontsize=7)
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1)
    ax.set_xlabel("predicted P(multi-lattice)")
    ax.set_ylabel("observed fraction multi-lattice")
    ax.set_title(f"P(multi) reliability, ECE {_fmt(rel['ece'], 3)} (n = {rel['n']})",
                 fontsize=10)
    ax.legend(loc="upper left")
    ax.grid(alpha=0.3)
    return _save(fig, out)


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
