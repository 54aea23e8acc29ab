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
        t.add_row("Ray nodes", f"{len(summary['nodes'])} node(s) wrote shards")
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
    seed: int = typer.Option(0, "--seed", help="Seed of the validation set (presets) or of "
                             "the shuffling (data sets)."),
    val_data: str | None = typer.Option(None, "--val-data", help="Data sets: a separate "
                                        "validation data set (default: the last 10 %)."),
    grid_size: int | None = typer.Option(None, "--grid-size", help="Data sets: the model's "
                                         "input grid (cells per side), derived from the "
                                         "stored grid (default: the stored size)."),
    d_min: float | None = typer.Option(None, "--d-min", help="Data sets: the model grid's "
                                       "edge resolution in Å (default: the stored grid's)."),
    augment: bool = typer.Option(True, "--augment/--no-augment", help="Data sets: random "
                                 "flips of the grid while training."),
    train_shots: int | None = typer.Option(None, "--train-shots", help="Data sets: train on "
                                           "the first N shots only (learning curves)."),
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
                      resume=resume, seed=seed, val_data=val_data, grid_size=grid_size,
                      d_min_A=d_min, augment=augment, train_shots=train_shots)
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


def _csv(text: str | None, kind: type, what: str) -> tuple | None:
    if text is None:
        return None
    try:
        return tuple(kind(v.strip()) for v in text.split(",") if v.strip())
    except ValueError:
        _fail(f"{what}: expected a comma-separated list, got {text!r}")


