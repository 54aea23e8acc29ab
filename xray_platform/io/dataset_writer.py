"""Plan and write simulated shot data sets as shards (no Ray: the Ray job only calls these).

A data set directory holds ``dataset.json`` (preset, parameters, seed, shard plan, xrp version)
and ``shard-NNNNN.h5`` files, each written under a temporary name and renamed when complete.
Re-running the same command skips the complete shards and rewrites the others (resume).
"""

from __future__ import annotations

import json
import math
import os
import time
from dataclasses import dataclass
from pathlib import Path

import torch

from xray_platform import __version__
from xray_platform.io.shots import (
    ShotWriter,
    clean_partials,
    completed_shards,
    read_manifest,
    shard_path,
    write_manifest,
)
from xray_platform.physics.presets import DatasetPreset
from xray_platform.physics.simulate import simulate


@dataclass(frozen=True)
class ShardPlan:
    index: int
    start: int
    count: int


def plan_shards(n_shots: int, shard_size: int) -> list[ShardPlan]:
    if shard_size < 1:
        raise ValueError(f"shard size must be >= 1, got {shard_size}")
    n = math.ceil(n_shots / shard_size)
    return [ShardPlan(i, i * shard_size, min(shard_size, n_shots - i * shard_size))
            for i in range(n)]


def manifest_info(preset: DatasetPreset, seed: int, shard_size: int, full_frames: bool) -> dict:
    if preset.user_sets:  # each user set fixes its detector
        detectors = {u.fixed.get("detector") for u in preset.user_sets} - {None}
    else:
        detectors = set(preset.sim.detectors)
    if full_frames and len(detectors) > 1:
        raise ValueError("full frames need one detector per data set and this preset mixes "
                         f"{sorted(detectors)}: add --detector pilatus6m (or eiger16m, test)")
    return {
        "format": "xrp-shots-dataset",
        "preset": preset.name,
        "description": preset.description,
        "task": preset.task,
        "n_shots": preset.n_shots,
        "seed": seed,
        "shard_size": shard_size,
        "n_shards": len(plan_shards(preset.n_shots, shard_size)),
        "full_frames": full_frames,
        "grid": {"size": preset.grid.size, "d_min_A": preset.grid.d_min_A},
        "parameters": preset.to_dict(),
        "xrp_version": __version__,
        "label_definitions": "xray_platform.physics.labels (design.md 'Labels')",
    }


def _differences(old: dict, new: dict) -> list[str]:
    """Manifest keys in which two data sets differ (the shot count of the preset's parameters
    counts as n_shots)."""
    keys = ("preset", "n_shots", "seed", "shard_size", "full_frames")
    diff = [k for k in keys if old.get(k) != new.get(k)]
    strip = [{k: v for k, v in (d.get("parameters") or {}).items() if k not in (
        "n_shots", "user_sets")} for d in (old, new)]
    if strip[0] != strip[1] or (old.get("parameters") or {}).get("user_sets") != \
            (new.get("parameters") or {}).get("user_sets"):
        diff.append("parameters")
    return diff


def prepare_directory(out: Path, info: dict) -> set[int]:
    """Create or check the data set directory; return the indices of shards already complete.

    Refuses (ValueError) to mix two different data sets in one directory; a larger shot count
    of the same data set extends it."""
    out = Path(out)
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise ValueError(f"cannot create output directory {out}: {e.strerror}") from None
    if not os.access(out, os.W_OK):
        raise ValueError(f"output directory {out} is not writable")
    if (out / "dataset.json").exists():
        old = read_manifest(out)
        info = json.loads(json.dumps(info))  # compare as stored (tuples become lists)
        diff = _differences(old, info)
        if diff == ["n_shots"] and info["n_shots"] > old["n_shots"]:
            # more shots of the same data set: shot i depends only on (seed, i), so every
            # complete shard stays valid and the new ones continue the set
            write_manifest(out, {**info, "complete": False})
        elif diff:
            raise ValueError(f"{out} already holds a different data set (differs in: "
                             f"{', '.join(diff)}); choose another --out or delete it"
                             + (" (a data set can grow, not shrink)" if diff == ["n_shots"]
                                else ""))
    else:
        write_manifest(out, {**info, "complete": False})
    clean_partials(out)
    expected = {p.index: p.count for p in plan_shards(info["n_shots"], info["shard_size"])}
    return completed_shards(out, expected)


def write_shard(preset: DatasetPreset, seed: int, plan: ShardPlan, out: Path,
                full_frames: bool = False, device: str | None = None) -> dict:
    """Simulate and write one shard; returns a summary (shots, hits, seconds)."""
    torch.set_num_threads(1)  # one shard per core: parallelism comes from running shards
    t0 = time.perf_counter()
    grid = preset.grid
    first = preset.params(seed, plan.start)
    frame_shape = first.geometry.detector.shape if full_frames else None
    attrs = {"preset": preset.name, "seed": seed, "shard": plan.index, "start": plan.start,
             "count": plan.count, "full_frames": full_frames, "xrp_version": __version__}
    hits = multi = 0
    with ShotWriter(shard_path(out, plan.index), input_shape=(grid.size, grid.size),
                    expected=plan.count, attrs=attrs,
                    full_frame_shape=frame_shape) as w:
        for i in range(plan.start, plan.start + plan.count):
            p = preset.params(seed, i)
            shot = simulate(p, grid, full_frame=full_frames, device=device)
            record = {"index": i, **shot.record, **preset.extra_columns(i)}
            w.append(shot.inputs, record, shot.frame)
            hits += record["hit"]
            multi += record["is_multi"]
    return {"shard": plan.index, "shots": plan.count, "hits": hits, "multi": multi,
            "seconds": time.perf_counter() - t0}


def finish(out: Path, info: dict) -> None:
    write_manifest(out, {**info, "complete": True})
