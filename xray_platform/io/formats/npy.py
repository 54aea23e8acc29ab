"""NumPy ``.npy`` frames and stacks (never unpickled; geometry from the caller)."""

from __future__ import annotations

import io
from pathlib import Path
from tokenize import TokenError

import numpy as np

from xray_platform.io.formats.base import (
    NPY_MAGIC,
    SNIFF_MAX,
    FormatError,
    Frame,
    FrameInfo,
    Reader,
    check_index,
    checked_shape,
    existing,
    is_compressed,
    read_all,
    sniff,
    to_image,
)


class NpyReader(Reader):
    """NumPy ``.npy``: a 2-D frame (slow, fast) or a 3-D stack (frame, slow, fast), numeric only.

    Loaded with ``allow_pickle=False`` always (object arrays are refused, never unpickled). The
    file holds no geometry: pass it to :func:`read_frame`.
    """

    name = "npy"
    suffixes = (".npy",)

    @classmethod
    def understands(cls, path: Path) -> bool:
        return sniff(Path(path), 8).startswith(NPY_MAGIC)

    def _header(self, path: Path) -> tuple[tuple[int, ...], np.dtype]:
        head = sniff(path, SNIFF_MAX)  # numpy refuses headers over 10 kB by default
        fh = io.BytesIO(head)
        try:
            major, minor = np.lib.format.read_magic(fh)
            if (major, minor) == (1, 0):
                shape, _, dtype = np.lib.format.read_array_header_1_0(fh)
            elif (major, minor) == (2, 0):
                shape, _, dtype = np.lib.format.read_array_header_2_0(fh)
            else:  # 3.0 exists only for structured dtypes with non-ASCII names
                raise FormatError(f"{path}: unsupported .npy version {major}.{minor}")
        except (ValueError, SyntaxError, EOFError, TokenError) as exc:  # numpy tokenizes it
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
        checked_shape(path, shape[-1], shape[-2])

    def info(self, path: str | Path) -> FrameInfo:
        path = existing(path)
        shape, _ = self._header(path)
        return FrameInfo(
            wavelength_A=None, distance_mm=None, pixel_size_mm=None, beam_center_px=None,
            n_fast=int(shape[-1]), n_slow=int(shape[-2]), detector=None, format=self.name,
            n_frames=int(shape[0]) if len(shape) == 3 else 1,
        )

    def read(self, path: str | Path, index: int = 0) -> Frame:
        path = existing(path)
        info = self.info(path)  # refuses object arrays from the header alone
        check_index(path, index, info.n_frames)
        try:
            if is_compressed(path):
                arr = np.load(io.BytesIO(read_all(path)), allow_pickle=False)
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
        return Frame(to_image(path, raw, (info.n_slow, info.n_fast)), info, str(path), int(index))
