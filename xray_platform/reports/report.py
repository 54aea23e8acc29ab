"""Evaluation reports: report.json (every metric) and report.md (headline table against the
poster, per-shell and per-set tables, the plots)."""

from __future__ import annotations

import json
import math
import os
from pathlib import Path
from typing import Any

import numpy as np

from xray_platform.core.metrics import POSTER_TARGETS
from xray_platform.io.atomic import atomic_open


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
            rows.append((f"user sets passed (within 2 sd of {d.get('target', 'the target')})",
                         f"{_fmt(d['n_within_2sd'])}/{_fmt(d['n_sets'])}", ""))
        add(d, "fraction_within_2sd", "user sets, fraction within 2 sd")
    return rows


def _table(header: list[str], rows: list[list[str]]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(c.replace("|", "\\|") for c in r) + " |" for r in rows]
    return lines


def _breakdown_lines(metrics: dict) -> list[str]:
    """Where the model fails: the breakdown tables of core/metrics.py."""
    lines: list[str] = []
    lat = metrics.get("lattice_breakdown")
    if lat:
        lines += ["## Lattice accuracy by subset", ""]
        lines += _table(["shots", "n", "accuracy", "fraction multi"],
                        [[k, _fmt(v["n"]), _fmt(v["accuracy"]), _fmt(v["frac_multi"], 2)]
                         for k, v in lat["subsets"].items()]) + [""]
        for name, rows in lat["groups"].items():
            lines += [f"## Lattice accuracy on hits by {name}", ""]
            lines += _table([name, "n", "accuracy", "fraction multi"],
                            [[r["group"], _fmt(r["n"]), _fmt(r["accuracy"]),
                              _fmt(r["frac_multi"], 2)] for r in rows]) + [""]
    for name, rows in (metrics.get("resolution_breakdown") or {}).items():
        lines += [f"## Resolution by {name}", ""]
        lines += _table([name, "n", "MAE (Å)", "bias (Å)", "Pearson r"],
                        [[r["group"], _fmt(r["n"]), _fmt(r["mae_A"]), _fmt(r["bias_A"]),
                          _fmt(r["pearson_r"])] for r in rows]) + [""]
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
        lines += _table(["shell (Å)", "n", "MAE (Å)", "bias (Å)", "within 1 sigma",
                         "within 2 sigma"],
                        [[f"{_fmt(s['lo'], 2)} - {h}", _fmt(s["n"]), _fmt(s["mae_A"]),
                          _fmt(s["bias_A"]), _fmt(s.get("frac_within_1sigma"), 2),
                          _fmt(s.get("frac_within_2sigma"), 2)]
                         for s, h in zip(shells, hi_txt, strict=True)])
        lines.append("")
    rel = metrics.get("lattice_reliability")
    if rel:
        lines += ["## P(multi) reliability", "",
                  f"Expected calibration error {_fmt(rel['ece'])} over {rel['n']} shots"
                  + (f" (model temperature {_fmt(rel['temperature'], 3)})"
                     if rel.get("temperature") is not None else "") + ".", ""]
        lines += _table(["predicted", "n", "mean predicted", "observed multi"],
                        [[f"{b['lo']:.1f}-{b['hi']:.1f}", _fmt(b["n"]), _fmt(b["mean_p"]),
                          _fmt(b["observed"])] for b in rel["bins"]]) + [""]
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
    lines += _breakdown_lines(metrics)
    if plots:
        lines += ["## Plots", ""]
        for name, path in plots.items():
            rel = Path(os.path.relpath(Path(path).resolve(), out_dir.resolve())).as_posix()
            lines += [f"### {name}", "", f"![{name}]({rel})", ""]
    _atomic_write(md_path, "\n".join(lines).rstrip() + "\n")
    return json_path, md_path
