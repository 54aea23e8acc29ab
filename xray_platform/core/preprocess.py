"""Detector frame -> model input: the one preprocessing used by training, evaluation, batch
prediction and serving, recorded in every model file.

Two steps:
1. :func:`frame_to_counts`: map the frame onto the geometry-invariant reciprocal-space grid of
   :mod:`xray_platform.physics.qgrid` (per-cell maximum, so Bragg spots survive; masked cells
   -1). The simulator's fast path produces this directly; shot data sets store it.
2. :func:`normalise`: counts -> network input, x = log1p(counts) / scale, masked cells 0, one
   channel (N, 1, H, W) float32; with background="radial-median", each ring's median count
   (:func:`radial_background`) is first subtracted, so the network sees spots above the local
   background, not the background's level (real crystals scatter diffusely; simulations less);
   with d_max_A, cells at lower resolution (1/d < 1/d_max) are masked first: the beamstop's
   surroundings, where real frames carry parasitic scatter, halos and shadows that no
   simulation reproduces well (the lattice zoo model's multi call on the real thaumatin hit
   came from there: docs/science/grid-choice.md).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, replace
from functools import lru_cache
from numbers import Integral, Real
from typing import Any

import numpy as np
import torch

from xray_platform.physics.geometry import Geometry
from xray_platform.physics.panels import PanelGeometry
from xray_platform.physics.qgrid import MASKED, QGrid, frame_to_grid

#: log1p of a saturated 20-bit PILATUS pixel is 13.9: dividing by 10 keeps inputs ~[0, 1.4].
LOG_SCALE = 10.0
#: what normalise subtracts before the transform
BACKGROUNDS = ("none", "radial-median")


@dataclass(frozen=True)
class InputOptions:
    """What a model does to its grid counts besides the grid (the rest of Preprocessing)."""

    background: str = "none"  # one of BACKGROUNDS
    d_max_A: float | None = None  # cells at lower resolution than this (Å) are masked


#: the ``xrp train`` flags that carry a Preprocessing's grid and input options (the zoo
#: recipes' argv): field -> flag
FLAGS = {"grid_size": "--grid-size", "d_min_A": "--d-min", "background": "--background",
         "d_max_A": "--d-max"}
#: the model file's keys (metadata["preprocessing"]); files written before background and
#: d_max_A existed lack them and read as "none" and None
KEYS = ("grid_size", "d_min_A", "transform", "scale", "background", "d_max_A")


def _number(x: float) -> str:
    """A float as a flag value: short (10.0 -> "10") where that reads back exactly."""
    s = f"{x:g}"
    return s if float(s) == x else repr(float(x))


@dataclass(frozen=True)
class Preprocessing:
    """What a model needs to turn a frame into its input (stored in every model file): the grid
    spec (size, d_min, and the input options background and d_max) and the transform. The one
    form of it from a recipe's argv (:meth:`to_args`/:meth:`from_args`) through the training
    job to the model file (:meth:`to_dict`/:meth:`from_dict`), loading and the answers' input
    key (:attr:`input_key`); :attr:`grid` is the QGrid it implies."""

    grid_size: int = 512
    d_min_A: float = 1.2
    transform: str = "log1p"
    scale: float = LOG_SCALE
    background: str = "none"  # one of BACKGROUNDS
    d_max_A: float | None = None  # Å: cells with d > d_max masked (None: none)

    def __post_init__(self) -> None:
        if self.transform != "log1p":
            raise ValueError(f"unknown input transform {self.transform!r} (known: log1p)")
        if self.background not in BACKGROUNDS:
            raise ValueError(f"unknown background {self.background!r} (known: "
                             f"{', '.join(BACKGROUNDS)})")
        QGrid(self.grid_size, self.d_min_A)  # validates
        if self.d_max_A is not None and not self.d_max_A > self.d_min_A:
            raise ValueError(f"d_max {self.d_max_A} Å must exceed the grid's d_min "
                             f"{self.d_min_A} Å (it masks the cells at lower resolution)")

    @property
    def grid(self) -> QGrid:
        return QGrid(self.grid_size, self.d_min_A)

    @property
    def options(self) -> InputOptions:
        return InputOptions(self.background, self.d_max_A)

    @property
    def input_key(self) -> tuple[int, float, str, float | None]:
        """Models share an input only when their grid, background subtraction and
        low-resolution mask agree."""
        return (self.grid_size, self.d_min_A, self.background, self.d_max_A)

    def summary_parts(self) -> list[str]:
        """A model summary's words for it: grid=128[, background=...][, d_max=10A]."""
        parts = [f"grid={self.grid_size}"]
        if self.background != "none":
            parts.append(f"background={self.background}")
        if self.d_max_A is not None:
            parts.append(f"d_max={self.d_max_A:g}A")
        return parts

    def to_dict(self) -> dict:
        """The model file's form (metadata["preprocessing"])."""
        return asdict(self)

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> Preprocessing:
        """Read a model file's metadata["preprocessing"] (also a model's describe() record:
        other keys are ignored). Older files lack background and d_max_A: "none" and None."""
        if not isinstance(d, Mapping):
            raise ValueError(f"a preprocessing record is a dict, got {type(d).__name__}")
        d = {k: d[k] for k in KEYS if k in d}
        size = d.get("grid_size")
        if isinstance(size, float) and size.is_integer():
            d["grid_size"] = int(size)  # (a JSON writer's 64.0)
        for k, want, kind in (("grid_size", (Integral,), "an integer"),
                              ("d_min_A", (Real,), "a number (Å)"),
                              ("scale", (Real,), "a number"),
                              ("d_max_A", (Real, type(None)), "a number (Å) or null"),
                              ("transform", (str,), "a string"),
                              ("background", (str,), "a string")):
            if k in d and (isinstance(d[k], bool) or not isinstance(d[k], want)):
                raise ValueError(f"preprocessing {k} must be {kind}, got {d[k]!r}")
        return cls(**d)

    def to_args(self) -> list[str]:
        """The ``xrp train`` flags asking for this preprocessing: --grid-size N --d-min D, then
        --background B and --d-max D only where they are not the default (as the recipes and
        the model cards write them)."""
        if (self.transform, self.scale) != ("log1p", LOG_SCALE):
            raise ValueError(f"xrp train has no flag for transform={self.transform!r}, "
                             f"scale={self.scale!r}")
        args = [FLAGS["grid_size"], str(self.grid_size), FLAGS["d_min_A"], _number(self.d_min_A)]
        if self.background != "none":
            args += [FLAGS["background"], self.background]
        if self.d_max_A is not None:
            args += [FLAGS["d_max_A"], _number(self.d_max_A)]
        return args

    @classmethod
    def from_args(cls, argv: Sequence[str], default: Preprocessing | None = None
                  ) -> Preprocessing:
        """The preprocessing an argv's flags ask for (:data:`FLAGS`, as ``--flag value`` or
        ``--flag=value``; other arguments are skipped): the fields it does not name are
        ``default``'s (default: Preprocessing())."""
        by_flag = {f: k for k, f in FLAGS.items()}
        given: dict[str, Any] = {}
        argv = list(argv)
        for i, tok in enumerate(argv):
            flag, eq, value = tok.partition("=")
            if flag not in by_flag:
                continue
            if not eq:
                if i + 1 >= len(argv):
                    raise ValueError(f"{flag} needs a value")
                value = argv[i + 1]
            k = by_flag[flag]
            try:
                given[k] = (int(value) if k == "grid_size" else
                            value if k == "background" else float(value))
            except ValueError:
                kind = "an integer" if k == "grid_size" else "a number"
                raise ValueError(f"{flag} must be {kind}, got {value!r}") from None
        return replace(default or cls(), **given)

    @classmethod
    def for_grid(cls, grid: QGrid, options: InputOptions = InputOptions()) -> Preprocessing:
        return cls(grid.size, grid.d_min_A, background=options.background,
                   d_max_A=options.d_max_A)


