"""What every detector file reader shares: the frame and header types, the Reader interface,
errors, pixel and index checks, and the detector a header describes.

Conventions (design.md, io/cbf.py):
- Images are ``img[slow, fast]`` float32; masked, gap and bad pixels are negative (-1 where the
  readers mask them; negative raw values stay negative). NaN/inf pixels are refused.
- Lengths in mm, wavelengths in Å, times in s. ``beam_center_px`` is (f0, s0) in pixels with pixel
  centres at integer indices. Headers that give the beam position from the first pixel's outer
  corner (PILATUS ``Beam_xy``, NXmx ``beam_center_x/y``, SMV ``BEAM_CENTER_X/Y``, all as dxtbx
  reads them) are converted with ``centre = corner - 0.5``.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from xray_platform.io import compress
from xray_platform.io.cbf import GeometryMissing
from xray_platform.io.compress import SNIFF, SNIFF_MAX, is_compressed  # noqa: F401
from xray_platform.io.compress import head as sniff  # noqa: F401
from xray_platform.physics.geometry import DETECTORS, DetectorPreset, Geometry
from xray_platform.physics.limits import (
    GeometryError,
    check_distance,
    check_geometry,
    check_panel_geometry,
    check_pixel_size,
    check_shape,
    check_wavelength,
)
from xray_platform.physics.panels import Panel, PanelGeometry

HDF5_MAGIC = b"\x89HDF\r\n\x1a\n"
NPY_MAGIC = b"\x93NUMPY"
GEOMETRY_FIELDS = ("wavelength_A", "distance_mm", "pixel_size_mm", "beam_center_px")
DEFAULT_MAX_COUNTS = 2**20
#: millimetres per unit of the length units NeXus/NXmx files state
LENGTH_MM = {"m": 1e3, "meter": 1e3, "metre": 1e3, "mm": 1.0, "millimeter": 1.0, "cm": 10.0,
              "um": 1e-3, "µm": 1e-3, "micron": 1e-3, "microns": 1e-3, "nm": 1e-6}


class FormatError(ValueError):
    """A file no reader understands, or a truncated, corrupt or inconsistent detector file."""


class DataFileMissing(FormatError):
    """An HDF5 master file whose (external) data file is absent."""


@dataclass(frozen=True)
class FrameInfo:
    """Geometry and metadata of one frame (mm, Å, s; beam centre (f0, s0) in pixel-centre px)."""

    wavelength_A: float | None
    distance_mm: float | None
    pixel_size_mm: float | None
    beam_center_px: tuple[float, float] | None
    n_fast: int
    n_slow: int
    detector: str | None  # detector type/description text from the header
    format: str  # reader name: "cbf", "eiger-hdf5", "smv", "npy"
    n_frames: int
    exposure_s: float | None = None
    max_counts: int | None = None  # saturation (overload) count from the header, if stated
    #: a multi-panel detector's panels (frames are then img[panel, slow, fast], n_fast and
    #: n_slow are one panel's; distance, pixel size and beam centre are derived from them)
    panels: tuple[Panel, ...] | None = None

    @property
    def missing_geometry(self) -> list[str]:
        """Names of the geometry fields the header did not give."""
        fields = ("wavelength_A",) if self.panels else GEOMETRY_FIELDS
        return [k for k in fields if getattr(self, k) is None]

    @property
    def shape(self) -> tuple[int, ...]:
        """The frame's array shape: (slow, fast), or (panel, slow, fast)."""
        if self.panels:
            return (len(self.panels), self.n_slow, self.n_fast)
        return (self.n_slow, self.n_fast)


def panel_info(panels: tuple[Panel, ...], **fields: Any) -> FrameInfo:
    """The FrameInfo of a multi-panel frame: distance, pixel size and beam centre as the panels
    place them (PanelGeometry), for the tables; the panels are the geometry."""
    geom = PanelGeometry(panels, fields.get("wavelength_A") or 1.0)
    first = panels[0]
    return FrameInfo(distance_mm=round(geom.distance_mm, 6), pixel_size_mm=first.pixel_mm,
                     beam_center_px=geom.beam_center_px, n_fast=first.n_fast,
                     n_slow=first.n_slow, panels=tuple(panels), **fields)


