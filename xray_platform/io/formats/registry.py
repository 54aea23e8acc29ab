"""The reader registry: which reader understands a file; reading frames and headers."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Any

from xray_platform.io.formats.base import (
    HDF5_MAGIC,
    FormatError,
    Frame,
    FrameInfo,
    FrameSource,
    Reader,
    existing,
    geometry_overrides,
    sniff,
)
from xray_platform.io.formats.cbf import CBFReader
from xray_platform.io.formats.eiger import EigerHDF5Reader
from xray_platform.io.formats.hdf5_links import check_links
from xray_platform.io.formats.npy import NpyReader
from xray_platform.io.formats.smv import SMVReader

# ---------------------------------------------------------------------------------------------
# registry
# ---------------------------------------------------------------------------------------------

READERS: list[type[Reader]] = [CBFReader, EigerHDF5Reader, SMVReader, NpyReader]


def known_formats() -> str:
    return ", ".join(r.name for r in READERS)


def understood_by(path: Path) -> type[Reader] | None:
    for cls in READERS:
        try:
            if cls.understands(path):
                return cls
        except OSError:
            return None
    return None


def reader_for(path: str | Path) -> Reader:
    """The reader that understands ``path``; FormatError when none does or it is missing."""
    path = existing(path)
    cls = understood_by(path)
    if cls is None:
        hint = ""
        if sniff(path, 8).startswith(HDF5_MAGIC):
            hint = " (an HDF5 file without /entry/instrument/detector: an EIGER data file? " \
                   "open its master file; plain arrays of a multi-module detector: give its " \
                   "CrystFEL geometry with --geometry)"
        raise FormatError(f"{path}: not a detector file xrp can read "
                          f"(known: {known_formats()}){hint}")
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
    geometry: str | Path | None = None,
) -> Frame:
    """Read frame ``index`` of any known detector file; the geometry overrides win over the
    header (for files with missing or wrong headers); ``geometry``: a CrystFEL .geom file that
    places an HDF5 file's arrays."""
    with open_frames(path, geometry, wavelength_A=wavelength_A, distance_mm=distance_mm,
                     pixel_size_mm=pixel_size_mm, beam_center_px=beam_center_px) as src:
        return src.frame(index)


class _Overridden(FrameSource):
    """A source whose frames carry the caller's geometry instead of (parts of) the header's."""

    def __init__(self, inner: FrameSource, overrides: dict[str, Any]) -> None:
        super().__init__(inner.reader, inner.path)
        self.inner, self.overrides = inner, overrides

    @property
    def n_frames(self) -> int:
        return self.inner.n_frames

    def frame(self, index: int = 0) -> Frame:
        f = self.inner.frame(index)
        f.info = replace(f.info, **self.overrides)
        return f

    def close(self) -> None:
        self.inner.close()


def open_frames(path: str | Path, geometry: str | Path | None = None, *,
                links_inside: str | Path | None = None, **overrides: Any) -> FrameSource:
    """Open any known detector file once; ``src.frame(i)`` hands out frame i with the geometry
    overrides (wavelength_A, distance_mm, pixel_size_mm, beam_center_px) applied. With
    ``geometry`` (a CrystFEL .geom file) an HDF5 file's plain arrays are read panel by panel
    (formats/geom_hdf5.py). ``links_inside``: a folder the file's HDF5 links must stay in (a
    watched folder; formats/hdf5_links.py), checked before anything reads the file."""
    checked = geometry_overrides(**overrides)
    if links_inside is not None:
        check_links(existing(path), links_inside, upload=False)
    if geometry is not None:
        src: FrameSource = _geom_source(path, geometry)
    else:
        src = reader_for(path).open(path)
    return _Overridden(src, checked) if checked else src


def _geom_source(path: str | Path, geometry: str | Path) -> FrameSource:
    from xray_platform.io.crystfel_geom import GeomError
    from xray_platform.io.formats.geom_hdf5 import GeomHDF5Source

    if not sniff(existing(path), 8).startswith(HDF5_MAGIC):
        raise FormatError(f"{path}: a CrystFEL geometry ({geometry}) places the arrays of "
                          "HDF5 files; this is not one (its own header gives its geometry)")
    try:
        return GeomHDF5Source(path, geometry)
    except GeomError as e:
        raise FormatError(str(e)) from None


def n_frames(path: Path, geometry: str | Path | None = None, *,
             links_inside: str | Path | None = None) -> int:
    """Frames in a detector file (read through ``geometry`` when given; ``links_inside``: as
    open_frames)."""
    if links_inside is not None:
        check_links(existing(path), links_inside, upload=False)
    if geometry is None:
        return reader_for(path).n_frames(path)
    with _geom_source(path, geometry) as src:
        return src.n_frames