def frame_to_counts(frame: np.ndarray | torch.Tensor, geom: Geometry | PanelGeometry,
                    prep: Preprocessing) -> torch.Tensor:
    """Detector frame (slow, fast, or panel, slow, fast; negative = gap/bad) -> grid counts
    (H, W), masked = -1."""
    frame = torch.as_tensor(np.asarray(frame) if not isinstance(frame, torch.Tensor) else frame)
    if tuple(frame.shape) != tuple(geom.shape):
        axes = "(panel, slow, fast)" if len(geom.shape) == 3 else "(slow, fast)"
        raise ValueError(f"frame shape {tuple(frame.shape)} does not match the geometry's "
                         f"detector {tuple(geom.shape)} {axes}")
    frame = frame.to(torch.float32)
    if not torch.isfinite(frame).all():
        raise ValueError("frame holds NaN or infinite values")
    return frame_to_grid(frame, geom, prep.grid)


def regrid_plan(src: QGrid, dst: QGrid) -> tuple[int, int] | None:
    """(offset, factor) when every cell of ``dst`` is exactly the union of factor x factor
    cells of ``src`` starting ``offset`` cells in (both grids are centred on the beam), else None.
    A 128 grid to 1.2 Å is the 256 grid to 1.2 Å pooled by 2; a 128 grid to 2.4 Å its centre."""
    factor = dst.cell / src.cell
    offset = (src.g_max - dst.g_max) / src.cell
    if factor < 1 - 1e-9 or offset < -1e-6:
        return None
    f, o = round(factor), round(offset)
    if abs(factor - f) > 1e-6 or abs(offset - o) > 1e-6 or o + dst.size * f > src.size:
        return None
    return o, f


