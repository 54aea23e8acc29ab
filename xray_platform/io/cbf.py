"""Read and write PILATUS-style miniCBF and full (imgCIF) CBF frames with their geometry.

Conventions: images are ``img[slow, fast]`` int32; gap/bad pixels are negative (-1/-2).
``beam_center_px`` is (f0, s0) in pixels with pixel centres at integer indices. PILATUS headers
give ``Beam_xy`` with the origin at the first pixel's outer corner (DIALS convention), so
``beam_center_px = Beam_xy - 0.5``. Lengths are returned in mm, wavelengths in Å.

Pixels are decoded by fabio (imported only where a CBF is read or written: io/optional.py), but
the file is decompressed (gzip/bzip2, detected by magic bytes) and its binary section checked
here first: fabio loops forever on some truncated files and only logs an MD5 mismatch.
"""

from __future__ import annotations

import base64
import bz2
import gzip
import hashlib
import io
import math
import os
import re
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass, replace
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np

from xray_platform.io.cif_common import (
    BINARY_MARKER,
    STARTER,
    Axes,
    mime_fields,
    number,
    vector,
)
from xray_platform.io.compress import CompressionError, TooLarge, read_all
from xray_platform.io.optional import cbf_image
from xray_platform.physics.geometry import HC_KEV_A
from xray_platform.physics.limits import GeometryError, check_shape

__all__ = [
    "CBFError",
    "FrameHeader",
    "GeometryMissing",
    "read_cbf",
    "require_geometry",
    "write_cbf",
]

_NUM = r"[-+]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?"
_INT32 = np.iinfo(np.int32)
_ACCEPTED_TYPES = {
    "signed 32-bit integer",
    "unsigned 32-bit integer",
    "signed 16-bit integer",
    "unsigned 16-bit integer",
    "signed 8-bit integer",
    "unsigned 8-bit integer",
}


class CBFError(ValueError):
    """A file that is not a readable CBF (truncated, corrupt, or another format)."""


class GeometryMissing(ValueError):
    """A frame lacks geometry needed by the caller; pass overrides to ``require_geometry``."""


@dataclass(frozen=True)
class FrameHeader:
    """Geometry and metadata of one CBF frame (mm, Å, s; beam centre in pixel-centre px)."""

    wavelength_A: float | None
    distance_mm: float | None
    pixel_size_mm: float | None
    beam_center_px: tuple[float, float] | None  # (f0, s0), pixel-centre convention
    n_fast: int
    n_slow: int
    exposure_s: float | None
    detector: str | None  # e.g. the '# Detector:' line text
    raw: dict[str, str]  # the parsed header key/values


# ---------------------------------------------------------------------------------------------
# reading
# ---------------------------------------------------------------------------------------------


def _load_bytes(path: Path) -> bytes:
    """Return the file's bytes, decompressing gzip/bzip2 (by magic number, not extension)."""
    try:
        return read_all(path)
    except CompressionError as exc:
        raise CBFError(f"{path}: {exc}") from exc
    except TooLarge as exc:
        raise TooLarge(f"{path}: {exc}") from None


