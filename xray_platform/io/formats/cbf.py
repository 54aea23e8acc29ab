"""CBF: PILATUS/EIGER miniCBF and full imgCIF CBF, through io/cbf.py."""

from __future__ import annotations

import io
import re
from pathlib import Path

import hdf5plugin  # noqa: F401  (registers the bitshuffle/LZ4 filters EIGER data needs)
from fabio.cbfimage import CbfImage

from xray_platform.io import cbf as _cbf
from xray_platform.io.cbf import CBFError, read_cbf
from xray_platform.io.formats.base import (
    FormatError,
    Frame,
    FrameInfo,
    Reader,
    check_index,
    existing,
    sniff,
    stream,
    to_image,
)


def _count_cutoff(raw: dict[str, str]) -> int | None:
    m = re.search(r"\d+", raw.get("Count_cutoff", ""))
    return int(m.group()) if m else None


#: Detectors whose pixels do not lie on one flat panel, though a miniCBF header says nothing of
#: it: read as flat, their frames would get a wrong geometry and a confident wrong answer.
NOT_FLAT = {re.compile(r"PILATUS3? ?12M", re.IGNORECASE):
            "24 modules on a cylinder around the sample (DLS I23)"}


def _cbf_info(path: Path, header: _cbf.FrameHeader) -> FrameInfo:
    for pattern, layout in NOT_FLAT.items():
        if header.detector and pattern.search(header.detector):
            raise FormatError(f"{path}: {header.detector}: {layout}, a layout its miniCBF "
                              "header does not describe; xrp reads flat detectors only so far "
                              "(read as one flat panel the geometry would be wrong)")
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
        head = sniff(Path(path))
        return head.startswith(b"###CBF") or (
            head.lstrip().startswith(b"data_") and b"_array_data" in head
        )

    def n_frames(self, path: str | Path) -> int:
        existing(path)
        return 1

    def _header_only(self, path: Path) -> FrameInfo | None:
        """Parse the header up to the binary section (no pixel decompression or decoding).

        Uses fabio's CIF parser and io/cbf.py's header helpers exactly as read_cbf does; returns
        None when anything is unexpected, so the caller falls back to read_cbf."""
        buf = bytearray()
        start = -1
        for piece in stream(path):
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
        path = existing(path)
        try:
            info = self._header_only(path)
        except AttributeError:  # io/cbf.py internals changed: take the full read
            info = None
        return info if info is not None else self.read(path).info

    def read(self, path: str | Path, index: int = 0) -> Frame:
        path = existing(path)
        check_index(path, index, 1)
        try:
            raw, header = read_cbf(path)
        except CBFError as exc:
            raise FormatError(str(exc)) from exc
        except FileNotFoundError as exc:
            raise FormatError(f"{path}: no such file") from exc
        info = _cbf_info(path, header)
        return Frame(to_image(path, raw, (info.n_slow, info.n_fast)), info, str(path), 0)
