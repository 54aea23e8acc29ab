"""Simulated hits through the answer path, for fitting the lattice verdict (jobs/fit_verdict.py)
and judging it (benchmarks/lattice_verdict.py): per shot its labels (physics/labels.py, with
the visibility label), the CNN's p_multi and the indexing with and without the known cell
(numpy/torch; no Ray: a process pool spreads shots over the cores)."""

from __future__ import annotations

import json
import os
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np

from xray_platform.io.formats.base import Frame, FrameInfo
from xray_platform.io.json_lines import read_json_lines
from xray_platform.physics.geometry import detector
from xray_platform.physics.labels import visibility_labels
from xray_platform.physics.simulate import ShotParams


def simulated_frame(p: ShotParams, image: np.ndarray, path: str = "simulated") -> Frame:
    """A simulated full frame as a reader would give it (gaps negative), header from ``p``."""
    det = detector(p.detector)
    info = FrameInfo(p.wavelength_A, p.distance_mm, det.pixel_mm, p.beam_center_px,
                     n_fast=image.shape[1], n_slow=image.shape[0],
                     detector=f"{det.description} (simulated)", format="simulated",
                     n_frames=1, max_counts=det.max_counts)
    return Frame(np.asarray(image, np.float32), info, path, 0)


_MODELS: dict[str, Any] = {}


def _lattice_model():
    if "lattice" not in _MODELS:
        import torch

        from xray_platform.core.answer import load_file
        from xray_platform.zoo import zoo_model

        torch.set_num_threads(1)
        z = zoo_model("lattice")
        _MODELS["lattice"] = load_file("lattice", z.file, z.source, z.name, z.version)
    return _MODELS["lattice"]


def shot_row(preset_name: str, seed: int, index: int, known_cell: bool = True
             ) -> dict[str, Any]:
    """One shot's labels, the CNN's p_multi, and the indexing without (and with) the cell
    (null for a shot the hit finder calls a miss)."""
    from xray_platform.core.answer import key, p_multi, prepare_frame
    from xray_platform.physics.crystal import CRYSTAL_FORMS
    from xray_platform.physics.presets import preset
    from xray_platform.physics.simulate import simulate

    p = preset(preset_name).params(seed, index)
    shot = simulate(p, full_frame=True)
    frame = simulated_frame(p, shot.frame, f"{preset_name}:{seed}:{index}")
    lm = _lattice_model()
    prep = prepare_frame(frame, [lm.prep])
    rec = shot.record
    row = {"preset": preset_name, "seed": seed, "index": index, "detector": p.detector,
           "crystal_form": p.crystal_form, "n_lattices": rec["n_lattices"],
           "is_multi": rec["is_multi"], "hit_label": rec["hit"],
           "n_detectable_per_lattice": json.loads(rec["n_detectable_per_lattice"]),
           "misorientation_deg": json.loads(rec["misorientation_deg"]),
           **visibility_labels(json.loads(rec["n_detectable_per_lattice"])),
           "hit": prep.hit, "n_spots": prep.n_spots, "p_cnn": None, "no_cell": None,
           "cell": None, "timings_ms": prep.timings_ms}
    if not prep.hit:
        return row
    row["p_cnn"] = float(p_multi(lm, prep.inputs[key(lm.prep)][None])[0])
    row["no_cell"] = {**prep.indexing, "spots_ms": prep.timings_ms["spots_ms"],
                      "indexing_ms": prep.timings_ms["indexing_ms"]}
    if known_cell and p.crystal_form:
        cell = CRYSTAL_FORMS[p.crystal_form].cell
        with_cell = prepare_frame(frame, [lm.prep], cell=cell)
        row["cell"] = {**with_cell.indexing, "indexing_ms": with_cell.timings_ms["indexing_ms"]}
    return row


def _row(args: tuple) -> dict[str, Any]:
    return shot_row(*args)


def collect(preset_name: str, seed: int, n: int, cache: Path, known_cell: bool = True,
            workers: int | None = None, progress=None) -> list[dict[str, Any]]:
    """:func:`shot_row` of shots 0..n-1 of ``preset_name`` (seed ``seed``) over ``workers``
    processes, kept in ``cache`` (JSON lines, one per shot: a run stopped half-way goes on
    where it stopped; a row without the cell's indexing is redone when ``known_cell``)."""
    done = {row["index"]: row for row in read_json_lines(cache)
            if not known_cell or row["cell"] is not None or not row["hit"]}
    todo = [(preset_name, seed, i, known_cell) for i in range(n) if i not in done]
    cache.parent.mkdir(parents=True, exist_ok=True)
    if todo:
        with ProcessPoolExecutor(workers or os.cpu_count() or 1) as pool, \
                cache.open("a") as out:
            for row in pool.map(_row, todo, chunksize=1):
                out.write(json.dumps(row) + "\n")
                out.flush()
                done[row["index"]] = row
                if progress:
                    progress(row)
    return [done[i] for i in range(n)]
