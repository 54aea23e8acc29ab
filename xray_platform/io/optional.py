"""Packages only some file formats need, imported where those files are read or written: fabio
(CBF pixels) and hdf5plugin (the bitshuffle/LZ4 HDF5 filter of EIGER data and shot shards).
Simulation, training and the frame -> answer path run without them (the GPU machine has
neither)."""

from __future__ import annotations

import importlib
from types import ModuleType
from typing import Any


def require(package: str, purpose: str) -> ModuleType:
    """Import ``package``, or say which package ``purpose`` needs and how to get it."""
    try:
        return importlib.import_module(package)
    except ImportError as e:
        top = package.split(".")[0]
        raise ImportError(f"{purpose} needs the {top} package (pip install {top}), which "
                          f"cannot be imported here ({e})") from e


def hdf5plugin() -> ModuleType:
    """hdf5plugin, imported (which registers its HDF5 filters with h5py)."""
    return require("hdf5plugin", "reading or writing HDF5 pixel data (bitshuffle/LZ4)")


def bitshuffle_lz4() -> dict[str, Any]:
    """h5py create_dataset keywords for bitshuffle + LZ4 (as EIGER detectors write)."""
    return dict(hdf5plugin().Bitshuffle(cname="lz4"))


def cbf_image() -> type:
    """fabio's CbfImage class (decodes and encodes CBF pixels)."""
    return require("fabio.cbfimage", "reading or writing CBF files").CbfImage
