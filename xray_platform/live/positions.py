"""Motor positions of a scan's frames, for centring from positions (live/centre.py): read from
a positions file (`xrp watch --positions FILE`, `xrp runs centre --positions FILE`) or carried
by the DECTRIS stream's image messages. Pure Python + numpy, no Ray.

**Positions file**: a text table, its first line (after blank lines and ``#`` comments) a
header; fields separated by commas or by white space; one row per frame. Columns (by name, any
order, case ignored; others, such as ``z_um`` or ``omega``, are ignored):

- the frame: ``frame`` (the frame's place in the scan from 0: its frame number, or where frame
  numbers repeat, a folder of one-frame files, its rank in (file name, frame) order: the rule
  of ``--grid``) and/or ``file`` (the frame's file, matched by name: ``g_0007.cbf`` matches
  ``/data/visit/g_0007.cbf``; with ``frame`` the frame in that file, else its frame 0);
- the position: ``x_um`` or ``x_mm``, and ``y_um`` or ``y_mm`` (the unit is in the name; mm
  are read as 1000 µm), absolute motor positions.

Errors name the file and line: a missing column, a row of the wrong length, a number that is
not one or is NaN/inf, a frame that is not 0, 1, 2, ..., a frame (or file and frame) listed
twice.

**Stream convention (xrp's, not DECTRIS's: the SIMPLON API fixes no motor names)**: an image
message whose ``user_data`` (stream v2; stream v1: the image appendix, when it is a JSON
object) holds ``x_um`` and ``y_um`` (or ``x_mm``, ``y_mm``) numbers, at its top level or in a
``motors`` map, places that frame there.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

STREAM = "stream"
#: unit suffix -> µm per unit
UNITS = {"um": 1.0, "mm": 1000.0}


@dataclass
class Positions:
    """Frame positions in µm: by the frame's place in the scan (``by_index``) and by (file
    name, frame) (``by_file``); ``source`` says where they came from (a file, or "stream")."""

    source: str
    by_index: dict[int, tuple[float, float]] = field(default_factory=dict)
    by_file: dict[tuple[str, int], tuple[float, float]] = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.by_index) + len(self.by_file)

    def rows(self) -> list[tuple[str, int, float, float]]:
        """(file name or "" for a place in the scan, frame, x_um, y_um): the run store's rows."""
        return ([("", i, x, y) for i, (x, y) in self.by_index.items()]
                + [(f, i, x, y) for (f, i), (x, y) in self.by_file.items()])

    @classmethod
    def from_rows(cls, source: str, rows: Sequence[Sequence[Any]]) -> Positions:
        p = cls(source)
        for f, i, x, y in rows:
            if f:
                p.by_file[(str(f), int(i))] = (float(x), float(y))
            else:
                p.by_index[int(i)] = (float(x), float(y))
        return p


def _fields(line: str) -> list[str]:
    return [s.strip() for s in line.split(",")] if "," in line else line.split()


def _header(path: Path, lineno: int, names: list[str]) -> dict[str, tuple[int, float]]:
    """Column of each role (frame, file, x, y) -> (index, µm per unit)."""
    low = [n.strip().lower() for n in names]
    seen = {n: k for k, n in enumerate(low)}
    if len(seen) != len(low):
        dup = next(n for n in low if low.count(n) > 1)
        raise ValueError(f"{path}:{lineno}: column {dup!r} twice in the header")
    cols: dict[str, tuple[int, float]] = {k: (seen[k], 1.0) for k in ("frame", "file")
                                          if k in seen}
    if not cols:
        raise ValueError(f"{path}:{lineno}: no 'frame' or 'file' column (the header has: "
                         f"{', '.join(names)}); give frame,x_um,y_um")
    for axis in ("x", "y"):
        found = [(seen[f"{axis}_{u}"], k) for u, k in UNITS.items() if f"{axis}_{u}" in seen]
        if len(found) != 1:
            what = "no" if not found else "two"
            raise ValueError(f"{path}:{lineno}: {what} {axis} position column ({axis}_um or "
                             f"{axis}_mm; the header has: {', '.join(names)})")
        cols[axis] = found[0]
    return cols