@app.command()
def tune(
    task: str = typer.Argument(..., help="resolution (regressor, d in Å) or lattice "
                               "(one lattice or several)."),
    preset: str = typer.Option("quick", "--preset", help="quick: 64² inputs, fits a 2-core "
                               "laptop in ~10 min; full: 512² inputs and the poster's data sets, "
                               "for a GPU cluster. Options below override the preset."),
    samples: int | None = typer.Option(None, "--samples", help="Learning-rate / batch-size "
                                       "draws per depth x init combination (trials = samples x "
                                       "depths x inits). quick: 1, full: 4."),
    max_concurrent: int | None = typer.Option(None, "--max-concurrent", help="Trials at once. "
                                              "quick: 2; full: as many as resources allow."),
    epochs: int | None = typer.Option(None, "--epochs", help="Epochs per trial (ASHA may stop "
                                      "a trial earlier). quick: 8, full: 30."),
    depths: str = typer.Option("18,34,50", "--depths", help="ResNet depths to search."),
    inits: str | None = typer.Option(None, "--inits", help="Initialisations to search "
                                     "(default: scratch; + imagenet with --imagenet-weights; + "
                                     "transfer when the other task has a champion)."),
    lr_range: str | None = typer.Option(None, "--lr-range", help="LOW,HIGH of the log-uniform "
                                        "learning rate. quick: 2e-4,1.5e-3."),
    batch_sizes: str | None = typer.Option(None, "--batch-sizes", help="Batch sizes to choose "
                                           "from (per worker). quick: 8,16."),
    gpus_per_trial: float = typer.Option(0.0, "--gpus-per-trial", help="GPUs per trial "
                                         "(shared by its workers)."),
    workers_per_trial: int = typer.Option(1, "--workers-per-trial", help="Ray Train workers "
                                          "(DDP) per trial."),
    cpus_per_worker: float = typer.Option(1.0, "--cpus-per-worker", help="CPUs per worker."),
    data: str | None = typer.Option(None, "--data", help="A data preset or an HDF5 shot data "
                                    "set (default: quick-<task> / resmos2 / master-baxter)."),
    shots_per_epoch: int | None = typer.Option(None, "--shots-per-epoch", help="Presets: fresh "
                                               "shots per epoch. quick: 256."),
    val_shots: int | None = typer.Option(None, "--val-shots", help="Presets: fixed validation "
                                         "shots shared by all trials. quick: 128."),
    label: str | None = typer.Option(None, "--label", help="Resolution label: d_vis (default) "
                                     "or d_B."),
    imagenet_weights: Path | None = typer.Option(None, "--imagenet-weights", help="Local "
                                                 "torchvision ResNet weights: adds init "
                                                 "imagenet."),
    out: Path = typer.Option(Path("runs"), "--out", help="Folder for searches (on a cluster: "
                             "storage every node reaches)."),
    name: str | None = typer.Option(None, "--name", help="Search name (default: "
                                    "tune-<task>-<time>)."),
    mlflow_uri: str | None = typer.Option(None, "--mlflow-uri", help="MLflow tracking URI "
                                          "(default: $MLFLOW_TRACKING_URI or sqlite "
                                          "./mlflow.db)."),
    address: str | None = typer.Option(None, "--address", help="Ray cluster address "
                                       "(e.g. auto, 10.0.0.1:6379); default a local Ray."),
    resume: bool = typer.Option(False, "--resume", help="Continue an interrupted search "
                                "(--name, else the newest of this task) without redoing "
                                "finished trials."),
    force: bool = typer.Option(False, "--force", help="Make the best trial the champion even "
                               "if it does not beat the current one."),
    seed: int = typer.Option(0, "--seed", help="Seed of the validation shots."),
) -> None:
    """Search ResNet depth x initialisation x learning rate x batch size with Ray Tune (ASHA
    early stopping, each trial a Ray Train run), track every trial in MLflow, and register the
    best model as `xrp-<task>` with the alias `champion` if it beats the current champion on
    the same validation shots."""
    from xray_platform.ray_env import prepare_ray_env

    prepare_ray_env(address)
    from xray_platform.tune import SearchInterrupted, SearchSettings, headline, run_search

    lr = _csv(lr_range, float, "--lr-range")
    if lr is not None and len(lr) != 2:
        _fail(f"--lr-range takes LOW,HIGH, got {lr_range!r}")
    s = SearchSettings(task=task, preset=preset, data=data, samples=samples, epochs=epochs,
                       max_concurrent=max_concurrent, depths=_csv(depths, int, "--depths"),
                       inits=_csv(inits, str, "--inits"), lr_range=lr,
                       batch_sizes=_csv(batch_sizes, int, "--batch-sizes"),
                       workers_per_trial=workers_per_trial, cpus_per_worker=cpus_per_worker,
                       gpus_per_trial=gpus_per_trial, shots_per_epoch=shots_per_epoch,
                       val_shots=val_shots, label=label,
                       imagenet_weights=str(imagenet_weights) if imagenet_weights else None,
                       seed=seed, out=str(out), name=name, mlflow_uri=mlflow_uri,
                       address=address, resume=resume, force=force)
    try:
        r = s.resolved()
        console.print(f"[bold]xrp tune {task}[/] ({preset}): ResNet-{'/'.join(map(str, r.depths))}"
                      f" x {r.samples} draw(s) of lr {r.lr_range[0]:.0e}..{r.lr_range[1]:.0e} "
                      f"and batch {'/'.join(map(str, r.batch_sizes))}, {r.epochs} epoch(s) each "
                      f"on {r.data}, ASHA after {r.grace_epochs}; {r.max_concurrent or 'all'} at "
                      "once", soft_wrap=True)
        summary = run_search(s)
    except (ValueError, SearchInterrupted) as e:
        _fail(str(e))
    key, lab, _ = headline(task)
    m, best = summary["candidate_metrics"], summary["best"]
    reg = summary["registered"]
    t = Table(show_header=False, title=f"xrp tune {task}: summary")
    t.add_column(no_wrap=True)
    t.add_column(overflow="fold")
    t.add_row("search", f"{summary['search_dir']} ({summary['n_trials']} trials, "
              f"{summary['wall_s']:.0f} s)")
    t.add_row("best trial", f"ResNet-{best['depth']} {best['init']}, lr {best['lr']:.2g}, "
              f"batch {best['batch_size']}, epoch {best['best_epoch']}")
    t.add_row(lab, f"{m[key]:.4g}" + (f" (mean predictor {m['val_baseline_mae_A']:.3f} Å)"
                                      if task == "resolution" else
                                      f" (majority class {m['val_baseline_accuracy']:.3f})"))
    if task == "resolution":
        t.add_row("Pearson r", f"{m['val_pearson_r']:.3f}")
    else:
        t.add_row("ROC AUC", f"{m['val_roc_auc']:.3f}")
    t.add_row("registered", f"{reg['name']} version {reg['version']}")
    t.add_row("champion", ("[green]yes[/]: " if summary["promoted"] else "[yellow]no[/]: ")
              + summary["decision"])
    t.add_row("trials table", f"{summary['report']}/trials.md (+ trials.png)")
    t.add_row("MLflow", f"parent run {summary['parent_run_id']} in {summary['experiment']}")
    t.add_row("look at it", summary["mlflow_ui"])
    t.add_row("models", "xrp models list")
    console.print(t)


models_app = typer.Typer(help="The MLflow model registry: list, show and promote models "
                         "(xrp-resolution, xrp-lattice; the alias champion is served).",
                         no_args_is_help=True)
