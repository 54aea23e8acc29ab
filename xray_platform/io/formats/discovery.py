"""Input discovery: files, folders and glob patterns -> (file, frame) items."""

from __future__ import annotations

import glob
from collections.abc import Iterable
from pathlib import Path

from xray_platform.io.formats.base import HDF5_MAGIC, FormatError, sniff
from xray_platform.io.formats.registry import known_formats, n_frames, reader_for, understood_by


def _has_magic(pattern: str) -> bool:
    return any(c in pattern for c in "*?[")


def _readable(p: Path, geometry: str | Path | None) -> bool:
    """A reader understands p, or a geometry file places its arrays (an HDF5 file)."""
    if geometry is not None:
        try:
            return sniff(p, 8).startswith(HDF5_MAGIC)
        except OSError:
            return False
    return understood_by(p) is not None


def _folder_files(folder: Path, geometry: str | Path | None = None) -> list[Path]:
    """Files under folder (recursively, sorted, hidden ones skipped) that a reader understands."""
    out = []
    for p in sorted(folder.rglob("*")):
        rel = p.relative_to(folder).parts
        if p.is_file() and not any(part.startswith(".") for part in rel) and \
                _readable(p, geometry):
            out.append(p)
    return out


def expand_inputs(paths: Iterable[str | Path], geometry: str | Path | None = None
                  ) -> list[tuple[Path, int]]:
    """Files, folders (recursively: only files some reader understands, sorted) and glob
    patterns -> [(file, frame index)], one entry per frame of multi-frame files. With a
    CrystFEL ``geometry``, the HDF5 files are taken and read through it.

    Explicitly named files must be readable detector files; a path or pattern that matches
    nothing raises FormatError. A file met twice is listed once.
    """
    if isinstance(paths, (str, Path)):
        paths = [paths]
    files: list[Path] = []
    for item in paths:
        p = Path(item)
        if p.is_dir():
            found = _folder_files(p, geometry)
            if not found:
                raise FormatError(f"{p}: folder holds no detector files xrp can read "
                                  f"(known: {known_formats()})")
        elif p.exists():
            if geometry is None:
                reader_for(p)  # raises a clear FormatError for an unknown format
            found = [p]
        elif _has_magic(str(item)):
            matches = sorted(Path(m) for m in glob.glob(str(item), recursive=True))
            if not matches:
                raise FormatError(f"{item}: pattern matches no files")
            found = []
            for m in matches:
                found.extend(_folder_files(m, geometry) if m.is_dir() else [m]
                             if _readable(m, geometry) else [])
            if not found:
                raise FormatError(f"{item}: pattern matches {len(matches)} path(s) but no "
                                  f"detector file xrp can read (known: {known_formats()})")
        else:
            raise FormatError(f"{item}: no such file or folder")
        files.extend(found)

    seen: set[Path] = set()
    out: list[tuple[Path, int]] = []
    for f in files:
        key = f.resolve()
        if key in seen:
            continue
        seen.add(key)
        n = n_frames(f, geometry)
        out.extend((f, i) for i in range(n))
    return out
