"""Ray Train: one training run (lattice classifier or resolution regressor), tracked in MLflow.

Ray Data streams shots (fresh simulations every epoch, or an HDF5 data set) to TorchTrainer
workers (DDP; CPU here, GPUs on a cluster, bf16 autocast + channels_last on CUDA). Each epoch
every worker trains on its shard, the validation predictions of all workers are gathered, rank 0
writes a checkpoint (an xrp model file + optimizer state) and logs metrics to MLflow. A run
resumes from its last checkpoint after a worker failure (FailureConfig) or with --resume.
"""

from __future__ import annotations

import json
import math
import shutil
import tempfile
import time
from dataclasses import asdict, dataclass, fields
from datetime import datetime
from pathlib import Path

import numpy as np
import torch

from xray_platform import __version__
from xray_platform.core.models import build_model, save_model
from xray_platform.core.preprocess import InputOptions, Preprocessing
from xray_platform.core.targets import check_task_label, training_target
from xray_platform.core.training import (
    optimiser,
    predict_batches,
    train_epoch,
    val_metrics,
    val_seed,
)
from xray_platform.physics.qgrid import QGrid
from xray_platform.tracking.runs import Tracker

STATE_FILE = "train_state.pt"
MODEL_FILE = "model.pt"


@dataclass
class DataSettings:
    """What a training run and a search share (a search hands these to every trial)."""

    task: str
    data: str | None = None  # a preset (fresh simulated shots every epoch) or a data set
    label: str | None = None
    shots_per_epoch: int | None = None  # presets: shots simulated per epoch
    val_shots: int | None = None  # presets: size of the fixed validation set
    seed: int = 0
    imagenet_weights: str | None = None
    cpus_per_worker: float = 1.0
    mlflow_uri: str | None = None

    def shared(self) -> dict:
        return {f.name: getattr(self, f.name) for f in fields(DataSettings)}


@dataclass
class TrainSettings(DataSettings):
    depth: int = 18
    init: str = "scratch"
    transfer_from: str | None = None
    epochs: int = 2
    batch_size: int = 16
    lr: float = 1e-3
    weight_decay: float = 1e-4
    workers: int = 1
    gpus_per_worker: float = 0.0
    val_fraction: float = 0.1  # HDF5: the last fraction of shots validates
    val_data: str | None = None  # HDF5: a separate validation data set instead
    train_shots: int | None = None  # HDF5: train on the first N shots only (learning curves)
    grid_size: int | None = None  # HDF5: model input grid (default: the stored grid)
    d_min_A: float | None = None  # HDF5: its resolution edge (default: the stored grid's)
    augment: bool = True  # random flips of the grid (qx -> -qx, qy -> -qy: same physics)
    background: str = "none"  # subtracted from the input (preprocess.BACKGROUNDS)
    d_max_A: float | None = None  # input cells at lower resolution (d > d_max, Å) masked
    out: str = "runs"
    name: str | None = None
    experiment: str | None = None
    address: str | None = None
    resume: bool = False
    max_failures: int = 1
    amp: bool = True  # bf16 autocast on CUDA
    channels_last: bool = True  # on CUDA

    def validate(self) -> None:
        self.label = check_task_label(self.task, self.label)
        if not self.data:
            raise ValueError("--data is needed: a preset or a data set folder")
        for k in ("epochs", "batch_size", "workers"):
            if getattr(self, k) < 1:
                raise ValueError(f"{k.replace('_', '-')} must be >= 1, got {getattr(self, k)}")
        if self.lr <= 0 or not np.isfinite(self.lr):
            raise ValueError(f"learning rate must be > 0, got {self.lr}")
        if not 0 < self.val_fraction < 1:
            raise ValueError(f"val fraction must be in (0, 1), got {self.val_fraction}")
        if self.gpus_per_worker < 0 or self.cpus_per_worker <= 0:
            raise ValueError("cpus per worker must be > 0 and gpus per worker >= 0")
        from xray_platform.physics.presets import PRESETS

        if self.data not in PRESETS and not Path(self.data).exists():
            raise ValueError(f"--data {self.data!r} is neither a preset ({', '.join(PRESETS)}) "
                             "nor an existing data set folder/file")
        if self.val_data and not Path(self.val_data).exists():
            raise ValueError(f"--val-data {self.val_data!r} is not an existing data set")
        if (self.grid_size or self.d_min_A or self.val_data or self.train_shots) \
                and self.data in PRESETS:
            raise ValueError("--grid-size, --d-min, --val-data and --train-shots apply to HDF5 "
                             "data sets; a preset fixes its own grid and validation shots")
        if self.train_shots is not None and self.train_shots < 1:
            raise ValueError(f"train shots must be >= 1, got {self.train_shots}")
        from xray_platform.core.preprocess import BACKGROUNDS

        if self.background not in BACKGROUNDS:
            raise ValueError(f"--background must be one of {', '.join(BACKGROUNDS)}, got "
                             f"{self.background!r}")
        if self.d_max_A is not None and not self.d_max_A > 0:
            raise ValueError(f"--d-max must be a resolution in Å > 0, got {self.d_max_A}")

    @property
    def input_options(self) -> InputOptions:
        return InputOptions(self.background, self.d_max_A)

    def preprocessing(self, grid: QGrid) -> Preprocessing:
        """The model's input on ``grid`` (the data's model grid): what its file records."""
        return Preprocessing.for_grid(grid, self.input_options)


