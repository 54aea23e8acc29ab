"""Grid-scan centring: where the crystal is in a ``--grid ROWSxCOLS [--snake]`` run, from its
per-frame answers. Pure numpy + scipy.ndimage, no Ray.

- A frame's cell: frame number f (0-based, as the stream and multi-frame files number them) is
  row f // cols, column f % cols; in snake order odd rows run backwards (the live page's heat
  map uses the same rule). A run whose frame numbers repeat (a folder of one-frame files)
  takes each frame's place in (file, frame) order instead.
- Diffracting cells are the hits (the answer's ``hit``). Hit cells that touch, sides or
  corners (**8-connectivity**), form one region: one crystal. Regions apart are listed apart,
  the strongest (most spots) first.
- A region's centre is the mean cell position **weighted by spot count** (``n_spots``: a
  cell the crystal fills diffracts more spots than one at its edge); its extent is the rows
  and columns it spans. In µm with ``step_um`` = (x, y): x = column * step_x, y = row * step_y,
  measured from the centre of the grid's first cell (frame 0); an extent in µm is the cells
  spanned times the step.
- The best cell: the hit with the most spots (ties: the better resolution, then the earlier
  frame).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

import numpy as np

#: hit cells touching at sides or corners are one region
CONNECTIVITY = 8
WEIGHTING = "n_spots"


def cell_of(index: int, cols: int, snake: bool) -> tuple[int, int]:
    """(row, col) of the grid's ``index``-th frame (snake: odd rows run backwards)."""
    r, c = divmod(int(index), int(cols))
    return r, (cols - 1 - c if snake and r % 2 else c)


def grid_indices(answers: list[Mapping[str, Any]]) -> list[int]:
    """Each answer's place in the scan: its frame number, or where frame numbers repeat (a
    folder of one-frame files) its rank in (file, frame) order."""
    frames = [int(a["frame"]) for a in answers]
    if len(set(frames)) == len(frames):
        return frames
    order = sorted(range(len(answers)), key=lambda i: (str(answers[i]["file"]), frames[i]))
    rank = [0] * len(answers)
    for k, i in enumerate(order):
        rank[i] = k
    return rank


def _um(row: float, col: float, step_um: tuple[float, float] | None) -> dict | None:
    if step_um is None:
        return None
    return {"x": round(col * step_um[0], 2), "y": round(row * step_um[1], 2)}


def _cell_record(r: int, c: int, a: Mapping[str, Any], step_um) -> dict[str, Any]:
    return {"row": r, "col": c, "frame": int(a["frame"]), "file": str(a["file"]),
            "n_spots": a.get("n_spots"), "resolution_A": a.get("resolution_A"),
            "um": _um(r, c, step_um)}


def _best_key(a: Mapping[str, Any], index: int) -> tuple:
    res = a.get("resolution_A")
    return (-(a.get("n_spots") or 0), res if res is not None else np.inf, index)


