"""Hits handed to processing. No Ray.

- **Hit lists** (`xrp runs export RUN --hits FILE`): CrystFEL's list format for indexamajig
  ``-i`` (one line per hit: the file, and `` //N`` (frame N, from 0) for a multi-frame file
  such as an HDF5/NeXus master), or a DIALS-friendly list (one image file per line, each once,
  for ``dials.import $(cat FILE)`` / ``dials.stills_process``). A hit saved with
  ``--save-hits`` is listed by its saved file; a streamed hit that was not saved has no file
  and is left out (counted).
- **Saved hits** (`xrp watch --save-hits DIR`): each hit's frame as a CBF with its geometry in a
  PILATUS_1.2 miniCBF header (io/cbf.py, written atomically: a reader never sees half a file),
  named ``<source>_<frame:06d>.cbf``. A write that fails (disk full, read-only, ...) is counted
  and the run goes on; the counts are kept with the run (``save_hits`` in its run_info).
"""

from __future__ import annotations

import re
import threading
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any

import numpy as np

from xray_platform.io.atomic import atomic_open

#: files whose frames are addressed as ``file //N`` (several frames per file)
MULTI_FRAME_SUFFIXES = (".h5", ".hdf5", ".nxs", ".cxi", ".nx5")
FORMATS = ("crystfel", "dials")


def list_format(path: Path, fmt: str | None) -> str:
    """The list format: ``fmt`` when given, else by extension (.txt: dials, else crystfel)."""
    if fmt is not None:
        if fmt not in FORMATS:
            raise ValueError(f"--format {fmt!r}: one of {', '.join(FORMATS)}")
        return fmt
    return "dials" if Path(path).suffix.lower() == ".txt" else "crystfel"


def _on_disk(file: str) -> bool:
    """A frame source that is a file path (not a stream: tcp://...#series-N)."""
    return "://" not in file


def hit_entries(answers: Iterable[Mapping[str, Any]]) -> tuple[list[tuple[str, int | None]],
                                                               int]:
    """(file, frame or None) of every hit with a file on disk, in arrival order, and how many
    hits have none (streamed and not saved). The frame is None for a one-frame file."""
    hits = [a for a in answers if a.get("hit") and not a.get("error")]
    frames_of: dict[str, set[int]] = {}
    for a in hits:
        frames_of.setdefault(str(a["file"]), set()).add(int(a["frame"]))
    out, missing = [], 0
    for a in hits:
        saved = a.get("saved_file")
        if saved:
            out.append((str(saved), None))
            continue
        file, frame = str(a["file"]), int(a["frame"])
        if not _on_disk(file):
            missing += 1
            continue
        multi = (Path(file).suffix.lower() in MULTI_FRAME_SUFFIXES or frame != 0
                 or len(frames_of[file]) > 1)
        out.append((file, frame if multi else None))
    return out, missing


def hit_list_text(entries: list[tuple[str, int | None]], fmt: str) -> str:
    """The list's text: CrystFEL ``file`` / ``file //N``, or DIALS one file per line."""
    if fmt == "crystfel":
        lines = [f if n is None else f"{f} //{n}" for f, n in entries]
    else:
        lines = list(dict.fromkeys(f for f, _ in entries))
    return "".join(line + "\n" for line in lines)


def write_hit_list(path: Path, answers: Iterable[Mapping[str, Any]], fmt: str | None = None
                   ) -> dict[str, Any]:
    """Write the hit list (atomically) and say what it holds: format, lines, hits, missing."""
    fmt = list_format(path, fmt)
    entries, missing = hit_entries(answers)
    text = hit_list_text(entries, fmt)
    with atomic_open(path) as fh:
        fh.write(text)
    return {"format": fmt, "lines": text.count("\n"), "hits": len(entries),
            "missing": missing}


def read_crystfel_list(path: Path) -> list[tuple[str, int]]:
    """(file, frame) of each line of a CrystFEL list (frame 0 where no //N is given)."""
    out = []
    for line in Path(path).read_text().splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        m = re.fullmatch(r"(.*?)\s+//(\d+)", line)
        out.append((m.group(1), int(m.group(2))) if m else (line, 0))
    return out