def _check_binary_section(path: Path, buf: bytes) -> dict[str, str]:
    """Validate the MIME-framed binary section; return its header fields."""
    marker = buf.find(BINARY_MARKER)
    is_cbf = buf.startswith(b"###CBF") or b"_array_data.data" in buf[: max(marker, 0)]
    if not is_cbf:
        raise CBFError(f"{path}: not a CBF file (no '###CBF' magic or CIF binary section)")
    if marker < 0:
        raise CBFError(f"{path}: truncated or corrupt CBF (no CIF binary section)")
    start = buf.find(STARTER, marker)
    if start < 0:
        raise CBFError(f"{path}: truncated CBF (binary section header incomplete)")
    mime = mime_fields(buf[marker:start].decode("latin-1"))
    sections = buf.count(b"X-Binary-Size:")  # one per binary section
    depth = mime.get("X-Binary-Size-Third-Dimension", "1")
    if sections > 1 or depth.strip() not in ("1", ""):
        raise CBFError(f"{path}: a multi-panel detector ({sections} binary section(s) of "
                       f"{mime.get('X-Binary-Size-Fastest-Dimension')} x "
                       f"{mime.get('X-Binary-Size-Second-Dimension')} x {depth} pixels, each "
                       "placed by its own imgCIF axes, as cctbx.xfel writes CSPAD frames); xrp "
                       "reads single-panel detectors only so far")
    try:
        size = int(mime["X-Binary-Size"])
        n_fast = int(mime["X-Binary-Size-Fastest-Dimension"])
        n_slow = int(mime["X-Binary-Size-Second-Dimension"])
        n_elem = int(mime.get("X-Binary-Number-of-Elements", n_fast * n_slow))
    except (KeyError, ValueError) as exc:
        raise CBFError(f"{path}: corrupt CBF binary header (missing/bad {exc})") from exc
    if "x-CBF_BYTE_OFFSET" not in mime.get("conversions", "x-CBF_BYTE_OFFSET"):
        raise CBFError(f"{path}: the pixels are stored with {mime.get('conversions')} "
                       "compression, which xrp's CBF decoder (fabio) does not read; only "
                       "x-CBF_BYTE_OFFSET (PILATUS, EIGER) is read (CBFlib's cif2cbf can "
                       "convert it)")
    dtype = mime.get("X-Binary-Element-Type", "signed 32-bit integer")
    if dtype not in _ACCEPTED_TYPES:
        raise CBFError(f"{path}: unsupported CBF element type {dtype!r}")
    if n_fast <= 0 or n_slow <= 0 or n_elem != n_fast * n_slow:
        raise CBFError(f"{path}: corrupt CBF dimensions {n_fast}x{n_slow} ({n_elem} elements)")
    try:
        check_shape(n_fast, n_slow)  # before fabio decodes a single pixel
    except GeometryError as e:
        raise GeometryError(f"{path}: {e}") from None
    blob = buf[start + len(STARTER) : start + len(STARTER) + size]
    if len(blob) < size:
        raise CBFError(f"{path}: truncated CBF (binary data has {len(blob)} of {size} bytes)")
    md5 = mime.get("Content-MD5")
    if md5 and base64.b64encode(hashlib.md5(blob).digest()).decode() != md5:
        raise CBFError(f"{path}: corrupt CBF (binary data MD5 mismatch)")
    return mime


def _text(value: Any) -> str:
    if isinstance(value, bytes):
        value = value.decode("latin-1")
    return str(value).strip().strip("'\"").strip()


def _cif_tables(header: Mapping[str, Any]) -> dict[str, list[dict[str, str]]]:
    """Group fabio's CIF items by category: {'_axis': [{'id': ..., 'vector[1]': ...}, ...]}."""
    tables: dict[str, list[dict[str, str]]] = {}
    for keys, rows in header.get("loop_", []) or []:
        if not keys:
            continue
        cat = _text(keys[0]).split(".", 1)[0].lower()
        for row in rows:
            tables.setdefault(cat, []).append(
                {_text(k).split(".", 1)[-1].lower(): _text(v) for k, v in row.items()}
            )
    for key, value in header.items():
        if not key.startswith("_") or "." not in key or key.startswith("_array_data."):
            continue
        cat, item = key.lower().split(".", 1)
        rows = tables.setdefault(cat, [])
        if not rows:
            rows.append({})
        rows[0].setdefault(item, _text(value))
    return tables


def _parse_pilatus(text: str) -> dict[str, str]:
    """Parse '# Key value' lines of a PILATUS_1.2 header into a dict."""
    raw: dict[str, str] = {}
    for line in text.splitlines():
        line = line.strip()
        if not line.startswith("#"):
            continue
        line = line.lstrip("#").strip()
        if not line:
            continue
        if re.match(r"^\d{4}-\d\d-\d\d", line):
            raw["Date"] = line
            continue
        m = re.match(r"^(\w+) sensor, thickness (.*)$", line)
        if m:
            raw["Sensor_material"], raw["Sensor_thickness"] = m.group(1), m.group(2).strip()
            continue
        m = re.match(r"^([A-Za-z_][\w-]*)\s*[:=]?\s*(.*)$", line)
        if m:
            raw[m.group(1)] = m.group(2).strip()
    return raw


