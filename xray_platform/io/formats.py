"""Detector file readers: one small class per format, each saying whether it understands a file
(dxtbx style); a registry picks the reader. Readers return pixels plus geometry from the headers.

Conventions (design.md, io/cbf.py):
- Images are ``img[slow, fast]`` float32; masked, gap and bad pixels are negative (-1 where this
  module masks them; negative raw values stay negative). NaN/inf pixels are refused.
- Lengths in mm, wavelengths in Å, times in s. ``beam_center_px`` is (f0, s0) in pixels with pixel
  centres at integer indices. Headers that give the beam position from the first pixel's outer
  corner (PILATUS ``Beam_xy``, NXmx ``beam_center_x/y``, SMV ``BEAM_CENTER_X/Y``, all as dxtbx
  reads them) are converted with ``centre = corner - 0.5``.
- Files compressed with gzip or bzip2 are opened directly; the compression is recognised by its
  magic bytes, not by the file name.

Formats: CBF/miniCBF (via :mod:`xray_platform.io.cbf`), EIGER / NeXus NXmx HDF5 (master + data
files or data inline, bitshuffle-LZ4 through hdf5plugin), SMV/ADSC ``.img`` and NumPy ``.npy``
(geometry then has to come from the caller: :func:`read_frame` overrides).
"""

from __future__ import annotations

import bz2
import glob
import gzip
import io
import math
import re
import zlib
from collections.abc import Iterable, Iterator
from contextlib import ExitStack
from dataclasses import dataclass, replace
from functools import lru_cache
from pathlib import Path
from typing import Any, ClassVar

import h5py
import hdf5plugin  # noqa: F401  (registers the bitshuffle/LZ4 filters EIGER data needs)
import numpy as np
from fabio.cbfimage import CbfImage

from xray_platform.io import cbf as _cbf
from xray_platform.io.atomic import atomic_open
from xray_platform.io.cbf import CBFError, GeometryMissing, read_cbf
from xray_platform.physics.geometry import DETECTORS, DetectorPreset, Geometry

__all__ = [
    "READERS",
    "CBFReader",
    "DataFileMissing",
    "EigerHDF5Reader",
    "FormatError",
    "Frame",
    "FrameInfo",
    "GeometryMissing",
    "NpyReader",
    "Reader",
    "SMVReader",
    "detector_for",
    "expand_inputs",
    "read_frame",
    "read_info",
    "reader_for",
    "write_smv",
]

_GZIP = b"\x1f\x8b"
_BZIP2 = b"BZh"
_HDF5 = b"\x89HDF\r\n\x1a\n"
_NPY = b"\x93NUMPY"
_SNIFF = 4096  # decompressed bytes a reader looks at to recognise a file
_SNIFF_MAX = 1 << 17  # the most any reader looks at (a .npy header)
_GEOMETRY_FIELDS = ("wavelength_A", "distance_mm", "pixel_size_mm", "beam_center_px")
_DEFAULT_MAX_COUNTS = 2**20


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

    @property
    def missing_geometry(self) -> list[str]:
        """Names of the geometry fields the header did not give."""
        return [k for k in _GEOMETRY_FIELDS if getattr(self, k) is None]


@dataclass
class Frame:
    """One frame: float32 ``image[slow, fast]`` (negative = masked) and its header info."""

    image: np.ndarray
    info: FrameInfo
    path: str
    index: int  # frame index in the file

    def geometry(self) -> Geometry:
        """The frame's :class:`Geometry`; GeometryMissing names what the header lacks."""
        missing = self.info.missing_geometry
        if missing:
            raise GeometryMissing(
                f"{self.path}: the {self.info.format} header lacks {', '.join(missing)}; pass "
                f"them to read_frame(..., {'=..., '.join(missing)}=...)"
            )
        assert self.info.beam_center_px is not None  # for type checkers (checked above)
        return Geometry(
            detector=detector_for(self.info),
            distance_mm=float(self.info.distance_mm),  # type: ignore[arg-type]
            wavelength_A=float(self.info.wavelength_A),  # type: ignore[arg-type]
            beam_center_px=self.info.beam_center_px,
        )


# ---------------------------------------------------------------------------------------------
# helpers: files, compression, pixels
# ---------------------------------------------------------------------------------------------


def _existing(path: str | Path) -> Path:
    path = Path(path)
    if not path.exists():
        raise FormatError(f"{path}: no such file")
    if path.is_dir():
        raise FormatError(f"{path}: is a folder, not a detector file (see expand_inputs)")
    return path


def _decompressor(magic: bytes) -> Any:
    if magic[:2] == _GZIP:
        return zlib.decompressobj(16 + zlib.MAX_WBITS)
    if magic[:3] == _BZIP2:
        return bz2.BZ2Decompressor()
    return None


def _stream(path: Path, chunk: int = 1 << 16) -> Iterator[bytes]:
    """Yield the file's (decompressed) bytes in pieces; corrupt compressed data -> FormatError.

    A truncated compressed file yields what it holds and then stops (the caller decides whether
    that was enough)."""
    with open(path, "rb") as fh:
        first = fh.read(chunk)
        dec = _decompressor(first)
        if dec is None:
            while first:
                yield first
                first = fh.read(chunk)
            return
        data = first
        while data:
            try:
                out = dec.decompress(data)
            except (OSError, EOFError, ValueError, zlib.error) as exc:
                raise FormatError(f"{path}: corrupt compressed file ({exc})") from exc
            if out:
                yield out
            if dec.eof:
                return  # (trailing members/garbage are ignored here; _read_all reads them)
            data = fh.read(chunk)


