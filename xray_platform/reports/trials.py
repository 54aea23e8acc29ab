"""The trial table of a search: trials.csv, trials.md and trials.png (depth x init heatmap and
validation curves)."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from xray_platform.core.metrics import headline  # noqa: E402
from xray_platform.core.models import INITS  # noqa: E402


def write_trial_table(rows: list[dict], task: str, epochs: int, out: Path) -> list[Path]:
    """trials.csv, trials.md and trials.png (depth x init heatmap + validation curves)."""
    key, label, direction = headline(task)
    cols = ["trial_id", "depth", "init", "lr", "batch_size", "epochs_run", "best_epoch", key,
            "val_score", "status"]
    lines = [",".join(cols)]
    md = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    order = sorted(rows, key=lambda r: -r.get("val_score", -np.inf))
    for r in order:
        vals = []
        for c in cols:
            v = r.get(c)
            vals.append(f"{v:.4g}" if isinstance(v, float) else ("" if v is None else str(v)))
        lines.append(",".join(vals))
        md.append("| " + " | ".join(vals) + " |")
    out.mkdir(parents=True, exist_ok=True)
    (out / "trials.csv").write_text("\n".join(lines) + "\n")
    (out / "trials.md").write_text("\n".join(md) + "\n")

    depths = sorted({r["depth"] for r in rows if r["depth"] is not None})
    inits = [i for i in INITS if any(r["init"] == i for r in rows)]
    grid = np.full((len(depths), len(inits)), np.nan)
    pick = np.nanmin if direction == "min" else np.nanmax
    for i, d in enumerate(depths):
        for j, ini in enumerate(inits):
            v = [r[key] for r in rows if r["depth"] == d and r["init"] == ini and key in r]
            if v:
                grid[i, j] = pick(v)
    fig, (a0, a1) = plt.subplots(1, 2, figsize=(11, 4.2))
    im = a0.imshow(grid, cmap="viridis_r" if direction == "min" else "viridis", aspect="auto")
    a0.set_xticks(range(len(inits)), inits)
    a0.set_yticks(range(len(depths)), [f"ResNet-{d}" for d in depths])
    for i in range(len(depths)):
        for j in range(len(inits)):
            if np.isfinite(grid[i, j]):
                bright = im.norm(grid[i, j]) > 0.5
                if direction == "min":
                    bright = not bright
                a0.text(j, i, f"{grid[i, j]:.3f}", ha="center", va="center",
                        color="k" if bright else "w")
    fig.colorbar(im, ax=a0, label=f"best {label}")
    a0.set_title("depth x initialisation (best trial)")
    colours = {18: "tab:blue", 34: "tab:orange", 50: "tab:green"}
    styles = {"scratch": "-", "imagenet": "--", "transfer": ":"}
    for r in rows:
        if r["curve"]:
            e, v = zip(*r["curve"], strict=True)
            a1.plot(e, v, styles.get(r["init"], "-"), color=colours.get(r["depth"], "k"),
                    marker="o", ms=3, label=f"r{r['depth']} {r['init']} lr {r['lr']:.1e}")
    a1.set_xlabel("epoch")
    a1.set_ylabel(label)
    a1.set_xlim(0.5, epochs + 0.5)
    a1.set_title("trials (ASHA stops the weak ones early)")
    if rows:
        a1.legend(fontsize=7, ncol=2)
    fig.tight_layout()
    fig.savefig(out / "trials.png", dpi=110)
    plt.close(fig)
    return [out / "trials.csv", out / "trials.md", out / "trials.png"]