def _first_float(text: str | None) -> float | None:
    m = re.search(_NUM, text or "")
    return float(m.group()) if m else None


def _length_mm(text: str | None) -> float | None:
    """'0.35100 m' -> 351.0; a bare number is taken as metres (PILATUS default)."""
    value = _first_float(text)
    if value is None:
        return None
    unit = re.search(_NUM + r"\s*(mm|um|m)\b", text or "")
    scale = {"mm": 1.0, "um": 1e-3, "m": 1e3}[unit.group(1)] if unit else 1e3
    return round(value * scale, 9)  # 172e-6 m -> 0.172, not 0.17200000000000001


def _pilatus_geometry(raw: Mapping[str, str]) -> dict[str, Any]:
    geo: dict[str, Any] = {}
    if "Wavelength" in raw:
        geo["wavelength_A"] = _first_float(raw["Wavelength"])
    if "Detector_distance" in raw:
        geo["distance_mm"] = _length_mm(raw["Detector_distance"])
    if "Pixel_size" in raw:
        parts = re.split(r"\s+x\s+", raw["Pixel_size"])
        sizes = [s for s in (_length_mm(p) for p in parts) if s is not None]
        if len(sizes) == len(parts) and all(math.isclose(s, sizes[0]) for s in sizes):
            geo["pixel_size_mm"] = sizes[0]  # square pixels only; else left None
    if "Beam_xy" in raw:
        nums = re.findall(_NUM, raw["Beam_xy"])
        if len(nums) >= 2:
            geo["beam_center_px"] = (float(nums[0]) - 0.5, float(nums[1]) - 0.5)
    if "Exposure_time" in raw:
        geo["exposure_s"] = _first_float(raw["Exposure_time"])
    if raw.get("Detector"):
        geo["detector"] = raw["Detector"]
    return {k: v for k, v in geo.items() if v is not None}


def _axis_geometry(tables: Mapping[str, list[dict[str, str]]]) -> dict[str, Any]:
    """Distance, pixel size and beam centre from the imgCIF _axis/_array_structure tables.

    As dxtbx does, the position of array index 0 is taken as the first pixel's outer corner, so
    the beam centre in pixel-centre convention is the intersection point's index minus 0.5.
    """
    ax = Axes(tables)  # the axis chains and this frame's settings
    axes = ax.rows
    lists = sorted(
        tables.get("_array_structure_list", []), key=lambda r: number(r, "precedence", 0.0)
    )
    list_axes = {r.get("axis_set_id"): r for r in tables.get("_array_structure_list_axis", [])}
    if len(lists) < 2 or not axes:
        return {}
    elem: list[tuple[str, float, float]] = []  # (axis id, displacement, increment) fast, slow
    for lst in lists[:2]:
        la = list_axes.get(lst.get("axis_set_id"))
        if la is None or la.get("axis_id") not in axes or lst.get("direction") == "decreasing":
            return {}
        elem.append((la["axis_id"], number(la, "displacement"),
                     number(la, "displacement_increment")))
    involved = {a: len(ax.chain(a)) for e in elem for a in ax.chain(e[0])}
    order = sorted(involved, key=lambda a: -involved[a])  # innermost first

    def position(i_fast: float, i_slow: float) -> np.ndarray:
        return ax.position(order, {elem[0][0]: elem[0][1] + i_fast * elem[0][2],
                                   elem[1][0]: elem[1][1] + i_slow * elem[1][2]})

    origin = position(0, 0)
    df = position(1, 0) - origin
    ds = position(0, 1) - origin
    normal = np.cross(df, ds)
    if np.linalg.norm(normal) == 0:
        return {}
    normal /= np.linalg.norm(normal)
    source = next((r for r in axes.values() if r.get("equipment") == "source"), None)
    s_vec = vector(source, "vector") if source else np.array([0.0, 0.0, 1.0])
    beam = -s_vec / np.linalg.norm(s_vec)  # imgCIF SOURCE axis points from sample to source
    geo: dict[str, Any] = {"distance_mm": round(float(abs(normal @ origin)), 9)}
    if math.isclose(np.linalg.norm(df), np.linalg.norm(ds), rel_tol=1e-6):
        geo["pixel_size_mm"] = round(float(np.linalg.norm(df)), 9)
    if abs(normal @ beam) > 1e-9:
        hit = beam * (normal @ origin) / (normal @ beam)
        uv, *_ = np.linalg.lstsq(np.stack([df, ds], axis=1), hit - origin, rcond=None)
        geo["beam_center_px"] = (float(uv[0]) - 0.5, float(uv[1]) - 0.5)
    return geo


