"""SMV / ADSC ``.img``: reader and writer."""

from __future__ import annotations

import bz2
import gzip
import math
import re
from pathlib import Path

import numpy as np

from xray_platform.io.atomic import atomic_open
from xray_platform.io.formats.base import (
    FormatError,
    Frame,
    FrameInfo,
    Reader,
    check_index,
    checked_shape,
    existing,
    positive,
    read_all,
    sniff,
    stream,
    to_image,
)

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
        return _SMV_START.match(sniff(Path(path), 128)) is not None

    def n_frames(self, path: str | Path) -> int:
        existing(path)
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
        checked_shape(path, n_fast, n_slow)
        kind = _SMV_TYPES.get(header.get("TYPE", "unsigned_short").lower())
        if kind is None:
            raise FormatError(f"{path}: unsupported SMV pixel TYPE={header.get('TYPE')!r}")
        order = header.get("BYTE_ORDER", "little_endian").lower()
        if order not in ("little_endian", "big_endian"):
            raise FormatError(f"{path}: unknown SMV BYTE_ORDER={order!r}")
        return np.dtype(("<" if order == "little_endian" else ">") + kind), n_fast, n_slow

    def _info(self, path: Path, header: dict[str, str]) -> FrameInfo:
        dtype, n_fast, n_slow = self._layout(path, header)
        pixel = positive(_smv_float(header, "PIXEL_SIZE"))
        bx, by = _smv_float(header, "BEAM_CENTER_X"), _smv_float(header, "BEAM_CENTER_Y")
        centre = None
        if pixel is not None and bx is not None and by is not None:
            centre = (by / pixel - 0.5, bx / pixel - 0.5)  # see the class docstring
        saturated = _smv_float(header, "SATURATED_VALUE")
        sn = header.get("DETECTOR_SN")
        detector = header.get("DETECTOR") or (f"SMV detector S/N {sn}" if sn else None)
        return FrameInfo(
            wavelength_A=positive(_smv_float(header, "WAVELENGTH")),
            distance_mm=positive(_smv_float(header, "DISTANCE")),
            pixel_size_mm=pixel,
            beam_center_px=centre,
            n_fast=n_fast,
            n_slow=n_slow,
            detector=detector,
            format=self.name,
            n_frames=1,
            exposure_s=_smv_float(header, "TIME"),
            max_counts=int(saturated) if saturated and 0 < saturated < 2**40  # inf: absurd
            else int(np.iinfo(dtype).max),  # a 16-bit CCD counter saturates at 65535
        )

    def info(self, path: str | Path) -> FrameInfo:
        path = existing(path)
        buf = bytearray()
        for piece in stream(path):
            buf += piece
            m = _SMV_START.match(bytes(buf[:128]))
            if m is not None and len(buf) >= int(m.group(1)) or len(buf) > 1 << 20:
                break
        header, _ = self._parse(path, bytes(buf))
        return self._info(path, header)

    def read(self, path: str | Path, index: int = 0) -> Frame:
        path = existing(path)
        check_index(path, index, 1)
        buf = read_all(path)
        header, offset = self._parse(path, buf)
        info = self._info(path, header)
        dtype, n_fast, n_slow = self._layout(path, header)
        need = n_fast * n_slow * dtype.itemsize
        if len(buf) - offset < need:
            raise FormatError(f"{path}: truncated SMV file (pixel data has {len(buf) - offset} "
                              f"of {need} bytes)")
        raw = np.frombuffer(buf, dtype=dtype, count=n_fast * n_slow, offset=offset)
        return Frame(to_image(path, raw.reshape(n_slow, n_fast), (n_slow, n_fast)), info,
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
