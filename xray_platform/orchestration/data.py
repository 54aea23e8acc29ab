"""Ray Data pipelines that feed training: fresh simulated shots, or HDF5 shot data sets.

Rows are {"x": (H, W) float32 network input (preprocess.normalise), "y": target (see targets.py),
"seed": the shot's seed} so every training shot can be regenerated. Thin orchestration: the
physics, preprocessing and label code do not import Ray.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import ray

from xray_platform.core.preprocess import InputOptions, Preprocessing, normalise, regrid
from xray_platform.core.targets import training_target
from xray_platform.io.shots import ShotDataset
from xray_platform.physics.presets import DatasetPreset
from xray_platform.physics.qgrid import QGrid
from xray_platform.physics.sampling import sample_params, shot_seed
from xray_platform.physics.simulate import simulate


def _rows(inputs: list[np.ndarray], ys: list[float], seeds: list[int],
          prep: Preprocessing) -> dict:
    if not inputs:
        size = prep.grid_size
        return {"x": np.zeros((0, size, size), np.float32), "y": np.zeros(0, np.float32),
                "seed": np.zeros(0, np.int64)}
    x = normalise(np.stack(inputs), prep)[:, 0].numpy()
    return {"x": x, "y": np.asarray(ys, np.float32), "seed": np.asarray(seeds, np.int64)}


class SimulateShots:
    """Ray Data UDF: shot ids -> simulated, preprocessed, labelled rows.

    fresh=True draws a new random seed per shot at every call, so every epoch (every pass over
    the lazy data set) trains on shots never seen before; fresh=False derives the seeds from
    (seed, id): a fixed set (validation). ``options``: see preprocess.InputOptions."""

    def __init__(self, preset: DatasetPreset, task: str, label: str | None, seed: int,
                 fresh: bool, options: InputOptions = InputOptions()) -> None:
        import torch

        torch.set_num_threads(1)
        self.preset, self.task, self.label = preset, task, label
        self.seed, self.fresh = seed, fresh
        self.prep = Preprocessing.for_grid(preset.grid, options)
        self.entropy = np.random.SeedSequence()

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        ids = batch["id"]
        if self.fresh:
            seeds = self.entropy.spawn(1)[0].generate_state(len(ids), np.uint64) >> np.uint64(1)
        else:
            seeds = [shot_seed(self.seed, int(i)) for i in ids]
        inputs, ys, kept = [], [], []
        for s in seeds:
            shot = simulate(sample_params(int(s), self.preset.sim), self.preset.grid)
            y, keep = training_target({k: np.array([v]) for k, v in shot.record.items()},
                                      self.task, self.label)
            if keep[0]:
                inputs.append(shot.inputs)
                ys.append(float(y[0]))
                kept.append(int(s))
        return _rows(inputs, ys, kept, self.prep)


def _simulate_batch(batch: dict[str, np.ndarray], preset: DatasetPreset, task: str,
                    label: str | None, seed: int, fresh: bool,
                    options: InputOptions) -> dict[str, np.ndarray]:
    # a plain function, run as Ray tasks: worker processes (and their imports) are reused
    # across batches and epochs, where an actor pool would be rebuilt for every pass
    return SimulateShots(preset, task, label, seed, fresh, options)(batch)


def simulated_dataset(preset: DatasetPreset, n_shots: int, task: str, label: str | None = None,
                      *, seed: int = 0, fresh: bool = True, batch_size: int = 8,
                      num_cpus: float = 1.0,
                      options: InputOptions = InputOptions()) -> ray.data.Dataset:
    """A lazy data set of ``n_shots`` simulated shots per pass (fewer rows for resolution: shots
    without the label are dropped)."""
    blocks = max(1, min(200, n_shots // batch_size))
    return ray.data.range(n_shots, override_num_blocks=blocks).map_batches(
        _simulate_batch,
        fn_kwargs={"preset": preset, "task": task, "label": label, "seed": seed, "fresh": fresh,
                   "options": options},
        batch_size=batch_size, num_cpus=num_cpus)


class ReadShots:
    """Ray Data UDF: global shot indices of an HDF5 shot data set -> preprocessed rows, on the
    model's grid (derived from the stored grid by :func:`preprocess.regrid` when they differ)."""

    def __init__(self, path: str, task: str, label: str | None,
                 grid: QGrid | None = None,
                 options: InputOptions = InputOptions()) -> None:
        self.ds = ShotDataset(path)
        self.y, _ = training_target(self.ds.table, task, label)
        self.seed = np.asarray(self.ds.table["seed"], np.int64)
        self.src = dataset_grid(path)
        self.dst = grid or self.src
        self.prep = Preprocessing.for_grid(self.dst, options)

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        idx = [int(i) for i in batch["index"]]
        inputs = [self.ds[i].inputs for i in idx]
        if inputs and self.dst != self.src:
            inputs = list(regrid(np.stack(inputs), self.src, self.dst))
        return _rows(inputs, [float(self.y[i]) for i in idx], [int(self.seed[i]) for i in idx],
                     self.prep)


def hdf5_dataset(path: str | Path, task: str, label: str | None = None, *,
                 indices: np.ndarray | None = None, grid: QGrid | None = None,
                 shuffle: bool = False, seed: int = 0, batch_size: int = 16,
                 concurrency: int = 2, num_cpus: float = 0.5,
                 options: InputOptions = InputOptions()) -> ray.data.Dataset:
    """A data set over an HDF5 shot data set (folder of shards or one shard), only the shots that
    carry the task's label (optionally a subset of global indices), on ``grid`` (default: the
    stored grid). ``shuffle``: a new block order at every pass (training epochs), reproducible
    from ``seed``."""
    ds = ShotDataset(path)
    _, keep = training_target(ds.table, task, label)
    if indices is not None:
        sel = np.zeros(len(keep), bool)
        sel[np.asarray(indices, int)] = True
        keep &= sel
    idx = np.nonzero(keep)[0]
    if not len(idx):
        raise ValueError(f"{path}: no shot carries a {task} label "
                         f"({label or 'default'}); nothing to train on")
    if shuffle:  # blocks of shots from all over the data set, not runs of one shard
        idx = np.random.default_rng(seed).permutation(idx)
    items = ray.data.from_items([{"index": int(i)} for i in idx],
                                override_num_blocks=max(1, min(1000, len(idx) // batch_size)))
    if shuffle:
        items = items.randomize_block_order(
            seed=ray.data.RandomSeedConfig(seed=seed, reseed_after_execution=True))
    return items.map_batches(ReadShots, fn_constructor_kwargs={"path": str(path), "task": task,
                                                               "label": label, "grid": grid,
                                                               "options": options},
                             batch_size=batch_size, concurrency=(1, concurrency),
                             num_cpus=num_cpus)


def dataset_grid(path: str | Path) -> QGrid:
    """The grid an HDF5 shot data set stores."""
    return ShotDataset(path).grid


def dataset_grid_size(path: str | Path) -> int:
    """Model-input size of an HDF5 shot data set."""
    return dataset_grid(path).size
