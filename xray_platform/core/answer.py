"""Frame -> answer, without Ray: the steps the Serve graph and `xrp predict` share.

1. :func:`prepare_frame`: a detector Frame (io/formats.py) -> the reciprocal-space grid counts
   each model needs (its own Preprocessing, recorded in its model file), the hit finder's
   verdict (>= 15 spots, the label definition of a hit), and for a hit its spots at full
   resolution and the lattices that explain them (:func:`index_hit`: of the crystal's cell if
   given, else from the spots alone).
2. :meth:`Models.lattice` on a batch: the CNN's P(multi-lattice).
3. :func:`lattice_p_multi`: the lattice verdict, P(multi) fused from the indexing and the CNN
   and calibrated (core/verdict.py). Misses get none.
4. :meth:`Models.resolution` on a batch: d and sigma (Å) of every hit (d_vis pools all
   lattices, design.md; the zoo model is trained with two-lattice shots), or of the hits the
   verdict calls single-lattice only (``always_resolution=False``, resonet's routing).
5. :func:`answer`: the per-frame record (hit, spots, ice, the lattice verdict and the
   lattices indexed, resolution_A and sigma, the classical d_min_spots_A and sigma, whether
   the two disagree, versions, timings)."""

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
    indexing: dict[str, Any] | None = None  # the lattices of a hit (index_hit)
    spots: dict[str, np.ndarray] | None = None  # a hit's spots (index_hit: spot_table)


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
                  cell: UnitCell | None = None, index: bool = True) -> Prepared:
    """Grid counts for every model input, the hit decision and the ice rings (on the hit
    finder's grid); with ``index``, each hit's spots at full resolution and the lattices that
    explain them, of the crystal's ``cell`` if given (index_hit). The frame comes from a
    reader, which refused NaN and infinite pixels."""
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
    indexed, spots = index_hit(frame, geom, counts[HIT_GRID], hit_finder, cell, timings) \
        if hit and index else (None, None)
    return Prepared(inputs, bool(hit), n_spots, info, timings, n_no_ice, ice, rings, *d_spots,
                    indexed, spots)


def index_hit(frame: Frame, geom, counts: np.ndarray, hit_finder: HitFinder,
              cell: UnitCell | None, timings: dict[str, float]
              ) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
    """The lattices in a hit: of the crystal's ``cell`` (core/indexing.py), or without one
    from the spots alone (core/autoindex.py). How many, the spots each explains (and what
    chance would), each one's cell, real-space basis and misorientation from the first, the
    fraction of the spots indexed; and the spots themselves (spot_table). Adds spots_ms and
    indexing_ms to ``timings``."""
    from xray_platform.core.autoindex import autoindex, index_with_cell
    from xray_platform.core.spots import SpotFinder

    t0 = time.perf_counter()
    spots = SpotFinder().find(frame.image, geom, counts, hit_finder)
    t1 = time.perf_counter()
    if cell is not None:
        r = index_with_cell(spots, geom, cell)
        bases = [lat.A for lat in r.lattices]
    else:
        r = autoindex(spots, geom)
        bases = [lat.T for lat in r.lattices]
    timings.update(spots_ms=1e3 * (t1 - t0), indexing_ms=1e3 * (time.perf_counter() - t1))
    n = len(r.spots)
    explained = sum(lat.n_spots for lat in r.lattices)
    record = {"n_lattices": len(bases), "n_spots": n, "known_cell": cell is not None,
              "fraction": round(explained / n, 4) if n else None,
              "lattices": [lattice_record(lat.n_spots, lat.chance, T, bases[0])
                           for lat, T in zip(r.lattices, bases, strict=True)],
              "rejected": None if r.rejected is None else
              {"spots": r.rejected[0], "chance": round(float(r.rejected[1]), 1)}}
    return record, spot_table(r.spots, r.explained_by, bases, getattr(r, "geom", geom))


#: the columns of an answer's spots (spot_table)
SPOT_COLUMNS = ("panel", "fast_px", "slow_px", "intensity", "sigma", "d_A", "ice", "lattice",
                "h", "k", "l")


