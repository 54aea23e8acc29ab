"""`xrp simulate` on Ray: one Ray task per shard, on a local Ray or any cluster by address.

Callers run :func:`xray_platform.orchestration.env.prepare_ray_env` before importing this module."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

import ray

from xray_platform.io.dataset_writer import (
    finish,
    manifest_info,
    plan_shards,
    prepare_directory,
    write_shard,
)
from xray_platform.orchestration.env import init_ray
from xray_platform.physics.presets import DatasetPreset


@ray.remote(num_cpus=1, max_retries=2)
def _shard_task(preset: DatasetPreset, seed: int, plan, out: str, full_frames: bool) -> dict:
    return {**write_shard(preset, seed, plan, Path(out), full_frames),
            "node": ray.get_runtime_context().get_node_id()}


def simulate_dataset(preset: DatasetPreset, out: Path, seed: int, *, full_frames: bool = False,
                     shard_size: int | None = None, address: str | None = None,
                     num_cpus: int | None = None,
                     on_progress: Callable[[int, int], None] | None = None) -> dict:
    """Simulate ``preset`` into ``out`` in parallel, resuming complete shards.

    on_progress(shots_done, shots_total) is called as shards finish. Returns a summary."""
    shard_size = shard_size or preset.shard_size
    info = manifest_info(preset, seed, shard_size, full_frames)
    done = prepare_directory(out, info)
    plans = plan_shards(preset.n_shots, shard_size)
    todo = [p for p in plans if p.index not in done]
    shots_done = sum(p.count for p in plans if p.index in done)
    if on_progress:
        on_progress(shots_done, preset.n_shots)
    t0 = time.perf_counter()
    results = []
    if todo:
        init_ray(address, num_cpus)
        pending = {_shard_task.remote(preset, seed, p, str(out), full_frames): p for p in todo}
        while pending:
            ready, _ = ray.wait(list(pending), num_returns=1)
            for ref in ready:
                pending.pop(ref)
                res = ray.get(ref)
                results.append(res)
                shots_done += res["shots"]
                if on_progress:
                    on_progress(shots_done, preset.n_shots)
    finish(out, info)
    wall = time.perf_counter() - t0
    n_new = sum(r["shots"] for r in results)
    return {
        "out": str(out),
        "preset": preset.name,
        "n_shots": preset.n_shots,
        "resumed_shards": len(done),
        "new_shots": n_new,
        "hits": sum(r["hits"] for r in results),
        "multi": sum(r["multi"] for r in results),
        "wall_s": wall,
        "shots_per_s": n_new / wall if wall > 0 and n_new else 0.0,
        "cpu_s_per_shot": (sum(r["seconds"] for r in results) / n_new) if n_new else 0.0,
        "nodes": sorted({r["node"] for r in results}),  # Ray nodes that wrote shards
    }
