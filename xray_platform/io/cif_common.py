"""What full-CBF (imgCIF) readers share: the binary section's framing and MIME header, CIF
items as numbers, and the imgCIF axis chains (io/cbf.py reads one-panel files, io/imgcif.py
multi-panel ones; both import these, neither imports the other)."""

from __future__ import annotations

import re
from collections.abc import Mapping

import numpy as np

from xray_platform.physics.panels import rotation

#: the bytes that start a binary section's data, after its MIME header
STARTER = b"\x0c\x1a\x04\xd5"
#: the line that opens (and, followed by ``--``, closes) a binary section
BINARY_MARKER = b"--CIF-BINARY-FORMAT-SECTION--"


def mime_fields(text: str) -> dict[str, str]:
    """The fields of a binary section's MIME header (its text from the marker to the data
    starter), with the Content-Type parameter ``conversions`` as a field of its own."""
    mime: dict[str, str] = {}
    for line in text.splitlines()[1:]:
        key, sep, val = line.partition(":")
        if sep:
            mime[key.strip()] = val.strip().strip('"').strip()
    conv = re.search(r'conversions\s*=\s*"?([\w-]+)', text)
    if conv:
        mime["conversions"] = conv.group(1)
    return mime


def number(row: Mapping[str, str], key: str, default: float = 0.0) -> float:
    """A CIF item as a float, ``default`` for a CIF null ('.' or '?') or a missing item."""
    value = row.get(key, ".")
    try:
        return float(value)
    except ValueError:
        return default  # '.' or '?' (CIF null)


def vector(row: Mapping[str, str], name: str) -> np.ndarray:
    """The 3-vector of items ``name[1]``, ``name[2]``, ``name[3]`` of a CIF row."""
    return np.array([number(row, f"{name}[{i}]") for i in (1, 2, 3)])


class Axes:
    """The _axis table and this frame's axis settings (angles in deg, displacements in mm)."""

    def __init__(self, tables: dict[str, list[dict[str, str]]]) -> None:
        self.rows = {r["id"]: r for r in tables.get("_axis", []) if "id" in r}
        self.settings: dict[str, float] = {}
        for r in tables.get("_diffrn_scan_axis", []):
            key = "angle_start" if self.is_rotation(r.get("axis_id", "")) else \
                "displacement_start"
            self.settings[r.get("axis_id", "")] = number(r, key)
        frames = tables.get("_diffrn_scan_frame_axis", [])
        first = frames[0].get("frame_id") if frames else None
        for r in frames:
            if r.get("frame_id") == first:
                key = "angle" if self.is_rotation(r.get("axis_id", "")) else "displacement"
                self.settings[r.get("axis_id", "")] = number(r, key)

    def is_rotation(self, axis_id: str) -> bool:
        return self.rows.get(axis_id, {}).get("type") == "rotation"

    def chain(self, axis_id: str) -> list[str]:
        """The axis and every axis it depends on, innermost first."""
        out: list[str] = []
        while axis_id in self.rows and axis_id not in out:
            out.append(axis_id)
            axis_id = self.rows[axis_id].get("depends_on", ".")
        return out

    def position(self, chain: list[str], local: dict[str, float]) -> np.ndarray:
        """The imgCIF-frame position (mm) of the point at the origin of the innermost axis."""
        x = np.zeros(3)
        for a in chain:
            row = self.rows[a]
            vec, off = vector(row, "vector"), vector(row, "offset")
            value = local.get(a, self.settings.get(a, 0.0))
            if row.get("type") == "rotation":
                x = rotation(vec, value) @ x + off
            else:
                norm = np.linalg.norm(vec)
                x = x + (value * vec / norm if norm else 0.0) + off
        return x