@dataclass
class Frame:
    """One frame: float32 ``image[slow, fast]`` (negative = masked) and its header info."""

    image: np.ndarray
    info: FrameInfo
    path: str
    index: int  # frame index in the file

    def geometry(self) -> Geometry | PanelGeometry:
        """The frame's :class:`Geometry`; GeometryMissing names what the header lacks."""
        missing = self.info.missing_geometry
        if missing:
            raise GeometryMissing(
                f"{self.path}: the {self.info.format} header lacks {', '.join(missing)}; give "
                "them as geometry overrides"
            )
        if self.info.panels:
            return self._panel_geometry()
        assert self.info.beam_center_px is not None  # for type checkers (checked above)
        i = self.info
        try:  # only a geometry a real setup can have is answered for (physics/limits.py)
            check_geometry(float(i.wavelength_A), float(i.distance_mm), float(i.pixel_size_mm),
                           i.beam_center_px, i.n_fast, i.n_slow)
        except GeometryError as e:
            raise GeometryError(f"{self.path}: {e} (header or override)") from None
        return Geometry(
            detector=detector_for(self.info),
            distance_mm=float(self.info.distance_mm),  # type: ignore[arg-type]
            wavelength_A=float(self.info.wavelength_A),  # type: ignore[arg-type]
            beam_center_px=self.info.beam_center_px,
        )


    def _panel_geometry(self) -> PanelGeometry:
        """A multi-panel frame's geometry. A distance override moves every panel along the
        beam; a pixel size or beam centre override cannot apply to panels placed one by one."""
        i = self.info
        panels = i.panels or ()
        geom = PanelGeometry(panels, float(i.wavelength_A), i.detector or "panels",
                             int(i.max_counts or DEFAULT_MAX_COUNTS))
        if i.pixel_size_mm is not None and not math.isclose(i.pixel_size_mm, geom.pixel_mm,
                                                            rel_tol=1e-6):
            raise GeometryError(f"{self.path}: a pixel size override ({i.pixel_size_mm} mm) "
                                "does not apply to a multi-panel detector")
        if i.beam_center_px is not None and geom.beam_center_px is not None and not np.allclose(
                i.beam_center_px, geom.beam_center_px, atol=1e-6):
            raise GeometryError(f"{self.path}: a beam centre override does not apply to a "
                                "multi-panel detector (its panels are placed one by one: give "
                                "a geometry file instead)")
        if i.distance_mm is not None and abs(i.distance_mm - geom.distance_mm) > 1e-3:
            geom = geom.shifted(i.distance_mm - geom.distance_mm)
        try:
            check_panel_geometry(geom)
        except GeometryError as e:
            raise GeometryError(f"{self.path}: {e} (header or override)") from None
        return geom


def existing(path: str | Path) -> Path:
    path = Path(path)
    if not path.exists():
        raise FormatError(f"{path}: no such file")
    if path.is_dir():
        raise FormatError(f"{path}: is a folder, not a detector file (see expand_inputs)")
    return path


def stream(path: Path) -> Iterator[bytes]:
    """The file's decompressed bytes in pieces (compress.stream); corrupt data -> FormatError."""
    try:
        yield from compress.stream(path)
    except compress.CompressionError as exc:
        raise FormatError(f"{path}: {exc}") from exc


def read_all(path: Path) -> bytes:
    """The whole decompressed file; truncated or corrupt compressed data -> FormatError."""
    try:
        return compress.read_all(path)
    except compress.CompressionError as exc:
        raise FormatError(f"{path}: {exc}") from exc
    except compress.TooLarge as exc:
        raise compress.TooLarge(f"{path}: {exc}") from None


def checked_shape(path: Path | str, n_fast: int, n_slow: int) -> tuple[int, int]:
    """(n_fast, n_slow) if a real detector can write such a frame (physics/limits.py), before
    any pixel is decoded; GeometryError naming the file otherwise."""
    try:
        check_shape(int(n_fast), int(n_slow))
    except GeometryError as e:
        raise GeometryError(f"{path}: {e}") from None
    return int(n_fast), int(n_slow)


