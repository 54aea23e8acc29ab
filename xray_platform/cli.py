"""The `xrp` command line: simulate data sets, look at shots."""

from __future__ import annotations

import json
import math
from pathlib import Path

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from xray_platform import __version__

app = typer.Typer(
    help="xrp: is this X-ray diffraction shot one lattice or several, and to what resolution (Å) "
    "does it diffract? Simulate shots, train, tune and serve models on Ray.",
    no_args_is_help=True,
    add_completion=False,
)
console = Console()
err = Console(stderr=True)


def _fail(msg: str) -> None:
    err.print(f"[bold red]error:[/] {msg}", soft_wrap=True)
    raise typer.Exit(code=2)


@app.command()
def version() -> None:
    """Print the xrp version."""
    console.print(f"xrp {__version__}")


@app.command()
def presets() -> None:
    """List the data set presets (name, shots, task, model-input grid)."""
    from xray_platform.presets import PRESETS

    t = Table("preset", "shots", "task", "grid", "description")
    for p in PRESETS.values():
        t.add_row(p.name, f"{p.n_shots:,}", p.task, f"{p.grid.size}² to {p.grid.d_min_A} Å",
                  p.description)
    console.print(t)


@app.command()
def simulate(
    preset: str = typer.Argument(..., help="Data set preset (see `xrp presets`), e.g. "
                                 "quick-resolution, resmos2, master-baxter, user-sets."),
    out: Path = typer.Option(..., "--out", "-o", help="Output directory of the data set "
                             "(created; rerunning the same command resumes it)."),
    n: int | None = typer.Option(None, "-n", "--n-shots", help="Number of shots (default: the "
                                 "preset's; for user-set presets: shots per set)."),
    seed: int = typer.Option(0, "--seed", help="Data set seed: with the preset it fully "
                             "determines every shot."),
    address: str | None = typer.Option(None, "--address", help="Ray cluster address (e.g. "
                                       "auto, ray://host:10001); default: a local Ray."),
    full_frames: bool = typer.Option(False, "--full-frames", help="Also store full detector "
                                     "frames (int32, big: ~25 MB raw per PILATUS 6M frame)."),
    shard_size: int | None = typer.Option(None, "--shard-size", help="Shots per shard file "
                                          "(one Ray task each)."),
    num_cpus: int | None = typer.Option(None, "--num-cpus", help="CPUs for a local Ray "
                                        "(default: all)."),
    detector: str | None = typer.Option(None, "--detector", help="Use only this detector "
                                        "preset (pilatus6m, eiger16m, test); needed with "
                                        "--full-frames for presets that mix detectors."),
) -> None:
    """Simulate a labelled data set of still shots into sharded HDF5 files, in parallel on Ray."""
    from xray_platform.presets import preset as get_preset

    try:
        p = get_preset(preset)
    except ValueError as e:
        _fail(str(e))
    if n is not None:
        if n < 1:
            _fail(f"-n must be a positive number of shots, got {n}")
        p = p.with_n(n)
    if detector is not None:
        try:
            p = p.with_detector(detector)
        except ValueError as e:
            _fail(str(e))
    if shard_size is not None and shard_size < 1:
        _fail(f"--shard-size must be >= 1, got {shard_size}")
    if seed < 0:
        _fail(f"--seed must be >= 0, got {seed}")
    if out.exists() and not out.is_dir():
        _fail(f"--out {out} exists and is not a directory")

    from xray_platform.ray_env import prepare_ray_env

    prepare_ray_env(address)  # before Ray is imported
    from xray_platform.ray_simulate import simulate_dataset

    console.print(f"simulating [bold]{p.name}[/]: {p.n_shots:,} shots, seed {seed}, "
                  f"grid {p.grid.size}² to {p.grid.d_min_A} Å -> {out}")
    with Progress(TextColumn("[progress.description]{task.description}"), BarColumn(),
                  MofNCompleteColumn(), TextColumn("shots"), TimeElapsedColumn(),
                  console=console, transient=False) as prog:
        task = prog.add_task("simulating", total=p.n_shots)

        def on_progress(done: int, total: int) -> None:
            prog.update(task, completed=done, total=total)

        try:
            summary = simulate_dataset(p, out, seed, full_frames=full_frames,
                                       shard_size=shard_size, address=address,
                                       num_cpus=num_cpus, on_progress=on_progress)
        except ValueError as e:
            _fail(str(e))
        except Exception as e:  # a task failed on the cluster: say what, keep finished shards
            if type(e).__module__.startswith("ray"):
                _fail(f"simulation failed: {getattr(e, 'cause', None) or e}\n"
                      "finished shards are kept; rerun the same command to resume")
            raise
    size_mb = sum(f.stat().st_size for f in out.glob("*.h5")) / 1e6
    t = Table(show_header=False, title="xrp simulate: summary")
    t.add_row("data set", str(out))
    t.add_row("shots", f"{summary['n_shots']:,} ({summary['new_shots']:,} new, "
              f"{summary['resumed_shards']} shard(s) already complete)")
    if summary["new_shots"]:
        t.add_row("hits (new shots)", f"{summary['hits']:,} "
                  f"({100 * summary['hits'] / summary['new_shots']:.0f} %)")
        t.add_row("multi-lattice (new)", f"{summary['multi']:,} "
                  f"({100 * summary['multi'] / summary['new_shots']:.0f} %)")
        t.add_row("wall time", f"{summary['wall_s']:.1f} s ({summary['shots_per_s']:.1f} shots/s,"
                  f" {1000 * summary['cpu_s_per_shot']:.0f} ms CPU per shot)")
    t.add_row("on disk", f"{size_mb:.1f} MB")
    t.add_row("look at a shot", f"xrp show {out} --index 0")
    console.print(t)


