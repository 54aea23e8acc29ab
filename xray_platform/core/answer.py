"""Frame -> answer, without Ray: the steps the Serve graph and `xrp predict` share.

1. :func:`prepare_frame`: a detector Frame (io/formats.py) -> the reciprocal-space grid counts
   each model needs (its own Preprocessing, recorded in its model file) and the hit finder's
   verdict (>= 15 spots, the label definition of a hit).
2. :meth:`Models.lattice` on a batch: P(multi-lattice).
3. :meth:`Models.resolution` on a batch: d and sigma (Å) of every hit (d_vis pools all
   lattices, design.md; the zoo model is trained with two-lattice shots), or of the hits the
   lattice model calls single-lattice only (``always_resolution=False``, resonet's routing).
4. :func:`answer`: the per-frame record (hit, n_spots, n_spots_no_ice, ice, ice_rings, p_multi,
   is_multi, resolution_A and sigma, the classical d_min_spots_A and sigma, whether the two
   disagree, versions, timings).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from xray_platform.core.dmin import SpotResolution, disagree
from xray_platform.core.forward import predict as run_model
from xray_platform.core.hitfinder import HIT_GRID, HitFinder
from xray_platform.core.ice import IceFinder
from xray_platform.core.models import XrpNet, load_model
from xray_platform.core.preprocess import Preprocessing, normalise, regrid, regrid_plan
from xray_platform.core.schema import ALWAYS_RESOLUTION
from xray_platform.io.formats import Frame
from xray_platform.physics.crystal import UnitCell
from xray_platform.physics.qgrid import QGrid, frame_to_grid

P_MULTI_THRESHOLD = 0.5
SPOT_RESOLUTION = SpotResolution()


@dataclass
class LoadedModel:
    """A model with what it needs (preprocessing) and where it came from (for responses)."""

    task: str
    model: XrpNet
    meta: dict
    prep: Preprocessing
    source: str  # a file path or models:/NAME/VERSION
    name: str | None = None  # registered model name
    version: str | None = None
    device: str = "cpu"

    def to(self, device: str) -> LoadedModel:
        """Move the model (CUDA: channels_last, as trained)."""
        self.device = device
        fmt = torch.channels_last if device.startswith("cuda") else torch.contiguous_format
        self.model.to(device, memory_format=fmt)
        return self

    def describe(self) -> dict[str, Any]:
        return describe_model(self.task, self.meta, self.source, self.name, self.version)


def describe_model(task: str, meta: dict, source: str, name: str | None = None,
                   version: str | None = None) -> dict[str, Any]:
    """What answers and /v1/models say about a model (from its metadata alone)."""
    prep = Preprocessing.from_dict(meta["preprocessing"])
    return {"task": task, "name": name, "version": version, "source": source,
            "architecture": f"ResNet-{meta.get('depth')}", "init": meta.get("init"),
            "label": meta.get("label"), "grid_size": prep.grid_size, "d_min_A": prep.d_min_A,
            "background": prep.background, "d_max_A": prep.d_max_A,
            "metrics": meta.get("metrics", {}), "xrp_version": meta.get("xrp_version")}


def load_file(task: str, path: str | Path, source: str | None = None, name: str | None = None,
              version: str | None = None) -> LoadedModel:
    """Load a model file as ``task``'s model (tracking/resolve.py finds the file)."""
    model, meta = load_model(path)
    if model.task != task:
        raise ValueError(f"{source or path} is a {model.task} model, expected a {task} model")
    return LoadedModel(task, model, meta, Preprocessing.from_dict(meta["preprocessing"]),
                       str(source or path), name, version)


@dataclass
class Prepared:
    """One frame, ready for the models."""

    inputs: dict[tuple, np.ndarray]  # key(prep) (grid, d_min, options) -> normalised (H, W)
    hit: bool
    n_spots: int
    info: dict[str, Any]
    timings_ms: dict[str, float] = field(default_factory=dict)
    n_spots_no_ice: int | None = None  # spots off the ice rings' d-spacings
    ice: bool | None = None  # ice rings present (core/ice.py)
    ice_rings: list[dict[str, float]] = field(default_factory=list)  # d_A, strength, z
    d_min_spots_A: float | None = None  # classical d_min from the spots (core/dmin.py)
    d_min_spots_sigma_A: float | None = None
    indexing: dict[str, Any] | None = None  # known-cell indexing of a hit (index_hit)


