"""Pictures of shots: the model input with resolution rings, the detector frame, the labels."""

from __future__ import annotations

import math
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from matplotlib.patches import Circle, Ellipse  # noqa: E402

from xray_platform.physics.geometry import Geometry  # noqa: E402
from xray_platform.physics.qgrid import QGrid  # noqa: E402

RINGS_A = (8.0, 4.0, 3.0, 2.5, 2.0, 1.5)


def _display(img: np.ndarray) -> np.ma.MaskedArray:
    """log10(1 + counts), masked where the pixel/cell is masked (negative)."""
    img = np.asarray(img, dtype=np.float32)
    return np.ma.array(np.log10(1.0 + np.clip(img, 0, None)), mask=img < 0)


def _vmax(disp: np.ma.MaskedArray) -> float:
    """Display ceiling: the 99.9th percentile, so overloads do not wash out the background."""
    valid = disp.compressed()
    return float(np.percentile(valid, 99.9)) if valid.size else 1.0


def _maxpool(img: np.ndarray, factor: int) -> np.ndarray:
    if factor <= 1:
        return img
    h, w = (img.shape[0] // factor) * factor, (img.shape[1] // factor) * factor
    return img[:h, :w].reshape(h // factor, factor, w // factor, factor).max(axis=(1, 3))


def _label_text(record: dict) -> str:
    def fmt(v, unit=""):
        if isinstance(v, float):
            return "NaN" if math.isnan(v) else f"{v:.2f}{unit}"
        return f"{v}{unit}"

    keys = [("hit", ""), ("n_lattices", ""), ("is_multi", ""), ("d_vis", " Å"), ("d_B", " Å"),
            ("n_detectable", ""), ("misorientation_deg", " deg"), ("crystal_form", ""),
            ("detector", ""), ("distance_mm", " mm"), ("wavelength_A", " Å"),
            ("energy_keV", " keV"), ("target_resolution_A", " Å"), ("panels", "")]
    return "\n".join(f"{k}: {fmt(record[k], u)}" for k, u in keys if k in record)


def show_shot(out: Path, inputs: np.ndarray | None, grid: QGrid | None,
              frame: np.ndarray | None = None, geom: Geometry | None = None,
              record: dict | None = None, title: str = "") -> Path:
    """Write a PNG: the model input (rings at radius 1/d), the frame (rings of equal d), labels."""
    panels = [p for p in ((inputs, "input"), (frame, "frame")) if p[0] is not None]
    fig, axes = plt.subplots(1, len(panels) + 1, figsize=(6 * len(panels) + 3.5, 6),
                             gridspec_kw={"width_ratios": [6] * len(panels) + [3.5]})
    axes = np.atleast_1d(axes)
    cmap = plt.get_cmap("gray_r").copy()
    cmap.set_bad("#f4c430")  # masked: gaps / off-detector, in amber
    for ax, (img, kind) in zip(axes, panels, strict=False):
        if kind == "input":
            disp = _display(img)
            ax.imshow(disp, cmap=cmap, origin="upper", interpolation="nearest", vmin=0,
                      vmax=_vmax(disp))
            c = (grid.size - 1) / 2
            for d in RINGS_A:
                if d >= grid.d_min_A:
                    r = (1.0 / d) / grid.cell
                    ax.add_patch(Circle((c, c), r, fill=False, ec="tab:red", lw=0.6, alpha=0.7))
                    ax.text(c + r * 0.71, c - r * 0.71, f"{d:g} Å", color="tab:red", fontsize=7)
            ax.set_title(f"model input {grid.size}x{grid.size} (q grid to {grid.d_min_A} Å)")
        else:
            factor = max(1, max(img.shape) // 1200)
            small = _maxpool(img, factor)
            disp = _display(small)
            ax.imshow(disp, cmap=cmap, origin="upper", interpolation="nearest", vmin=0,
                      vmax=_vmax(disp))
            if geom is not None:
                f0, s0 = geom.beam_center_px
                for d in RINGS_A:
                    if 2 * d <= geom.wavelength_A:
                        continue
                    r = float(geom.ring_radius_mm(d)) / geom.pixel_mm / factor
                    ax.add_patch(Ellipse((f0 / factor, s0 / factor), 2 * r, 2 * r, fill=False,
                                         ec="tab:red", lw=0.6, alpha=0.7))
                    ax.text(f0 / factor + r * 0.71, s0 / factor - r * 0.71, f"{d:g} Å",
                            color="tab:red", fontsize=7)
                ax.set_xlim(0, small.shape[1])
                ax.set_ylim(small.shape[0], 0)
            ax.set_title(f"detector frame {img.shape[1]}x{img.shape[0]} (fast x slow)"
                         + (f", max-pooled {factor}x{factor}" if factor > 1 else ""))
        ax.set_xticks([])
        ax.set_yticks([])
    info = axes[-1]
    info.axis("off")
    info.text(0, 1, _label_text(record or {}), va="top", family="monospace", fontsize=9)
    fig.suptitle(title + "   (log10(1 + counts), clipped at the 99.9th percentile; "
                 "amber = masked)", fontsize=10)
    fig.tight_layout()
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=110)
    plt.close(fig)
    return out