@app.command()
def show(
    path: Path = typer.Argument(..., help="A data set directory, a shard .h5, or a detector "
                                "file (.cbf, .cbf.gz, .cbf.bz2)."),
    index: int = typer.Option(0, "--index", "-i", help="Shot index in the data set."),
    out: Path | None = typer.Option(None, "--out", "-o", help="PNG to write (default: "
                                    "<name>_<index>.png in the current folder)."),
    d_min: float = typer.Option(1.2, "--d-min", help="For detector files: grid edge (Å)."),
    size: int = typer.Option(512, "--size", help="For detector files: grid size (cells)."),
) -> None:
    """Write a PNG of a shot: model input and detector frame with resolution rings, and labels."""
    from xray_platform.plots import show_shot

    if not path.exists():
        _fail(f"{path} does not exist")
    name = path.name.split(".")[0] if path.is_file() else path.name
    png = out or Path(f"{name}_{index}.png")
    if path.is_file() and ".cbf" in path.name:
        import torch

        from xray_platform.io.cbf import read_cbf
        from xray_platform.physics.geometry import DetectorPreset, Geometry
        from xray_platform.physics.qgrid import QGrid, frame_to_grid

        try:
            img, h = read_cbf(path)
        except (ValueError, OSError) as e:
            _fail(str(e))
        if None in (h.wavelength_A, h.distance_mm, h.pixel_size_mm, h.beam_center_px):
            _fail(f"{path}: header lacks geometry (wavelength, distance, pixel size, beam centre)")
        det = DetectorPreset(h.detector or "file", "from file header", h.n_fast, h.n_slow,
                             h.pixel_size_mm, h.n_fast, h.n_slow, 0, 0, 2**31 - 1)
        geom = Geometry(det, h.distance_mm, h.wavelength_A, h.beam_center_px)
        grid = QGrid(size, d_min)
        inputs = frame_to_grid(torch.as_tensor(img), geom, grid).numpy()
        record = {"detector": h.detector or "?", "distance_mm": h.distance_mm,
                  "wavelength_A": h.wavelength_A, "energy_keV": geom.energy_keV}
        show_shot(png, inputs, grid, img, geom, record, title=path.name)
        console.print(f"wrote {png}")
        return

    from xray_platform.io.shots import ShotDataset
    from xray_platform.physics.geometry import Geometry, detector
    from xray_platform.physics.qgrid import QGrid

    try:
        ds = ShotDataset(path)
    except (ValueError, OSError) as e:
        _fail(str(e))
    if not -len(ds) <= index < len(ds):
        _fail(f"--index {index} out of range: the data set has {len(ds)} shots")
    shot = ds[index]
    rec = shot.record
    grid_info = ds.attrs.get("grid") or {}
    grid = QGrid(shot.inputs.shape[0], grid_info.get("d_min_A", 1.2))
    geom = Geometry(detector(rec["detector"]), rec["distance_mm"], rec["wavelength_A"],
                    (rec["beam_f0_px"], rec["beam_s0_px"]))
    show_shot(png, shot.inputs, grid, shot.full_frame, geom, rec,
              title=f"{path.name} shot {index} (seed {rec.get('seed')})")
    console.print(f"wrote {png}")
    console.print(json.dumps({k: (None if isinstance(v, float) and math.isnan(v) else v)
                              for k, v in rec.items()}, indent=None)[:2000])


