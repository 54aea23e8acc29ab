"""Per-shot labels, defined once here (design.md "Labels"); everything else cites this module.

- ``d_B`` (crystal resolution, resonet-compatible): the parameter that sets the intensity falloff.
  Intensities are multiplied by exp(-2 B s^2), s = 1/(2d), with B = 4 d_B^2 + 12 (Holton 2009).
- ``d_vis`` (visible resolution, what a spot finder would see): over every reflection whose spot
  centre falls on an active pixel (not gap, not beamstop): S = expected spot photons and
  Bg = expected background photons in a 7 x 7 pixel box at the spot centre,
  I/sigma = S / sqrt(S + Bg); detectable = I/sigma >= 3;
  d_vis = 1 / (98th percentile of 1/d over detectable reflections, all lattices pooled).
- ``hit`` = at least 15 detectable reflections. Blanks and misses have d_vis = NaN.
- ``n_lattices``, ``is_multi`` = n_lattices >= 2, misorientation angle(s) in degrees.
- ``n_lattices_visible``: the lattices with at least MIN_VISIBLE_REFLECTIONS detectable
  reflections; ``is_multi_visible`` = n_lattices_visible >= 2. A second lattice with three
  reflections is invisible to any method (as d_vis is what a spot finder can see, this is what
  an indexer can): the lattice verdict is judged on shots whose label is visible,
  ``lattice_visible`` = (is_multi_visible == is_multi), and reported on all.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

#: Spot box (pixels per side) over which S and Bg are summed.
SPOT_BOX_PX = 7
#: A reflection is detectable when S / sqrt(S + Bg) reaches this.
MIN_I_OVER_SIGMA = 3.0
#: A shot is a hit when at least this many reflections are detectable.
MIN_HIT_SPOTS = 15
#: A lattice is visible with this many detectable reflections (benchmarks/lattice_verdict.py
#: measures how often indexing finds a lattice against its detectable reflections)
MIN_VISIBLE_REFLECTIONS = 10
#: d_vis is the resolution at this percentile of 1/d over detectable reflections.
D_VIS_PERCENTILE = 98.0


def b_factor(d_B: float) -> float:
    """Wilson B (Å^2) of a crystal whose resolution parameter is d_B (Å): B = 4 d_B^2 + 12."""
    return 4.0 * d_B * d_B + 12.0


def d_B_from_b_factor(b: float) -> float:
    """Inverse of :func:`b_factor` (valid for B >= 12)."""
    if b < 12.0:
        raise ValueError(f"B = {b} Å^2 is below 12: no d_B gives it")
    return math.sqrt((b - 12.0) / 4.0)


def i_over_sigma(S: np.ndarray, Bg: np.ndarray) -> np.ndarray:
    """Poisson I/sigma of a spot: S / sqrt(S + Bg) (0 where S + Bg = 0)."""
    S = np.asarray(S, dtype=float)
    Bg = np.asarray(Bg, dtype=float)
    tot = S + Bg
    with np.errstate(invalid="ignore", divide="ignore"):
        out = np.where(tot > 0, S / np.sqrt(np.where(tot > 0, tot, 1.0)), 0.0)
    return out


@dataclass
class ResolutionLabels:
    n_detectable: int
    d_vis: float  # Å, NaN when no reflection is detectable
    hit: bool
    n_detectable_per_lattice: list[int] = field(default_factory=list)


def resolution_labels(
    d_A: np.ndarray,
    S: np.ndarray,
    Bg: np.ndarray,
    on_active: np.ndarray | None = None,
    lattice: np.ndarray | None = None,
    n_lattices: int | None = None,
) -> ResolutionLabels:
    """``d_vis``, ``hit`` and detectable counts from per-reflection noise-free truth.

    d_A, S, Bg: per reflection (Å, photons, photons in the spot box). on_active: whether the
    spot centre falls on an active pixel (default: all). lattice: lattice index per reflection.
    """
    d_A = np.asarray(d_A, dtype=float)
    if np.any(~np.isfinite(d_A)) or np.any(d_A <= 0):
        raise ValueError("d spacings must be finite and positive")
    det = i_over_sigma(S, Bg) >= MIN_I_OVER_SIGMA
    if on_active is not None:
        det &= np.asarray(on_active, dtype=bool)
    n = int(det.sum())
    d_vis = (
        float(1.0 / np.percentile(1.0 / d_A[det], D_VIS_PERCENTILE)) if n > 0 else float("nan")
    )
    per_lattice: list[int] = []
    if lattice is not None:
        lattice = np.asarray(lattice, dtype=int)
        nl = n_lattices
        if nl is None:
            nl = int(lattice.max()) + 1 if len(lattice) else 0
        per_lattice = [int((det & (lattice == i)).sum()) for i in range(nl)]
    return ResolutionLabels(n, d_vis, n >= MIN_HIT_SPOTS, per_lattice)


def lattice_labels(n_lattices: int) -> dict:
    """``n_lattices`` and ``is_multi`` (n_lattices >= 2)."""
    if n_lattices < 0:
        raise ValueError(f"n_lattices must be >= 0, got {n_lattices}")
    return {"n_lattices": int(n_lattices), "is_multi": bool(n_lattices >= 2)}


def visibility_labels(n_detectable_per_lattice: list[int]) -> dict:
    """``n_lattices_visible``, ``is_multi_visible`` and ``lattice_visible`` (module doc)."""
    n = len(n_detectable_per_lattice)
    seen = sum(int(k) >= MIN_VISIBLE_REFLECTIONS for k in n_detectable_per_lattice)
    return {"n_lattices_visible": seen, "is_multi_visible": seen >= 2,
            "lattice_visible": (seen >= 2) == (n >= 2)}