app.add_typer(models_app, name="models")


def _client(mlflow_uri: str | None):
    import mlflow

    from xray_platform.tracking import tracking_uri

    return mlflow.MlflowClient(tracking_uri(mlflow_uri))


_URI_OPT = typer.Option(None, "--mlflow-uri", help="MLflow tracking URI (default: "
                        "$MLFLOW_TRACKING_URI or sqlite ./mlflow.db).")


@models_app.command("list")
def models_list(
    task: str | None = typer.Argument(None, help="resolution or lattice (default: both)."),
    mlflow_uri: str | None = _URI_OPT,
) -> None:
    """Registered model versions with their aliases and validation metrics."""
    from xray_platform.registry import MODEL_NAMES, list_versions, model_name

    names = [model_name(task)] if task else list(MODEL_NAMES.values())
    rows = list_versions(_client(mlflow_uri), names)
    if not rows:
        console.print("no registered models yet: run `xrp tune resolution` (or lattice)")
        return
    t = Table(title="registered models")
    for c in ("name", "version", "aliases", "model", "metric", "search", "run"):
        t.add_column(c, no_wrap=c in ("name", "aliases"), overflow="fold")
    for r in rows:
        tg = r["tags"]
        metric = (f"MAE {float(tg['xrp.val_mae_A']):.3f} Å, r {float(tg['xrp.val_pearson_r']):.2f}"
                  if "xrp.val_mae_A" in tg else
                  f"accuracy {float(tg['xrp.val_accuracy']):.3f}" if "xrp.val_accuracy" in tg
                  else "")
        t.add_row(r["name"], str(r["version"]), ", ".join(r["aliases"]),
                  f"ResNet-{tg.get('xrp.depth', '?')} {tg.get('xrp.init', '')}", metric,
                  tg.get("xrp.search", ""), (r["run_id"] or "")[:12])
    console.print(t)


@models_app.command("show")
def models_show(
    spec: str = typer.Argument(..., help="resolution, lattice or NAME, with @ALIAS (default "
                               "@champion) or /VERSION, e.g. xrp-resolution/3."),
    mlflow_uri: str | None = _URI_OPT,
) -> None:
    """One model version: registry record and the model file's own metadata."""
    from xray_platform.models import load_model, model_summary
    from xray_platform.registry import download, get_version

    client = _client(mlflow_uri)
    try:
        mv = get_version(client, spec)
        _, meta = load_model(download(client, mv))
    except ValueError as e:
        _fail(str(e))
    t = Table(show_header=False, title=f"{mv.name} version {mv.version}")
    t.add_row("aliases", ", ".join(sorted(mv.aliases)) or "-")
    t.add_row("description", mv.description or "")
    t.add_row("source", mv.source)
    for k, v in sorted(mv.tags.items()):
        t.add_row(k, v)
    t.add_row("model file", model_summary(meta))
    console.print(t)


@models_app.command("promote")
def models_promote(
    spec: str = typer.Argument(..., help="The version to promote: NAME/VERSION, e.g. "
                               "resolution/3 or xrp-lattice/2."),
    alias: str = typer.Option("champion", "--alias", help="The alias to point at it."),
    mlflow_uri: str | None = _URI_OPT,
) -> None:
    """Point an alias (default: champion) at a model version."""
    from xray_platform.registry import parse_spec, promote

    if parse_spec(spec)[2] is None:
        _fail(f"promote needs an explicit version (NAME/VERSION), got {spec!r}")
    try:
        mv = promote(_client(mlflow_uri), spec, alias)
    except ValueError as e:
        _fail(str(e))
    console.print(f"{mv.name} version {mv.version} is now @{alias} "
                  f"(aliases: {', '.join(sorted(mv.aliases))})")


