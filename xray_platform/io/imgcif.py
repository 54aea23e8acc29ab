"""Full imgCIF CBF with several panels: the CIF header, the binary sections, and every panel
placed by its own axis chain (as cctbx.xfel writes CSPAD frames: 4 arrays of 8 x 185 x 388,
64 ASICs of 185 x 194, each with its own _axis chain).

imgCIF axis semantics (Bernstein & Hammersley, International Tables G, 3.7): an axis moves what
depends on it (rotation by its angle about its vector, or translation by its displacement along
it), and its ``offset`` places its base relative to the axis it depends on. A pixel's position
is found by applying its fast-axis translation, then every axis of its chain outward. An array
section (``_array_structure_list_section``) is a sub-rectangle of an array with its own fast and
slow axes: one panel. Array index 0 is the first pixel's outer corner (as dxtbx reads it), so
pixel i's centre is at displacement + (i + 0.5) * increment.

imgCIF's lab frame has the source along +z (the beam travels along -z) and gravity along -y;
design.md's lab frame has the beam along +z: (x, y, z) -> (x, -y, -z), a rotation by 180 deg
about x, as the one-panel reader's fast = +x, slow = +y.
"""

from __future__ import annotations

import base64
import hashlib
import math
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from xray_platform.io.atomic import atomic_open
from xray_platform.io.cif_common import BINARY_MARKER, STARTER, Axes, mime_fields, number, vector
from xray_platform.physics.panels import Panel

_TO_LAB = np.diag([1.0, -1.0, -1.0])  # imgCIF -> design.md lab frame


class ImgCIFError(ValueError):
    """A full CBF whose header, binary sections or panel layout cannot be read."""


# --- the CIF text ------------------------------------------------------------------------
_TOKEN = re.compile(r"""'(?:[^']|'(?=\S))*'(?=\s|$)|"(?:[^"]|"(?=\S))*"(?=\s|$)|\S+""")


def _tokens(text: str) -> list[str]:
    """CIF tokens: words, quoted strings (quotes removed), ;-delimited text fields."""
    out: list[str] = []
    lines = text.splitlines()
    i = 0
    while i < len(lines):
        line = lines[i]
        if line.startswith(";"):  # a text field runs to the next line starting with ';'
            field = [line[1:]]
            i += 1
            while i < len(lines) and not lines[i].startswith(";"):
                field.append(lines[i])
                i += 1
            out.append("\n".join(field).strip())
            i += 1
            continue
        for m in _TOKEN.finditer(line):
            tok = m.group()
            if tok.startswith("#"):
                break
            if tok[0] in "'\"" and len(tok) >= 2:
                tok = tok[1:-1]
            out.append(tok)
        i += 1
    return out