# ----------------------------------------------------------------------------------------
# the loop every Ray Train worker runs (the step itself: core/training.py)
# ----------------------------------------------------------------------------------------
def _unwrap(model: torch.nn.Module) -> torch.nn.Module:
    return model.module if hasattr(model, "module") else model


def _restore(model, opt, sched, cfg: dict, device) -> int:
    """Load the last checkpoint (after a worker failure, or --resume); the next epoch."""
    import ray.train

    ckpt = ray.train.get_checkpoint()  # set when Ray restarts workers after a failure
    if ckpt is None and cfg.get("resume_from"):  # --resume: the run's last saved state
        ckpt = ray.train.Checkpoint.from_directory(cfg["resume_from"])
    if ckpt is None:
        return 0
    with ckpt.as_directory() as d:
        state = torch.load(Path(d) / STATE_FILE, weights_only=True, map_location=device)
    _unwrap(model).load_state_dict(state["model"])
    opt.load_state_dict(state["optimizer"])
    sched.load_state_dict(state["scheduler"])  # steps so far (the total may have grown)
    return int(state["epoch"]) + 1


def _gather(local: tuple[torch.Tensor, torch.Tensor], world: int):
    """Validation outputs and targets of every worker, and the set of nodes they ran on."""
    import ray

    node = ray.get_runtime_context().get_node_id()
    if world == 1:
        return (*local, {node})
    parts = [None] * world
    torch.distributed.all_gather_object(parts, (*local, node))
    return (torch.cat([p[0] for p in parts]), torch.cat([p[1] for p in parts]),
            {p[2] for p in parts})


def _report(model, opt, sched, cfg: dict, epoch: int, metrics: dict,
            tracker: Tracker | None) -> None:
    """Rank 0: log to MLflow, write the checkpoint (model file + optimiser state), report."""
    import ray.train

    if cfg["log_every"]:  # a search prints its own progress (tune.py)
        print("[xrp train] " + json.dumps({k: round(v, 4) if isinstance(v, float) else v
                                           for k, v in metrics.items()}), flush=True)
    if tracker is not None:
        tracker.log_metrics(cfg["mlflow_run_id"], metrics, step=epoch + 1)
    with tempfile.TemporaryDirectory() as d:
        meta = {**cfg["metadata"], "epoch": epoch + 1,
                "metrics": {k: v for k, v in metrics.items() if k.startswith("val_")}}
        save_model(Path(d) / MODEL_FILE, _unwrap(model), meta)
        torch.save({"model": _unwrap(model).state_dict(), "optimizer": opt.state_dict(),
                    "scheduler": sched.state_dict(), "epoch": epoch}, Path(d) / STATE_FILE)
        (Path(d) / "metrics.json").write_text(json.dumps(metrics))  # for a search
        ray.train.report(metrics, checkpoint=ray.train.Checkpoint.from_directory(d))