@app.command()
def train(
    task: str = typer.Argument(..., help="lattice (one lattice or several) or resolution (d, Å)."),
    data: str = typer.Option("quick-resolution", "--data", help="A preset (fresh simulated "
                             "shots every epoch, see `xrp presets`) or an HDF5 shot data set "
                             "folder written by `xrp simulate`."),
    depth: int = typer.Option(18, "--depth", help="ResNet depth: 18, 34 or 50."),
    init: str = typer.Option("scratch", "--init", help="Weights: scratch (Kaiming), imagenet "
                             "(needs --imagenet-weights FILE), transfer (needs --transfer-from)."),
    label: str | None = typer.Option(None, "--label", help="Resolution label: d_vis (default) "
                                     "or d_B."),
    epochs: int = typer.Option(2, "--epochs", help="Passes over the training data."),
    batch_size: int = typer.Option(16, "--batch-size", help="Shots per batch per worker."),
    lr: float = typer.Option(1e-3, "--lr", help="AdamW learning rate (cosine schedule)."),
    workers: int = typer.Option(1, "--workers", help="Ray Train workers (DDP)."),
    cpus_per_worker: float = typer.Option(1.0, "--cpus-per-worker", help="CPUs per worker."),
    gpus_per_worker: float = typer.Option(0.0, "--gpus-per-worker", help="GPUs per worker "
                                          "(bf16 autocast and channels_last on CUDA)."),
    shots_per_epoch: int | None = typer.Option(None, "--shots-per-epoch", help="Presets: shots "
                                               "simulated per epoch (default: the preset's)."),
    val_shots: int | None = typer.Option(None, "--val-shots", help="Presets: fixed validation "
                                         "shots (default: 10 %, at least 32)."),
    imagenet_weights: Path | None = typer.Option(None, "--imagenet-weights", help="Local "
                                                 "torchvision ResNet weights file (.pth)."),
    transfer_from: Path | None = typer.Option(None, "--transfer-from", help="An xrp model "
                                              "file whose trunk starts this model."),
    out: Path = typer.Option(Path("runs"), "--out", help="Folder for runs (model, checkpoints, "
                             "history)."),
    name: str | None = typer.Option(None, "--name", help="Run name (default: task-depth-init-"
                                    "time)."),
    mlflow_uri: str | None = typer.Option(None, "--mlflow-uri", help="MLflow tracking URI "
                                          "(default: $MLFLOW_TRACKING_URI or sqlite "
                                          "./mlflow.db)."),
    address: str | None = typer.Option(None, "--address", help="Ray cluster address; default "
                                       "a local Ray."),
    resume: bool = typer.Option(False, "--resume", help="Continue the run --name from its "
                                "last checkpoint."),
    seed: int = typer.Option(0, "--seed", help="Seed of the validation set."),
) -> None:
    """Train a lattice classifier or a resolution regressor on Ray Train, tracked in MLflow."""
    from xray_platform.ray_env import prepare_ray_env

    prepare_ray_env(address)
    from xray_platform.train import TrainSettings, run_training

    s = TrainSettings(task=task, data=data, depth=depth, init=init, label=label, epochs=epochs,
                      batch_size=batch_size, lr=lr, workers=workers,
                      cpus_per_worker=cpus_per_worker, gpus_per_worker=gpus_per_worker,
                      shots_per_epoch=shots_per_epoch, val_shots=val_shots,
                      imagenet_weights=str(imagenet_weights) if imagenet_weights else None,
                      transfer_from=str(transfer_from) if transfer_from else None,
                      out=str(out), name=name, mlflow_uri=mlflow_uri, address=address,
                      resume=resume, seed=seed)
    try:
        s.validate()
        from xray_platform.models import DEPTHS, INITS

        if depth not in DEPTHS:
            _fail(f"--depth must be one of {DEPTHS}, got {depth}")
        if init not in INITS:
            _fail(f"--init must be one of {INITS}, got {init!r}")
        if init == "imagenet" and not imagenet_weights:
            _fail("--init imagenet needs --imagenet-weights FILE (a local torchvision ResNet "
                  "state dict; downloads are not possible here)")
        if init == "transfer" and not transfer_from:
            _fail("--init transfer needs --transfer-from MODEL_FILE")
        for f in (imagenet_weights, transfer_from):
            if f is not None and not f.is_file():
                _fail(f"{f} does not exist")
        console.print(f"training [bold]{task}[/] ResNet-{depth} ({init}) on {data}: "
                      f"{epochs} epoch(s), {workers} worker(s)")
        summary = run_training(s)
    except ValueError as e:
        _fail(str(e))
    m = summary["metrics"]
    t = Table(show_header=False, title="xrp train: summary")
    t.add_row("model file", summary["model"])
    t.add_row("MLflow run", f"{summary['run_id']} in experiment {summary['experiment']}")
    t.add_row("look at it", summary["mlflow_ui"])
    t.add_row("wall time", f"{summary['wall_s']:.0f} s")
    for k in sorted(m):
        if k.startswith("val_") and isinstance(m[k], int | float):
            t.add_row(k, f"{m[k]:.4g}")
    t.add_row("evaluate", f"xrp evaluate {summary['model']} --data ...")
    console.print(t)