def spot_table(spots, explained_by: np.ndarray, bases: list[np.ndarray], geom
               ) -> dict[str, np.ndarray]:
    """A hit's spots (d <= 30 Å, brightest first) as columns (SPOT_COLUMNS): position (pixel
    centres at integer indices, in the panel), background-subtracted intensity and sigma
    (counts), d (Å), on an ice ring, the lattice (0, 1, ...) that explains it or -1, and its
    indices hkl in that lattice (0 0 0 when unexplained): those of the lattice's predicted
    reflection nearest the spot on the detector (the one that explains it; the lattice
    point nearest its q in three dimensions can be one off the Ewald sphere, at low
    resolution several pixels away)."""
    from scipy.spatial import cKDTree

    from xray_platform.core.indexing import EWALD_EPS, MOSAIC_EPS
    from xray_platform.core.lattice import predict

    hkl = np.zeros((len(spots), 3), np.int64)
    d_min = 0.98 * float(spots.d_A.min()) if len(spots) else 1.0
    for i, T in enumerate(bases):
        mine = explained_by == i
        pred = predict(np.linalg.inv(T), geom, d_min, MOSAIC_EPS * EWALD_EPS)
        if mine.any() and len(pred.hkl):
            hkl[mine] = pred.hkl[cKDTree(pred.xyz_mm).query(spots.xyz_mm[mine])[1]]
    return {"panel": spots.panel, "fast_px": spots.fast, "slow_px": spots.slow,
            "intensity": spots.intensity, "sigma": spots.sigma, "d_A": spots.d_A,
            "ice": spots.ice, "lattice": explained_by, "h": hkl[:, 0], "k": hkl[:, 1],
            "l": hkl[:, 2]}


def lattice_record(n_spots: int, chance: float, T: np.ndarray, first: np.ndarray
                   ) -> dict[str, Any]:
    """One lattice of an answer: its spots, chance's, cell (Å, deg), real-space basis (rows
    a, b, c in Å, lab frame: +z along the beam) and misorientation from the first lattice
    (null when the two cells differ, as two crystal forms would)."""
    from xray_platform.core.indexing import misorientation_deg
    from xray_platform.core.lattice import cell_of

    cell = cell_of(T)
    same = np.allclose(cell_of(first), cell, rtol=0.03, atol=1.5)
    return {"spots": int(n_spots), "chance": round(float(chance), 1),
            "cell": [round(float(x), 2) for x in cell],
            "basis_A": np.round(T, 3).tolist(),
            "misorientation_deg": round(misorientation_deg(first, T), 3) if same else None}


def key(prep: Preprocessing) -> tuple[int, float, str, float | None]:
    """Models share an input only when their grid, background subtraction and low-resolution
    mask agree (Preprocessing.input_key)."""
    return prep.input_key


def input_key(described: dict) -> tuple[int, float, str, float | None]:
    """The Prepared.inputs key of a model from its describe() record."""
    return Preprocessing.from_dict(described).input_key


@torch.no_grad()
def p_multi(model: LoadedModel, x: np.ndarray) -> np.ndarray:
    """(N, H, W) inputs -> P(multi-lattice) (N,)."""
    return run_model(model.model, x, batch_size=max(1, len(x)), device=model.device)["p_multi"]