def train_loop_per_worker(cfg: dict) -> None:
    import ray.train
    import ray.train.torch as rt

    torch.set_num_threads(max(1, int(cfg["threads"])))
    ctx = ray.train.get_context()
    rank, world = ctx.get_world_rank(), ctx.get_world_size()
    torch.manual_seed(cfg.get("seed", 0) + rank)  # initial weights (DDP takes rank 0's), flips
    device = rt.get_device()
    model = build_model(cfg["task"], cfg["depth"], cfg["init"],
                        imagenet_weights=cfg["imagenet_weights"],
                        transfer_from=cfg["transfer_from"])
    if device.type == "cuda" and cfg["channels_last"]:
        model = model.to(memory_format=torch.channels_last)
    model = rt.prepare_model(model)
    opt, sched = optimiser(model, cfg["lr"], cfg["weight_decay"],
                           cfg["epochs"] * cfg.get("steps_per_epoch", 1))
    start = _restore(model, opt, sched, cfg, device)
    if start and rank == 0:
        print(f"[xrp train] resumed from the checkpoint of epoch {start}", flush=True)
    tracker = Tracker(cfg["mlflow_uri"]) if rank == 0 and cfg.get("mlflow_run_id") else None
    fast = {"amp": cfg["amp"], "channels_last": cfg["channels_last"]}

    def progress(st) -> None:
        if rank == 0 and cfg["log_every"] and st.batches % cfg["log_every"] == 0:
            print(f"[xrp train] epoch {epoch + 1}/{cfg['epochs']} batch {st.batches} "
                  f"loss {st.loss:.4f}", flush=True)

    for epoch in range(start, cfg["epochs"]):
        batches = ray.train.get_dataset_shard("train").iter_torch_batches(
            batch_size=cfg["batch_size"], device=device, dtypes=torch.float32,
            local_shuffle_buffer_size=cfg.get("shuffle_buffer"))
        st = train_epoch(model, batches, opt, sched, cfg["task"], augment=cfg.get("augment"),
                         on_batch=progress, **fast)
        val = ray.train.get_dataset_shard("val").iter_torch_batches(
            batch_size=cfg["batch_size"], device=device, dtypes=torch.float32)
        width = 1 if cfg["task"] == "lattice" else 2
        out_all, y_all, nodes = _gather(predict_batches(model, val, width, **fast), world)
        metrics = {"epoch": epoch + 1, "train_loss": st.loss, "train_images": st.images * world,
                   "lr": sched.get_last_lr()[0],
                   "images_per_s_per_worker": st.images / max(st.data_s + st.compute_s, 1e-9),
                   "data_wait_s": st.data_s, "compute_s": st.compute_s,
                   "train_nodes": len(nodes), **val_metrics(cfg["task"], out_all, y_all)}
        if rank == 0:
            _report(model, opt, sched, cfg, epoch, metrics, tracker)
        else:
            ray.train.report(metrics)