def _number(path: Path, lineno: int, name: str, text: str) -> float:
    try:
        v = float(text)
    except ValueError:
        raise ValueError(f"{path}:{lineno}: {name} {text!r} is not a number") from None
    if not math.isfinite(v):
        raise ValueError(f"{path}:{lineno}: {name} is {text}: every position must be a "
                         "finite number")
    return v


def _frame(path: Path, lineno: int, text: str) -> int:
    if not re.fullmatch(r"\d+", text):
        raise ValueError(f"{path}:{lineno}: frame {text!r} is not a frame number (0, 1, 2, "
                         "...)")
    return int(text)


def read_positions(path: str | Path) -> Positions:
    """The positions file at ``path`` (module doc); ValueError naming the file and line."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8-sig")
    except (OSError, UnicodeDecodeError) as e:
        raise ValueError(f"{path}: cannot read the positions file ({e})") from None
    lines = [(k, s) for k, s in enumerate(text.splitlines(), 1)
             if s.strip() and not s.lstrip().startswith("#")]
    if not lines:
        raise ValueError(f"{path}: empty: give a header line (frame,x_um,y_um) and one row "
                         "per frame")
    (hline, head), rows = lines[0], lines[1:]
    names = _fields(head)
    cols = _header(path, hline, names)
    out, first = Positions(str(path)), {}
    for lineno, line in rows:
        v = _fields(line)
        if len(v) != len(names):
            raise ValueError(f"{path}:{lineno}: {len(v)} fields, the header has {len(names)}")
        xy = tuple(_number(path, lineno, names[cols[a][0]], v[cols[a][0]]) * cols[a][1]
                   for a in ("x", "y"))
        frame = _frame(path, lineno, v[cols["frame"][0]]) if "frame" in cols else 0
        key: Any = (v[cols["file"][0]].removeprefix("./"), frame) if "file" in cols else frame
        if key in first:
            what = f"file {key[0]} frame {key[1]}" if "file" in cols else f"frame {key}"
            raise ValueError(f"{path}:{lineno}: {what} again (first on line {first[key]})")
        first[key] = lineno
        (out.by_file if "file" in cols else out.by_index)[key] = xy  # type: ignore[index]
    if not len(out):
        raise ValueError(f"{path}: a header but no rows")
    return out


def _axis(d: Mapping[str, Any], axis: str) -> float | None:
    for unit, scale in UNITS.items():
        v = d.get(f"{axis}_{unit}")
        if isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v):
            return float(v) * scale
    return None


def from_user_data(user: Any) -> tuple[float, float] | None:
    """(x, y) in µm of an image message's user data under xrp's convention (module doc), or
    None. A JSON object as text (a stream v1 image appendix) is read too."""
    if isinstance(user, (bytes, str)):
        try:
            user = json.loads(user)
        except (UnicodeDecodeError, json.JSONDecodeError):
            return None
    if not isinstance(user, Mapping):
        return None
    for d in (user, user.get("motors")):
        if isinstance(d, Mapping):
            x, y = _axis(d, "x"), _axis(d, "y")
            if x is not None and y is not None:
                return (x, y)
    return None


def resolve(answers: Sequence[Mapping[str, Any]], tables: Sequence[Positions],
            index: Sequence[int]) -> tuple[np.ndarray, list[bool]]:
    """(n, 2) µm of each answer, NaN where no table places it, and whether each table placed
    any. An answer is matched by its file and frame (a table's file name matches the answer's
    file or its end after a "/"), then by ``index`` (its place in the scan); the first table
    that places it wins."""
    xy = np.full((len(answers), 2), np.nan)
    by = np.full(len(answers), -1)
    for t, table in reversed(list(enumerate(tables))):  # the first table is written last
        by_base: dict[tuple[str, int], list[tuple[str, tuple[float, float]]]] = {}
        for (name, frame), p in table.by_file.items():
            by_base.setdefault((name.rsplit("/", 1)[-1], frame), []).append((name, p))
        for k, (a, i) in enumerate(zip(answers, index, strict=True)):
            f = str(a.get("file", ""))
            hit = next((p for name, p in by_base.get((f.rsplit("/", 1)[-1], int(a["frame"])),
                                                      ()) if f == name or
                        f.endswith("/" + name)), None)
            hit = hit if hit is not None else table.by_index.get(int(i))
            if hit is not None:
                xy[k], by[k] = hit, t
    return xy, [bool(np.any(by == t)) for t in range(len(tables))]