@lru_cache(maxsize=64)
def _head_cached(path: str, mtime_ns: int, size: int) -> bytes:
    buf = bytearray()
    try:
        for piece in _stream(Path(path)):
            buf += piece
            if len(buf) >= _SNIFF_MAX:
                break
    except FormatError:
        pass  # a corrupt stream: sniff what we have
    return bytes(buf[:_SNIFF_MAX])


def _head(path: Path, n: int = _SNIFF) -> bytes:
    """The first n (<= 128 KiB) decompressed bytes of a file, cached per path, mtime and size so
    that the readers' sniffing decompresses a file's start once."""
    if n > _SNIFF_MAX:
        raise ValueError(f"_head reads at most {_SNIFF_MAX} bytes")
    try:
        st = path.stat()
    except OSError:
        return b""
    return _head_cached(str(path), st.st_mtime_ns, st.st_size)[:n]


def _read_all(path: Path) -> bytes:
    """The whole (decompressed) file; truncated or corrupt compressed data -> FormatError."""
    data = path.read_bytes()
    try:
        if data[:2] == _GZIP:
            return gzip.decompress(data)
        if data[:3] == _BZIP2:
            return bz2.decompress(data)
    except (OSError, EOFError, ValueError, zlib.error) as exc:
        raise FormatError(f"{path}: truncated or corrupt compressed file ({exc})") from exc
    return data


def _is_compressed(path: Path) -> bool:
    with open(path, "rb") as fh:
        return _decompressor(fh.read(3)) is not None


