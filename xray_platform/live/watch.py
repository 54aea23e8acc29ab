"""`xrp watch FOLDER`: follow a run as the detector writes it, answer every new frame through
the frame -> answer path of `xrp predict` (core/answer.py, in this process) and append the
answers to the run store (live/store.py). No Ray.

- A file is read once it is settled: its size and modification time unchanged for
  ``settle_s``. A frame that fails to read (a half-written CBF, an HDF5 master whose data file
  is not there yet) is retried at every poll; only after failing for ``give_up_s`` is it stored
  with its error, so a slow writer never turns into "corrupt".
- Frames waiting beyond ``max_backlog`` are dropped, oldest first, and counted (the run's
  ``dropped``): the watcher keeps up with the newest frames instead of falling behind; the
  detector writes files, so it is never blocked.
- A restart resumes the run: frames already in the store are never answered again.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from xray_platform.live.positions import Positions
from xray_platform.live.store import RunStore


@dataclass
class WatchStats:
    answered: int = 0
    hits: int = 0
    errors: int = 0
    dropped: int = 0
    retrying: int = 0
    backlog: int = 0
    last: dict[str, Any] | None = None

    def count(self, answers: list[dict[str, Any]]) -> None:
        """Add a batch of stored answers to the counts."""
        self.answered += len(answers)
        self.hits += sum(bool(a.get("hit")) for a in answers)
        self.errors += sum(bool(a.get("error")) for a in answers)
        if answers:
            self.last = answers[-1]


_DETECTOR_NAME = re.compile(r"\.(cbf|img|smv|h5|hdf5|nxs)(\.(gz|bz2))?$", re.IGNORECASE)
_EIGER_DATA = re.compile(r"_data_\d{6}\.h5$")


def _looks_like_a_frame(p: Path) -> bool:
    """Named like a detector file (not an EIGER data file, which its master reads) though no
    reader takes it (truncated, corrupt): it gets an error answer once it has failed long
    enough."""
    return bool(_DETECTOR_NAME.search(p.name)) and not _EIGER_DATA.search(p.name)


@dataclass
class FolderScan:
    """Detector files under a folder, each opened only when new or changed."""

    folder: Path
    settle_s: float = 1.0
    geometry: str | None = None  # a CrystFEL .geom placing the HDF5 files' arrays
    links_inside: Path | None = None  # symbolic and HDF5 links must stay in here (None: any)
    _seen: dict[Path, tuple[int, float, float, int]] = field(default_factory=dict)

    def frames(self) -> list[tuple[Path, int]]:
        """(file, frame) of every frame of the settled detector files, in file order."""
        from xray_platform.io.formats.base import HDF5_MAGIC, sniff
        from xray_platform.io.formats.hdf5_links import check_links
        from xray_platform.io.formats.registry import n_frames, reader_for, understood_by

        out, now = [], time.time()
        for p in sorted(q for q in self.folder.rglob("*") if q.is_file()):
            try:
                st = p.stat()
            except OSError:  # removed meanwhile
                continue
            size, mtime = st.st_size, st.st_mtime
            old = self._seen.get(p)
            if old is None or old[:2] != (size, mtime):
                self._seen[p] = (size, mtime, now, -1)  # changed: wait for it to settle
                continue
            if now - old[2] < self.settle_s:
                continue
            n = old[3]
            if n < 0:  # settled: how many frames does it hold (0: not a detector file)?
                try:
                    if self.links_inside is not None:
                        check_links(p, self.links_inside, upload=False)
                    if self.geometry is not None and sniff(p, 8).startswith(HDF5_MAGIC):
                        n = n_frames(p, self.geometry)
                    else:
                        n = reader_for(p).n_frames(p) if understood_by(p) else \
                            int(_looks_like_a_frame(p))
                except (ValueError, OSError):
                    n = 1  # a detector file that fails: its frame gets an error answer
                self._seen[p] = (size, mtime, old[2], n)
            out.extend((p, i) for i in range(n))
        return out


@dataclass
class _Thumbs:
    """The latest frame's thumbnail into the store, at most every ``every_s`` seconds."""

    store: RunStore
    run_id: int
    every_s: float
    last: float = 0.0
    pending: Any = None  # the latest frame not drawn yet

    def offer(self, frame: Any) -> None:
        self.pending = frame
        if time.time() - self.last >= self.every_s:
            self.flush()

    def flush(self) -> None:
        """Draw the latest frame now (at the end of a run: the page shows the last one)."""
        if self.pending is None:
            return
        from xray_platform.live.thumbnail import thumbnail

        png, meta = thumbnail(self.pending)
        self.store.set_live(self.run_id, thumb=png, thumb_meta=meta)
        self.last, self.pending = time.time(), None


def keep_positions(store: RunStore, run_id: int, positions: Positions | None) -> None:
    """A positions file's rows kept with the run (replacing any it held) and named in its
    info (``positions_file``: path, rows)."""
    if positions is not None:
        store.set_positions(run_id, positions.rows(), "file")
        store.set_info(run_id, positions_file={"path": str(Path(positions.source).resolve()),
                                               "rows": len(positions)})