def regrid(counts: np.ndarray | torch.Tensor, src: QGrid, dst: QGrid) -> np.ndarray:
    """Grid counts (H, W) or (N, H, W) on ``src`` -> counts on ``dst`` (cropped and max-pooled;
    a cell is masked when all its source cells are). Raises when the grids do not align
    (:func:`regrid_plan`): then map the frame onto ``dst`` directly."""
    arr = counts.detach().cpu().numpy() if isinstance(counts, torch.Tensor) else np.asarray(counts)
    if arr.shape[-2:] != (src.size, src.size):
        raise ValueError(f"grid counts {arr.shape[-2:]} do not match the source grid "
                         f"{src.size} x {src.size}")
    plan = regrid_plan(src, dst)
    if plan is None:
        raise ValueError(f"grid {dst.size}² to {dst.d_min_A} Å cannot be derived from "
                         f"{src.size}² to {src.d_min_A} Å (cells do not align)")
    o, f = plan
    n = dst.size * f
    arr = arr[..., o:o + n, o:o + n]
    if f == 1:
        return np.ascontiguousarray(arr)
    return arr.reshape(*arr.shape[:-2], dst.size, f, dst.size, f).max(axis=(-3, -1))


@lru_cache(maxsize=8)
def _rings(size: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Ring of every cell of a size² grid (integer radius in cells from the beam, flattened),
    and each ring's cells as a (rings, longest) index matrix padded with size² (a NaN slot)."""
    c = torch.arange(size, dtype=torch.float64) + 0.5 - size / 2
    ring = torch.sqrt(c[None, :] ** 2 + c[:, None] ** 2).floor().long().flatten()
    order = torch.argsort(ring, stable=True)
    n = torch.bincount(ring)
    idx = torch.full((len(n), int(n.max())), size * size, dtype=torch.long)
    start = torch.cumsum(n, 0) - n
    idx[ring[order], torch.arange(size * size) - start[ring[order]]] = order
    return ring, idx


def radial_background(counts: np.ndarray | torch.Tensor) -> torch.Tensor:
    """Grid counts (N, H, W) (masked < 0) -> each cell's background: the median of the unmasked
    cells of its ring (1 cell wide, i.e. one resolution shell; 0 where a ring is all masked).
    Bragg spots fill a small part of a ring, so the median is the diffuse level (air, solvent,
    the crystal's diffuse scattering, a powder ring), as in radial background models."""
    x = torch.as_tensor(counts, dtype=torch.float32)
    n, h, w = x.shape
    ring, idx = (t.to(x.device) for t in _rings(h))
    flat = torch.where(x.reshape(n, h * w) < 0, torch.nan, x.reshape(n, h * w))
    flat = torch.cat([flat, torch.full((n, 1), torch.nan, device=x.device)], 1)
    med = torch.nan_to_num(torch.nanmedian(flat[:, idx], dim=-1).values, nan=0.0)
    return med[:, ring].reshape(n, h, w)


def normalise(counts: np.ndarray | torch.Tensor, prep: Preprocessing) -> torch.Tensor:
    """Grid counts (H, W) or (N, H, W) -> network input (N, 1, H, W) float32."""
    x = torch.as_tensor(counts, dtype=torch.float32)
    if x.ndim == 2:
        x = x[None]
    if x.shape[-2:] != (prep.grid_size, prep.grid_size):
        raise ValueError(f"input grid {tuple(x.shape[-2:])} does not match the model's "
                         f"{prep.grid_size} x {prep.grid_size}")
    if prep.d_max_A is not None:  # cells inside radius 1/d_max of the grid: masked
        gx, gy = prep.grid.centres(x.device)
        x = torch.where(gx ** 2 + gy ** 2 < prep.d_max_A ** -2, MASKED, x)
    if prep.background == "radial-median" and len(x):
        x = torch.where(x >= 0, (x - radial_background(x)).clamp(min=0.0), x)
    x = torch.log1p(x.clamp(min=0.0)) / prep.scale  # masked (-1) -> 0
    return x[:, None]


def model_input(frame: np.ndarray | torch.Tensor, geom: Geometry | PanelGeometry,
                prep: Preprocessing) -> torch.Tensor:
    """Frame + geometry -> network input (1, 1, H, W)."""
    return normalise(frame_to_counts(frame, geom, prep), prep)
