"""Evaluate predictions over a labels table: metrics, the poster's plots and the report."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from xray_platform.core.calibration import reliability
from xray_platform.core.metrics import (
    lattice_breakdown,
    lattice_metrics,
    resolution_breakdown,
    resolution_metrics,
    user_set_metrics,
)
from xray_platform.reports.figures import (
    plot_calibration,
    plot_confusion,
    plot_pred_vs_true,
    plot_reliability,
    plot_roc,
    plot_user_sets,
)
from xray_platform.reports.report import write_report


def set_targets(label: str, ids: np.ndarray, true_d: np.ndarray, table: dict
                ) -> tuple[np.ndarray, str]:
    """Each shot's user-set target, like for like (design.md): the crystal's d_B for a d_B
    model; for a d_vis model the median d_vis label of the set's hits (d_vis is finer than d_B
    for weak, low-resolution crystals, so a d_B target would fail a correct d_vis model)."""
    if label != "d_vis":
        return np.asarray(table["target_resolution_A"], float), "the set's crystal d_B"
    out = np.full(len(ids), np.nan)
    for sid in np.unique(ids):
        m = ids == sid
        d = true_d[m][np.isfinite(true_d[m])]
        out[m] = np.median(d) if len(d) else np.nan
    return out, "the median d_vis label of the set's hits"


def evaluate_predictions(task: str, label: str, preds: dict, table: dict, out_dir: Path,
                         title: str, temperature: float | None = None) -> dict:
    """Metrics, plots and the report for predictions over a labels table (``temperature``:
    the lattice model's calibration, for the report)."""
    from xray_platform.core.targets import training_target

    out_dir = Path(out_dir)
    plots: dict[str, Path] = {}
    metrics: dict[str, Any] = {}
    if task == "lattice":
        _, keep = training_target(table, task, label)  # is_multi_hits: judged on hits
        is_multi = np.asarray(table["is_multi"], bool)[keep]
        m = lattice_metrics(preds["p_multi"][keep], is_multi)
        metrics["lattice"] = m
        if "hit" in table:
            metrics["lattice_breakdown"] = lattice_breakdown(preds["p_multi"], table)
        rel = reliability(preds["p_multi"][keep], is_multi)
        metrics["lattice_reliability"] = {**rel, "temperature": temperature}
        plots["confusion"] = plot_confusion(m, out_dir / "confusion.png")
        plots["roc"] = plot_roc(preds["p_multi"][keep], is_multi, out_dir / "roc.png")
        plots["reliability"] = plot_reliability(rel, out_dir / "reliability.png")
    else:
        y, keep = training_target(table, task, label)
        true_d = np.where(keep, 1.0 / np.where(keep, y, 1.0), np.nan)
        m = resolution_metrics(preds["d_A"], preds["sigma_A"], true_d)
        metrics["resolution"] = m
        metrics["resolution_breakdown"] = resolution_breakdown(preds["d_A"], true_d, table)
        plots["pred_vs_true"] = plot_pred_vs_true(preds["d_A"], true_d,
                                                  out_dir / "pred_vs_true.png",
                                                  sigma_d=preds["sigma_A"], title=title)
        if np.any(keep):
            plots["calibration"] = plot_calibration(preds["d_A"][keep], preds["sigma_A"][keep],
                                                    true_d[keep], out_dir / "calibration.png")
        if "set_id" in table:
            hits = np.asarray(table["hit"], bool)
            if hits.any():
                ids = np.asarray(table["set_id"])
                targets, kind = set_targets(label, ids, true_d, table)
                u = user_set_metrics(preds["d_A"][hits], ids[hits], targets[hits])
                u["target"] = kind
                metrics["user_sets"] = u
                plots["user_sets"] = plot_user_sets(u, out_dir / "user_sets.png")
    write_report(out_dir, metrics, plots, title)
    return {"metrics": metrics, "plots": {k: str(v) for k, v in plots.items()},
            "report": str(out_dir / "report.md")}