def parse_cif(text: str) -> dict[str, list[dict[str, str]]]:
    """CIF header text -> {category: [row {item: value}]} (names lower-case, as io/cbf.py's
    tables: '_axis' -> [{'id': ..., 'vector[1]': ...}])."""
    tables: dict[str, list[dict[str, str]]] = {}
    toks = _tokens(text)
    i = 0
    while i < len(toks):
        tok = toks[i]
        if tok.lower() == "loop_":
            names = []
            i += 1
            while i < len(toks) and toks[i].startswith("_"):
                names.append(toks[i].lower())
                i += 1
            values = []
            while i < len(toks) and not toks[i].startswith("_") and \
                    toks[i].lower() not in ("loop_",) and not toks[i].lower().startswith("data_"):
                values.append(toks[i])
                i += 1
            if names:
                cat = names[0].split(".", 1)[0]
                items = [n.split(".", 1)[-1] for n in names]
                for r in range(len(values) // len(names)):
                    row = values[r * len(names):(r + 1) * len(names)]
                    tables.setdefault(cat, []).append(dict(zip(items, row, strict=True)))
            continue
        if tok.startswith("_") and "." in tok and i + 1 < len(toks):
            cat, item = tok.lower().split(".", 1)
            rows = tables.setdefault(cat, [])
            if not rows:
                rows.append({})
            rows[0].setdefault(item, toks[i + 1])
            i += 2
            continue
        i += 1
    return tables


# --- binary sections -----------------------------------------------------------------------
@dataclass
class Section:
    """One MIME-framed binary section: its header fields and its (still compressed) bytes."""

    mime: dict[str, str]
    blob: bytes
    raw: str = ""  # the MIME header text (conversion parameters: "flat", ...)

    @property
    def binary_id(self) -> str:
        return self.mime.get("X-Binary-ID", "1")

    @property
    def dims(self) -> tuple[int, ...]:
        """(third, second, fastest) dimensions present, slowest first."""
        keys = ("X-Binary-Size-Third-Dimension", "X-Binary-Size-Second-Dimension",
                "X-Binary-Size-Fastest-Dimension")
        return tuple(int(self.mime[k]) for k in keys if self.mime.get(k, "").strip())

    @property
    def conversions(self) -> str:
        return self.mime.get("conversions", "x-CBF_BYTE_OFFSET")


def binary_sections(path: Path | str, buf: bytes) -> list[Section]:
    """Every binary section of a CBF, each MD5-checked when its header gives one."""
    out: list[Section] = []
    pos = 0
    while True:
        marker = buf.find(BINARY_MARKER, pos)
        if marker < 0:
            break
        after = marker + len(BINARY_MARKER)
        if buf[after:after + 2] == b"--":  # a section's end
            pos = after + 2
            continue
        start = buf.find(STARTER, marker)
        if start < 0:
            raise ImgCIFError(f"{path}: truncated CBF (binary section header incomplete)")
        text = buf[marker:start].decode("latin-1")
        mime = mime_fields(text)
        try:
            size = int(mime["X-Binary-Size"])
        except (KeyError, ValueError):
            raise ImgCIFError(f"{path}: corrupt CBF binary header (no X-Binary-Size)") from None
        blob = buf[start + 4:start + 4 + size]
        if len(blob) < size:
            raise ImgCIFError(f"{path}: truncated CBF (binary section {mime.get('X-Binary-ID')}"
                              f" has {len(blob)} of {size} bytes)")
        md5 = mime.get("Content-MD5")
        if md5 and base64.b64encode(hashlib.md5(blob).digest()).decode() != md5:
            raise ImgCIFError(f"{path}: corrupt CBF (binary section "
                              f"{mime.get('X-Binary-ID')}: MD5 mismatch)")
        out.append(Section(mime, blob, text))
        pos = start + 4 + size
    return out


# --- panels from the axis tables --------------------------------------------------------------

@dataclass(frozen=True)
class PanelSlice:
    """Where one panel's pixels are in a binary section: section index, 3rd-dimension index,
    and the slow and fast index ranges (0-based, end exclusive)."""

    section: int
    plane: int
    slow: tuple[int, int]
    fast: tuple[int, int]


def _list_axes(tables) -> dict[str, dict[str, str]]:
    return {r.get("axis_set_id", ""): r for r in tables.get("_array_structure_list_axis", [])}


def _section_ranges(tables) -> dict[str, dict[int, tuple[int, int]]]:
    out: dict[str, dict[int, tuple[int, int]]] = {}
    for r in tables.get("_array_structure_list_section", []):
        out.setdefault(r.get("id", ""), {})[int(number(r, "index"))] = (
            int(number(r, "start")), int(number(r, "end")))
    return out


def imgcif_panels(path: Path | str, tables: dict[str, list[dict[str, str]]],
                  sections: list[Section]) -> list[tuple[PanelSlice, Panel]]:
    """Every panel of a full CBF: where its pixels are and where it sits in the lab frame.

    Arrays with sections (CSPAD) give one panel per section, arrays without one panel each.
    ImgCIFError names what is missing when a layout cannot be placed."""
    axes = Axes(tables)
    source = next((r for r in axes.rows.values() if r.get("equipment") == "source"), None)
    if source is not None and not np.allclose(vector(source, "vector"), (0, 0, 1)):
        raise ImgCIFError(f"{path}: the source axis is {vector(source, 'vector')}, not (0, 0, 1); "
                          "xrp places panels only in imgCIF's standard frame")
    by_binary = {s.binary_id: i for i, s in enumerate(sections)}
    array_of_binary = {r.get("binary_id", ""): r.get("array_id", "")
                       for r in tables.get("_diffrn_data_frame", [])}
    if not array_of_binary:  # one array: the binary id of each data item
        array_of_binary = {r.get("binary_id", "1"): r.get("array_id", "")
                           for r in tables.get("_array_data", [])}
    lists = tables.get("_array_structure_list", [])
    list_axes, ranges = _list_axes(tables), _section_ranges(tables)
    out: list[tuple[PanelSlice, Panel]] = []
    for binary_id, array_id in array_of_binary.items():
        if binary_id not in by_binary:
            raise ImgCIFError(f"{path}: array {array_id} names binary section {binary_id}, "
                              "which the file does not hold")
        rows = [r for r in lists if r.get("array_id") == array_id]
        whole = [r for r in rows if r.get("array_section_id", ".") in (".", "?", "")]
        named = sorted({r.get("array_section_id", ".") for r in rows} - {".", "?", ""})
        if not named:  # the whole array is one panel
            named = [""]
        for sec in named:
            srows = whole if sec == "" else [r for r in rows if r.get("array_section_id") == sec]
            by_index = {int(number(r, "index")): r for r in srows}
            if 1 not in by_index or 2 not in by_index:
                raise ImgCIFError(f"{path}: array {array_id} {sec}: no fast/slow axes in "
                                  "_array_structure_list")
            out.append(_panel(path, axes, list_axes, by_index, by_binary[binary_id],
                              ranges.get(sec, {}), f"{array_id}:{sec}" if sec else array_id))
    if not out:
        raise ImgCIFError(f"{path}: no array is placed by _array_structure_list axes")
    return out


def _panel(path, axes: Axes, list_axes, by_index, section: int,
           rng: dict[int, tuple[int, int]], name: str) -> tuple[PanelSlice, Panel]:
    la = []
    for idx in (1, 2):
        row = by_index[idx]
        if row.get("direction", "increasing") == "decreasing":
            raise ImgCIFError(f"{path}: {name}: decreasing array axes are not supported")
        ax = list_axes.get(row.get("axis_set_id", ""))
        if ax is None or ax.get("axis_id") not in axes.rows:
            raise ImgCIFError(f"{path}: {name}: axis set {row.get('axis_set_id')} is not in "
                              "_array_structure_list_axis / _axis")
        la.append((ax["axis_id"], number(ax, "displacement"), number(ax, "displacement_increment")))
    (fa, fd, fi), (sa, sd, si) = la
    chain = axes.chain(fa)
    if sa not in chain:
        raise ImgCIFError(f"{path}: {name}: the fast axis {fa} does not depend on the slow "
                          f"axis {sa}")

    def at(i: float, j: float) -> np.ndarray:
        return _TO_LAB @ axes.position(chain, {fa: fd + i * fi, sa: sd + j * si})

    origin = at(0.5, 0.5)  # centre of the panel's first pixel
    df, ds = at(1.5, 0.5) - origin, at(0.5, 1.5) - origin
    p = float(np.linalg.norm(df))
    if not math.isclose(p, float(np.linalg.norm(ds)), rel_tol=1e-6):
        raise ImgCIFError(f"{path}: {name}: pixels are not square ({p:.5f} x "
                          f"{np.linalg.norm(ds):.5f} mm)")
    f0, f1 = rng.get(1, (1, int(number(by_index[1], "dimension"))))
    s0, s1 = rng.get(2, (1, int(number(by_index[2], "dimension"))))
    k = rng.get(3, (1, 1))[0]
    panel = Panel(tuple(origin), tuple(df / p), tuple(ds / p), p, f1 - f0 + 1, s1 - s0 + 1, name)
    return PanelSlice(section, k - 1, (s0 - 1, s1), (f0 - 1, f1)), panel


# --- pixels --------------------------------------------------------------------------------
_DTYPES = {"signed 32-bit integer": "<i4", "unsigned 32-bit integer": "<u4",
           "signed 16-bit integer": "<i2", "unsigned 16-bit integer": "<u2",
           "signed 8-bit integer": "i1", "unsigned 8-bit integer": "u1"}


def decode_section(path: Path | str, s: Section) -> np.ndarray:
    """A binary section's pixels, shaped by its dimensions (slowest first), as int64."""
    from fabio.compression import decByteOffset

    from xray_platform.io import cbf_packed

    n = int(np.prod(s.dims))
    if int(s.mime.get("X-Binary-Number-of-Elements", n)) != n:
        raise ImgCIFError(f"{path}: binary section {s.binary_id}: its dimensions {s.dims} do "
                          f"not hold its {s.mime.get('X-Binary-Number-of-Elements')} elements")
    conv = s.conversions
    try:
        if conv == "x-CBF_BYTE_OFFSET":
            values = np.asarray(decByteOffset(s.blob, size=n), dtype=np.int64)
        elif conv in cbf_packed.CONVERSIONS:
            dims = (1,) * (3 - len(s.dims)) + s.dims  # (third, second, fastest)
            values = cbf_packed.decode_packed(
                s.blob, n, n_fast=dims[2], n_slow=dims[1], n_third=dims[0],
                v2=conv.endswith("V2"), flat='"flat"' in s.raw,
                uncorrelated="uncorrelated_sections" in s.raw).astype(np.int64)
        elif conv in ("x-CBF_NONE", "none"):
            dtype = _DTYPES.get(s.mime.get("X-Binary-Element-Type", ""), "<i4")
            values = np.frombuffer(s.blob, dtype=dtype, count=n).astype(np.int64)
        else:
            raise ImgCIFError(f"{path}: binary section {s.binary_id} uses {conv} compression, "
                              "which xrp does not read (it reads x-CBF_BYTE_OFFSET, "
                              "x-CBF_PACKED and x-CBF_PACKED_V2)")
    except ImgCIFError:
        raise
    except (ValueError, IndexError) as e:
        raise ImgCIFError(f"{path}: binary section {s.binary_id} ({conv}) is corrupt: {e}") \
            from None
    if values.size != n:
        raise ImgCIFError(f"{path}: binary section {s.binary_id} decoded to {values.size} of "
                          f"{n} pixels")
    return values.reshape(s.dims)


def header_text(buf: bytes) -> str:
    """The CIF text of a CBF: everything outside its binary sections."""
    parts, pos = [], 0
    while True:
        m = buf.find(BINARY_MARKER, pos)
        if m < 0:
            parts.append(buf[pos:])
            break
        parts.append(buf[pos:m])
        end = buf.find(BINARY_MARKER + b"--", m)
        if end < 0:
            break
        pos = end + len(BINARY_MARKER) + 2
    return b"".join(parts).decode("latin-1")


def read_panels(path: Path | str, buf: bytes) -> tuple[np.ndarray, tuple[Panel, ...], dict]:
    """A multi-panel full CBF: the float32 frame img[panel, slow, fast] (pixels at the
    array's undefined value -> -1, other negative values, i.e. pedestal-subtracted noise, -> 0),
    its panels, and the header fields (wavelength_A, detector, exposure_s, max_counts)."""
    tables = parse_cif(header_text(buf))
    sections = binary_sections(path, buf)
    placed = imgcif_panels(path, tables, sections)
    sizes = {(p.n_slow, p.n_fast) for _, p in placed}
    if len(sizes) != 1:
        raise ImgCIFError(f"{path}: panels of {len(sizes)} different sizes "
                          f"{sorted(sizes)}; xrp stacks panels of one size only")
    arrays = {i: decode_section(path, s) for i, s in enumerate(sections)}
    undefined = {r.get("binary_id"): number(r, "undefined_value", math.nan)
                 for r in tables.get("_array_intensities", [])}
    img = np.empty((len(placed), *sizes.pop()), dtype=np.float32)
    for k, (sl, _) in enumerate(placed):
        a = arrays[sl.section]
        a = a[sl.plane] if a.ndim == 3 else a
        if sl.slow[1] > a.shape[0] or sl.fast[1] > a.shape[1]:
            raise ImgCIFError(f"{path}: panel {placed[k][1].name} lies outside its array "
                              f"{a.shape}")
        px = a[sl.slow[0]:sl.slow[1], sl.fast[0]:sl.fast[1]]
        bad = px == undefined.get(sections[sl.section].binary_id, math.nan)
        img[k] = np.where(bad, -1.0, np.maximum(px, 0))
    fields = {"wavelength_A": None, "detector": None, "exposure_s": None, "max_counts": None}
    for r in tables.get("_diffrn_radiation_wavelength", [])[:1]:
        fields["wavelength_A"] = number(r, "wavelength", math.nan)
    for r in tables.get("_diffrn_detector", [])[:1]:
        fields["detector"] = r.get("type") or r.get("id")
    for r in tables.get("_diffrn_scan_frame", [])[:1]:
        fields["exposure_s"] = number(r, "integration_time", math.nan)
    overloads = [number(r, "overload", math.nan) for r in tables.get("_array_intensities", [])]
    if overloads and all(math.isfinite(v) and v > 0 for v in overloads):
        fields["max_counts"] = int(min(overloads))
    fields = {k: (None if isinstance(v, float) and not (math.isfinite(v) and v > 0) else v)
              for k, v in fields.items()}
    return img, tuple(p for _, p in placed), fields


# --- writing -----------------------------------------------------------------------------------
def _binary_section(binary_id: int, a: np.ndarray) -> bytes:
    """One x-CBF_BYTE_OFFSET MIME section of an int32 (slow, fast) array."""
    from fabio.compression import compByteOffset

    blob = compByteOffset(np.ascontiguousarray(a, dtype=np.int32))
    md5 = base64.b64encode(hashlib.md5(blob).digest()).decode()
    head = (f"\n{BINARY_MARKER.decode()}\nContent-Type: application/octet-stream;\n"
            '     conversions="x-CBF_BYTE_OFFSET"\nContent-Transfer-Encoding: BINARY\n'
            f"X-Binary-Size: {len(blob)}\nX-Binary-ID: {binary_id}\n"
            'X-Binary-Element-Type: "signed 32-bit integer"\n'
            "X-Binary-Element-Byte-Order: LITTLE_ENDIAN\n"
            f"Content-MD5: {md5}\nX-Binary-Number-of-Elements: {a.size}\n"
            f"X-Binary-Size-Fastest-Dimension: {a.shape[1]}\n"
            f"X-Binary-Size-Second-Dimension: {a.shape[0]}\n\n")
    return head.encode() + STARTER + blob + f"\n{BINARY_MARKER.decode()}--\n".encode()


def write_imgcif(path: Path | str, img: np.ndarray, panels, *, wavelength_A: float,
                 max_counts: int, detector: str = "xrp simulated") -> None:
    """Write ``img[panel, slow, fast]`` (int, gaps < 0) as a full imgCIF CBF, atomically: one
    array per panel, each placed by a slow and a fast translation axis (imgCIF's frame),
    byte-offset compressed. :func:`read_panels` reads it back."""
    img = np.asarray(img)
    if img.ndim != 3 or img.shape[0] != len(panels) or not np.issubdtype(img.dtype, np.integer):
        raise ValueError(f"img must be integer (panel, slow, fast) with one plane per panel, "
                         f"got {img.dtype} {img.shape} for {len(panels)} panels")
    path = Path(path)
    head = ["###CBF: VERSION 1.5", "# written by xray_platform.io.imgcif", "", "data_xrp", "",
            f"_diffrn_radiation_wavelength.wavelength {wavelength_A:.6f}",
            f"_diffrn_detector.id DET\n_diffrn_detector.type '{detector}'", "",
            "loop_\n_axis.id\n_axis.type\n_axis.equipment\n_axis.depends_on\n" +
            "".join(f"_axis.vector[{i}]\n" for i in (1, 2, 3)) +
            "".join(f"_axis.offset[{i}]\n" for i in (1, 2, 3)).rstrip()]
    ax, frames, lists, list_axes, intens = [" SOURCE general source . 0 0 1 0 0 0"], [], [], [], []
    for k, p in enumerate(panels):
        f, s = _TO_LAB @ np.asarray(p.fast), _TO_LAB @ np.asarray(p.slow)
        corner = _TO_LAB @ np.asarray(p.origin_mm) - 0.5 * p.pixel_mm * (f + s)
        ax.append(f" S{k} translation detector . {' '.join(f'{v:.8f}' for v in s)} "
                  f"{' '.join(f'{v:.6f}' for v in corner)}")
        ax.append(f" F{k} translation detector S{k} {' '.join(f'{v:.8f}' for v in f)} 0 0 0")
        frames.append(f" FRAME1 A{k} {k + 1}")
        lists.append(f" A{k} 1 {p.n_fast} 1 increasing F{k}\n A{k} 2 {p.n_slow} 2 increasing S{k}")
        list_axes += [f" F{k} F{k} 0 {p.pixel_mm:.8f}", f" S{k} S{k} 0 {p.pixel_mm:.8f}"]
        intens.append(f" A{k} {k + 1} {max_counts} -1")
    head += ["\n".join(ax), "",
             "loop_\n_diffrn_data_frame.id\n_diffrn_data_frame.array_id\n"
             "_diffrn_data_frame.binary_id\n" + "\n".join(frames), "",
             "loop_\n_array_structure_list.array_id\n_array_structure_list.index\n"
             "_array_structure_list.dimension\n_array_structure_list.precedence\n"
             "_array_structure_list.direction\n_array_structure_list.axis_set_id\n" +
             "\n".join(lists), "",
             "loop_\n_array_structure_list_axis.axis_set_id\n_array_structure_list_axis.axis_id\n"
             "_array_structure_list_axis.displacement\n"
             "_array_structure_list_axis.displacement_increment\n" + "\n".join(list_axes), "",
             "loop_\n_array_intensities.array_id\n_array_intensities.binary_id\n"
             "_array_intensities.overload\n_array_intensities.undefined_value\n" +
             "\n".join(intens), "",
             "loop_\n_array_data.array_id\n_array_data.binary_id\n_array_data.data"]
    body = "\n".join(head).encode()
    for k in range(len(panels)):
        body += f"\nA{k} {k + 1}\n;".encode() + _binary_section(k + 1, img[k]) + b";\n"
    with atomic_open(path, "wb") as fh:
        fh.write(body)
