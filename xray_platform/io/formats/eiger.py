"""EIGER / NeXus NXmx HDF5: master files with their data inline or in linked data files."""

from __future__ import annotations

import io
import math
import re
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import h5py
import numpy as np

from xray_platform.io.formats import nxmx_modules
from xray_platform.io.formats.base import (
    HDF5_MAGIC,
    LENGTH_MM,
    DataFileMissing,
    FormatError,
    Frame,
    FrameInfo,
    FrameSource,
    Reader,
    check_index,
    checked_shape,
    existing,
    is_compressed,
    panel_info,
    positive,
    read_all,
    sniff,
    to_image,
)
from xray_platform.io.optional import hdf5plugin
from xray_platform.physics.geometry import HC_KEV_A
from xray_platform.physics.limits import MAX_FRAME_PIXELS, GeometryError

_WAVELENGTH_A = {"angstrom": 1.0, "angstroms": 1.0, "a": 1.0, "å": 1.0, "ang": 1.0, "nm": 10.0,
                 "m": 1e10, "pm": 1e-2}
_PIXEL_UNITS = {"pixel", "pixels", "px"}
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


def _count(value: float | None) -> int | None:
    """A header count (frames, pixels, bits, counts) as an int; None if missing or absurd."""
    if value is None or not math.isfinite(value) or not 0 < value < 2**40:
        return None
    return int(value)


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
    return positive(round(value * table[unit], 9))


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


@contextmanager
def _corrupt_is_format_error(path: Path) -> Iterator[None]:
    """HDF5 structures broken inside the file (h5py raises RuntimeError, KeyError, OSError,
    TypeError for them) -> FormatError naming the file."""
    try:
        yield
    except (RuntimeError, KeyError, OSError, TypeError) as exc:
        raise FormatError(f"{path}: truncated or corrupt HDF5 file ({exc})") from exc


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
        head = sniff(path, 8)
        if not head.startswith(HDF5_MAGIC):
            return False
        if is_compressed(path):  # the only HDF5 reader: claim it without decompressing it all
            return True
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
            if is_compressed(path):
                return stack.enter_context(h5py.File(io.BytesIO(read_all(path)), "r"))
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
                 stack: ExitStack, image_ndim: int = 2) -> h5py.Dataset:
        """The block's dataset, opening its data file; DataFileMissing if that file is absent."""
        if block.file is None:
            ds = f.get(block.h5path)
            where = path
        else:
            if not block.file.exists():
                raise DataFileMissing(
                    f"{path}: data file {block.file.name} is missing (/entry/data/{block.key} "
                    f"links to {block.file.name} next to the master file)")
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
        if ds.ndim not in (image_ndim, image_ndim + 1):
            raise FormatError(f"{where}: {block.h5path} has shape {ds.shape}, not "
                              f"{image_ndim}-D or {image_ndim + 1}-D")
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
            wl = positive(round(1e3 * HC_KEV_A / energy, 9)) if energy else None
        dist_value, dist_units = _h5_number(det, "distance")
        if dist_value is None:
            dist_value, dist_units = _h5_number(det, "detector_distance")
        distance = _scaled(path, "detector distance", dist_value, dist_units, LENGTH_MM, "m")
        px = _scaled(path, "x_pixel_size", *_h5_number(det, "x_pixel_size"), LENGTH_MM, "m")
        py = _scaled(path, "y_pixel_size", *_h5_number(det, "y_pixel_size"), LENGTH_MM, "m")
        pixel = px if px is not None and (py is None or math.isclose(px, py, rel_tol=1e-6)) \
            else None  # square pixels only, as io/cbf.py

        centre: list[float] = []
        for axis in ("beam_center_x", "beam_center_y"):
            value, units = _h5_number(det, axis)
            if value is None:
                break
            if units is not None and units not in _PIXEL_UNITS:
                mm = _scaled(path, axis, value, units, LENGTH_MM, "m")
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
            "exposure_s": positive(exposure),
            "max_counts": _count(cutoff),
            "bit_depth": _count(bits),
            "n_expected": _count(nimages * (_count(ntrigger) or 1)) if _count(nimages) else None,
            "shape": (tuple(_count(v) for v in shape)
                      if None not in (_count(v) for v in shape) else None),
        }

    def _pixel_mask(self, det: h5py.Group) -> np.ndarray | None:
        for node in (det.get("pixel_mask"), det.get("detectorSpecific/pixel_mask")):
            if isinstance(node, h5py.Dataset) and node.ndim == 2:
                return node[()]
        return None

    def _scan(self, path: Path, f: h5py.File, stack: ExitStack, image_ndim: int = 2
              ) -> tuple[dict[str, Any], list[tuple[h5py.Dataset | DataFileMissing, int]]]:
        """Geometry, and per data block its dataset (or the DataFileMissing) and frame count
        (``image_ndim`` 3: each frame is a stack of module images)."""
        geo = self._geometry(path, f)
        entry = self._entry(f)
        assert entry is not None
        blocks: list[tuple[h5py.Dataset | DataFileMissing, int]] = []
        for block in self._blocks(path, entry):
            try:
                ds = self._dataset(path, f, block, stack, image_ndim)
            except DataFileMissing as exc:
                blocks.append((exc, 0))
                continue
            blocks.append((ds, 1 if ds.ndim == image_ndim else ds.shape[0]))
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
        n_fast, n_slow = checked_shape(path, n_fast, n_slow)
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
        path = existing(path)
        with ExitStack() as stack, _corrupt_is_format_error(path):
            f = self._open(path, stack)
            det = self._detector_group(f)
            if det is not None and nxmx_modules.modules(f, det):  # panels: as a source says
                with self.open(path) as src:
                    return src.info
            geo, blocks = self._scan(path, f, stack)
            return self._info(path, geo, blocks)

    def read(self, path: str | Path, index: int = 0) -> Frame:
        with self.open(path) as src:
            return src.frame(index)

    def open(self, path: str | Path) -> _EigerSource:
        return _EigerSource(self, existing(path))