def _table_geometry(tables: Mapping[str, list[dict[str, str]]]) -> dict[str, Any]:
    """Geometry of a full CBF from its imgCIF categories (values that are present only)."""
    geo: dict[str, Any] = {}
    for r in tables.get("_diffrn_radiation_wavelength", [])[:1]:
        geo["wavelength_A"] = number(r, "wavelength", math.nan)
    for r in tables.get("_array_element_size", [])[:1]:
        geo["pixel_size_mm"] = round(number(r, "size", math.nan) * 1e3, 9)  # metres in imgCIF
    for r in tables.get("_diffrn_measurement", [])[:1]:
        geo["distance_mm"] = number(r, "sample_detector_distance", math.nan)
    for r in tables.get("_diffrn_scan_frame", [])[:1]:
        geo["exposure_s"] = number(r, "integration_time", math.nan)
    for r in tables.get("_diffrn_detector", [])[:1]:
        geo["detector"] = r.get("type") or r.get("id")
    try:
        axis_geo = _axis_geometry(tables)
    except (KeyError, ValueError, np.linalg.LinAlgError):
        axis_geo = {}  # an axis description we cannot follow: leave the beam centre unknown
    if "pixel_size_mm" in geo:  # the declared element size beats the one inferred from axes
        axis_geo.pop("pixel_size_mm", None)
    geo.update(axis_geo)
    return {
        k: v
        for k, v in geo.items()
        if v is not None and not (isinstance(v, float) and not math.isfinite(v))
    }


def read_cbf(path: str | Path) -> tuple[np.ndarray, FrameHeader]:
    """Read a (optionally .gz/.bz2-compressed) CBF; return the int32 ``img[slow, fast]`` and header.

    Geometry comes from the PILATUS_1.2 text header; items it lacks are taken from the imgCIF
    tables of a full CBF when present, else left as None (see ``require_geometry``).
    Raises FileNotFoundError for a missing file, CBFError (a ValueError) naming the file for a
    truncated, corrupt or non-CBF file.
    """
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"CBF file not found: {path}")
    return decode_cbf(path, _load_bytes(path))


def decode_cbf(path: Path, buf: bytes) -> tuple[np.ndarray, FrameHeader]:
    """:func:`read_cbf` of a file's (decompressed) bytes."""
    _check_binary_section(path, buf)
    cbf_class = cbf_image()  # fabio, imported here: only CBF files need it
    try:
        stream = io.BytesIO(buf)
        stream.name = str(path)  # type: ignore[attr-defined]
        cbf = cbf_class().read(stream)
        data = cbf.data
    except Exception as exc:  # fabio raises bare Exception/AssertionError/RuntimeError
        raise CBFError(f"{path}: corrupt CBF ({type(exc).__name__}: {exc})") from exc
    if data is None or data.ndim != 2:
        raise CBFError(f"{path}: CBF holds no 2-D image")
    if data.dtype != np.int32:
        if data.size and (data.min() < _INT32.min or data.max() > _INT32.max):
            raise CBFError(f"{path}: pixel values do not fit in int32")
        data = data.astype(np.int32)

    n_slow, n_fast = data.shape
    return np.ascontiguousarray(data), header_from_fabio(cbf.header, n_fast, n_slow)