# ----------------------------------------------------------------------------------------
# the driver
# ----------------------------------------------------------------------------------------
def data_sources(s: TrainSettings, with_val: bool = True):
    """(train dataset, val dataset or None, model grid, description) for a preset or an HDF5
    path. The validation set is fixed (seeded) and materialised: every epoch, every trial of a
    search and every champion comparison sees the same shots."""
    from xray_platform.orchestration.data import hdf5_dataset, simulated_dataset
    from xray_platform.physics.presets import PRESETS

    path = Path(s.data)
    if s.data in PRESETS:
        preset = PRESETS[s.data]
        s.preprocessing(preset.grid)  # raises for e.g. --d-max inside the grid
        n_train = s.shots_per_epoch or preset.n_shots
        n_val = s.val_shots or max(32, n_train // 10)
        opts = s.input_options
        train = simulated_dataset(preset, n_train, s.task, s.label, fresh=True, options=opts)
        val = simulated_dataset(preset, n_val, s.task, s.label, seed=val_seed(s.seed),
                                fresh=False, options=opts).materialize() if with_val else None
        desc = {"source": "simulated (fresh shots every epoch)", "preset": preset.name,
                "shots_per_epoch": n_train, "train_rows": n_train, "val_shots": n_val,
                "val_seed": val_seed(s.seed),
                "parameters": preset.to_dict()}
        return train, val, preset.grid, desc
    # not a preset: an existing data set (TrainSettings.validate checked that)
    from xray_platform.core.preprocess import regrid_plan
    from xray_platform.io.shots import ShotDataset
    from xray_platform.orchestration.data import dataset_grid

    stored = dataset_grid(path)
    grid = QGrid(s.grid_size or stored.size, s.d_min_A or stored.d_min_A)
    if regrid_plan(stored, grid) is None:
        raise ValueError(f"{path} stores a {stored.size}² grid to {stored.d_min_A} Å; a "
                         f"{grid.size}² grid to {grid.d_min_A} Å cannot be derived from it "
                         "(its cells must be whole blocks of the stored cells)")
    s.preprocessing(grid)  # raises here, not inside a Ray worker
    n = len(ShotDataset(path))
    if s.val_data:
        n_val = 0
        val_grid = dataset_grid(s.val_data)
        if regrid_plan(val_grid, grid) is None:
            raise ValueError(f"--val-data {s.val_data} stores a {val_grid.size}² grid to "
                             f"{val_grid.d_min_A} Å: the model's grid cannot be derived from it")
    else:
        n_val = max(1, int(round(n * s.val_fraction)))
    if n - n_val < 1:
        raise ValueError(f"{path} has {n} shots: too few to hold out a validation set")
    n_train = min(n - n_val, s.train_shots or n)
    _, keep = training_target(ShotDataset(path).table, s.task, s.label)
    opts = s.input_options
    train = hdf5_dataset(path, s.task, s.label, indices=np.arange(n_train), grid=grid,
                         shuffle=True, seed=s.seed, options=opts)
    val = None
    if with_val and s.val_data:
        val = hdf5_dataset(s.val_data, s.task, s.label, grid=grid, options=opts).materialize()
    elif with_val:
        val = hdf5_dataset(path, s.task, s.label, indices=np.arange(n - n_val, n),
                           grid=grid, options=opts).materialize()
    desc = {"source": "HDF5 shot data set", "path": str(path.resolve()), "n_shots": n_train,
            "train_rows": int(keep[:n_train].sum()),
            "stored_grid": {"size": stored.size, "d_min_A": stored.d_min_A}}
    if s.val_data:
        desc["val_data"] = str(Path(s.val_data).resolve())
    else:
        desc["val_indices"] = [n - n_val, n]
    return train, val, grid, desc


def _write_history(tracker: Tracker, run_id: str, path: Path) -> Path:
    """Per-epoch metrics of the run (all epochs, across resumes) as CSV, from MLflow."""
    keys = sorted(k for k in tracker.metric_names(run_id) if k != "wall_s")
    rows: dict[int, dict[str, float]] = {}
    for k, steps in tracker.history(run_id, keys).items():
        for step, value in steps.items():
            rows.setdefault(step, {})[k] = value
    cols = ["epoch"] + [k for k in keys if k != "epoch"]
    lines = [",".join(cols)]
    for step in sorted(rows):
        lines.append(",".join([str(step)] + [f"{rows[step].get(k, float('nan')):.6g}"
                                             for k in cols[1:]]))
    path.write_text("\n".join(lines) + "\n")
    return path


def _validation_report(model_path: Path, val_ds, task: str, label: str, history: Path,
                       out_dir: Path) -> list[Path]:
    """Plots and report of the final model on the validation shots, plus training curves."""
    from xray_platform.core.forward import predict
    from xray_platform.core.models import load_model
    from xray_platform.reports.evaluation import evaluate_predictions
    from xray_platform.reports.figures import plot_history

    model, _ = load_model(model_path)
    rows = val_ds.take_all()
    x = np.stack([r["x"] for r in rows])
    y = np.array([r["y"] for r in rows], dtype=np.float64)
    preds = predict(model, x)
    hit = np.ones(len(y), bool)  # the rows are the labelled shots only (is_multi_hits: hits)
    if task == "lattice":
        table = {"is_multi": y > 0.5, "hit": hit}
    else:  # y = 1/d of the label; evaluate_predictions re-derives d from the table
        table = {label: 1.0 / y, "hit": hit}
    res = evaluate_predictions(task, label, preds, table, out_dir, f"{task}: validation shots")
    files = [Path(res["report"]), Path(res["report"]).with_suffix(".json")]
    files += [Path(p) for p in res["plots"].values()]
    files.append(plot_history(history, out_dir / "history.png"))
    return files


def fit(s: TrainSettings, *, out_dir: Path, run_id: str, uri: str, train_ds, val_ds,
        grid, data_desc: dict, ray_name: str, resume_from: str | None = None,
        callbacks: tuple = (), log_every: int = 20) -> dict:
    """Run the TorchTrainer of ``s`` (Ray already initialised, MLflow run ``run_id`` open), then
    keep the best model, the latest checkpoint and the validation report in ``out_dir`` and log
    them to the run. A run with the same ``ray_name`` and ``out_dir`` continues from its saved
    Ray Train state (Train V2 restores it); ``resume_from`` names a checkpoint folder instead."""
    from ray.train import Checkpoint, CheckpointConfig, FailureConfig, RunConfig, ScalingConfig
    from ray.train.torch import TorchTrainer

    from xray_platform.tracking.store import ui_command

    tracker = Tracker(uri)
    metadata = {"task": s.task, "depth": s.depth, "init": s.init, "label": s.label,
                "preprocessing": s.preprocessing(grid).to_dict(),
                "training_data": data_desc, "provenance": run_provenance(s, data_desc),
                "mlflow_run_id": run_id, "mlflow_tracking_uri": uri, "xrp_version": __version__,
                "target": "is_multi (logit)" if s.task == "lattice"
                else f"1/{s.label} in 1/Å (Gaussian mean and sigma)"}
    cfg = {"task": s.task, "depth": s.depth, "init": s.init, "lr": s.lr, "seed": s.seed,
           "weight_decay": s.weight_decay, "batch_size": s.batch_size, "epochs": s.epochs,
           "imagenet_weights": s.imagenet_weights, "transfer_from": s.transfer_from,
           "threads": s.cpus_per_worker, "amp": s.amp, "channels_last": s.channels_last,
           "mlflow_run_id": run_id, "mlflow_uri": uri, "metadata": metadata,
           "log_every": log_every, "resume_from": resume_from,
           "augment": s.augment and data_desc["source"] == "HDF5 shot data set",
           "shuffle_buffer": 4 * s.batch_size if data_desc["source"] == "HDF5 shot data set"
           else None,
           "steps_per_epoch": math.ceil(data_desc["train_rows"] / (s.batch_size * s.workers))}
    resources = {"CPU": s.cpus_per_worker}
    if s.gpus_per_worker:
        resources["GPU"] = s.gpus_per_worker
    trainer = TorchTrainer(
        train_loop_per_worker,
        train_loop_config=cfg,
        scaling_config=ScalingConfig(num_workers=s.workers, use_gpu=s.gpus_per_worker > 0,
                                     resources_per_worker=resources),
        run_config=RunConfig(
            name=ray_name, storage_path=str(out_dir / "ray"), callbacks=list(callbacks),
            checkpoint_config=CheckpointConfig(num_to_keep=2,
                                               checkpoint_score_attribute="val_score",
                                               checkpoint_score_order="max"),
            failure_config=FailureConfig(max_failures=s.max_failures)),
        datasets={"train": train_ds, "val": val_ds},
    )
    t0 = time.perf_counter()
    try:
        result = trainer.fit()
    except Exception:
        tracker.close(run_id, "FAILED")
        raise
    wall = time.perf_counter() - t0
    latest, best = result.checkpoint, None
    if latest is None and resume_from:  # --resume of a run that had done all its epochs
        latest = Checkpoint.from_directory(resume_from)
        scored = saved_checkpoints(out_dir)
        if not scored:
            raise RuntimeError(f"{out_dir}: no checkpoint of this run has its validation "
                               "metrics (metrics.json); train it again without --resume")
        best = Checkpoint.from_directory(scored[-1][2])
    elif latest is None:
        raise RuntimeError("the training workers reported no checkpoint")
    best = best or result.get_best_checkpoint("val_score", "max") or latest
    ckpt_dir = out_dir / "checkpoint"
    with latest.as_directory() as d:  # the latest state, for --resume
        if Path(d).resolve() != ckpt_dir.resolve():
            if ckpt_dir.exists():
                shutil.rmtree(ckpt_dir)
            shutil.copytree(d, ckpt_dir)
    with best.as_directory() as d:
        shutil.copy2(Path(d) / MODEL_FILE, out_dir / MODEL_FILE)
    history_path = _write_history(tracker, run_id, out_dir / "history.csv")
    val_report = _validation_report(out_dir / MODEL_FILE, val_ds, s.task, s.label, history_path,
                                    out_dir / "validation")
    tracker.log_artifacts(run_id, val_report, "validation")
    tracker.log_metrics(run_id, {"wall_s": wall})
    tracker.log_artifacts(run_id, [out_dir / MODEL_FILE], "model")
    tracker.log_artifacts(run_id, [history_path])
    tracker.close(run_id, "FINISHED")
    summary = {"model": str(out_dir / MODEL_FILE), "out_dir": str(out_dir), "run_id": run_id,
               "experiment": s.experiment or f"xrp-{s.task}", "tracking_uri": uri,
               "mlflow_ui": ui_command(uri), "wall_s": wall,
               "metrics": dict(result.metrics or {})}
    (out_dir / "summary.json").write_text(json.dumps(summary, indent=2, default=str))
    return summary


#: settings that are not hyperparameters: where a run goes and how it is tracked, and its data
#: and seed (recorded as the data's fingerprints and the seeds)
_NOT_HYPERPARAMETERS = ("data", "val_data", "seed", "mlflow_uri", "out", "name", "experiment",
                        "address", "resume", "max_failures")


def run_provenance(s: TrainSettings, data_desc: dict) -> dict:
    """What a run's model file records of its making (io/provenance.py): code commit, data
    fingerprints, seeds and hyperparameters."""
    from xray_platform.io import provenance
    from xray_platform.physics.presets import PRESETS

    hyper = {k: v for k, v in asdict(s).items() if k not in _NOT_HYPERPARAMETERS}
    if s.data in PRESETS:
        data = provenance.preset_data(PRESETS[s.data], s.seed,
                                      shots_per_epoch=data_desc["shots_per_epoch"],
                                      val_shots=data_desc["val_shots"])
        return provenance.training_provenance(
            hyper, {"seed": s.seed, "val_seed": data_desc["val_seed"]}, data)
    val = provenance.stored_data(s.val_data) if s.val_data else None
    return provenance.training_provenance(hyper, {"seed": s.seed},
                                          provenance.stored_data(s.data), val)


def log_params(tracker: Tracker, run_id: str, s: TrainSettings, grid, data_desc: dict) -> None:
    """A run's settings (but its address) and the grid and source of its data."""
    params = {k: v for k, v in asdict(s).items() if v is not None and k != "address"}
    params.update(grid_size=grid.size, grid_d_min_A=grid.d_min_A,
                  data_source=data_desc["source"])
    tracker.log_params(run_id, params)


def saved_checkpoints(out_dir: Path, key: str = "val_score") -> list[tuple[float, float, Path]]:
    """(metric ``key``, mtime, folder) of every complete checkpoint of a run, ascending: the one
    a finished run kept and those Ray Train wrote (also before an interruption)."""
    found = []
    for state in [out_dir / "checkpoint" / STATE_FILE, *out_dir.glob(f"ray/*/checkpoint_*/"
                                                                      f"{STATE_FILE}")]:
        metrics = state.parent / "metrics.json"
        if state.is_file() and metrics.is_file():
            try:
                found.append((float(json.loads(metrics.read_text())[key]),
                              state.stat().st_mtime, state.parent))
            except (ValueError, KeyError):
                continue  # a checkpoint cut short while being written
    return sorted(found)


def latest_checkpoint(out_dir: Path) -> Path | None:
    """The newest state of a run: the checkpoint a finished run kept, or the last one Ray Train
    wrote before the run was interrupted (killed, machine gone), whichever has the later epoch."""
    found = saved_checkpoints(out_dir, "epoch")
    return found[-1][2] if found else None


def run_training(s: TrainSettings) -> dict:
    """Train as set out in ``s``; returns a summary (model file, MLflow run, metrics)."""
    import ray

    from xray_platform.orchestration.env import init_ray
    from xray_platform.tracking.store import tracking_uri

    s.validate()
    name = s.name or f"{s.task}-r{s.depth}-{s.init}-{datetime.now():%Y%m%d-%H%M%S}"
    out_dir = Path(s.out).resolve() / name
    if out_dir.exists() and not s.resume and (out_dir / MODEL_FILE).exists():
        raise ValueError(f"{out_dir} already holds a trained model; choose another --name or "
                         "pass --resume")
    ckpt_dir = latest_checkpoint(out_dir) if s.resume else None
    if s.resume and ckpt_dir is None:
        raise ValueError(f"--resume: {out_dir} holds no checkpoint to continue from")
    out_dir.mkdir(parents=True, exist_ok=True)
    local_cpus = None
    if not s.address:  # 2-core laptops: leave room for Ray Data next to the workers
        import os

        local_cpus = max(os.cpu_count() or 1, int(np.ceil(s.workers * s.cpus_per_worker)) + 2)
    init_ray(s.address, local_cpus)
    ray.data.DataContext.get_current().enable_progress_bars = False  # one line per epoch
    train_ds, val_ds, grid, data_desc = data_sources(s)

    uri = tracking_uri(s.mlflow_uri)
    tracker = Tracker(uri)
    exp = tracker.experiment(s.experiment or f"xrp-{s.task}")
    run_id_file = out_dir / "mlflow_run_id"
    if s.resume and run_id_file.exists():
        run_id = run_id_file.read_text().strip()
    else:
        run_id = tracker.open_run(exp, name, {"xrp.task": s.task, "xrp.version": __version__})
        run_id_file.write_text(run_id)
        log_params(tracker, run_id, s, grid, data_desc)
    # --resume: Ray Train V2 restores by checkpoint path (resume_from_checkpoint is deprecated);
    # the workers read it, so on a cluster --out must be on storage every node reaches
    summary = fit(s, out_dir=out_dir, run_id=run_id, uri=uri, train_ds=train_ds, val_ds=val_ds,
                  grid=grid, data_desc=data_desc,
                  ray_name=f"{name}-resumed-{datetime.now():%Y%m%d-%H%M%S}" if s.resume
                  else name, resume_from=str(ckpt_dir) if ckpt_dir else None)
    if not s.address:
        ray.shutdown()
    return summary