def answerer(models: dict | Callable[[list], list[dict]]) -> Callable[[list], list[dict]]:
    """frames -> answers: in this process with ``models`` ({task: LoadedModel}, core/answer.py),
    or ``models`` itself when it is a callable (live/remote.py: a running `xrp serve`)."""
    if callable(models):
        return models
    from xray_platform.core.answer import predict_frames

    return lambda frames: predict_frames(frames, models)


def answer_items(items: list[tuple[Path, int]], models: dict, overrides: dict
                 ) -> tuple[list[dict], dict[tuple[str, int], str], list]:
    """Answers of the frames that read, the read errors of the others, and the frames."""
    from itertools import groupby

    from xray_platform.io.formats.registry import open_frames

    frames, errors = [], {}
    for path, group in groupby(items, key=lambda item: item[0]):  # each file opened once
        indices = [i for _, i in group]
        try:
            with open_frames(path, **overrides) as src:
                for index in indices:
                    try:
                        frames.append(src.frame(index))
                    except (ValueError, OSError) as e:
                        errors[(str(path), index)] = str(e)
        except (ValueError, OSError) as e:
            errors.update({(str(path), i): str(e) for i in indices})
    return (answerer(models)(frames) if frames else []), errors, frames


def watch_folder(folder: Path, store: RunStore, run: str, models: dict, *,
                 overrides: dict | None = None, poll_s: float = 1.0, settle_s: float = 1.0,
                 give_up_s: float = 60.0, max_backlog: int = 1000, batch: int = 8,
                 exit_when_idle_s: float | None = None, raster: dict | None = None,
                 thumb_every_s: float = 1.0, allow_links_outside: bool = False,
                 on_update: Callable[[WatchStats], None] | None = None,
                 info: dict | None = None,
                 on_answers: Callable[[list[dict[str, Any]]], None] | None = None,
                 positions: Positions | None = None) -> WatchStats:
    """Follow ``folder`` until idle for ``exit_when_idle_s`` (None: until interrupted);
    ``on_answers``: called with each batch of answers once they are stored (live/epics.py);
    ``raster`` ({"rows", "cols", "snake"}) tells the live page the run is a grid scan;
    ``positions`` (a positions file, live/positions.py) are kept with the run. Symbolic
    links and HDF5 links (external, virtual data sets) are followed only inside ``folder``
    unless ``allow_links_outside``."""
    folder = Path(folder).resolve()  # answers name absolute paths: a restart elsewhere resumes
    if not folder.is_dir():
        raise ValueError(f"{folder}: no such folder")
    if not allow_links_outside:
        overrides = {**(overrides or {}), "links_inside": folder}
    run_id = store.open_run(run, f"folder:{folder}")
    if info:
        store.set_info(run_id, **info)
    keep_positions(store, run_id, positions)
    if raster:
        store.set_live(run_id, raster=raster)
    done = store.answered(run_id)
    thumbs = _Thumbs(store, run_id, thumb_every_s)
    scan = FolderScan(folder, settle_s, (overrides or {}).get("geometry"),
                      (overrides or {}).get("links_inside"))
    stats = WatchStats()
    failing: dict[tuple[str, int], float] = {}  # first failure time of frames being retried
    dropped: set[tuple[str, int]] = set()
    idle_since = time.time()
    while True:
        pending = [(p, i) for p, i in scan.frames()
                   if (str(p), i) not in done and (str(p), i) not in dropped]
        if len(pending) > max_backlog:  # keep up with the newest frames
            n_drop = len(pending) - max_backlog
            dropped.update((str(p), i) for p, i in pending[:n_drop])
            store.add(run_id, [], dropped=n_drop)
            stats.dropped += n_drop
            pending = pending[n_drop:]
        made = 0
        for k in range(0, len(pending), batch):
            made += _answer_batch(pending[k:k + batch], store, run_id, models, overrides or {},
                                  give_up_s, failing, done, stats, thumbs, on_answers)
            stats.retrying = len(failing)
            stats.backlog = max(0, len(pending) - k - batch)
            store.set_live(run_id, received=len(done), queued=stats.backlog)
            if on_update:
                on_update(stats)
        stats.backlog = 0
        if made:
            idle_since = time.time()
            continue
        if on_update:
            on_update(stats)
        thumbs.flush()
        if exit_when_idle_s is not None and time.time() - idle_since >= exit_when_idle_s:
            return stats
        time.sleep(poll_s)


def _answer_batch(work: list[tuple[Path, int]], store: RunStore, run_id: int, models: dict,
                  overrides: dict, give_up_s: float, failing: dict[tuple[str, int], float],
                  done: set[tuple[str, int]], stats: WatchStats, thumbs: _Thumbs,
                  on_answers: Callable[[list[dict[str, Any]]], None] | None = None) -> int:
    """Answer one batch into the store; frames that fail to read wait in ``failing`` until
    they have failed for give_up_s, then get their error as the answer. Returns answers made."""
    answers, errors, frames = answer_items(work, models, overrides)
    if frames:
        thumbs.offer(frames[-1])
    now = time.time()
    for key, msg in errors.items():
        if now - failing.setdefault(key, now) >= give_up_s:
            answers.append({"file": key[0], "frame": key[1], "error": msg})
    store.add(run_id, answers)
    for a in answers:
        key = (str(a["file"]), int(a["frame"]))
        done.add(key)
        failing.pop(key, None)
    stats.count(answers)
    if on_answers and answers:
        on_answers(answers)
    return len(answers)
