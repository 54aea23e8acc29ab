"""Learning curve of a training run: validation metric vs training images seen (per epoch), from
the run's MLflow history; prints the table and writes a PNG.

    python benchmarks/learning_curve.py runs/zoo-resolution --mlflow-uri sqlite:///mlflow.db
"""

from __future__ import annotations

import argparse
from pathlib import Path


def main() -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import mlflow

    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("run", type=Path, help="a run folder of `xrp train` (has mlflow_run_id)")
    ap.add_argument("--mlflow-uri", required=True)
    ap.add_argument("--out", type=Path, default=None, help="PNG (default: RUN/learning_curve.png)")
    a = ap.parse_args()
    client = mlflow.MlflowClient(a.mlflow_uri)
    run_id = (a.run / "mlflow_run_id").read_text().strip()
    hist = {k: {m.step: m.value for m in client.get_metric_history(run_id, k)}
            for k in ("train_images", "val_mae_A", "val_pearson_r", "val_accuracy",
                      "val_roc_auc", "val_within_2sigma")}
    epochs = sorted(hist["train_images"])
    seen, total = [], 0.0
    for e in epochs:
        total += hist["train_images"][e]
        seen.append(total)
    keys = [k for k in ("val_mae_A", "val_pearson_r", "val_within_2sigma", "val_accuracy",
                        "val_roc_auc") if hist[k]]
    print("| epoch | images seen | " + " | ".join(keys) + " |")
    print("|---" * (2 + len(keys)) + "|")
    for e, s in zip(epochs, seen, strict=True):
        print(f"| {e} | {s:,.0f} | " + " | ".join(f"{hist[k].get(e, float('nan')):.4f}"
                                               for k in keys) + " |")
    fig, axes = plt.subplots(1, len(keys), figsize=(4.2 * len(keys), 3.6))
    for ax, k in zip(axes if len(keys) > 1 else [axes], keys, strict=True):
        ax.plot(seen, [hist[k].get(e, float("nan")) for e in epochs], marker="o")
        ax.set_xlabel("training images seen")
        ax.set_title(k)
        ax.grid(alpha=0.3)
    fig.suptitle(f"learning curve: {a.run.name}")
    fig.tight_layout()
    out = a.out or a.run / "learning_curve.png"
    fig.savefig(out, dpi=110)
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
