"""Frames stored as plain arrays in HDF5 (stacked JUNGFRAU modules (n, 512, 1024), CSPAD
slabs, assembled JUNGFRAU 4M images) placed by a CrystFEL geometry file (io/crystfel_geom.py):
`xrp predict FILE.h5 --geometry detector.geom`.

Pixels of bad regions, ``no_index`` panels, masked pixels (the geometry's mask data set and
good/bad bits) and values below ``flag_lessthan`` or above ``flag_morethan`` become -1; other
negative values (pedestal-subtracted noise) become 0.
"""

from __future__ import annotations

from pathlib import Path

import h5py
import numpy as np

from xray_platform.io import crystfel_geom as cg
from xray_platform.io.formats.base import (
    FormatError,
    Frame,
    FrameSource,
    Reader,
    check_index,
    existing,
    panel_info,
)
from xray_platform.io.optional import hdf5plugin


class GeomHDF5Source(FrameSource):
    """An HDF5 file read through a CrystFEL geometry: frames by index, the file kept open."""

    def __init__(self, path: str | Path, geometry: str | Path | cg.CrystFELGeometry) -> None:
        path = existing(path)
        hdf5plugin()  # the bitshuffle/LZ4 filter of the pixel data
        super().__init__(Reader(), path)
        self.geom = geometry if isinstance(geometry, cg.CrystFELGeometry) else \
            cg.read_geom(geometry)
        try:
            self.file = h5py.File(path, "r")
        except OSError as e:
            raise FormatError(f"{path}: not an HDF5 file h5py can open ({e})") from None
        try:
            self._setup()
        except BaseException:
            self.file.close()
            raise

    def _setup(self) -> None:
        g, path = self.geom, self.path
        data_path = g.data_path
        if "%" in data_path:
            raise FormatError(f"{path}: data = {data_path}: '%' in the data path (one data set "
                              "per frame) is not supported; xrp reads one data set")
        if data_path not in self.file:
            raise FormatError(f"{path}: the geometry {g.path} reads {data_path}, which this "
                              "file does not hold")
        self.data = self.file[data_path]
        self.frame_dim = cg.frame_index_dim(g)
        dims = g.panels[0].dims()
        if self.data.ndim != len(dims):
            raise FormatError(f"{path}: {data_path} has {self.data.ndim} dimensions "
                              f"{self.data.shape}, the geometry's dims {dims} say {len(dims)}")
        self.scalars = {k: self._scalar(v) for k, v in cg.hdf5_values(g).items()}
        self.placed = cg.panels_of(g, cg.clen_mm(g, self.scalars))
        sizes = {(p.n_slow, p.n_fast) for _, p in self.placed}
        if len(sizes) != 1:
            raise FormatError(f"{path}: the geometry's panels have {len(sizes)} sizes "
                              f"{sorted(sizes)}; xrp stacks panels of one size")
        for px, panel in self.placed:
            index = self._index(0, px)
            try:
                self.data[index]  # inside the array (checked once, cheaply: one panel)
            except (ValueError, IndexError):
                raise FormatError(f"{path}: panel {panel.name} lies outside {data_path} "
                                  f"{self.data.shape}") from None
        self.bad = cg.bad_pixels(g, self.placed)
        mask_path = g.globals.get("mask")
        if mask_path and mask_path.split()[0] in self.file:
            mask = self.file[mask_path.split()[0]][()]
            for k, (px, _) in enumerate(self.placed):
                lead = px.fixed[len(px.fixed) - (mask.ndim - 2):] if mask.ndim > 2 else ()
                m = mask[(*lead, slice(*px.ss), slice(*px.fs))]
                self.bad[k] |= cg.mask_bad(g, m)
        self.wavelength_A = cg.wavelength_A(g, self.scalars)
        self.panels = tuple(p for _, p in self.placed)

    def _scalar(self, h5path: str) -> float:
        if h5path not in self.file:
            raise FormatError(f"{self.path}: the geometry reads {h5path}, which this file "
                              "does not hold")
        return float(np.ravel(self.file[h5path][()])[0])

    def _index(self, frame: int, px: cg.PanelPixels) -> tuple:
        lead: list = list(px.fixed)
        if self.frame_dim is not None:
            lead.insert(self.frame_dim, frame)
        return (*lead, slice(*px.ss), slice(*px.fs))

    @property
    def n_frames(self) -> int:
        return 1 if self.frame_dim is None else int(self.data.shape[self.frame_dim])

    def frame(self, index: int = 0) -> Frame:
        check_index(self.path, index, self.n_frames)
        n_ss, n_fs = self.placed[0][1].n_slow, self.placed[0][1].n_fast
        img = np.empty((len(self.placed), n_ss, n_fs), dtype=np.float32)
        lo = self.geom.panels[0].keys.get("flag_lessthan")
        hi = self.geom.panels[0].keys.get("flag_morethan")
        for k, (px, _) in enumerate(self.placed):
            raw = np.asarray(self.data[self._index(index, px)], dtype=np.float32)
            if not np.isfinite(raw).all():
                raise FormatError(f"{self.path}: frame {index} holds NaN or infinite values")
            bad = self.bad[k].copy()
            if lo is not None:
                bad |= raw < float(lo)
            if hi is not None:
                bad |= raw > float(hi)
            img[k] = np.where(bad, -1.0, np.maximum(raw, 0.0))
        info = panel_info(self.panels, wavelength_A=self.wavelength_A, detector=
                          f"{self.geom.path} ({len(self.panels)} panels)",
                          format="hdf5+geom", n_frames=self.n_frames)
        return Frame(img, info, str(self.path), index)

    def close(self) -> None:
        self.file.close()