def _to_image(path: Path | str, raw: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """Raw pixels -> float32 (slow, fast); wrong shape or non-finite values -> FormatError."""
    if raw.shape != shape:
        raise FormatError(f"{path}: frame has shape {raw.shape}, header says {shape} (slow, fast)")
    img = np.array(raw, dtype=np.float32, order="C")  # always a fresh, writable copy
    if not np.isfinite(img).all():
        raise FormatError(f"{path}: frame holds NaN or infinite values")
    return img


def _check_index(path: Path, index: int, n_frames: int) -> None:
    if not isinstance(index, (int, np.integer)) or isinstance(index, bool):
        raise FormatError(f"{path}: frame index must be an integer, got {index!r}")
    if not 0 <= index < n_frames:
        raise FormatError(
            f"{path}: frame index {index} out of range (the file holds {n_frames} frame"
            f"{'s' if n_frames != 1 else ''})"
        )


def _positive(value: float | None) -> float | None:
    """None for missing, zero, negative or non-finite header values."""
    if value is None or not math.isfinite(value) or value <= 0:
        return None
    return float(value)


# ---------------------------------------------------------------------------------------------
# readers
# ---------------------------------------------------------------------------------------------


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

    def __repr__(self) -> str:
        return f"{type(self).__name__}()"


# --- CBF --------------------------------------------------------------------------------------


def _count_cutoff(raw: dict[str, str]) -> int | None:
    m = re.search(r"\d+", raw.get("Count_cutoff", ""))
    return int(m.group()) if m else None


def _cbf_info(path: Path, header: _cbf.FrameHeader) -> FrameInfo:
    return FrameInfo(
        wavelength_A=header.wavelength_A,
        distance_mm=header.distance_mm,
        pixel_size_mm=header.pixel_size_mm,
        beam_center_px=header.beam_center_px,
        n_fast=header.n_fast,
        n_slow=header.n_slow,
        detector=header.detector,
        format=CBFReader.name,
        n_frames=1,
        exposure_s=header.exposure_s,
        max_counts=_count_cutoff(header.raw),
    )


class CBFReader(Reader):
    """CBF: PILATUS/EIGER miniCBF and full imgCIF CBF (byte-offset), through io/cbf.py."""

    name = "cbf"
    suffixes = (".cbf",)

    @classmethod
    def understands(cls, path: Path) -> bool:
        head = _head(Path(path))
        return head.startswith(b"###CBF") or (
            head.lstrip().startswith(b"data_") and b"_array_data" in head
        )

    def n_frames(self, path: str | Path) -> int:
        _existing(path)
        return 1

    def _header_only(self, path: Path) -> FrameInfo | None:
        """Parse the header up to the binary section (no pixel decompression or decoding).

        Uses fabio's CIF parser and io/cbf.py's header helpers exactly as read_cbf does; returns
        None when anything is unexpected, so the caller falls back to read_cbf."""
        buf = bytearray()
        start = -1
        for piece in _stream(path):
            buf += piece
            marker = buf.find(_cbf._BINARY_MARKER)
            if marker >= 0:
                start = buf.find(_cbf._STARTER, marker)
                if start >= 0:
                    break
            if len(buf) > 1 << 22:  # no binary section within 4 MB of header
                return None
        if start < 0:
            return None
        try:
            img = CbfImage()
            img._readheader(io.BytesIO(bytes(buf[: start + len(_cbf._STARTER)])))
            header = img.header
            n_fast = int(header["X-Binary-Size-Fastest-Dimension"])
            n_slow = int(header["X-Binary-Size-Second-Dimension"])
            frame_header = _cbf.header_from_fabio(header, n_fast, n_slow)
        except Exception:  # fabio raises bare Exceptions; read_cbf then reports the problem
            return None
        return _cbf_info(path, frame_header)

    def info(self, path: str | Path) -> FrameInfo:
        path = _existing(path)
        try:
            info = self._header_only(path)
        except AttributeError:  # io/cbf.py internals changed: take the full read
            info = None
        return info if info is not None else self.read(path).info

    def read(self, path: str | Path, index: int = 0) -> Frame:
        path = _existing(path)
        _check_index(path, index, 1)
        try:
            raw, header = read_cbf(path)
        except CBFError as exc:
            raise FormatError(str(exc)) from exc
        except FileNotFoundError as exc:
            raise FormatError(f"{path}: no such file") from exc
        info = _cbf_info(path, header)
        return Frame(_to_image(path, raw, (info.n_slow, info.n_fast)), info, str(path), 0)


# --- EIGER / NeXus NXmx HDF5 ------------------------------------------------------------------

_LENGTH_MM = {"m": 1e3, "meter": 1e3, "metre": 1e3, "mm": 1.0, "millimeter": 1.0, "cm": 10.0,
              "um": 1e-3, "µm": 1e-3, "micron": 1e-3, "microns": 1e-3, "nm": 1e-6}
_WAVELENGTH_A = {"angstrom": 1.0, "angstroms": 1.0, "a": 1.0, "å": 1.0, "ang": 1.0, "nm": 10.0,
                 "m": 1e10, "pm": 1e-2}
_PIXEL_UNITS = {"pixel", "pixels", "px"}
_HC_EV_A = 12398.419843320026  # h c in eV Å
_DATA_KEY = re.compile(r"^data(?:_(\d+))?$")


def _h5_value(node: Any) -> Any:
    """A scalar dataset's value (bytes decoded; 1-element arrays unwrapped); None if absent."""
    if not isinstance(node, h5py.Dataset):
        return None
    try:
        value = node[()]
    except (OSError, ValueError, TypeError):
        return None
    if isinstance(value, np.ndarray):
        if value.size != 1:
            return None
        value = value.reshape(())[()]
    if isinstance(value, bytes):
        value = value.decode("utf-8", "replace")
    if isinstance(value, np.generic):
        # float32 -> the shortest decimal that round-trips it (0.9801122, not 0.98011219501...)
        value = float(str(value)) if value.dtype.kind == "f" else value.item()
    return value


def _h5_number(group: h5py.Group | None, name: str) -> tuple[float | None, str | None]:
    """(value, lower-cased units attribute or None) of a numeric scalar in group."""
    if group is None:
        return None, None
    node = group.get(name)
    value = _h5_value(node)
    if not isinstance(value, (int, float)) or isinstance(value, bool):
        return None, None
    units = node.attrs.get("units") if node is not None else None
    if isinstance(units, bytes):
        units = units.decode("utf-8", "replace")
    if isinstance(units, np.ndarray) and units.size == 1:
        units = units.ravel()[0]
        units = units.decode("utf-8", "replace") if isinstance(units, bytes) else str(units)
    return float(value), (str(units).strip().lower() or None) if units is not None else None


def _scaled(path: Path, what: str, value: float | None, units: str | None,
            table: dict[str, float], default: str) -> float | None:
    if value is None:
        return None
    unit = units or default
    if unit not in table:
        raise FormatError(f"{path}: {what} has units {units!r} this reader does not know")
    return _positive(round(value * table[unit], 9))


def _group(parent: h5py.Group | None, name: str) -> h5py.Group | None:
    if parent is None:
        return None
    try:
        node = parent.get(name)
    except (KeyError, OSError):
        return None
    return node if isinstance(node, h5py.Group) else None


def _nx_class(node: Any) -> str:
    value = node.attrs.get("NX_class", b"")
    return value.decode() if isinstance(value, bytes) else str(value)


def _child_of_class(parent: h5py.Group | None, name: str, nx_class: str) -> h5py.Group | None:
    """parent[name] if it is a group, else the first child group of NX class nx_class."""
    if parent is None:
        return None
    found = _group(parent, name)
    if found is not None:
        return found
    for key in parent:
        child = _group(parent, key)
        if child is not None and _nx_class(child) == nx_class:
            return child
    return None


@dataclass
class _Block:
    """One /entry/data dataset: inline, or an external link into a data file."""

    key: str
    file: Path | None  # the data file of an external link (None: in the master itself)
    h5path: str


class EigerHDF5Reader(Reader):
    """EIGER / NeXus NXmx HDF5: a master file with its data inline or in linked data files.

    Geometry from the NXmx/Dectris fields: beam/incident_wavelength (Å unless units say
    otherwise; detectorSpecific/photon_energy as a fallback), detector/distance or
    detector_distance (m), x_pixel_size/y_pixel_size (m), beam_center_x/y (pixels from the first
    pixel's outer corner, as dxtbx places the module origin at -beam_center * pixel size: centre
    convention = value - 0.5), description, count_time; pixel_mask (nonzero -> -1).
    Frames are numbered across /entry/data/data_000001, data_000002, ... in order.
    """

    name = "eiger-hdf5"
    suffixes = (".h5", ".nxs", ".hdf5", ".hdf", ".nx5")

    @classmethod
    def understands(cls, path: Path) -> bool:
        path = Path(path)
        head = _head(path, 8)
        if not head.startswith(_HDF5):
            return False
        try:
            with ExitStack() as stack:
                f = cls._open(path, stack)
                return cls._detector_group(f) is not None
        except FormatError:
            return True  # HDF5 magic but unreadable: ours to report as truncated/corrupt
        except Exception:
            return False

    # --- file access ------------------------------------------------------------------------
    @staticmethod
    def _open(path: Path, stack: ExitStack) -> h5py.File:
        try:
            if _is_compressed(path):
                return stack.enter_context(h5py.File(io.BytesIO(_read_all(path)), "r"))
            return stack.enter_context(h5py.File(path, "r"))
        except (OSError, ValueError) as exc:
            raise FormatError(f"{path}: truncated or corrupt HDF5 file ({exc})") from exc

    @staticmethod
    def _entry(f: h5py.File) -> h5py.Group | None:
        return _child_of_class(f, "entry", "NXentry")

    @classmethod
    def _detector_group(cls, f: h5py.File) -> h5py.Group | None:
        instrument = _child_of_class(cls._entry(f), "instrument", "NXinstrument")
        return _child_of_class(instrument, "detector", "NXdetector")

    @staticmethod
    def _blocks(path: Path, entry: h5py.Group) -> list[_Block]:
        data = _child_of_class(entry, "data", "NXdata")
        if data is None:
            raise FormatError(f"{path}: no /entry/data group (no pixels in this file)")
        numbered = [(k, m) for k in data if (m := _DATA_KEY.match(k)) and m.group(1)]
        if numbered:
            keys = [k for k, m in sorted(numbered, key=lambda km: int(km[1].group(1)))]
        elif "data" in data:
            keys = ["data"]
        else:
            raise FormatError(f"{path}: /entry/data holds no data or data_NNNNNN datasets")
        blocks = []
        for key in keys:
            link = data.get(key, getlink=True)
            if isinstance(link, h5py.ExternalLink):
                target = Path(link.filename)
                if not target.is_absolute():
                    target = path.parent / target  # relative to the master, not the CWD
                blocks.append(_Block(key, target, link.path))
            else:
                blocks.append(_Block(key, None, f"{data.name}/{key}"))
        return blocks


    def _dataset(self, path: Path, f: h5py.File, block: _Block,
                 stack: ExitStack) -> h5py.Dataset:
        """The block's dataset, opening its data file; DataFileMissing if that file is absent."""
        if block.file is None:
            ds = f.get(block.h5path)
            where = path
        else:
            if not block.file.exists():
                raise DataFileMissing(
                    f"{path}: data file {block.file.name} is missing (/entry/data/{block.key} "
                    f"links to {block.file}); copy it next to the master file")
            try:
                df = stack.enter_context(h5py.File(block.file, "r"))
            except OSError as exc:
                raise FormatError(
                    f"{block.file}: truncated or corrupt HDF5 data file of {path.name} ({exc})"
                ) from exc
            ds = df.get(block.h5path)
            where = block.file
        if not isinstance(ds, h5py.Dataset):
            raise FormatError(f"{where}: no dataset {block.h5path} (linked from {path.name})")
        if ds.ndim not in (2, 3):
            raise FormatError(f"{where}: {block.h5path} has shape {ds.shape}, not 2-D or 3-D")
        if ds.is_virtual:  # NXmx VDS: HDF5 would return fill values for absent source files
            for src in ds.virtual_sources():
                if src.file_name != "." and not (path.parent / src.file_name).exists() \
                        and not Path(src.file_name).exists():
                    raise DataFileMissing(f"{path}: data file {src.file_name} is missing "
                                          f"(source of the virtual dataset {block.h5path})")
        return ds

    # --- headers ------------------------------------------------------------------------------
    def _geometry(self, path: Path, f: h5py.File) -> dict[str, Any]:
        entry = self._entry(f)
        det = self._detector_group(f)
        if entry is None or det is None:
            raise FormatError(f"{path}: not an NXmx/EIGER master file (no /entry/instrument/"
                              "detector)")
        instrument = _child_of_class(entry, "instrument", "NXinstrument")
        spec = _group(det, "detectorSpecific")
        beam = _child_of_class(instrument, "beam", "NXbeam")
        if beam is None:  # NXmx proper keeps the beam in the sample
            beam = _child_of_class(_child_of_class(entry, "sample", "NXsample"), "beam", "NXbeam")

        wl = _scaled(path, "incident_wavelength", *_h5_number(beam, "incident_wavelength"),
                     _WAVELENGTH_A, "angstrom")
        if wl is None:  # Dectris files always carry the photon energy (eV)
            energy, _ = _h5_number(spec, "photon_energy")
            wl = _positive(round(_HC_EV_A / energy, 9)) if energy else None
        dist_value, dist_units = _h5_number(det, "distance")
        if dist_value is None:
            dist_value, dist_units = _h5_number(det, "detector_distance")
        distance = _scaled(path, "detector distance", dist_value, dist_units, _LENGTH_MM, "m")
        px = _scaled(path, "x_pixel_size", *_h5_number(det, "x_pixel_size"), _LENGTH_MM, "m")
        py = _scaled(path, "y_pixel_size", *_h5_number(det, "y_pixel_size"), _LENGTH_MM, "m")
        pixel = px if px is not None and (py is None or math.isclose(px, py, rel_tol=1e-6)) \
            else None  # square pixels only, as io/cbf.py

        centre: list[float] = []
        for axis in ("beam_center_x", "beam_center_y"):
            value, units = _h5_number(det, axis)
            if value is None:
                break
            if units is not None and units not in _PIXEL_UNITS:
                mm = _scaled(path, axis, value, units, _LENGTH_MM, "m")
                if mm is None or pixel is None:
                    break
                value = mm / pixel
            centre.append(value - 0.5)  # first pixel's corner -> pixel-centre convention
        beam_center = (centre[0], centre[1]) if len(centre) == 2 else None

        description = _h5_value(det.get("description"))
        if not isinstance(description, str) or not description.strip():
            number = _h5_value(det.get("detector_number"))
            description = f"NXdetector {number}" if number else None
        exposure, _ = _h5_number(det, "count_time")
        cutoff, _ = _h5_number(det, "saturation_value")
        if cutoff is None:
            cutoff, _ = _h5_number(spec, "countrate_correction_count_cutoff")
        bits, _ = _h5_number(det, "bit_depth_image")
        nimages, _ = _h5_number(spec, "nimages")
        ntrigger, _ = _h5_number(spec, "ntrigger")
        shape = (_h5_number(spec, "y_pixels_in_detector")[0],
                 _h5_number(spec, "x_pixels_in_detector")[0])
        return {
            "wavelength_A": wl,
            "distance_mm": distance,
            "pixel_size_mm": pixel,
            "beam_center_px": beam_center,
            "detector": description.strip() if isinstance(description, str) else None,
            "exposure_s": _positive(exposure),
            "max_counts": int(cutoff) if cutoff and cutoff > 0 else None,
            "bit_depth": int(bits) if bits else None,
            "n_expected": int(nimages * (ntrigger or 1)) if nimages else None,
            "shape": tuple(int(v) for v in shape) if None not in shape else None,
        }

    def _pixel_mask(self, det: h5py.Group) -> np.ndarray | None:
        for node in (det.get("pixel_mask"), det.get("detectorSpecific/pixel_mask")):
            if isinstance(node, h5py.Dataset) and node.ndim == 2:
                return node[()]
        return None

    def _scan(self, path: Path, f: h5py.File, stack: ExitStack
              ) -> tuple[dict[str, Any], list[tuple[h5py.Dataset | DataFileMissing, int]]]:
        """Geometry, and per data block its dataset (or the DataFileMissing) and frame count."""
        geo = self._geometry(path, f)
        entry = self._entry(f)
        assert entry is not None
        blocks: list[tuple[h5py.Dataset | DataFileMissing, int]] = []
        for block in self._blocks(path, entry):
            try:
                ds = self._dataset(path, f, block, stack)
            except DataFileMissing as exc:
                blocks.append((exc, 0))
                continue
            blocks.append((ds, 1 if ds.ndim == 2 else ds.shape[0]))
        return geo, blocks

    def _info(self, path: Path, geo: dict[str, Any],
              blocks: list[tuple[h5py.Dataset | DataFileMissing, int]]) -> FrameInfo:
        present = [ds for ds, _ in blocks if isinstance(ds, h5py.Dataset)]
        if present:
            n_slow, n_fast = present[0].shape[-2:]
        elif geo["shape"] is not None:
            n_slow, n_fast = geo["shape"]
        else:
            raise FormatError(f"{path}: image size unknown (no data file and no "
                              "detectorSpecific/x_pixels_in_detector)")
        if len(present) == len(blocks):
            n_frames = sum(n for _, n in blocks)
        else:  # data files missing: the header's count, else what can be seen
            n_frames = geo["n_expected"] or sum(n for _, n in blocks)
        return FrameInfo(
            wavelength_A=geo["wavelength_A"],
            distance_mm=geo["distance_mm"],
            pixel_size_mm=geo["pixel_size_mm"],
            beam_center_px=geo["beam_center_px"],
            n_fast=int(n_fast),
            n_slow=int(n_slow),
            detector=geo["detector"],
            format=self.name,
            n_frames=int(n_frames),
            exposure_s=geo["exposure_s"],
            max_counts=geo["max_counts"],
        )

    def info(self, path: str | Path) -> FrameInfo:
        path = _existing(path)
        with ExitStack() as stack:
            f = self._open(path, stack)
            geo, blocks = self._scan(path, f, stack)
            return self._info(path, geo, blocks)

    def read(self, path: str | Path, index: int = 0) -> Frame:
        path = _existing(path)
        with ExitStack() as stack:
            f = self._open(path, stack)
            geo, blocks = self._scan(path, f, stack)
            info = self._info(path, geo, blocks)
            if all(isinstance(ds, h5py.Dataset) for ds, _ in blocks):
                _check_index(path, index, info.n_frames)
            else:  # the count may be unknown: a missing data file is the error to report
                _check_index(path, index, max(info.n_frames, index + 1))
            first = index
            for ds, n in blocks:
                if isinstance(ds, DataFileMissing):  # the frame is in or after an absent file
                    raise ds
                if first < n:
                    where = Path(ds.file.filename)  # the data file (or an in-memory master)
                    where = where if where.is_file() else path
                    try:
                        raw = ds[()] if ds.ndim == 2 else ds[first]
                    except (OSError, ValueError) as exc:
                        raise FormatError(f"{where}: cannot decode frame {index} from "
                                          f"{ds.name} ({exc})") from exc
                    break
                first -= n
            else:  # the header promises more frames than the data files hold
                _check_index(path, index, sum(n for _, n in blocks))
            det = self._detector_group(f)
            mask = self._pixel_mask(det) if det is not None else None

        image = _to_image(where, raw, (info.n_slow, info.n_fast))
        if raw.dtype.kind == "u":  # EIGER marks masked/defective pixels with the top value
            bad = raw == np.iinfo(raw.dtype).max
            bits = geo["bit_depth"]
            if bits and bits < raw.dtype.itemsize * 8:
                bad |= raw == 2**bits - 1
            image[bad] = -1
        if mask is not None and mask.shape == image.shape:  # (ROI-mode data: mask not applied)
            image[mask != 0] = -1
        return Frame(image, info, str(path), int(index))


# --- SMV / ADSC -------------------------------------------------------------------------------

_SMV_TYPES = {
    "unsigned_short": "u2",
    "signed_short": "i2",
    "short": "i2",
    "unsigned_int": "u4",
    "unsigned_long": "u4",
    "signed_int": "i4",
    "int": "i4",
    "long": "i4",
}
_SMV_START = re.compile(rb"^\{\s*HEADER_BYTES\s*=\s*(\d+)\s*;")


def _smv_float(header: dict[str, str], key: str) -> float | None:
    try:
        return float(header[key].split()[0])
    except (KeyError, ValueError, IndexError):
        return None


class SMVReader(Reader):
    """SMV / ADSC ``.img``: a ``{ KEY=value; ... }`` text header of HEADER_BYTES, then raw pixels.

    SIZE1 is the fast dimension, SIZE2 the slow one. Beam centre (dxtbx FormatSMVADSC, Mosflm
    frame): BEAM_CENTER_X and BEAM_CENTER_Y are in mm from the first pixel's outer corner, with
    BEAM_CENTER_X along SLOW and BEAM_CENTER_Y along FAST, so in pixel-centre convention
    f0 = BEAM_CENTER_Y / PIXEL_SIZE - 0.5 and s0 = BEAM_CENTER_X / PIXEL_SIZE - 0.5.
    """

    name = "smv"
    suffixes = (".img", ".smv")

    @classmethod
    def understands(cls, path: Path) -> bool:
        return _SMV_START.match(_head(Path(path), 128)) is not None

    def n_frames(self, path: str | Path) -> int:
        _existing(path)
        return 1

    @staticmethod
    def _parse(path: Path, buf: bytes) -> tuple[dict[str, str], int]:
        m = _SMV_START.match(buf)
        if m is None:
            raise FormatError(f"{path}: not an SMV file (no '{{ HEADER_BYTES=' header)")
        header_bytes = int(m.group(1))
        text = buf[:header_bytes]
        end = text.find(b"}")
        if header_bytes < m.end() or len(buf) < header_bytes or end < 0:
            raise FormatError(f"{path}: truncated or corrupt SMV header "
                              f"(HEADER_BYTES={header_bytes}, {len(buf)} bytes read)")
        body = text[1:end].decode("latin-1")
        header = {k.strip().upper(): v.strip() for k, v in re.findall(r"([^=;{}\s]+)\s*=([^;]*);",
                                                                      body)}
        return header, header_bytes

    def _layout(self, path: Path, header: dict[str, str]) -> tuple[np.dtype, int, int]:
        try:
            n_fast, n_slow = int(header["SIZE1"]), int(header["SIZE2"])
        except (KeyError, ValueError) as exc:
            raise FormatError(f"{path}: SMV header lacks a valid SIZE1/SIZE2") from exc
        if n_fast <= 0 or n_slow <= 0 or header.get("DIM", "2") != "2":
            raise FormatError(f"{path}: unsupported SMV image DIM={header.get('DIM')} "
                              f"SIZE1={n_fast} SIZE2={n_slow}")
        kind = _SMV_TYPES.get(header.get("TYPE", "unsigned_short").lower())
        if kind is None:
            raise FormatError(f"{path}: unsupported SMV pixel TYPE={header.get('TYPE')!r}")
        order = header.get("BYTE_ORDER", "little_endian").lower()
        if order not in ("little_endian", "big_endian"):
            raise FormatError(f"{path}: unknown SMV BYTE_ORDER={order!r}")
        return np.dtype(("<" if order == "little_endian" else ">") + kind), n_fast, n_slow

    def _info(self, path: Path, header: dict[str, str]) -> FrameInfo:
        dtype, n_fast, n_slow = self._layout(path, header)
        pixel = _positive(_smv_float(header, "PIXEL_SIZE"))
        bx, by = _smv_float(header, "BEAM_CENTER_X"), _smv_float(header, "BEAM_CENTER_Y")
        centre = None
        if pixel is not None and bx is not None and by is not None:
            centre = (by / pixel - 0.5, bx / pixel - 0.5)  # see the class docstring
        saturated = _smv_float(header, "SATURATED_VALUE")
        sn = header.get("DETECTOR_SN")
        detector = header.get("DETECTOR") or (f"SMV detector S/N {sn}" if sn else None)
        return FrameInfo(
            wavelength_A=_positive(_smv_float(header, "WAVELENGTH")),
            distance_mm=_positive(_smv_float(header, "DISTANCE")),
            pixel_size_mm=pixel,
            beam_center_px=centre,
            n_fast=n_fast,
            n_slow=n_slow,
            detector=detector,
            format=self.name,
            n_frames=1,
            exposure_s=_smv_float(header, "TIME"),
            max_counts=int(saturated) if saturated and saturated > 0
            else int(np.iinfo(dtype).max),  # a 16-bit CCD counter saturates at 65535
        )

    def info(self, path: str | Path) -> FrameInfo:
        path = _existing(path)
        buf = bytearray()
        for piece in _stream(path):
            buf += piece
            m = _SMV_START.match(bytes(buf[:128]))
            if m is not None and len(buf) >= int(m.group(1)) or len(buf) > 1 << 20:
                break
        header, _ = self._parse(path, bytes(buf))
        return self._info(path, header)

    def read(self, path: str | Path, index: int = 0) -> Frame:
        path = _existing(path)
        _check_index(path, index, 1)
        buf = _read_all(path)
        header, offset = self._parse(path, buf)
        info = self._info(path, header)
        dtype, n_fast, n_slow = self._layout(path, header)
        need = n_fast * n_slow * dtype.itemsize
        if len(buf) - offset < need:
            raise FormatError(f"{path}: truncated SMV file (pixel data has {len(buf) - offset} "
                              f"of {need} bytes)")
        raw = np.frombuffer(buf, dtype=dtype, count=n_fast * n_slow, offset=offset)
        return Frame(_to_image(path, raw.reshape(n_slow, n_fast), (n_slow, n_fast)), info,
                     str(path), 0)


def write_smv(
    path: str | Path,
    image: np.ndarray,
    *,
    wavelength_A: float,
    distance_mm: float,
    pixel_size_mm: float,
    beam_center_px: tuple[float, float],
    exposure_s: float = 0.1,
    byte_order: str = "little_endian",
    detector: str = "xrp simulated",
) -> None:
    """Write ``image[slow, fast]`` (integer counts 0..65535) as an ADSC-style SMV file, atomically.

    The beam centre is written in the FormatSMVADSC convention (see :class:`SMVReader`). A path
    ending in .gz or .bz2 is compressed accordingly.
    """
    path = Path(path)
    img = np.asarray(image)
    if img.ndim != 2 or img.size == 0:
        raise ValueError(f"image must be a non-empty 2-D array, got shape {img.shape}")
    if not (np.issubdtype(img.dtype, np.integer) or img.dtype == np.bool_):
        raise ValueError(f"image must have an integer dtype (round counts first), got {img.dtype}")
    if img.min() < 0 or img.max() > 65535:
        raise ValueError("SMV stores unsigned 16-bit counts: clip the image to 0..65535 first "
                         "(gap pixels cannot be negative in SMV)")
    for name, value in (("wavelength_A", wavelength_A), ("distance_mm", distance_mm),
                        ("pixel_size_mm", pixel_size_mm)):
        if not (math.isfinite(value) and value > 0):
            raise ValueError(f"{name} must be positive and finite, got {value}")
    if len(beam_center_px) != 2 or not all(math.isfinite(v) for v in beam_center_px):
        raise ValueError(f"beam_center_px must be two finite numbers, got {beam_center_px}")
    if byte_order not in ("little_endian", "big_endian"):
        raise ValueError(f"byte_order must be little_endian or big_endian, got {byte_order!r}")
    if re.search(r"[;{}=\n\r]", detector):
        raise ValueError(f"detector text may not contain ; {{ }} = or newlines: {detector!r}")

    n_slow, n_fast = img.shape
    f0, s0 = (float(v) for v in beam_center_px)
    items = {
        "DIM": "2",
        "BYTE_ORDER": byte_order,
        "TYPE": "unsigned_short",
        "SIZE1": str(n_fast),
        "SIZE2": str(n_slow),
        "PIXEL_SIZE": f"{pixel_size_mm:.9g}",
        "BIN": "none",
        "TIME": f"{exposure_s:.6g}",
        "DISTANCE": f"{distance_mm:.9g}",
        "WAVELENGTH": f"{wavelength_A:.9g}",
        "BEAM_CENTER_X": f"{(s0 + 0.5) * pixel_size_mm:.9g}",  # along slow (ADSC/Mosflm)
        "BEAM_CENTER_Y": f"{(f0 + 0.5) * pixel_size_mm:.9g}",  # along fast
        "OSC_START": "0",
        "OSC_RANGE": "0",
        "PHI": "0",
        "TWOTHETA": "0",
        "SATURATED_VALUE": "65535",
        "DETECTOR": detector,
    }
    body = "".join(f"{k}={v};\n" for k, v in items.items()) + "}\n"
    header_bytes = 512
    while len(f"{{\nHEADER_BYTES={header_bytes:5d};\n{body}") > header_bytes:
        header_bytes += 512
    text = f"{{\nHEADER_BYTES={header_bytes:5d};\n{body}".encode("ascii")
    dtype = np.dtype("<u2" if byte_order == "little_endian" else ">u2")
    data = text.ljust(header_bytes, b" ") + img.astype(dtype).tobytes()
    suffix = path.suffix.lower()
    if suffix == ".gz":
        data = gzip.compress(data, mtime=0)
    elif suffix == ".bz2":
        data = bz2.compress(data)
    with atomic_open(path, "wb") as fh:
        fh.write(data)


# --- NumPy ------------------------------------------------------------------------------------


class NpyReader(Reader):
    """NumPy ``.npy``: a 2-D frame (slow, fast) or a 3-D stack (frame, slow, fast), numeric only.

    Loaded with ``allow_pickle=False`` always (object arrays are refused, never unpickled). The
    file holds no geometry: pass it to :func:`read_frame`.
    """

    name = "npy"
    suffixes = (".npy",)

    @classmethod
    def understands(cls, path: Path) -> bool:
        return _head(Path(path), 8).startswith(_NPY)

    def _header(self, path: Path) -> tuple[tuple[int, ...], np.dtype]:
        head = _head(path, _SNIFF_MAX)  # numpy refuses headers over 10 kB by default
        fh = io.BytesIO(head)
        try:
            major, minor = np.lib.format.read_magic(fh)
            if (major, minor) == (1, 0):
                shape, _, dtype = np.lib.format.read_array_header_1_0(fh)
            elif (major, minor) == (2, 0):
                shape, _, dtype = np.lib.format.read_array_header_2_0(fh)
            else:  # 3.0 exists only for structured dtypes with non-ASCII names
                raise FormatError(f"{path}: unsupported .npy version {major}.{minor}")
        except (ValueError, SyntaxError, EOFError) as exc:
            raise FormatError(f"{path}: truncated or corrupt .npy header ({exc})") from exc
        self._check(path, shape, dtype)
        return shape, dtype

    @staticmethod
    def _check(path: Path, shape: tuple[int, ...], dtype: np.dtype) -> None:
        if dtype.hasobject:
            raise FormatError(f"{path}: .npy holds Python objects; pickled objects are not "
                              "accepted (save a numeric array)")
        if dtype.kind not in "iuf" or dtype.fields is not None:
            raise FormatError(f"{path}: .npy dtype {dtype} is not a numeric image type")
        if len(shape) not in (2, 3) or 0 in shape:
            raise FormatError(f"{path}: .npy array has shape {shape}; expected (slow, fast) or "
                              "(frames, slow, fast)")

    def info(self, path: str | Path) -> FrameInfo:
        path = _existing(path)
        shape, _ = self._header(path)
        return FrameInfo(
            wavelength_A=None, distance_mm=None, pixel_size_mm=None, beam_center_px=None,
            n_fast=int(shape[-1]), n_slow=int(shape[-2]), detector=None, format=self.name,
            n_frames=int(shape[0]) if len(shape) == 3 else 1,
        )

    def read(self, path: str | Path, index: int = 0) -> Frame:
        path = _existing(path)
        info = self.info(path)  # refuses object arrays from the header alone
        _check_index(path, index, info.n_frames)
        try:
            if _is_compressed(path):
                arr = np.load(io.BytesIO(_read_all(path)), allow_pickle=False)
            else:
                arr = np.load(path, mmap_mode="r", allow_pickle=False)
        except FormatError:
            raise
        except (ValueError, OSError, EOFError) as exc:
            if "allow_pickle" in str(exc):
                raise FormatError(f"{path}: pickled objects are not accepted") from exc
            raise FormatError(f"{path}: truncated or corrupt .npy file ({exc})") from exc
        self._check(path, arr.shape, arr.dtype)
        raw = np.array(arr[index] if arr.ndim == 3 else arr)
        return Frame(_to_image(path, raw, (info.n_slow, info.n_fast)), info, str(path), int(index))


# ---------------------------------------------------------------------------------------------
# registry
# ---------------------------------------------------------------------------------------------

READERS: list[type[Reader]] = [CBFReader, EigerHDF5Reader, SMVReader, NpyReader]


def _known() -> str:
    return ", ".join(r.name for r in READERS)


def _understood_by(path: Path) -> type[Reader] | None:
    for cls in READERS:
        try:
            if cls.understands(path):
                return cls
        except OSError:
            return None
    return None


def reader_for(path: str | Path) -> Reader:
    """The reader that understands ``path``; FormatError when none does or it is missing."""
    path = _existing(path)
    cls = _understood_by(path)
    if cls is None:
        hint = ""
        if _head(path, 8).startswith(_HDF5):
            hint = " (an HDF5 file without /entry/instrument/detector: an EIGER data file? " \
                   "open its master file)"
        raise FormatError(f"{path}: not a detector file xrp can read (known: {_known()}){hint}")
    return cls()


def read_info(path: str | Path) -> FrameInfo:
    """Header geometry and shape of a detector file, without decoding pixels."""
    return reader_for(path).info(path)


def read_frame(
    path: str | Path,
    index: int = 0,
    *,
    wavelength_A: float | None = None,
    distance_mm: float | None = None,
    pixel_size_mm: float | None = None,
    beam_center_px: tuple[float, float] | None = None,
) -> Frame:
    """Read frame ``index`` of any known detector file; the geometry overrides win over the
    header (for files with missing or wrong headers)."""
    overrides: dict[str, Any] = {}
    for name, value in (("wavelength_A", wavelength_A), ("distance_mm", distance_mm),
                        ("pixel_size_mm", pixel_size_mm)):
        if value is not None:
            if not (math.isfinite(value) and value > 0):
                raise ValueError(f"{name} must be positive and finite, got {value}")
            overrides[name] = float(value)
    if beam_center_px is not None:
        centre = tuple(float(v) for v in beam_center_px)
        if len(centre) != 2 or not all(math.isfinite(v) for v in centre):
            raise ValueError(f"beam_center_px must be two finite numbers, got {beam_center_px}")
        overrides["beam_center_px"] = centre
    frame = reader_for(path).read(path, index)
    if overrides:
        frame.info = replace(frame.info, **overrides)
    return frame


def _has_magic(pattern: str) -> bool:
    return any(c in pattern for c in "*?[")


def _folder_files(folder: Path) -> list[Path]:
    """Files under folder (recursively, sorted, hidden ones skipped) that a reader understands."""
    out = []
    for p in sorted(folder.rglob("*")):
        rel = p.relative_to(folder).parts
        if p.is_file() and not any(part.startswith(".") for part in rel) and _understood_by(p):
            out.append(p)
    return out


def expand_inputs(paths: Iterable[str | Path]) -> list[tuple[Path, int]]:
    """Files, folders (recursively: only files some reader understands, sorted) and glob
    patterns -> [(file, frame index)], one entry per frame of multi-frame files.

    Explicitly named files must be readable detector files; a path or pattern that matches
    nothing raises FormatError. A file met twice is listed once.
    """
    if isinstance(paths, (str, Path)):
        paths = [paths]
    files: list[Path] = []
    for item in paths:
        p = Path(item)
        if p.is_dir():
            found = _folder_files(p)
            if not found:
                raise FormatError(f"{p}: folder holds no detector files xrp can read "
                                  f"(known: {_known()})")
        elif p.exists():
            reader_for(p)  # raises a clear FormatError for an unknown format
            found = [p]
        elif _has_magic(str(item)):
            matches = sorted(Path(m) for m in glob.glob(str(item), recursive=True))
            if not matches:
                raise FormatError(f"{item}: pattern matches no files")
            found = []
            for m in matches:
                found.extend(_folder_files(m) if m.is_dir() else [m] if _understood_by(m)
                             else [])
            if not found:
                raise FormatError(f"{item}: pattern matches {len(matches)} path(s) but no "
                                  f"detector file xrp can read (known: {_known()})")
        else:
            raise FormatError(f"{item}: no such file or folder")
        files.extend(found)

    seen: set[Path] = set()
    out: list[tuple[Path, int]] = []
    for f in files:
        key = f.resolve()
        if key in seen:
            continue
        seen.add(key)
        n = reader_for(f).n_frames(f)
        out.extend((f, i) for i in range(n))
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
        max_counts=int(info.max_counts) if info.max_counts else _DEFAULT_MAX_COUNTS,
    )
