"""What each model learns from a shot's labels (definitions of the labels: physics/labels.py).

- lattice: y = is_multi (0/1). Label ``is_multi``: every shot counts, blanks and misses are
  single (0); ``is_multi_hits``: the hits only, the frames whose lattices the service reports
  (a miss with two faint lattices teaches nothing a frame shows).
- resolution: y = 1/d (1/Å) of the chosen label, ``d_vis`` (default) or ``d_B``; only shots where
  the label is defined count: for d_vis the hits (blanks and misses have no visible
  resolution), for d_B the shots with a crystal.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np

TASKS = ("lattice", "resolution")
LABELS = {"lattice": ("is_multi", "is_multi_hits"), "resolution": ("d_vis", "d_B")}
DEFAULT_LABEL = {"lattice": "is_multi", "resolution": "d_vis"}


def check_task_label(task: str, label: str | None) -> str:
    """Validate (task, label); return the label (default for the task when None)."""
    if task not in TASKS:
        raise ValueError(f"unknown task {task!r}; choose one of {TASKS}")
    label = label or DEFAULT_LABEL[task]
    if label not in LABELS[task]:
        raise ValueError(f"label {label!r} is not a {task} label; choose one of {LABELS[task]}")
    return label


def training_target(table: Mapping[str, np.ndarray], task: str,
                    label: str | None = None) -> tuple[np.ndarray, np.ndarray]:
    """(y float32, keep bool) for rows of a labels table (dict of column arrays)."""
    label = check_task_label(task, label)
    if task == "lattice":
        y = np.asarray(table["is_multi"], dtype=np.float32)
        if label == "is_multi_hits":
            return y, np.asarray(table["hit"], dtype=bool)
        return y, np.ones(len(y), dtype=bool)
    d = np.asarray(table[label], dtype=np.float64)
    keep = np.isfinite(d) & (d > 0)
    if label == "d_vis":
        keep &= np.asarray(table["hit"], dtype=bool)
    y = np.where(keep, 1.0 / np.where(keep, d, 1.0), np.nan).astype(np.float32)
    return y, keep