@torch.no_grad()
def resolution(model: LoadedModel, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(N, H, W) inputs -> (d, sigma_d) in Å."""
    out = run_model(model.model, x, batch_size=max(1, len(x)), device=model.device)
    return out["d_A"], out["sigma_A"]


def lattice_p_multi(prep: Prepared, p_cnn: float | None) -> float | None:
    """The lattice verdict of a frame: for a hit, P(two or more lattices) fused from its
    indexing and the CNN's ``p_cnn`` (core/verdict.py; the CNN alone when the hit was not
    indexed); a miss has none."""
    if not prep.hit:
        return None
    if prep.indexing is None:
        return p_cnn
    from xray_platform.core.verdict import shipped

    return shipped().p_multi(prep.indexing, p_cnn)


def answer(prep: Prepared, p_cnn: float | None, d: float | None, sigma: float | None,
           models: dict[str, dict], timings_ms: dict[str, float], with_spots: bool = False
           ) -> dict[str, Any]:
    """The per-frame record of the API and of `xrp predict` (``models``: task -> describe());
    ``p_cnn``: the lattice model's P(multi); ``with_spots``: and a hit's spots (columns
    SPOT_COLUMNS, null for misses)."""
    p = lattice_p_multi(prep, p_cnn)
    extra = {"spots": _spot_lists(prep.spots)} if with_spots else {}
    return {**prep.info, "hit": prep.hit, "n_spots": prep.n_spots,
            "n_spots_no_ice": prep.n_spots_no_ice, "ice": prep.ice,
            "ice_rings": prep.ice_rings,
            "p_multi": _round(p, 5),
            "is_multi": None if p is None else bool(p >= P_MULTI_THRESHOLD),
            # P(the lattice verdict is right): calibrated on validation shots (core/verdict.py)
            "confidence": None if p is None else round(float(max(p, 1.0 - p)), 5),
            "p_multi_cnn": _round(p_cnn, 5) if prep.hit else None,
            "resolution_A": None if d is None else round(float(d), 4),
            "resolution_sigma_A": None if sigma is None else round(float(sigma), 4),
            "d_min_spots_A": _round(prep.d_min_spots_A),
            "d_min_spots_sigma_A": _round(prep.d_min_spots_sigma_A),
            "resolution_disagrees": disagree(d, sigma, prep.d_min_spots_A,
                                             prep.d_min_spots_sigma_A),
            **_indexing_fields(prep.indexing),
            "models": {t: {k: m.get(k) for k in ("name", "version", "source")}
                       for t, m in models.items()},
            "timings_ms": {k: round(v, 2) for k, v in {**prep.timings_ms, **timings_ms}.items()},
            **extra}


def _spot_lists(table: dict[str, np.ndarray] | None) -> dict[str, list] | None:
    """A spot table as JSON lists (positions to 0.01 px, intensities to 0.1 counts)."""
    if table is None:
        return None
    digits = {"fast_px": 2, "slow_px": 2, "intensity": 1, "sigma": 1, "d_A": 3}
    return {c: (np.round(table[c], digits[c]) if c in digits else table[c]).tolist()
            for c in SPOT_COLUMNS}


def _indexing_fields(indexing: dict[str, Any] | None) -> dict[str, Any]:
    """The answer's indexing fields (null: a miss, or indexing turned off)."""
    if indexing is None:
        return {"n_lattices_indexed": None, "lattices": None, "fraction_indexed": None,
                "indexed_with_cell": None}
    return {"n_lattices_indexed": indexing["n_lattices"], "lattices": indexing["lattices"],
            "fraction_indexed": indexing["fraction"], "indexed_with_cell": indexing["known_cell"]}


def _round(v: float | None, digits: int = 4) -> float | None:
    return None if v is None else round(float(v), digits)


def wants_resolution(prep: Prepared, p_cnn: float | None, always_resolution: bool) -> bool:
    """The routing rule: resolution for every hit, or (``always_resolution`` False) for the
    hits the lattice verdict (lattice_p_multi) calls single-lattice."""
    if not prep.hit:
        return False
    p = lattice_p_multi(prep, p_cnn)
    return always_resolution or p is None or p < P_MULTI_THRESHOLD


def predict_frames(frames: list[Frame], models: dict[str, LoadedModel],
                   always_resolution: bool = ALWAYS_RESOLUTION,
                   cell: UnitCell | None = None, index: bool = True,
                   with_spots: bool = False) -> list[dict[str, Any]]:
    """The whole graph in one process (batch prediction, and the benchmark's in-process
    reference): prepare (and with ``index`` index every hit, with ``cell`` if given),
    classify all, regress the routed ones."""
    preps = [m.prep for m in models.values()]
    prepared = [prepare_frame(f, preps, cell=cell, index=index) for f in frames]
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
                   {"lattice_ms": t_lat, "resolution_ms": t_res if i in todo else 0.0},
                   with_spots)
            for i, p in enumerate(prepared)]