@app.command()
def evaluate(
    model: Path = typer.Argument(..., help="An xrp model file (model.pt from `xrp train`), or "
                                 "a registered model: resolution@champion, xrp-lattice/2."),
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

    if not model.exists() and not model.suffix and len(model.parts) <= 2:
        from xray_platform.registry import download, get_version

        client = _client(mlflow_uri)
        try:  # a registry reference: fetch the version's model file
            mv = get_version(client, str(model))
            model = download(client, mv, Path("models") / f"{mv.name}-v{mv.version}")
        except ValueError as e:
            _fail(f"{model} is neither a model file nor a registered model: {e}")
        console.print(f"evaluating {mv.name} version {mv.version} ({model})")
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


_MODEL_HELP = ("a model file, a registry reference (champion, xrp-{t}@champion, {t}/3) or "
               "'none'")


def _model_specs(lattice_model: str, resolution_model: str) -> dict[str, str]:
    specs = {"lattice": lattice_model, "resolution": resolution_model}
    return {t: v for t, v in specs.items() if v.lower() != "none"}


@app.command()
def serve(
    config: Path | None = typer.Option(None, "--config", help="A Serve config YAML (e.g. "
                                       "serve_configs/local.yaml); its args and deployment "
                                       "options are used, the options below override them."),
    lattice_model: str | None = typer.Option(None, "--lattice-model",
                                             help="Lattice classifier: " +
                                             _MODEL_HELP.format(t="lattice") +
                                             " (default: champion)."),
    resolution_model: str | None = typer.Option(None, "--resolution-model",
                                                help="Resolution regressor: " +
                                                _MODEL_HELP.format(t="resolution") +
                                                " (default: champion)."),
    mlflow_uri: str | None = typer.Option(None, "--mlflow-uri", help="MLflow tracking URI for "
                                          "registry models (default: $MLFLOW_TRACKING_URI or "
                                          "sqlite ./mlflow.db)."),
    host: str | None = typer.Option(None, "--host", help="Interface to bind (default "
                                    "127.0.0.1; 0.0.0.0 exposes the service to the network)."),
    port: int | None = typer.Option(None, "--port", help="HTTP port (default 8000)."),
    max_upload_mb: float | None = typer.Option(None, "--max-upload-mb", help="Largest upload "
                                               "accepted (default 64 MiB)."),
    address: str | None = typer.Option(None, "--address", help="Ray cluster address; default "
                                       "a local Ray."),
) -> None:
    """Serve the graph over HTTP: frame -> lattice classifier -> (single-lattice hits)
    resolution regressor. POST /v1/predict, GET /healthz, GET /v1/models, docs at /docs."""
    import time

    import yaml

    from xray_platform.ray_env import prepare_ray_env

    prepare_ray_env(address)
    cfg: dict = {}
    if config is not None:
        if not config.is_file():
            _fail(f"--config {config} does not exist")
        try:
            cfg = yaml.safe_load(config.read_text()) or {}
            app_cfg = (cfg.get("applications") or [{}])[0]
        except (yaml.YAMLError, AttributeError, IndexError, TypeError) as e:
            _fail(f"--config {config} is not a Serve config: {e}")
    else:
        app_cfg = {}
    args = dict(app_cfg.get("args") or {})
    for k, v in (("lattice_model", lattice_model), ("resolution_model", resolution_model),
                 ("mlflow_uri", mlflow_uri), ("max_upload_mb", max_upload_mb)):
        if v is not None:
            args[k] = None if isinstance(v, str) and v.lower() == "none" else v
    if app_cfg.get("deployments"):
        args["deployments"] = app_cfg["deployments"]
    http = cfg.get("http_options") or {}
    host = host or http.get("host") or "127.0.0.1"
    port = port or int(http.get("port") or 8000)

    from ray import serve as ray_serve

    from xray_platform.ray_simulate import init_ray
    from xray_platform.serve.app import build_app

    try:
        application = build_app(args)
    except ValueError as e:
        _fail(str(e))
    init_ray(address)
    ray_serve.start(http_options={"host": host, "port": port})
    ray_serve.run(application, name="xrp", route_prefix="/")
    url = f"http://{host}:{port}"
    console.print(f"[bold green]xrp is serving[/] at {url}  (API docs {url}/docs)", soft_wrap=True)
    console.print(f"  curl -F file=@frame.cbf {url}/v1/predict", soft_wrap=True)
    console.print(f"  curl {url}/v1/models      Ctrl-C stops", soft_wrap=True)
    try:
        while True:
            time.sleep(1)
    except KeyboardInterrupt:
        ray_serve.shutdown()


@app.command()
def predict(
    paths: list[str] = typer.Argument(..., help="Detector files, folders (searched "
                                      "recursively) or glob patterns; multi-frame HDF5 files "
                                      "give a row per frame."),
    out: Path = typer.Option(Path("predictions.csv"), "--out", help="The per-image table: "
                             ".csv, .tsv or .parquet."),
    lattice_model: str = typer.Option("champion", "--lattice-model",
                                      help="Lattice classifier: " +
                                      _MODEL_HELP.format(t="lattice") + "."),
    resolution_model: str = typer.Option("champion", "--resolution-model",
                                         help="Resolution regressor: " +
                                         _MODEL_HELP.format(t="resolution") + "."),
    mlflow_uri: str | None = typer.Option(None, "--mlflow-uri", help="MLflow tracking URI for "
                                          "registry models."),
    always_resolution: bool = typer.Option(False, "--always-resolution", help="Also regress "
                                           "the resolution of multi-lattice hits."),
    wavelength_a: float | None = typer.Option(None, "--wavelength", help="Override: "
                                              "wavelength (Å) for files with wrong or missing "
                                              "headers (and .npy)."),
    distance_mm: float | None = typer.Option(None, "--distance", help="Override: detector "
                                             "distance (mm)."),
    pixel_size_mm: float | None = typer.Option(None, "--pixel-size", help="Override: pixel "
                                               "size (mm)."),
    beam_center: str | None = typer.Option(None, "--beam-center", help="Override: beam centre "
                                           "X,Y in pixels (fast, slow)."),
    batch_size: int = typer.Option(4, "--batch-size", help="Frames per model batch."),
    workers: int = typer.Option(1, "--workers", help="Parallel predictor actors (1 CPU "
                                "each)."),
    address: str | None = typer.Option(None, "--address", help="Ray cluster address; default "
                                       "a local Ray."),
) -> None:
    """Predict every frame of files/folders with Ray Data and write a per-image table (file,
    frame, geometry, hit, p_multi, resolution_A, sigma, timings)."""
    import time

    from xray_platform.io.formats import FormatError, expand_inputs
    from xray_platform.ray_env import prepare_ray_env

    prepare_ray_env(address)
    if out.suffix not in (".csv", ".tsv", ".parquet"):
        _fail(f"--out {out}: use a .csv, .tsv or .parquet file")
    try:
        items = expand_inputs(paths)
    except FormatError as e:
        _fail(str(e))
    if not items:
        _fail("no detector frames found in " + ", ".join(paths))
    overrides: dict = {}
    for k, v in (("wavelength_A", wavelength_a), ("distance_mm", distance_mm),
                 ("pixel_size_mm", pixel_size_mm)):
        if v is not None:
            overrides[k] = v
    if beam_center:
        bc = _csv(beam_center, float, "--beam-center")
        if len(bc) != 2:
            _fail(f"--beam-center takes X,Y, got {beam_center!r}")
        overrides["beam_center_px"] = bc
    specs = _model_specs(lattice_model, resolution_model)
    if not specs:
        _fail("both models are 'none': nothing to predict")
    from xray_platform.predict import load

    resolved = {}
    for t, spec in specs.items():  # check them here, pin registry versions for every actor
        try:
            m = load(t, spec, mlflow_uri)
        except ValueError as e:
            _fail(f"{t} model {spec!r}: {e}")
        resolved[t] = f"{m.name}/{m.version}" if m.name else spec
        console.print(f"{t}: {resolved[t]} ({m.describe()['architecture']}, "
                      f"{m.prep.grid_size}² input)")
    from xray_platform.ray_predict import predict_files, write_table

    t0 = time.perf_counter()
    with Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                  TimeElapsedColumn(), console=console) as prog:
        task = prog.add_task("predicting frames", total=len(items))
        rows = predict_files(items, resolved, mlflow_uri, overrides=overrides,
                             always_resolution=always_resolution, batch_size=batch_size,
                             concurrency=workers, address=address,
                             on_progress=lambda d, tot: prog.update(task, completed=d))
    wall = time.perf_counter() - t0
    write_table(rows, out)
    ok = [r for r in rows if not r.get("error")]
    hits = [r for r in ok if r.get("hit")]
    multi = [r for r in hits if r.get("is_multi")]
    res = [r["resolution_A"] for r in hits if r.get("resolution_A") is not None]
    t = Table(show_header=False, title="xrp predict: summary")
    t.add_row("frames", f"{len(rows)} ({len(rows) - len(ok)} unreadable)")
    t.add_row("hits", f"{len(hits)} ({len(multi)} multi-lattice)")
    if res:
        import numpy as np

        t.add_row("resolution", f"median {np.median(res):.2f} Å, best {min(res):.2f} Å")
    t.add_row("throughput", f"{len(rows) / wall:.2f} frames/s ({wall:.1f} s incl. start-up)")
    t.add_row("table", str(out))
    console.print(t)
    for r in rows:
        if r.get("error"):
            err.print(f"[yellow]{r['file']}[{r['frame']}][/]: {r['error']}", soft_wrap=True)


def main() -> None:  # pragma: no cover
    app()


if __name__ == "__main__":  # pragma: no cover
    main()

