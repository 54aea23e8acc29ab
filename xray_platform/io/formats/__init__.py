"""Detector file readers: one small module per format, each reader saying whether it understands
a file (dxtbx style); a registry picks the reader; discovery expands folders and globs.

Formats: CBF/miniCBF (cbf.py, via io/cbf.py), EIGER / NeXus NXmx HDF5 (eiger.py: master + data
files or data inline, bitshuffle-LZ4 through hdf5plugin), SMV/ADSC ``.img`` (smv.py, with a
writer) and NumPy ``.npy`` (npy.py; geometry then has to come from the caller: read_frame
overrides). Files compressed with gzip or bzip2 are opened directly (io/compress.py).
"""

from xray_platform.io.cbf import GeometryMissing
from xray_platform.io.formats.base import (
    DataFileMissing,
    FormatError,
    Frame,
    FrameInfo,
    FrameSource,
    Reader,
    detector_for,
    geometry_overrides,
)
from xray_platform.io.formats.cbf import CBFReader
from xray_platform.io.formats.discovery import expand_inputs
from xray_platform.io.formats.eiger import EigerHDF5Reader
from xray_platform.io.formats.npy import NpyReader
from xray_platform.io.formats.registry import (
    READERS,
    open_frames,
    read_frame,
    read_info,
    reader_for,
)
from xray_platform.io.formats.smv import SMVReader, write_smv

__all__ = [
    "READERS",
    "CBFReader",
    "DataFileMissing",
    "EigerHDF5Reader",
    "FormatError",
    "Frame",
    "FrameInfo",
    "FrameSource",
    "GeometryMissing",
    "NpyReader",
    "Reader",
    "SMVReader",
    "detector_for",
    "expand_inputs",
    "geometry_overrides",
    "open_frames",
    "read_frame",
    "read_info",
    "reader_for",
    "write_smv",
]