def _safe(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "_", text).strip("_.") or "frame"


def saved_name(file: str, frame: int) -> str:
    """The saved CBF's name: the frame's source (stream address and series, or file name)
    and its number."""
    stem = str(file).rsplit("/", 1)[-1] if _on_disk(str(file)) else str(file).split("://")[-1]
    return f"{_safe(stem)}_{int(frame):06d}.cbf"


def write_frame_cbf(path: Path, frame: Any) -> None:
    """One frame (io/formats Frame: float image, negative = masked) as a CBF with its
    geometry: a miniCBF (PILATUS_1.2 header) for a flat detector, an imgCIF with every
    panel's axes for a multi-panel one. Masked pixels are written as -1."""
    img = np.asarray(frame.image, dtype=np.float64)
    counts = np.where(img < 0, -1, np.clip(np.rint(img), 0, np.iinfo(np.int32).max))
    counts = counts.astype(np.int32)
    info = frame.info
    if info.panels:
        from xray_platform.io.imgcif import write_imgcif

        write_imgcif(path, counts, info.panels, wavelength_A=float(info.wavelength_A),
                     max_counts=int(info.max_counts or np.iinfo(np.int32).max),
                     detector=str(info.detector or "xrp saved hit").replace("'", " "))
        return
    from xray_platform.io.cbf import write_cbf

    geom = frame.geometry()  # GeometryMissing / GeometryError: a ValueError, counted
    write_cbf(path, counts, wavelength_A=geom.wavelength_A, distance_mm=geom.distance_mm,
              pixel_size_mm=float(info.pixel_size_mm), beam_center_px=geom.beam_center_px,
              exposure_s=float(info.exposure_s or 0.0),
              detector=str(info.detector or "xrp saved hit").replace("\n", " ")[:200])


class SaveHits:
    """frames -> answers (``answer``), writing each hit's frame to ``folder`` first: the answer
    gains ``saved_file``. A failed write is counted (``failed``, ``last_error``) and the run
    goes on. ``on_counts(counts)`` after each batch with a write (the run store keeps them)."""

    def __init__(self, answer: Callable[[list], list[dict]], folder: Path, *,
                 on_counts: Callable[[dict[str, Any]], None] | None = None,
                 write: Callable[[Path, Any], None] = write_frame_cbf,
                 counts: Mapping[str, Any] | None = None) -> None:
        self.answer, self.folder, self.on_counts, self.write = answer, Path(folder), \
            on_counts, write
        old = counts or {}
        self.written = int(old.get("written") or 0)
        self.failed = int(old.get("failed") or 0)
        self.last_error: str | None = old.get("last_error")
        self._lock = threading.Lock()

    def counts(self) -> dict[str, Any]:
        return {"dir": str(self.folder.resolve()), "written": self.written,
                "failed": self.failed, "last_error": self.last_error}

    def save(self, frame: Any) -> str | None:
        """Write one frame; its path, or None (counted) when the write failed."""
        path = self.folder / saved_name(frame.path, frame.index)
        try:
            self.folder.mkdir(parents=True, exist_ok=True)
            self.write(path, frame)
        except (OSError, ValueError) as e:
            with self._lock:
                self.failed += 1
                self.last_error = f"{path.name}: {type(e).__name__}: {e}"[:300]
            return None
        with self._lock:
            self.written += 1
        return str(path.resolve())

    def __call__(self, frames: list) -> list[dict]:
        answers = self.answer(frames)
        by_key = {(str(f.path), int(f.index)): f for f in frames}
        wrote = False
        for a in answers:
            f = by_key.get((str(a.get("file")), int(a.get("frame", -1))))
            if f is None or not a.get("hit") or a.get("error"):
                continue
            wrote = True
            saved = self.save(f)
            if saved is not None:
                a["saved_file"] = saved
        if wrote and self.on_counts is not None:
            self.on_counts(self.counts())
        return answers
