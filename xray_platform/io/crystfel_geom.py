"""CrystFEL geometry files (``.geom``, crystfel_geometry(5)): the panels of a detector whose
frames are stored as plain arrays (stacked JUNGFRAU modules, CSPAD slabs) in HDF5.

What is read (the man page's rules): ``key = value`` lines, ``;`` comments; ``panel/key`` for a
panel, keys without a panel are defaults for the panels first mentioned after them; panels named
``bad*`` are bad regions (fs/ss ranges of a panel, or x/y ranges in pixels); ``group``,
``rigid_group*`` lines are accepted and ignored. Per panel: ``min_fs max_fs min_ss max_ss``
(inclusive, in the data array), ``corner_x corner_y`` (pixels: the outer corner of the first
pixel), ``fs ss`` (vectors in pixels, e.g. ``+0.0x -1.0y``), ``res`` (pixels per metre),
``coffset`` (m), ``dimN`` (``%`` = frame, ``ss``, ``fs`` or a fixed index), ``data`` (the HDF5
dataset, default /data/data), ``no_index``. Globally ``clen`` (m or mm; an HDF5 path is read
from the file, in mm unless a unit says otherwise), ``photon_energy`` (eV or keV, or an HDF5
path) or ``wavelength`` (m or A), ``mask`` / ``mask_good`` / ``mask_bad`` (a pixel is bad unless
all good bits are set, or if any bad bit is).

CrystFEL's lab frame has +z along the beam, +y up: design.md's frame, up to the sense of x and
y (a turn of the grid by 180 deg). A pixel's centre is at (corner + (i + 0.5) fs + (j + 0.5) ss)
/ res, z = clen + coffset (+ the vectors' z parts).
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from xray_platform.physics.geometry import HC_KEV_A
from xray_platform.physics.panels import Panel


class GeomError(ValueError):
    """A geometry file xrp cannot use: names the line or key at fault."""


_REQUIRED = ("min_fs", "max_fs", "min_ss", "max_ss", "corner_x", "corner_y", "fs", "ss", "res")


@dataclass
class GeomPanel:
    name: str
    keys: dict[str, str]

    def num(self, key: str, path: str) -> float:
        try:
            return float(self.keys[key].split()[0])
        except KeyError:
            raise GeomError(f"{path}: panel {self.name} has no {key}") from None
        except ValueError:
            raise GeomError(f"{path}: panel {self.name}: {key} = {self.keys[key]!r} is not a "
                            "number") from None

    def dims(self) -> list[str]:
        found = {int(k[3:]): v.strip() for k, v in self.keys.items()
                 if re.fullmatch(r"dim\d", k)}
        if not found:
            return ["ss", "fs"]
        return [found.get(i, "") for i in range(max(found) + 1)]


@dataclass
class CrystFELGeometry:
    """A parsed geometry file: global keys, panels, bad regions."""

    path: str
    globals: dict[str, str] = field(default_factory=dict)
    panels: list[GeomPanel] = field(default_factory=list)
    bad: list[GeomPanel] = field(default_factory=list)

    @property
    def data_path(self) -> str:
        paths = {p.keys.get("data", "/data/data") for p in self.panels}
        if len(paths) != 1:
            raise GeomError(f"{self.path}: panels read from {len(paths)} data sets "
                            f"({sorted(paths)}); xrp reads one")
        return paths.pop()


def _vector(text: str, path: str, name: str) -> np.ndarray:
    """'+0.000342x -0.999931y' -> (0.000342, -0.999931, 0)."""
    out = np.zeros(3)
    s = text.replace(" ", "")
    term = r"([+-]?)(\d*\.?\d*(?:[eE][+-]?\d+)?)([xyz])"
    if not re.fullmatch(f"(?:{term})+", s):
        raise GeomError(f"{path}: {name} = {text!r} is not a vector like '+1.0x -0.0y'")
    terms = re.findall(term, s)
    for sign, num, axis in terms:
        v = float(num) if num not in ("", ".") else 1.0
        out["xyz".index(axis)] += -v if sign == "-" else v
    return out


def parse_geom(text: str, path: str = "<geometry>") -> CrystFELGeometry:
    geom = CrystFELGeometry(path)
    defaults: dict[str, str] = {}
    byname: dict[str, GeomPanel] = {}
    for n, raw in enumerate(text.replace("\r", "\n").splitlines(), 1):
        line = raw.split(";", 1)[0].strip()
        if not line:
            continue
        key, sep, value = line.partition("=")
        if not sep:
            raise GeomError(f"{path}:{n}: {raw.strip()!r} is not 'key = value'")
        key, value = key.strip(), value.strip()
        if key.startswith(("group", "rigid_group")):
            continue
        if "/" not in key:
            if key in ("clen", "photon_energy", "wavelength", "electron_voltage",
                       "detector_shift_x", "detector_shift_y", "bandwidth"):
                geom.globals[key] = value
            else:
                defaults[key] = value
            continue
        name, _, sub = key.partition("/")
        if name not in byname:
            target = geom.bad if name.startswith("bad") else geom.panels
            byname[name] = GeomPanel(name, {} if name.startswith("bad") else dict(defaults))
            target.append(byname[name])
        byname[name].keys[sub.strip()] = value
    for key in ("mask", "mask_good", "mask_bad", "mask_file"):
        if key in defaults:
            geom.globals.setdefault(key, defaults[key])
    if not geom.panels:
        raise GeomError(f"{path}: no panels (lines like 'p0/min_fs = 0')")
    for p in geom.panels:
        missing = [k for k in _REQUIRED if k not in p.keys]
        if missing:
            raise GeomError(f"{path}: panel {p.name} lacks {', '.join(missing)}")
        for key in ("fs", "ss"):
            _vector(p.keys[key], path, f"{p.name}/{key}")
    return geom


def read_geom(path: str | Path) -> CrystFELGeometry:
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8", errors="replace")
    except OSError as e:
        raise GeomError(f"{path}: cannot read the geometry file ({e.strerror})") from None
    return parse_geom(text, str(path))


def _length_m(value: str, default_unit: str) -> float | None:
    """'0.075', '95.3 mm', '0.1 m' -> metres; None for an HDF5 path."""
    parts = value.split()
    if not parts or parts[0].startswith("/"):
        return None
    unit = parts[1] if len(parts) > 1 else default_unit
    scale = {"m": 1.0, "mm": 1e-3}.get(unit)
    if scale is None:
        raise GeomError(f"unknown length unit {unit!r} in {value!r} (m or mm)")
    return float(parts[0]) * scale


def hdf5_values(geom: CrystFELGeometry) -> dict[str, str]:
    """Global keys whose values are read from the data file: key -> HDF5 path."""
    return {k: v.split()[0] for k, v in geom.globals.items()
            if k in ("clen", "photon_energy", "wavelength") and v.strip().startswith("/")}


def wavelength_A(geom: CrystFELGeometry, from_file: dict[str, float]) -> float | None:
    """The wavelength (Å) from photon_energy (eV/keV) or wavelength (m/A), literal or read
    from the file (``from_file``: key -> value)."""
    if "wavelength" in geom.globals:
        v = geom.globals["wavelength"].split()
        num = from_file.get("wavelength", float(v[0]) if not v[0].startswith("/") else math.nan)
        unit = v[-1] if len(v) > 1 else ""
        if unit == "m":
            return num * 1e10
        if unit in ("A", "Å"):
            return num
        raise GeomError(f"{geom.path}: wavelength needs a unit (m or A)")
    if "photon_energy" in geom.globals:
        v = geom.globals["photon_energy"].split()
        num = from_file.get("photon_energy",
                            float(v[0]) if not v[0].startswith("/") else math.nan)
        unit = v[-1] if len(v) > 1 and not v[-1].startswith("/") else "eV"
        kev = num / 1000.0 if unit == "eV" else num if unit == "keV" else math.nan
        return HC_KEV_A / kev if kev > 0 else None
    return None


def clen_mm(geom: CrystFELGeometry, from_file: dict[str, float]) -> float:
    value = geom.globals.get("clen")
    if value is None:
        raise GeomError(f"{geom.path}: no clen (the camera length)")
    if value.strip().startswith("/"):  # read from the file: mm unless stated
        unit = value.split()[1] if len(value.split()) > 1 else "mm"
        return from_file["clen"] * (1000.0 if unit == "m" else 1.0)
    m = _length_m(value, "m")
    assert m is not None
    return m * 1000.0


@dataclass(frozen=True)
class PanelPixels:
    """Where a panel's pixels are in a frame's array: the fixed leading indices (a module
    number), then the ss and fs ranges (end exclusive)."""

    fixed: tuple[int, ...]
    ss: tuple[int, int]
    fs: tuple[int, int]


def panels_of(geom: CrystFELGeometry, clen: float) -> list[tuple[PanelPixels, Panel]]:
    """Every panel in design.md's lab frame (mm), with where its pixels are."""
    out = []
    for p in geom.panels:
        res = p.num("res", geom.path)
        if not res > 0:
            raise GeomError(f"{geom.path}: panel {p.name}: res = {res} pixels per metre")
        pitch = 1000.0 / res  # mm
        fs, ss = _vector(p.keys["fs"], geom.path, "fs"), _vector(p.keys["ss"], geom.path, "ss")
        for name, v in (("fs", fs), ("ss", ss)):
            if not math.isclose(float(np.linalg.norm(v)), 1.0, rel_tol=1e-3):
                raise GeomError(f"{geom.path}: panel {p.name}: {name} has length "
                                f"{np.linalg.norm(v):.4f} pixels; xrp needs square pixels "
                                "(length 1)")
        coffset = float(p.keys.get("coffset", "0").split()[0]) * 1000.0
        corner = np.array([p.num("corner_x", geom.path), p.num("corner_y", geom.path), 0.0])
        centre = (corner + 0.5 * fs + 0.5 * ss) * pitch + (0.0, 0.0, clen + coffset)
        n_fs = int(p.num("max_fs", geom.path) - p.num("min_fs", geom.path)) + 1
        n_ss = int(p.num("max_ss", geom.path) - p.num("min_ss", geom.path)) + 1
        fixed = []
        dims = p.dims()
        if "ss" not in dims or "fs" not in dims or dims.index("ss") > dims.index("fs"):
            raise GeomError(f"{geom.path}: panel {p.name}: dims {dims} need ss before fs")
        for d in dims[:dims.index("ss")]:
            if d == "%":
                continue
            try:
                fixed.append(int(d))
            except ValueError:
                raise GeomError(f"{geom.path}: panel {p.name}: dim value {d!r}") from None
        s0, f0 = int(p.num("min_ss", geom.path)), int(p.num("min_fs", geom.path))
        out.append((PanelPixels(tuple(fixed), (s0, s0 + n_ss), (f0, f0 + n_fs)),
                    Panel(tuple(centre), tuple(fs), tuple(ss), pitch, n_fs, n_ss, p.name)))
    return out


