"""NeXus/NXmx detectors of several modules: every NXdetector_module placed by its
``depends_on`` chain of NXtransformations (as DECTRIS, Jungfraujoch and DIALS write them).

A module covers ``data_size`` (slow, fast) pixels from ``data_origin`` of the frame's image (or
``(1, slow, fast)`` from ``(module, slow, fast)`` when each frame is a stack of module images). Its
first pixel's corner is at ``module_offset`` (following its chain), and ``fast_pixel_direction``
/ ``slow_pixel_direction`` are translations whose vector is the axis and whose value is the
pixel size (dxtbx reads them so). A transformation moves a point: translation p + value *
vector + offset, rotation R(value, vector) p + offset; then the transformation it depends on
moves the result, up to ".". NeXus's frame (McStas: z along the beam, y up) is design.md's.
"""

from __future__ import annotations

import math
from typing import Any

import h5py
import numpy as np

from xray_platform.io.formats.base import LENGTH_MM, FormatError
from xray_platform.physics.panels import Panel, rotation

_ANGLE_DEG = {"deg": 1.0, "degree": 1.0, "degrees": 1.0, "rad": 180.0 / math.pi,
              "radian": 180.0 / math.pi, "radians": 180.0 / math.pi}


def _text(v: Any) -> str:
    if isinstance(v, np.ndarray):
        v = v.ravel()[0] if v.size else ""
    return v.decode("utf-8", "replace") if isinstance(v, bytes) else str(v)



def _resolve(f: h5py.File, base: h5py.Group, target: str) -> h5py.Dataset:
    if target.startswith("/"):
        node = f.get(target)
    else:
        node = base.get(target)
    if not isinstance(node, h5py.Dataset):
        raise FormatError(f"{f.filename}: depends_on names {target}, which is not a "
                          "transformation in the file")
    return node


def _apply(f: h5py.File, node: h5py.Dataset, point: np.ndarray,
           value: float | None = None) -> np.ndarray:
    """Move ``point`` (mm) by ``node`` and every transformation it depends on."""
    seen: set[str] = set()
    while True:
        if node.name in seen:
            raise FormatError(f"{f.filename}: the depends_on chain of {node.name} loops")
        seen.add(node.name)
        a = node.attrs
        kind = _text(a.get("transformation_type", "")).lower()
        vec = np.asarray(a.get("vector", (0, 0, 0)), dtype=float).ravel()
        units = _text(a.get("units", "")).lower()
        v = float(np.ravel(node[()])[0]) if value is None else value
        value = None
        off = np.asarray(a.get("offset", (0, 0, 0)), dtype=float).ravel()
        off = off * LENGTH_MM.get(_text(a.get("offset_units", "m")).lower() or "m", 1e3)
        if vec.shape != (3,) or not np.linalg.norm(vec) > 0:
            raise FormatError(f"{f.filename}: {node.name} has no 3-vector 'vector'")
        if kind == "rotation":
            point = rotation(vec, v * _ANGLE_DEG.get(units or "deg", 1.0)) @ point + off
        elif kind == "translation":
            if units not in LENGTH_MM:
                raise FormatError(f"{f.filename}: {node.name} has length units {units!r}")
            point = point + v * LENGTH_MM[units] * vec / np.linalg.norm(vec) + off
        else:
            raise FormatError(f"{f.filename}: {node.name}: transformation_type {kind!r}")
        nxt = _text(a.get("depends_on", "."))
        if nxt in (".", ""):
            return point
        node = _resolve(f, node.parent, nxt)


def modules(f: h5py.File, det: h5py.Group
            ) -> list[tuple[tuple[int, ...], Panel]] | None:
    """[(data_origin, Panel)] of a detector with two or more NXdetector_module groups, None
    for one module (the flat reader's case). data_origin is (slow0, fast0) in a 2-D image or
    (module, slow0, fast0) in a stack of module images. FormatError names what a module
    lacks."""
    groups = [det[k] for k in det if isinstance(det.get(k), h5py.Group) and
              _text(det[k].attrs.get("NX_class", "")) == "NXdetector_module"]
    if len(groups) < 2:
        return None
    out = []
    for g in sorted(groups, key=lambda g: g.name):
        try:
            origin = [int(v) for v in np.ravel(g["data_origin"][()])]
            size = [int(v) for v in np.ravel(g["data_size"][()])]
            fast, slow, offset = (g[k] for k in ("fast_pixel_direction",
                                                 "slow_pixel_direction", "module_offset"))
        except KeyError as e:
            raise FormatError(f"{f.filename}: module {g.name} lacks {e}") from None
        if not (len(origin) == len(size) == 2 or (len(origin) == len(size) == 3
                                                    and size[0] == 1)):
            raise FormatError(f"{f.filename}: module {g.name}: data_origin {origin} / "
                              f"data_size {size}; xrp places modules of a 2-D image "
                              "(slow, fast) or of a stack (module, slow, fast), one plane each")
        corner = _apply(f, offset, np.zeros(3))
        pf = _apply(f, fast, np.zeros(3)) - _apply(f, fast, np.zeros(3), 0.0)
        ps = _apply(f, slow, np.zeros(3)) - _apply(f, slow, np.zeros(3), 0.0)
        p = float(np.linalg.norm(pf))
        if not p > 0 or not math.isclose(p, float(np.linalg.norm(ps)), rel_tol=1e-6):
            raise FormatError(f"{f.filename}: module {g.name}: pixels of {p} x "
                              f"{np.linalg.norm(ps)} mm; xrp needs square pixels")
        centre = corner + 0.5 * (pf + ps)
        out.append((tuple(origin), Panel(tuple(centre), tuple(pf / p), tuple(ps / p), p,
                                         size[-1], size[-2], g.name.split("/")[-1])))
    return out