def map_grids(image: np.ndarray | torch.Tensor, geom, grids: list[QGrid]
              ) -> dict[QGrid, np.ndarray]:
    """Grid counts of a frame on every grid, mapping the frame itself only onto grids that
    cannot be derived (preprocess.regrid) from a finer one already mapped: with the hit
    finder's 256² grid and 128²/256² models, or a 512² model, the frame is mapped once."""
    frame = torch.as_tensor(image)
    order = sorted(set(grids), key=lambda g: (g.cell, -g.g_max))  # finest first
    out: dict[QGrid, np.ndarray] = {}
    for g in order:
        src = next((m for m in out if regrid_plan(m, g) is not None), None)
        out[g] = regrid(out[src], src, g) if src is not None else \
            frame_to_grid(frame, geom, g).numpy()
    return out


def prepare_frame(frame: Frame, preps: list[Preprocessing],
                  hit_finder: HitFinder | None = None,
                  ice_finder: IceFinder | None = None,
                  cell: UnitCell | None = None) -> Prepared:
    """Grid counts for every model input, the hit decision and the ice rings (on the hit
    finder's grid); with the crystal's ``cell``, each hit's spots at full resolution and the
    lattices that explain them (core/indexing.py). The frame comes from a reader, which
    refused NaN and infinite pixels."""
    t0 = time.perf_counter()
    geom = frame.geometry()
    hit_finder, ice_finder = hit_finder or HitFinder(), ice_finder or IceFinder()
    counts = map_grids(frame.image, geom, [p.grid for p in preps] + [HIT_GRID])
    t1 = time.perf_counter()
    rows, cols, significance = hit_finder.spot_list(counts[HIT_GRID])
    n_spots = len(rows)
    hit = n_spots >= hit_finder.min_spots
    near_ice = ice_finder.near_ice()
    n_no_ice = int((~near_ice[rows, cols]).sum())
    inputs = {key(p): normalise(counts[p.grid], p)[0, 0].numpy() for p in preps}
    t2 = time.perf_counter()
    ice, rings = ice_finder.find(counts[HIT_GRID])
    t3 = time.perf_counter()
    d_spots = SPOT_RESOLUTION.estimate(rows, cols, significance, near_ice) if hit \
        else (None, None)
    t4 = time.perf_counter()
    info = {"file": frame.path, "frame": frame.index, "format": frame.info.format,
            "detector": frame.info.detector, "wavelength_A": geom.wavelength_A,
            "distance_mm": geom.distance_mm, "pixel_size_mm": geom.pixel_mm,
            "beam_center_px": None if geom.beam_center_px is None else
            list(geom.beam_center_px),
            "shape": list(frame.info.shape)}
    timings = {"grid_ms": 1e3 * (t1 - t0), "hitfinder_ms": 1e3 * (t2 - t1),
               "ice_ms": 1e3 * (t3 - t2), "d_min_spots_ms": 1e3 * (t4 - t3)}
    indexed = index_hit(frame, geom, counts[HIT_GRID], hit_finder, cell, timings) \
        if hit and cell is not None else None
    return Prepared(inputs, bool(hit), n_spots, info, timings, n_no_ice, ice, rings, *d_spots,
                    indexed)


def index_hit(frame: Frame, geom, counts: np.ndarray, hit_finder: HitFinder, cell: UnitCell,
              timings: dict[str, float]) -> dict[str, Any]:
    """The lattices of ``cell`` in a hit (core/indexing.py): how many, the spots each explains
    (and chance would), each one's misorientation from the first, the fraction of the spots
    indexed. Adds spots_ms and indexing_ms to ``timings``."""
    from xray_platform.core.indexing import count_lattices, misorientation_deg
    from xray_platform.core.spots import SpotFinder

    t0 = time.perf_counter()
    spots = SpotFinder().find(frame.image, geom, counts, hit_finder)
    t1 = time.perf_counter()
    r = count_lattices(frame, cell, spots=spots)
    timings.update(spots_ms=1e3 * (t1 - t0), indexing_ms=1e3 * (time.perf_counter() - t1))
    first = r.lattices[0].A if r.lattices else None
    return {"n_lattices": r.n_lattices, "n_spots": r.n_spots,
            "fraction": round(r.explained / r.n_spots, 4) if r.n_spots else None,
            "lattices": [{"spots": lat.n_spots, "chance": round(lat.chance, 1),
                          "misorientation_deg": round(misorientation_deg(first, lat.A), 3)}
                         for lat in r.lattices]}


def key(prep: Preprocessing) -> tuple[int, float, str, float | None]:
    """Models share an input only when their grid, background subtraction and low-resolution
    mask agree."""
    return (prep.grid_size, prep.d_min_A, prep.background, prep.d_max_A)


def input_key(described: dict) -> tuple[int, float, str, float | None]:
    """The Prepared.inputs key of a model from its describe() record."""
    d_max = described.get("d_max_A")
    return (int(described["grid_size"]), float(described["d_min_A"]),
            str(described.get("background", "none")), None if d_max is None else float(d_max))


