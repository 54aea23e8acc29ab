"""CBF: PILATUS/EIGER miniCBF and full imgCIF CBF, through io/cbf.py."""

from __future__ import annotations

import io
import re
from pathlib import Path

from xray_platform.io import cbf as _cbf
from xray_platform.io.cbf import CBFError, decode_cbf
from xray_platform.io.cif_common import BINARY_MARKER, STARTER
from xray_platform.io.formats import dls_i23
from xray_platform.io.formats.base import (
    FormatError,
    Frame,
    FrameInfo,
    Reader,
    check_index,
    checked_shape,
    existing,
    panel_info,
    sniff,
    stream,
    to_image,
)
from xray_platform.io.imgcif import ImgCIFError, read_panels
from xray_platform.io.optional import cbf_image
from xray_platform.physics.panels import PanelGeometry


def _count_cutoff(raw: dict[str, str]) -> int | None:
    m = re.search(r"\d+", raw.get("Count_cutoff", ""))
    return int(m.group()) if m else None


#: Detectors whose pixels do not lie on one flat panel, though a miniCBF header says nothing of
#: it: read as flat, their frames would get a wrong geometry and a confident wrong answer.
#: Those whose layout xrp knows (dls_i23.KNOWN) are read panel by panel.
NOT_FLAT = {re.compile(r"PILATUS3? ?12M", re.IGNORECASE):
            "24 modules on a cylinder around the sample (DLS I23)"}
_MULTI = re.compile(rb"X-Binary-Size-Third-Dimension:\s*0*([2-9]|\d{2,})")


_PACKED = re.compile(rb'conversions\s*=\s*"?x-CBF_PACKED')


def _is_imgcif(buf: bytes) -> bool:
    """A full imgCIF CBF that io/imgcif.py reads: several binary sections or 3-D arrays (a
    multi-panel detector) or x-CBF_PACKED pixels (which fabio does not decode)."""
    head = buf[:1 << 20]
    return buf.count(b"X-Binary-Size:") > 1 or _MULTI.search(head) is not None or \
        _PACKED.search(head) is not None


def _i23_info(path: Path, header: _cbf.FrameHeader) -> FrameInfo:
    """The DLS I23 PILATUS 12M: its 24 row panels from Beam_xy and the distance."""
    if header.beam_center_px is None or header.distance_mm is None:
        raise FormatError(f"{path}: {header.detector}: the header lacks Beam_xy or "
                          "Detector_distance, which place its 24 modules")
    if (header.n_fast, header.n_slow) != (dls_i23.N_FAST, dls_i23.N_SLOW):
        raise FormatError(f"{path}: {header.detector}: {header.n_fast} x {header.n_slow} px, "
                          f"not the {dls_i23.N_FAST} x {dls_i23.N_SLOW} of its 24 modules")
    beam_xy = (header.beam_center_px[0] + 0.5, header.beam_center_px[1] + 0.5)  # corner conv.
    return panel_info(dls_i23.panels(beam_xy, header.distance_mm),
                      wavelength_A=header.wavelength_A, detector=header.detector,
                      format=CBFReader.name, n_frames=1, exposure_s=header.exposure_s,
                      max_counts=_count_cutoff(header.raw))


def _cbf_info(path: Path, header: _cbf.FrameHeader) -> FrameInfo:
    if header.detector and dls_i23.KNOWN.search(header.detector):
        return _i23_info(path, header)
    for pattern, layout in NOT_FLAT.items():
        if header.detector and pattern.search(header.detector):
            raise FormatError(f"{path}: {header.detector}: {layout}, a layout its miniCBF "
                              "header does not describe and xrp knows only for S/N 120-0100 "
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
            marker = buf.find(BINARY_MARKER)
            if marker >= 0:
                start = buf.find(STARTER, marker)
                if start >= 0:
                    break
            if len(buf) > 1 << 22:  # no binary section within 4 MB of header
                return None
        if start < 0:
            return None
        try:
            img = cbf_image()()  # no fabio: None here, and read_cbf names the package
            img._readheader(io.BytesIO(bytes(buf[: start + len(STARTER)])))
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
            buf = _cbf._load_bytes(path)
            if _is_imgcif(buf):
                return self._read_panels(path, buf)
            raw, header = decode_cbf(path, buf)
        except (CBFError, ImgCIFError) as exc:
            raise FormatError(str(exc)) from exc
        except FileNotFoundError as exc:
            raise FormatError(f"{path}: no such file") from exc
        info = _cbf_info(path, header)
        image = to_image(path, raw, (header.n_slow, header.n_fast))
        if info.panels:  # the I23 PILATUS 12M: rows of modules, gap rows dropped
            image = dls_i23.split_rows(image)
        return Frame(image, info, str(path), 0)

    def _read_panels(self, path: Path, buf: bytes) -> Frame:
        """A full imgCIF CBF of several panels (CSPAD as cctbx.xfel writes it), or of one
        panel with x-CBF_PACKED pixels (Rayonix): one panel perpendicular to the beam is
        returned as the flat detector it is."""
        image, panels, fields = read_panels(path, buf)
        flat = PanelGeometry(panels, fields["wavelength_A"] or 1.0).flat() \
            if len(panels) == 1 else None
        if flat is None:
            info = panel_info(panels, format=self.name, n_frames=1, **fields)
            return Frame(image, info, str(path), 0)
        checked_shape(path, flat.detector.n_fast, flat.detector.n_slow)
        info = FrameInfo(distance_mm=flat.distance_mm, pixel_size_mm=flat.pixel_mm,
                         beam_center_px=flat.beam_center_px, n_fast=flat.detector.n_fast,
                         n_slow=flat.detector.n_slow, format=self.name, n_frames=1, **fields)
        return Frame(image[0], info, str(path), 0)