def header_from_fabio(header: Mapping[str, Any], n_fast: int, n_slow: int) -> FrameHeader:
    """Geometry and metadata from a fabio CBF header (PILATUS text and/or imgCIF tables)."""
    raw = _parse_pilatus(_text(header.get("_array_data.header_contents", "")))
    tables = _cif_tables(header)
    for cat, rows in tables.items():
        if len(rows) == 1:
            for item, value in rows[0].items():
                raw.setdefault(f"{cat}.{item}", value)
    geo = _table_geometry(tables) if tables else {}
    geo.update(_pilatus_geometry(raw))  # the PILATUS header wins where both exist
    return FrameHeader(
        wavelength_A=geo.get("wavelength_A"),
        distance_mm=geo.get("distance_mm"),
        pixel_size_mm=geo.get("pixel_size_mm"),
        beam_center_px=geo.get("beam_center_px"),
        n_fast=n_fast,
        n_slow=n_slow,
        exposure_s=geo.get("exposure_s"),
        detector=geo.get("detector"),
        raw=raw,
    )


def require_geometry(
    header: FrameHeader,
    *,
    wavelength_A: float | None = None,
    distance_mm: float | None = None,
    pixel_size_mm: float | None = None,
    beam_center_px: tuple[float, float] | None = None,
) -> FrameHeader:
    """Apply caller overrides (they win); raise GeometryMissing if any geometry is still None."""
    overrides = {
        "wavelength_A": wavelength_A,
        "distance_mm": distance_mm,
        "pixel_size_mm": pixel_size_mm,
        "beam_center_px": None if beam_center_px is None else tuple(map(float, beam_center_px)),
    }
    out = replace(header, **{k: v for k, v in overrides.items() if v is not None})
    missing = [k for k in overrides if getattr(out, k) is None]
    if missing:
        raise GeometryMissing(
            f"CBF header ({out.detector or 'unknown detector'}) lacks {', '.join(missing)}; "
            "pass them as overrides to require_geometry()"
        )
    return out


# ---------------------------------------------------------------------------------------------
# writing
# ---------------------------------------------------------------------------------------------


def _pilatus_lines(
    *,
    wavelength_A: float,
    distance_mm: float,
    pixel_size_mm: float,
    beam_center_px: tuple[float, float],
    exposure_s: float,
    detector: str,
    extra: Mapping[str, str] | None,
) -> list[str]:
    px_um = f"{pixel_size_mm * 1e3:.6g}e-6"
    now = datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3]
    threshold_ev = round(HC_KEV_A / wavelength_A * 1e3 / 2)
    items: dict[str, str] = {
        "Detector:": detector,
        "": now,
        "Pixel_size": f"{px_um} m x {px_um} m",
        "Silicon": "sensor, thickness 0.000450 m",
        "Exposure_time": f"{exposure_s:.7f} s",
        "Exposure_period": f"{exposure_s:.7f} s",
        "Tau": "= 0 s",
        "Count_cutoff": "1048576 counts",
        "Threshold_setting:": f"{threshold_ev} eV",
        "Gain_setting:": "autog (vrf = 1.000)",
        "N_excluded_pixels": "= 0",
        "Excluded_pixels:": "(nil)",
        "Flat_field:": "(nil)",
        "Trim_file:": "(nil)",
        "Image_path:": "(nil)",
        "Wavelength": f"{wavelength_A:.7f} A",
        "Detector_distance": f"{distance_mm / 1e3:.8f} m",
        "Beam_xy": f"({beam_center_px[0] + 0.5:.4f}, {beam_center_px[1] + 0.5:.4f}) pixels",
        "Flux": "0.000000",
        "Filter_transmission": "1.0000",
        "Start_angle": "0.0000 deg.",
        "Angle_increment": "0.0000 deg.",
        "Detector_2theta": "0.0000 deg.",
        "Polarization": "0.990",
        "Alpha": "0.0000 deg.",
        "Kappa": "0.0000 deg.",
        "Phi": "0.0000 deg.",
        "Phi_increment": "0.0000 deg.",
        "Chi": "0.0000 deg.",
        "Chi_increment": "0.0000 deg.",
        "Oscillation_axis": "X, CW",
        "N_oscillations": "1",
    }
    for key, value in (extra or {}).items():
        key, value = str(key), str(value)
        if not re.fullmatch(r"[A-Za-z_][\w-]*:?", key) or "\n" in value or "\r" in value:
            raise ValueError(f"bad extra header item {key!r}: {value!r}")
        existing = key if key in items else key + ":" if key + ":" in items else None
        items[existing or key] = value
    return [f"# {k} {v}".rstrip() if k else f"# {v}" for k, v in items.items()]