@torch.no_grad()
def p_multi(model: LoadedModel, x: np.ndarray) -> np.ndarray:
    """(N, H, W) inputs -> P(multi-lattice) (N,)."""
    return run_model(model.model, x, batch_size=max(1, len(x)), device=model.device)["p_multi"]


@torch.no_grad()
def resolution(model: LoadedModel, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(N, H, W) inputs -> (d, sigma_d) in Å."""
    out = run_model(model.model, x, batch_size=max(1, len(x)), device=model.device)
    return out["d_A"], out["sigma_A"]


def answer(prep: Prepared, p: float | None, d: float | None, sigma: float | None,
           models: dict[str, dict], timings_ms: dict[str, float]) -> dict[str, Any]:
    """The per-frame record of the API and of `xrp predict` (``models``: task -> describe())."""
    return {**prep.info, "hit": prep.hit, "n_spots": prep.n_spots,
            "n_spots_no_ice": prep.n_spots_no_ice, "ice": prep.ice,
            "ice_rings": prep.ice_rings,
            "p_multi": None if p is None else round(float(p), 5),
            "is_multi": None if p is None else bool(prep.hit and p >= P_MULTI_THRESHOLD),
            # P(the lattice verdict is right): calibrated when the model is (core/calibration.py)
            "confidence": None if p is None else round(float(max(p, 1.0 - p)), 5),
            "resolution_A": None if d is None else round(float(d), 4),
            "resolution_sigma_A": None if sigma is None else round(float(sigma), 4),
            "d_min_spots_A": _round(prep.d_min_spots_A),
            "d_min_spots_sigma_A": _round(prep.d_min_spots_sigma_A),
            "resolution_disagrees": disagree(d, sigma, prep.d_min_spots_A,
                                             prep.d_min_spots_sigma_A),
            **_indexing_fields(prep.indexing),
            "models": {t: {k: m.get(k) for k in ("name", "version", "source")}
                       for t, m in models.items()},
            "timings_ms": {k: round(v, 2) for k, v in {**prep.timings_ms, **timings_ms}.items()}}


def _indexing_fields(indexing: dict[str, Any] | None) -> dict[str, Any]:
    """The answer's indexing fields (null: no cell given, or not a hit)."""
    if indexing is None:
        return {"n_lattices_indexed": None, "lattices": None, "fraction_indexed": None}
    return {"n_lattices_indexed": indexing["n_lattices"], "lattices": indexing["lattices"],
            "fraction_indexed": indexing["fraction"]}


def _round(v: float | None, digits: int = 4) -> float | None:
    return None if v is None else round(float(v), digits)


def wants_resolution(prep: Prepared, p: float | None, always_resolution: bool) -> bool:
    """The routing rule: resolution for every hit, or (``always_resolution`` False) for the
    hits the lattice model calls single-lattice."""
    if not prep.hit:
        return False
    return always_resolution or p is None or p < P_MULTI_THRESHOLD


def predict_frames(frames: list[Frame], models: dict[str, LoadedModel],
                   always_resolution: bool = ALWAYS_RESOLUTION,
                   cell: UnitCell | None = None) -> list[dict[str, Any]]:
    """The whole graph in one process (batch prediction, and the benchmark's in-process
    reference): prepare (and with ``cell`` index every hit), classify all, regress the routed
    ones."""
    preps = [m.prep for m in models.values()]
    prepared = [prepare_frame(f, preps, cell=cell) for f in frames]
    ps: list[float | None] = [None] * len(frames)
    t_lat = t_res = 0.0
    if "lattice" in models and prepared:
        t0 = time.perf_counter()
        lm = models["lattice"]
        ps = list(p_multi(lm, np.stack([p.inputs[key(lm.prep)] for p in prepared])))
        t_lat = 1e3 * (time.perf_counter() - t0) / len(prepared)
    ds: list[tuple[float | None, float | None]] = [(None, None)] * len(frames)
    todo = [i for i, p in enumerate(prepared) if wants_resolution(p, ps[i], always_resolution)]
    if "resolution" in models and todo:
        t0 = time.perf_counter()
        rm = models["resolution"]
        d, s = resolution(rm, np.stack([prepared[i].inputs[key(rm.prep)] for i in todo]))
        for j, i in enumerate(todo):
            ds[i] = (float(d[j]), float(s[j]))
        t_res = 1e3 * (time.perf_counter() - t0) / len(todo)
    described = {t: m.describe() for t, m in models.items()}
    return [answer(p, ps[i], *ds[i], described,
                   {"lattice_ms": t_lat, "resolution_ms": t_res if i in todo else 0.0})
            for i, p in enumerate(prepared)]