def frame_index_dim(geom: CrystFELGeometry) -> int | None:
    """The array dimension that numbers frames ('%'), or None for one frame per file."""
    dims = geom.panels[0].dims()
    return dims.index("%") if "%" in dims else None


def bad_pixels(geom: CrystFELGeometry, placed: list[tuple[PanelPixels, Panel]]) -> np.ndarray:
    """(panel, slow, fast) bool: pixels in bad regions and no_index panels."""
    n_ss, n_fs = placed[0][1].n_slow, placed[0][1].n_fast
    bad = np.zeros((len(placed), n_ss, n_fs), dtype=bool)
    names = {p.name: i for i, p in enumerate(geom.panels)}
    for i, p in enumerate(geom.panels):
        if p.keys.get("no_index", "0").strip() in ("1", "true"):
            bad[i] = True
    for region in geom.bad:
        k = region.keys
        if "min_fs" in k:
            targets = [names[k["panel"]]] if "panel" in k and k["panel"] in names else \
                range(len(placed))
            for i in targets:
                px = placed[i][0]
                f0, f1 = int(float(k["min_fs"])), int(float(k["max_fs"])) + 1
                s0, s1 = int(float(k["min_ss"])), int(float(k["max_ss"])) + 1
                fa, fb = max(f0, px.fs[0]) - px.fs[0], min(f1, px.fs[1]) - px.fs[0]
                sa, sb = max(s0, px.ss[0]) - px.ss[0], min(s1, px.ss[1]) - px.ss[0]
                if fa < fb and sa < sb:
                    bad[i, sa:sb, fa:fb] = True
        elif "min_x" in k:  # x/y in pixel units of the lab frame, strict inequalities
            for i, (_, panel) in enumerate(placed):
                res = 1.0 / panel.pixel_mm
                xyz = panel.lab().reshape(-1, 3) * res
                x, y = xyz[:, 0], xyz[:, 1]
                inside = (x > float(k["min_x"])) & (x < float(k["max_x"])) & \
                    (y > float(k["min_y"])) & (y < float(k["max_y"]))
                bad[i] |= inside.reshape(n_ss, n_fs)
    return bad