def centre(answers: Iterable[Mapping[str, Any]], rows: int, cols: int, snake: bool = False,
           step_um: tuple[float, float] | None = None) -> dict[str, Any]:
    """The crystal position(s) of a grid scan from its answers (dicts with file, frame, hit,
    n_spots, resolution_A, error). Cells in (row, col), from 0; µm with ``step_um``."""
    from scipy import ndimage

    if rows < 1 or cols < 1:
        raise ValueError(f"a grid has at least one row and column, got {rows}x{cols}")
    if step_um is not None and (len(step_um) != 2 or min(step_um) <= 0):
        raise ValueError(f"step_um is two positive lengths (x, y) in µm, got {step_um}")
    answers = [a for a in answers if a.get("frame") is not None]
    hit = np.zeros((rows, cols), bool)
    weight = np.zeros((rows, cols))
    at: dict[tuple[int, int], tuple[Mapping[str, Any], int]] = {}
    outside = 0
    for a, i in zip(answers, grid_indices(answers), strict=True):
        if not 0 <= i < rows * cols:
            outside += 1
            continue
        r, c = cell_of(i, cols, snake)
        at[(r, c)] = (a, i)
        if a.get("hit") and not a.get("error"):
            hit[r, c] = True
            weight[r, c] = max(float(a.get("n_spots") or 0), 0.0)
    labels, n = ndimage.label(hit, structure=np.ones((3, 3)) if CONNECTIVITY == 8 else None)
    regions = []
    for k in range(1, n + 1):
        rr, cc = np.nonzero(labels == k)
        w = weight[rr, cc]
        if w.sum() <= 0:  # no spot counts (an answer without them): each cell counts once
            w = np.ones_like(w)
        row, col = float(np.average(rr, weights=w)), float(np.average(cc, weights=w))
        best = min(zip(rr, cc, strict=True), key=lambda rc: _best_key(*at[(rc[0], rc[1])]))
        span = (int(rr.max() - rr.min() + 1), int(cc.max() - cc.min() + 1))
        regions.append({
            "n_cells": int(len(rr)), "spots": int(weight[rr, cc].sum()),
            "centre": {"row": round(row, 3), "col": round(col, 3)},
            "centre_um": _um(row, col, step_um),
            "extent": {"rows": span[0], "cols": span[1], "row_min": int(rr.min()),
                       "row_max": int(rr.max()), "col_min": int(cc.min()),
                       "col_max": int(cc.max())},
            "extent_um": None if step_um is None else
            {"x": round(span[1] * step_um[0], 2), "y": round(span[0] * step_um[1], 2)},
            "best_cell": _cell_record(int(best[0]), int(best[1]), at[best][0], step_um),
        })
    regions.sort(key=lambda g: (-g["spots"], -g["n_cells"], g["best_cell"]["frame"]))
    for k, g in enumerate(regions, 1):
        g["crystal"] = k
    hits = [(a, i, rc) for rc, (a, i) in at.items() if hit[rc]]
    best_all = min(hits, key=lambda h: _best_key(h[0], h[1])) if hits else None
    return {
        "rows": rows, "cols": cols, "snake": bool(snake),
        "step_um": None if step_um is None else [float(step_um[0]), float(step_um[1])],
        "weighting": WEIGHTING, "connectivity": CONNECTIVITY,
        "answered": len(at), "hits": int(hit.sum()), "outside_grid": outside,
        "best_cell": None if best_all is None else
        _cell_record(*best_all[2], best_all[0], step_um),
        "centre": regions[0]["centre"] if regions else None,
        "centre_um": regions[0]["centre_um"] if regions else None,
        "regions": regions,
    }


def parse_step(text: str | None) -> tuple[float, float] | None:
    """``--step-um X,Y`` (or one number for square cells) -> (x, y) in µm."""
    if text is None or text == "":
        return None
    try:
        v = [float(x) for x in str(text).split(",")]
    except ValueError:
        v = []
    if len(v) == 1:
        v = v * 2
    if len(v) != 2 or not all(np.isfinite(v)) or min(v) <= 0:
        raise ValueError(f"--step-um {text!r}: give the grid step X,Y in µm (two positive "
                         "numbers, e.g. 20,20)")
    return (v[0], v[1])


def run_centre(store: Any, name: str, raster: Mapping[str, Any] | None = None,
               step_um: tuple[float, float] | None = None) -> dict[str, Any]:
    """The centring of run ``name`` in a run store (live/store.py): its raster and step as
    `xrp watch --grid --step-um` kept them, unless ``raster`` / ``step_um`` are given.
    ValueError when the run has no raster."""
    run = store.run(name)
    raster = raster or store.live(run["id"])["raster"]
    if not raster:
        raise ValueError(f"run {name!r} is not a grid scan (no --grid given): give the grid "
                         "(xrp runs centre --grid ROWSxCOLS [--snake], or ?rows=R&cols=C"
                         "&snake=1)")
    if step_um is None:
        kept = store.info(run["id"]).get("step_um")
        step_um = tuple(kept) if kept else None
    out = centre(store.cells(run["id"]), int(raster["rows"]), int(raster["cols"]),
                 bool(raster.get("snake")), step_um)
    return {"run": name, **out}