class _EigerSource(FrameSource):
    """A master file held open: layout, geometry and pixel mask read once, frames on demand."""

    def __init__(self, reader: EigerHDF5Reader, path: Path) -> None:
        super().__init__(reader, path)
        hdf5plugin()  # the bitshuffle/LZ4 filter of EIGER pixel data (and masks)
        self._stack = ExitStack()
        try:
            with _corrupt_is_format_error(path):
                f = reader._open(path, self._stack)
                det = reader._detector_group(f)
                self.modules = nxmx_modules.modules(f, det) if det is not None else None
                self.planes = None  # module images per frame (data_origin [module, slow, fast])
                stacked = bool(self.modules) and len(self.modules[0][0]) == 3
                self.geo, self.blocks = reader._scan(path, f, self._stack, 3 if stacked else 2)
                self.info = reader._info(path, self.geo, self.blocks)
                self.mask = reader._pixel_mask(det) if det is not None else None
                self.image_info = self.info
                if stacked:
                    self.planes = self._stack_planes(path)
                if self.modules:
                    self.info = self._module_info(path)
        except BaseException:
            self._stack.close()
            raise

    def _stack_planes(self, path: Path) -> int:
        """Module images per frame of a stacked detector (as its modules say when no data
        file is present: reading a frame then names the missing file), within the frame size
        limit."""
        present = [ds for ds, _ in self.blocks if isinstance(ds, h5py.Dataset)]
        n = int(present[0].shape[-3]) if present else \
            1 + max(o[0] for o, _ in self.modules or ())
        total = n * self.image_info.n_slow * self.image_info.n_fast
        if total > MAX_FRAME_PIXELS:
            raise GeometryError(f"{path}: {n} module images of {self.image_info.n_fast} x "
                                f"{self.image_info.n_slow} px = {total:,} pixels per frame, "
                                f"above the limit of {MAX_FRAME_PIXELS:,}")
        return n

    def _module_info(self, path: Path) -> FrameInfo:
        """The FrameInfo of a detector of several NXdetector_modules (panels)."""
        i = self.info
        panels = tuple(p for _, p in self.modules or ())
        if len({(p.n_slow, p.n_fast) for p in panels}) != 1:
            raise FormatError(f"{path}: modules of different sizes; xrp stacks modules of "
                              "one size")
        for origin, p in self.modules or ():
            *plane, s0, f0 = origin
            if s0 < 0 or f0 < 0 or s0 + p.n_slow > i.n_slow or f0 + p.n_fast > i.n_fast or (
                    plane and not 0 <= plane[0] < (self.planes or 0)):
                where = f"{self.planes} images of " if plane else "the "
                raise FormatError(f"{path}: module {p.name} ({p.n_fast} x {p.n_slow} px from "
                                  f"{list(origin)}) lies outside {where}{i.n_fast} x "
                                  f"{i.n_slow} px")
        return panel_info(panels, wavelength_A=i.wavelength_A, detector=i.detector,
                          format=i.format, n_frames=i.n_frames, exposure_s=i.exposure_s,
                          max_counts=i.max_counts)

    @property
    def n_frames(self) -> int:
        return self.info.n_frames

    def close(self) -> None:
        self._stack.close()

    def _raw(self, index: int) -> tuple[np.ndarray, Path]:
        path, blocks = self.path, self.blocks
        if all(isinstance(ds, h5py.Dataset) for ds, _ in blocks):
            check_index(path, index, self.info.n_frames)
        else:  # the count may be unknown: a missing data file is the error to report
            check_index(path, index, max(self.info.n_frames, index + 1))
        first = index
        for ds, n in blocks:
            if isinstance(ds, DataFileMissing):  # the frame is in or after an absent file
                raise ds
            if first < n:
                where = Path(ds.file.filename)  # the data file (or an in-memory master)
                where = where if where.is_file() else path
                try:
                    return (ds[()] if ds.ndim == (3 if self.planes else 2) else ds[first]), \
                        where
                except (OSError, ValueError, RuntimeError, KeyError, TypeError) as exc:
                    raise FormatError(f"{where}: cannot decode frame {index} from "
                                      f"{ds.name} ({exc})") from exc
            first -= n
        # the header promises more frames than the data files hold
        check_index(path, index, sum(n for _, n in blocks))
        raise AssertionError("unreachable")

    def frame(self, index: int = 0) -> Frame:
        raw, where = self._raw(index)
        shape = (self.image_info.n_slow, self.image_info.n_fast)
        image = to_image(where, raw, (self.planes, *shape) if self.planes else shape)
        if raw.dtype.kind == "u":  # EIGER marks masked/defective pixels with the top value
            bad = raw == np.iinfo(raw.dtype).max
            bits = self.geo["bit_depth"]
            if bits and bits < raw.dtype.itemsize * 8:
                bad |= raw == 2**bits - 1
            image[bad] = -1
        mask = self.mask
        if mask is not None and mask.shape == image.shape:  # (ROI-mode data: mask not applied)
            image[mask != 0] = -1
        if self.modules:  # one panel per module, stacked
            image = np.stack([image[(*o[:-2], slice(o[-2], o[-2] + p.n_slow),
                                     slice(o[-1], o[-1] + p.n_fast))] for o, p in self.modules])
        return Frame(image, self.info, str(self.path), int(index))