def to_image(path: Path | str, raw: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
    """Raw pixels -> float32 (slow, fast), or (module, slow, fast) for a stack of modules;
    wrong shape or non-finite values -> FormatError."""
    if raw.shape != tuple(shape):
        raise FormatError(f"{path}: frame has shape {raw.shape}, header says {shape} "
                          f"({'module, ' if len(shape) == 3 else ''}slow, fast)")
    checked_shape(path, shape[-1], shape[-2])
    if raw.dtype.kind not in "biuf":
        raise FormatError(f"{path}: pixels of type {raw.dtype} are not detector counts")
    img = np.array(raw, dtype=np.float32, order="C")  # always a fresh, writable copy
    if raw.dtype.kind == "f" and not np.isfinite(img).all():  # (integers are always finite)
        raise FormatError(f"{path}: frame holds NaN or infinite values")
    return img


def check_index(path: Path, index: int, n_frames: int) -> None:
    if not isinstance(index, (int, np.integer)) or isinstance(index, bool):
        raise FormatError(f"{path}: frame index must be an integer, got {index!r}")
    if not 0 <= index < n_frames:
        raise FormatError(
            f"{path}: frame index {index} out of range (the file holds {n_frames} frame"
            f"{'s' if n_frames != 1 else ''})"
        )


def positive(value: float | None) -> float | None:
    """None for missing, zero, negative or non-finite header values."""
    if value is None or not math.isfinite(value) or value <= 0:
        return None
    return float(value)


class Reader:
    """A detector file format: recognises its files, reads headers and pixels."""

    name: ClassVar[str] = ""
    suffixes: ClassVar[tuple[str, ...]] = ()

    @classmethod
    def understands(cls, path: Path) -> bool:
        """Cheap check (magic bytes / header after gzip/bzip2 decompression)."""
        raise NotImplementedError

    def info(self, path: str | Path) -> FrameInfo:
        """Geometry and shape from the headers, without decoding pixels."""
        raise NotImplementedError

    def read(self, path: str | Path, index: int = 0) -> Frame:
        raise NotImplementedError

    def n_frames(self, path: str | Path) -> int:
        return self.info(path).n_frames

    def open(self, path: str | Path) -> FrameSource:
        """The file, open: frames by index (formats with many frames keep their handle)."""
        return FrameSource(self, existing(path))

    def __repr__(self) -> str:
        return f"{type(self).__name__}()"


class FrameSource:
    """An open detector file handing out frames by index; use it as a context manager.

    The base class reads each frame with its reader (single-frame formats); readers of
    multi-frame files subclass it to open the file, scan its layout and read its mask once."""

    def __init__(self, reader: Reader, path: Path) -> None:
        self.reader, self.path = reader, path

    @property
    def n_frames(self) -> int:
        return self.reader.n_frames(self.path)

    def frame(self, index: int = 0) -> Frame:
        return self.reader.read(self.path, index)

    def close(self) -> None:
        pass

    def __enter__(self) -> FrameSource:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()


def geometry_overrides(wavelength_A: float | None = None, distance_mm: float | None = None,
                       pixel_size_mm: float | None = None,
                       beam_center_px: tuple[float, float] | None = None) -> dict[str, Any]:
    """The given geometry overrides, checked (the one check for read_frame, `xrp predict` and
    the HTTP form fields): lengths and wavelength positive and finite, a finite beam centre."""
    out: dict[str, Any] = {}
    for name, value, check in (("wavelength_A", wavelength_A, check_wavelength),
                               ("distance_mm", distance_mm, check_distance),
                               ("pixel_size_mm", pixel_size_mm, check_pixel_size)):
        if value is not None:
            try:
                check(value)
            except GeometryError as e:  # the value and the range real setups have
                raise GeometryError(f"{name}: {e}") from None
            out[name] = float(value)
    if beam_center_px is not None:
        centre = tuple(float(v) for v in beam_center_px)
        if len(centre) != 2 or not all(math.isfinite(v) for v in centre):
            raise GeometryError(f"the beam centre must be two finite numbers, got "
                                f"{beam_center_px}")
        out["beam_center_px"] = centre  # its range depends on the frame: Frame.geometry()
    return out


def detector_for(info: FrameInfo) -> DetectorPreset:
    """A known preset of DETECTORS when shape and pixel size match (e.g. PILATUS 6M 2463 x 2527
    at 0.172 mm), else a generic one-module preset named "from-header" (no gap layout: gaps are
    the negative pixels in the data), saturating at the header's count cut-off or 2**20."""
    if info.pixel_size_mm is None:
        raise GeometryMissing(f"{info.format} frame: pixel size unknown; pass pixel_size_mm")
    for det in DETECTORS.values():
        if (det.n_fast, det.n_slow) == (info.n_fast, info.n_slow) and math.isclose(
            det.pixel_mm, info.pixel_size_mm, rel_tol=1e-4
        ):
            return det
    return DetectorPreset(
        name="from-header",
        description=info.detector or f"{info.format} frame",
        n_fast=info.n_fast,
        n_slow=info.n_slow,
        pixel_mm=float(info.pixel_size_mm),
        module_fast=info.n_fast,
        module_slow=info.n_slow,
        gap_fast=0,
        gap_slow=0,
        max_counts=int(info.max_counts) if info.max_counts else DEFAULT_MAX_COUNTS,
    )
