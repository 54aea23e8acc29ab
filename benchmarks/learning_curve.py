"""Learning curve of a training run: validation metric vs training images seen (per epoch), from
the run's MLflow history; prints the table and writes a PNG. Several runs (the stages of a zoo
recipe, each continuing from the one before) give one curve, stage after stage. Then per stage:
the images it trained on, its wall time (the `wall_s` that `xrp train` logs) and images/s.

Figures it prints (docs/science/lattice-model.md, docs/guide/models.md): the lattice
learning-curve table (validation accuracy per epoch, AUC after each stage, wall per stage),
the training rate on 2 cores (~25 images/s) and the resolution model's flat curve from
epoch 12.

    python benchmarks/learning_curve.py runs/zoo-resolution --mlflow-uri sqlite:///mlflow.db
    python benchmarks/learning_curve.py runs/zoo-lattice runs/zoo-lattice-2 runs/zoo-lattice-3 \
        --mlflow-uri sqlite:///mlflow.db
"""

from __future__ import annotations

import argparse
from pathlib import Path

KEYS = ("val_mae_A", "val_pearson_r", "val_within_2sigma", "val_accuracy", "val_roc_auc")


def history(client, run: Path) -> dict[str, dict[int, float]]:
    """Per-epoch metrics of a run folder's MLflow run."""
    run_id = (run / "mlflow_run_id").read_text().strip()
    return {k: {m.step: m.value for m in client.get_metric_history(run_id, k)}
            for k in ("train_images", *KEYS)}


def wall_s(client, run: Path) -> float | None:
    """The run's training wall time: `xrp train`'s wall_s metric, else the MLflow run's span."""
    run_id = (run / "mlflow_run_id").read_text().strip()
    logged = client.get_metric_history(run_id, "wall_s")
    if logged:
        return float(logged[-1].value)
    info = client.get_run(run_id).info
    return (info.end_time - info.start_time) / 1e3 if info.end_time else None


def main() -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import mlflow

    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("runs", type=Path, nargs="+",
                    help="run folders of `xrp train` (have mlflow_run_id), in training order")
    ap.add_argument("--mlflow-uri", required=True)
    ap.add_argument("--out", type=Path, default=None,
                    help="PNG (default: learning_curve.png in the last run folder)")
    a = ap.parse_args()
    client = mlflow.MlflowClient(a.mlflow_uri)
    rows, total = [], 0.0  # (stage, epoch, images seen, {metric: value})
    hists = [history(client, run) for run in a.runs]
    for stage, h in enumerate(hists, start=1):
        for e in sorted(h["train_images"]):
            total += h["train_images"][e]
            rows.append((stage, e, total, {k: h[k][e] for k in KEYS if e in h[k]}))
    keys = [k for k in KEYS if any(k in r[3] for r in rows)]
    print("| stage | epoch | images seen | " + " | ".join(keys) + " |")
    print("|---" * (3 + len(keys)) + "|")
    for stage, e, seen, m in rows:
        print(f"| {stage} | {e} | {seen:,.0f} | " +
              " | ".join(f"{m.get(k, float('nan')):.4f}" for k in keys) + " |")
    print("\n| stage | run | images | wall (min) | images/s |\n|---|---|---|---|---|")
    for stage, (run, h) in enumerate(zip(a.runs, hists, strict=True), start=1):
        images = sum(h["train_images"].values())
        wall = wall_s(client, run)
        rate = f"{images / wall:.1f}" if wall else "-"
        print(f"| {stage} | {run.name} | {images:,.0f} | "
              f"{wall / 60 if wall else float('nan'):.0f} | {rate} |")
    fig, axes = plt.subplots(1, len(keys), figsize=(4.2 * len(keys), 3.6), squeeze=False)
    for ax, k in zip(axes[0], keys, strict=True):
        for stage in range(1, len(a.runs) + 1):
            pts = [(r[2], r[3].get(k, float("nan"))) for r in rows if r[0] == stage]
            ax.plot(*zip(*pts, strict=True), marker="o",
                    label=a.runs[stage - 1].name if len(a.runs) > 1 else None)
        ax.set_xlabel("training images seen")
        ax.set_title(k)
        ax.grid(alpha=0.3)
        if len(a.runs) > 1:
            ax.legend(fontsize=7)
    fig.suptitle(f"learning curve: {', '.join(r.name for r in a.runs)}")
    fig.tight_layout()
    out = a.out or a.runs[-1] / "learning_curve.png"
    fig.savefig(out, dpi=110)
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
