"""`xrp train`: one training run on Ray Train, tracked in MLflow."""

from __future__ import annotations

from pathlib import Path

import typer

from xray_platform.cli.common import console, fail, positive, summary
from xray_platform.cli.options import (
    Address,
    CpusPerWorker,
    Depth,
    ImagenetWeights,
    Label,
    MlflowUri,
    RunsOut,
    ShotsPerEpoch,
    ValShots,
)


def _check_init(init: str, imagenet_weights: Path | None, transfer_from: Path | None) -> None:
    from xray_platform.core.models import INITS

    if init not in INITS:
        fail(f"--init must be one of {INITS}, got {init!r}")
    if init == "imagenet" and not imagenet_weights:
        fail("--init imagenet needs --imagenet-weights FILE (a local torchvision ResNet "
             "state dict; downloads are not possible here)")
    if init == "transfer" and not transfer_from:
        fail("--init transfer needs --transfer-from MODEL_FILE")
    for f in (imagenet_weights, transfer_from):
        if f is not None and not f.is_file():
            fail(f"{f} does not exist")


def train(
    task: str = typer.Argument(..., help="lattice (one lattice or several) or resolution (d, Å)."),
    data: str = typer.Option("quick-resolution", "--data", help="A preset (fresh simulated "
                             "shots every epoch, see `xrp presets`) or an HDF5 shot data set "
                             "folder written by `xrp simulate`."),
    depth: Depth = 18,
    init: str = typer.Option("scratch", "--init", help="Weights: scratch (Kaiming), imagenet "
                             "(needs --imagenet-weights FILE), transfer (needs --transfer-from)."),
    label: Label = None,
    epochs: int = typer.Option(2, "--epochs", help="Passes over the training data."),
    batch_size: int = typer.Option(16, "--batch-size", help="Shots per batch per worker."),
    lr: float = typer.Option(1e-3, "--lr", help="AdamW peak learning rate (warm-up, cosine)."),
    workers: int = typer.Option(1, "--workers", help="Ray Train workers (DDP)."),
    cpus_per_worker: CpusPerWorker = 1.0,
    gpus_per_worker: float = typer.Option(0.0, "--gpus-per-worker", help="GPUs per worker "
                                          "(bf16 autocast and channels_last on CUDA)."),
    shots_per_epoch: ShotsPerEpoch = None,
    val_shots: ValShots = None,
    imagenet_weights: ImagenetWeights = None,
    transfer_from: Path | None = typer.Option(None, "--transfer-from", help="An xrp model "
                                              "file whose trunk starts this model."),
    out: RunsOut = Path("runs"),
    name: str | None = typer.Option(None, "--name", help="Run name (default: task-depth-init-"
                                    "time)."),
    mlflow_uri: MlflowUri = None,
    address: Address = None,
    resume: bool = typer.Option(False, "--resume", help="Continue the run --name from its "
                                "last checkpoint (--epochs may grow)."),
    seed: int = typer.Option(0, "--seed", min=0, help="Seed of the validation set (presets) "
                             "or of the shuffling (data sets)."),
    val_data: str | None = typer.Option(None, "--val-data", help="Data sets: a separate "
                                        "validation data set (default: the last 10 %)."),
    grid_size: int | None = typer.Option(None, "--grid-size", min=8, help="Data sets: the "
                                         "model's input grid (cells per side), derived from "
                                         "the stored grid (default: the stored size)."),
    d_min: float | None = typer.Option(None, "--d-min", help="Data sets: the model grid's "
                                       "edge resolution in Å (default: the stored grid's)."),
    augment: bool = typer.Option(True, "--augment/--no-augment", help="Data sets: random "
                                 "flips of the grid while training."),
    train_shots: int | None = typer.Option(None, "--train-shots", min=1, help="Data sets: "
                                           "train on the first N shots only (learning curves)."),
    background: str = typer.Option("none", "--background", help="Subtracted from every "
                                   "input cell before log1p: none, or radial-median (the "
                                   "median count of the cell's resolution ring: spots above "
                                   "the diffuse background). Recorded in the model file."),
    d_max: float | None = typer.Option(None, "--d-max", help="Mask the input cells at lower "
                                       "resolution than this (d > d_max, Å): the beamstop's "
                                       "surroundings, whose parasitic scatter, halos and "
                                       "shadows simulations do not reproduce. Recorded in the "
                                       "model file (default: keep every cell)."),
) -> None:
    """Train a lattice classifier or a resolution regressor on Ray Train, tracked in MLflow."""
    from xray_platform.orchestration.env import prepare_ray_env

    prepare_ray_env(address)
    positive(d_min, "--d-min")
    from xray_platform.core.models import DEPTHS
    from xray_platform.orchestration.train import TrainSettings, run_training

    s = TrainSettings(task=task, data=data, depth=depth, init=init, label=label, epochs=epochs,
                      batch_size=batch_size, lr=lr, workers=workers,
                      cpus_per_worker=cpus_per_worker, gpus_per_worker=gpus_per_worker,
                      shots_per_epoch=shots_per_epoch, val_shots=val_shots,
                      imagenet_weights=str(imagenet_weights) if imagenet_weights else None,
                      transfer_from=str(transfer_from) if transfer_from else None,
                      out=str(out), name=name, mlflow_uri=mlflow_uri, address=address,
                      resume=resume, seed=seed, val_data=val_data, grid_size=grid_size,
                      d_min_A=d_min, augment=augment, train_shots=train_shots,
                      background=background, d_max_A=d_max)
    try:
        s.validate()
        if depth not in DEPTHS:
            fail(f"--depth must be one of {DEPTHS}, got {depth}")
        _check_init(init, imagenet_weights, transfer_from)
        console.print(f"training [bold]{task}[/] ResNet-{depth} ({init}) on {data}: "
                      f"{epochs} epoch(s), {workers} worker(s)")
        result = run_training(s)
    except ValueError as e:
        fail(str(e))
    m = result["metrics"]
    rows = [("model file", result["model"]),
            ("MLflow run", f"{result['run_id']} in experiment {result['experiment']}"),
            ("look at it", result["mlflow_ui"]), ("wall time", f"{result['wall_s']:.0f} s")]
    rows += [(k, f"{m[k]:.4g}") for k in sorted(m)
             if k.startswith("val_") and isinstance(m[k], int | float)]
    rows.append(("evaluate", f"xrp evaluate {result['model']} --data ..."))
    summary("xrp train: summary", rows)
