"""Grid-scan centring: where the crystal is in a ``--grid ROWSxCOLS [--snake]`` run, from its
per-frame answers, or from motor positions. Pure numpy + scipy, no Ray.

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

A scan whose frames carry motor positions (a positions file or the stream's image user_data,
live/positions.py) is centred from them instead (``centre_at``), in absolute µm: on the
raster the positions are inferred to lie on (x and y clustered), 8-connected hit cells as
above; positions that lie on none (turned, staggered, scattered) are linked when closer than
LINK typical spacings. Centres are spot-weighted means of the hits' positions, extents their
span plus one step.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from xray_platform.live.positions import STREAM, Positions, resolve

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


def _label(hit: np.ndarray) -> tuple[np.ndarray, int]:
    """The regions of a grid of hit cells (CONNECTIVITY) and how many: scipy's label."""
    from scipy import ndimage

    return ndimage.label(hit, structure=np.ones((3, 3)) if CONNECTIVITY == 8 else None)


def _numbered(regions: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The regions strongest first (spots, then cells, then the earlier best frame), each
    with its crystal number from 1."""
    regions.sort(key=lambda g: (-g["spots"], -g["n_cells"], g["best_cell"]["frame"]))
    for k, g in enumerate(regions, 1):
        g["crystal"] = k
    return regions


def centre(answers: Iterable[Mapping[str, Any]], rows: int, cols: int, snake: bool = False,
           step_um: tuple[float, float] | None = None) -> dict[str, Any]:
    """The crystal position(s) of a grid scan from its answers (dicts with file, frame, hit,
    n_spots, resolution_A, error). Cells in (row, col), from 0; µm with ``step_um``."""
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
    labels, n = _label(hit)
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
    _numbered(regions)
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


# -- centring from motor positions (live/positions.py reads them) ---------------------------

#: scattered positions: hits closer than LINK typical spacings (typical_spacing) are one region
LINK = 1.5
#: inferring a raster: positions within CLUSTER_TOL median spacings along x (y) share a column
#: (row)
CLUSTER_TOL = 0.5
#: a raster is accepted when its positions fill at least this much of its rows x columns and
#: at most MAX_SKIPS of the neighbours along a row (column) skip a place
MIN_FILL, MAX_SKIPS = 0.5, 0.1


@dataclass
class Raster:
    """A raster inferred from positions: each position's row (y) and column (x), from 0 in
    increasing y and x, the step (x, y) and the first column's x and first row's y (µm)."""

    row: np.ndarray
    col: np.ndarray
    rows: int
    cols: int
    step: tuple[float, float]
    origin: tuple[float, float]


def spacing(xy: np.ndarray) -> float:
    """The median distance from each distinct position to its nearest neighbour (0 for one)."""
    from scipy.spatial import cKDTree

    u = np.unique(np.round(xy, 6), axis=0)
    if len(u) < 2:
        return 0.0
    d, _ = cKDTree(u).query(u, k=2)
    return float(np.median(d[:, 1]))


def typical_spacing(xy: np.ndarray, s: float) -> float:
    """Scattered positions: the larger of the nearest-neighbour spacing ``s`` and the side of
    the area each position has (their convex hull's area / positions; a random scatter's
    nearest neighbours are closer than the holes between them)."""
    from scipy.spatial import ConvexHull, QhullError

    u = np.unique(np.round(xy, 6), axis=0)
    try:
        area = ConvexHull(u).volume if len(u) > 2 else 0.0  # 2-D: its volume is the area
    except QhullError:  # all on a line
        area = 0.0
    return max(s, float(np.sqrt(area / len(u))) if len(u) else 0.0)


def _clusters(v: np.ndarray, tol: float) -> tuple[np.ndarray, np.ndarray]:
    """Each value's cluster (sorted values more than ``tol`` apart split) and the clusters'
    means, increasing."""
    order = np.argsort(v, kind="stable")
    label = np.empty(len(v), int)
    label[order] = np.concatenate([[0], np.cumsum(np.diff(v[order]) > tol)])
    return label, np.bincount(label, weights=v) / np.bincount(label)


def _skips(line: np.ndarray, place: np.ndarray) -> float:
    """Of the neighbours along each line (row or column), the fraction that skip a place."""
    order = np.lexsort((place, line))
    same = np.diff(line[order]) == 0
    d = np.diff(place[order])[same]
    return float(np.mean(d > 1)) if len(d) else 0.0


def infer_raster(xy: np.ndarray, s: float) -> Raster | None:
    """The raster the positions lie on (x and y clustered within CLUSTER_TOL * ``s``), or None
    when they do not: two positions in one place, the raster under half filled, or rows or
    columns that skip places (a staggered or rotated pattern)."""
    if s <= 0 or len(xy) < 2:
        return None
    col, xs = _clusters(xy[:, 0], CLUSTER_TOL * s)
    row, ys = _clusters(xy[:, 1], CLUSTER_TOL * s)
    if len(np.unique(row * len(xs) + col)) < len(xy) or len(xy) < MIN_FILL * len(xs) * len(ys):
        return None
    if max(_skips(row, col), _skips(col, row)) > MAX_SKIPS:
        return None
    step = tuple(float(np.median(np.diff(c))) if len(c) > 1 else s for c in (xs, ys))
    return Raster(row, col, len(ys), len(xs), step, (float(xs[0]), float(ys[0])))


def _groups(xy: np.ndarray, hit: np.ndarray, r: Raster | None, link: float
            ) -> list[np.ndarray]:
    """Indices of the hits of each region: 8-connected cells of the raster, else hits within
    ``link`` of each other (chains of them)."""
    from scipy.sparse import coo_matrix
    from scipy.sparse.csgraph import connected_components
    from scipy.spatial import cKDTree

    if r is not None:
        grid = np.zeros((r.rows, r.cols), bool)
        grid[r.row[hit], r.col[hit]] = True
        labels, n = _label(grid)
        at = labels[r.row, r.col]
        return [np.nonzero((at == k) & hit)[0] for k in range(1, n + 1)]
    idx = np.nonzero(hit)[0]
    if not len(idx):
        return []
    pairs = cKDTree(xy[idx]).query_pairs(link, output_type="ndarray")
    graph = coo_matrix((np.ones(len(pairs)), (pairs[:, 0], pairs[:, 1])), (len(idx),) * 2)
    n, label = connected_components(graph, directed=False)
    return [idx[label == k] for k in range(n)]


def _point(k: int, a: Mapping[str, Any], xy: np.ndarray, r: Raster | None) -> dict[str, Any]:
    out = {"frame": int(a["frame"]), "file": str(a["file"]), "n_spots": a.get("n_spots"),
           "resolution_A": a.get("resolution_A"),
           "um": {"x": round(float(xy[k, 0]), 2), "y": round(float(xy[k, 1]), 2)}}
    if r is not None:
        out.update(row=int(r.row[k]), col=int(r.col[k]))
    return out


def _xy_region(g: np.ndarray, answers: list, xy: np.ndarray, w: np.ndarray, index: np.ndarray,
               r: Raster | None, step: tuple[float, float]) -> dict[str, Any]:
    """One region of hits ``g``: spot-weighted centre, bounds and extent (µm; cells on a
    raster) and its best frame."""
    ww = w[g] if w[g].sum() > 0 else np.ones(len(g))
    c = np.average(xy[g], axis=0, weights=ww)
    lo, hi = xy[g].min(axis=0), xy[g].max(axis=0)
    best = min(g, key=lambda k: _best_key(answers[k], int(index[k])))
    out = {"n_cells": int(len(g)), "spots": int(w[g].sum()),
           "centre_um": {"x": round(float(c[0]), 2), "y": round(float(c[1]), 2)},
           "extent_um": {"x": round(float(hi[0] - lo[0] + step[0]), 2),
                         "y": round(float(hi[1] - lo[1] + step[1]), 2)},
           "bounds_um": {"x_min": round(float(lo[0]), 2), "x_max": round(float(hi[0]), 2),
                         "y_min": round(float(lo[1]), 2), "y_max": round(float(hi[1]), 2)},
           "best_cell": _point(int(best), answers[best], xy, r)}
    if r is not None:
        rr, cc = r.row[g], r.col[g]
        out["centre"] = {"row": round(float(np.average(rr, weights=ww)), 3),
                         "col": round(float(np.average(cc, weights=ww)), 3)}
        out["extent"] = {"rows": int(np.ptp(rr) + 1), "cols": int(np.ptp(cc) + 1),
                         "row_min": int(rr.min()), "row_max": int(rr.max()),
                         "col_min": int(cc.min()), "col_max": int(cc.max())}
    return out


def centre_at(answers: Iterable[Mapping[str, Any]], xy: np.ndarray, *, points: bool = False
              ) -> dict[str, Any]:
    """The crystal position(s) of a scan whose frames lie at ``xy`` ((n, 2) µm, absolute;
    NaN: not placed), one row per answer. On a raster (inferred from the positions) hit cells
    touching at sides or corners are one region; scattered hits are one region when closer
    than LINK typical spacings (typical_spacing). ``points``: also every placed frame, [x,
    y, frame, hit, spots] (the live page's scatter)."""
    answers = list(answers)
    if len(answers) != len(xy):
        raise ValueError(f"{len(answers)} answers and {len(xy)} positions")
    index = np.asarray(grid_indices(answers), int) if answers else np.zeros(0, int)
    known = np.all(np.isfinite(np.asarray(xy, float).reshape(-1, 2)), axis=1)
    a = [answers[k] for k in np.nonzero(known)[0]]
    p, index = np.asarray(xy, float).reshape(-1, 2)[known], index[known]
    hit = np.array([bool(x.get("hit")) and not x.get("error") for x in a], bool)
    w = np.array([max(float(x.get("n_spots") or 0), 0.0) for x in a])
    s = spacing(p) if len(p) else 0.0
    r = infer_raster(p, s)
    if r is None:
        s = typical_spacing(p, s)
    step = r.step if r is not None else (s, s)
    regions = _numbered([_xy_region(g, a, p, w, index, r, step)
                         for g in _groups(p, hit, r, LINK * s)])
    hits = np.nonzero(hit)[0]
    best = min(hits, key=lambda k: _best_key(a[k], int(index[k]))) if len(hits) else None
    out = {"mode": "positions", "layout": None if not len(p) else
           "raster" if r is not None else "scattered",
           "raster": None if r is None else {"rows": r.rows, "cols": r.cols,
                                             "x0_um": round(r.origin[0], 2),
                                             "y0_um": round(r.origin[1], 2)},
           "step_um": [round(step[0], 3), round(step[1], 3)] if len(p) else None,
           "spacing_um": round(s, 3), "link_um": None if r is not None else round(LINK * s, 3),
           "weighting": WEIGHTING, "connectivity": CONNECTIVITY if r is not None else "distance",
           "answered": len(answers), "placed": int(known.sum()),
           "without_position": int((~known).sum()), "hits": int(hit.sum()),
           "best_cell": None if best is None else _point(int(best), a[best], p, r),
           "centre": regions[0].get("centre") if regions else None,
           "centre_um": regions[0]["centre_um"] if regions else None, "regions": regions}
    if points:
        out["points"] = [[round(float(x), 2), round(float(y), 2), int(q["frame"]), int(h),
                          q.get("n_spots")] for (x, y), q, h in zip(p, a, hit, strict=True)]
    return out


def centre_positions(answers: Iterable[Mapping[str, Any]], tables: list[Positions], *,
                     points: bool = False) -> dict[str, Any]:
    """centre_at with each answer placed by the first of ``tables`` that holds it
    (live/positions.resolve); ``positions_from`` names the tables that placed frames."""
    answers = [a for a in answers if a.get("frame") is not None]
    xy, used = resolve(answers, tables, grid_indices(answers) if answers else [])
    out = centre_at(answers, xy, points=points)
    return {**out, "positions_from": [t.source for k, t in enumerate(tables) if used[k]]}


def stored_positions(store: Any, run_id: int) -> list[Positions]:
    """The run's positions in the run store: a positions file's first, then the stream's."""
    kept = store.positions(run_id)
    path = (store.info(run_id).get("positions_file") or {}).get("path") or "positions file"
    return [Positions.from_rows(path if src == "file" else src, kept[src])
            for src in ("file", STREAM) if kept.get(src)]


def centre_of_run(store: Any, run_id: int, raster: Mapping[str, Any] | None = None,
                  step_um: tuple[float, float] | None = None,
                  positions: Positions | None = None, *, points: bool = False
                  ) -> dict[str, Any] | None:
    """A run's centring: from ``positions``, else from the positions the store keeps for it
    (unless ``raster`` is given: the grid wins), else on its raster (``raster``, else the
    run's own); None when it has neither."""
    kept = store.live(run_id)["raster"]
    if raster is None:
        tables = [positions] if positions is not None else stored_positions(store, run_id)
        if tables:
            out = centre_positions(store.cells(run_id), tables, points=points)
            if out["placed"] or positions is not None or not kept:
                return out
    raster = raster or kept
    if not raster:
        return None
    if step_um is None:
        held = store.info(run_id).get("step_um")
        step_um = tuple(held) if held else None
    return centre(store.cells(run_id), int(raster["rows"]), int(raster["cols"]),
                  bool(raster.get("snake")), step_um)


def run_centre(store: Any, name: str, raster: Mapping[str, Any] | None = None,
               step_um: tuple[float, float] | None = None,
               positions: Positions | None = None) -> dict[str, Any]:
    """The centring of run ``name`` in a run store (live/store.py), centre_of_run's rules.
    ValueError when the run has no raster and no positions, or ``positions`` place none of
    its frames."""
    run = store.run(name)
    out = centre_of_run(store, run["id"], raster, step_um, positions)
    if out is None:
        raise ValueError(f"run {name!r} is not a grid scan (no --grid given) and has no motor "
                         "positions: give the grid (xrp runs centre --grid ROWSxCOLS [--snake],"
                         " or ?rows=R&cols=C&snake=1) or the positions (xrp runs centre "
                         "--positions FILE)")
    if positions is not None and out["answered"] and not out["placed"]:
        raise ValueError(f"{positions.source}: none of its rows matches a frame of run "
                         f"{name!r} (frames are matched by file name and frame, or by 'frame'"
                         " as the place in the scan from 0)")
    return {"run": name, **out}