def write_cbf(
    path: str | Path,
    image: np.ndarray,
    *,
    wavelength_A: float,
    distance_mm: float,
    pixel_size_mm: float,
    beam_center_px: tuple[float, float],
    exposure_s: float = 0.1,
    detector: str = "xrp simulated",
    extra: dict[str, str] | None = None,
) -> None:
    """Write ``image[slow, fast]`` as an int32 miniCBF with a PILATUS_1.2 header, atomically.

    ``extra`` adds (or replaces) '# Key value' header lines. A path ending in .gz or .bz2 is
    compressed accordingly.
    """
    path = Path(path)
    img = np.asarray(image)
    if img.ndim != 2 or img.size == 0:
        raise ValueError(f"image must be a non-empty 2-D array, got shape {img.shape}")
    if not (np.issubdtype(img.dtype, np.integer) or img.dtype == np.bool_):
        raise ValueError(f"image must have an integer dtype (round counts first), got {img.dtype}")
    if img.dtype != np.int32:
        if img.min() < _INT32.min or img.max() > _INT32.max:
            raise ValueError("image values do not fit in int32")
        img = img.astype(np.int32)
    for name, value in (
        ("wavelength_A", wavelength_A),
        ("distance_mm", distance_mm),
        ("pixel_size_mm", pixel_size_mm),
    ):
        if not (math.isfinite(value) and value > 0):
            raise ValueError(f"{name} must be positive and finite, got {value}")
    if len(beam_center_px) != 2 or not all(math.isfinite(v) for v in beam_center_px):
        raise ValueError(f"beam_center_px must be two finite numbers, got {beam_center_px}")
    if not (math.isfinite(exposure_s) and exposure_s >= 0):
        raise ValueError(f"exposure_s must be >= 0, got {exposure_s}")
    if "\n" in detector or "\r" in detector:
        raise ValueError("detector must be a single line")

    lines = _pilatus_lines(
        wavelength_A=float(wavelength_A),
        distance_mm=float(distance_mm),
        pixel_size_mm=float(pixel_size_mm),
        beam_center_px=(float(beam_center_px[0]), float(beam_center_px[1])),
        exposure_s=float(exposure_s),
        detector=detector,
        extra=extra,
    )
    cbf = cbf_image()(data=np.ascontiguousarray(img))
    cbf.header["_array_data.header_convention"] = "PILATUS_1.2"
    cbf.header["_array_data.header_contents"] = "\r\n".join(lines)

    path.parent.mkdir(parents=True, exist_ok=True)
    suffix = path.suffix.lower()
    inner = path.stem if suffix in (".gz", ".bz2") else path.name  # fabio names data_ after it
    # a private temp folder beside the target: same file system, so os.replace is atomic
    with tempfile.TemporaryDirectory(prefix=f".{path.name}.", dir=path.parent) as tmpdir:
        tmp = Path(tmpdir) / inner
        cbf.write(str(tmp))
        if suffix in (".gz", ".bz2"):
            raw = tmp.read_bytes()
            packed = gzip.compress(raw, mtime=0) if suffix == ".gz" else bz2.compress(raw)
            tmp.write_bytes(packed)
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