@app.command()
def evaluate(
    model: Path = typer.Argument(..., help="An xrp model file (model.pt from `xrp train`)."),
    data: str = typer.Option(..., "--data", help="An HDF5 shot data set folder, or a preset "
                             "to simulate first (e.g. quick-user-sets, user-sets, resmos2)."),
    n: int | None = typer.Option(None, "-n", "--n-shots", help="Presets: shots to simulate "
                                 "(per set for user-set presets)."),
    seed: int = typer.Option(12345, "--seed", help="Presets: data set seed (keep it apart from "
                             "training seeds)."),
    out: Path | None = typer.Option(None, "--out", help="Report folder (default: eval-<data> "
                                    "next to the model)."),
    mlflow_uri: str | None = typer.Option(None, "--mlflow-uri", help="Log to this MLflow "
                                          "store (default: the one the model was trained with)."),
    address: str | None = typer.Option(None, "--address", help="Ray cluster for simulating "
                                       "preset data; default a local Ray."),
) -> None:
    """Evaluate a model: accuracy/ROC (lattice) or Pearson r, MAE, calibration, user sets
    (resolution), with the poster's plots, a JSON + markdown report and MLflow logging."""
    from xray_platform.evaluate import evaluate_predictions, predict_dataset
    from xray_platform.models import load_model
    from xray_platform.presets import PRESETS

    if not model.is_file():
        _fail(f"model file {model} does not exist")
    try:
        _, meta = load_model(model)
    except (ValueError, OSError) as e:
        _fail(str(e))
    name = Path(data).name if data not in PRESETS else data
    out = out or model.parent / f"eval-{name}"
    data_path = Path(data)
    if data in PRESETS:
        p = PRESETS[data] if n is None else PRESETS[data].with_n(n)
        if p.grid.size != meta["preprocessing"]["grid_size"]:
            _fail(f"preset {data} makes {p.grid.size}² inputs but the model reads "
                  f"{meta['preprocessing']['grid_size']}²")
        data_path = out / "data"
        from xray_platform.ray_env import prepare_ray_env

        prepare_ray_env(address)
        from xray_platform.ray_simulate import simulate_dataset

        with Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                      TimeElapsedColumn(), console=console) as prog:
            t = prog.add_task("simulating evaluation shots", total=p.n_shots)
            try:
                simulate_dataset(p, data_path, seed, address=address,
                                 on_progress=lambda d, tot: prog.update(t, completed=d))
            except ValueError as e:
                _fail(str(e))
    elif not data_path.exists():
        _fail(f"--data {data!r} is neither a preset nor an existing data set")
    with Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                  TimeElapsedColumn(), console=console) as prog:
        t = prog.add_task("predicting", total=None)
        try:
            preds, table, meta = predict_dataset(
                model, data_path, progress=lambda d, tot: prog.update(t, completed=d, total=tot))
        except ValueError as e:
            _fail(str(e))
    task, label = meta["task"], meta.get("label")
    res = evaluate_predictions(task, label, preds, table, out,
                               title=f"{task} ResNet-{meta['depth']} on {name}")
    m = res["metrics"]
    t = Table(show_header=False, title="xrp evaluate: summary")
    t.add_row("model", f"{model} ({task}, ResNet-{meta['depth']}, label {label})")
    t.add_row("data", f"{data_path} ({len(table['seed'])} shots)")
    if "lattice" in m:
        lm = m["lattice"]
        t.add_row("accuracy", f"{lm['accuracy']:.3f} "
                  f"(majority class {lm['baseline_accuracy']:.3f})")
        t.add_row("ROC AUC", f"{lm['roc_auc']:.3f}")
    if "resolution" in m:
        rm = m["resolution"]
        t.add_row("Pearson r", f"{rm['pearson_r']:.3f}")
        t.add_row("MAE", f"{rm['mae_A']:.3f} Å (mean predictor {rm['baseline_mae_A']:.3f} Å)")
        t.add_row("within 1 / 2 sigma", f"{rm.get('frac_within_1sigma', float('nan')):.2f} / "
                  f"{rm.get('frac_within_2sigma', float('nan')):.2f}")
    if "user_sets" in m:
        um = m["user_sets"]
        t.add_row("user sets within 2 sd", f"{um['n_within_2sd']} of {um['n_sets']}")
    t.add_row("report", res["report"])
    uri = mlflow_uri or meta.get("mlflow_tracking_uri")
    run_id = meta.get("mlflow_run_id")
    if uri and run_id:
        try:
            import mlflow

            client = mlflow.MlflowClient(uri)
            for f in [res["report"], str(Path(res["report"]).with_suffix(".json")),
                      *res["plots"].values()]:
                client.log_artifact(run_id, f, artifact_path=f"eval-{name}")
            flat = {f"eval_{name}_{sec}_{k}": v for sec, d in m.items() for k, v in d.items()
                    if isinstance(v, int | float) and math.isfinite(v)}
            for k, v in flat.items():
                client.log_metric(run_id, k[:250], float(v))
            t.add_row("MLflow", f"logged to run {run_id}")
        except Exception as e:  # the report is written either way
            t.add_row("MLflow", f"not logged ({type(e).__name__}: {e})")
    console.print(t)


def main() -> None:  # pragma: no cover
    app()


if __name__ == "__main__":  # pragma: no cover
    main()