def mask_bad(geom: CrystFELGeometry, mask: np.ndarray) -> np.ndarray:
    """Bad pixels from a mask array by the geometry's good/bad bits."""
    good = int(geom.globals.get("mask_good", "0").split()[0], 0)
    badbits = int(geom.globals.get("mask_bad", "0").split()[0], 0)
    m = mask.astype(np.int64)
    return ((m & good) != good) | ((m & badbits) != 0)


def write_geom(panels: tuple[Panel, ...] | list[Panel], clen_mm: float, photon_energy_eV: float,
               data: str = "/entry/data/data") -> str:
    """A geometry file for frames stored as (frame, panel * n_slow, n_fast) arrays at ``data``
    (panel k in slow rows k n_slow ... (k + 1) n_slow - 1): the inverse of :func:`panels_of`."""
    lines = ["; written by xrp (xray_platform.io.crystfel_geom.write_geom)",
             f"clen = {clen_mm / 1000.0:.9g} m", f"photon_energy = {photon_energy_eV:.9g} eV",
             "adu_per_photon = 1", f"data = {data}", "dim0 = %", "dim1 = ss", "dim2 = fs", ""]
    for k, p in enumerate(panels):
        pitch = p.pixel_mm
        fast, slow = np.asarray(p.fast), np.asarray(p.slow)
        corner = np.asarray(p.origin_mm) - 0.5 * pitch * (fast + slow)
        name = f"p{k}"
        lines += [f"{name}/min_fs = 0", f"{name}/max_fs = {p.n_fast - 1}",
                  f"{name}/min_ss = {k * p.n_slow}", f"{name}/max_ss = {(k + 1) * p.n_slow - 1}",
                  f"{name}/res = {1000.0 / pitch:.12g}",
                  f"{name}/corner_x = {corner[0] / pitch:.9f}",
                  f"{name}/corner_y = {corner[1] / pitch:.9f}",
                  f"{name}/coffset = {(corner[2] - clen_mm) / 1000.0:.12g}",
                  f"{name}/fs = {fast[0]:+.9f}x {fast[1]:+.9f}y {fast[2]:+.9f}z",
                  f"{name}/ss = {slow[0]:+.9f}x {slow[1]:+.9f}y {slow[2]:+.9f}z", ""]
    return "\n".join(lines)
