"""`xrp tune`: a Ray Tune search whose best trial may become the registry's champion."""

from __future__ import annotations

from pathlib import Path

import typer
from rich.table import Table

from xray_platform.cli.common import console, csv, fail
from xray_platform.cli.options import Address, CpusPerWorker, Label, MlflowUri, RunsOut


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
    cpus_per_worker: CpusPerWorker = 1.0,
    data: str | None = typer.Option(None, "--data", help="A data preset or an HDF5 shot data "
                                    "set (default: quick-<task> / resmos2 / master-baxter)."),
    shots_per_epoch: int | None = typer.Option(None, "--shots-per-epoch", min=1,
                                               help="Presets: fresh shots per epoch. quick: "
                                               "256."),
    val_shots: int | None = typer.Option(None, "--val-shots", min=1, help="Presets: fixed "
                                         "validation shots shared by all trials. quick: 128."),
    label: Label = None,
    imagenet_weights: Path | None = typer.Option(None, "--imagenet-weights", help="Local "
                                                 "torchvision ResNet weights: adds init "
                                                 "imagenet."),
    out: RunsOut = Path("runs"),
    name: str | None = typer.Option(None, "--name", help="Search name (default: "
                                    "tune-<task>-<time>)."),
    mlflow_uri: MlflowUri = None,
    address: Address = None,
    resume: bool = typer.Option(False, "--resume", help="Continue an interrupted search "
                                "(--name, else the newest of this task) without redoing "
                                "finished trials."),
    force: bool = typer.Option(False, "--force", help="Make the best trial the champion even "
                               "if it does not beat the current one."),
    seed: int = typer.Option(0, "--seed", min=0, help="Seed of the validation shots."),
) -> None:
    """Search ResNet depth x initialisation x learning rate x batch size with Ray Tune (ASHA
    early stopping, each trial a Ray Train run), track every trial in MLflow, and register the
    best model as `xrp-<task>` with the alias `champion` if it beats the current champion on
    the same validation shots."""
    from xray_platform.orchestration.env import prepare_ray_env

    prepare_ray_env(address)
    from xray_platform.core.metrics import headline
    from xray_platform.orchestration.tune import SearchInterrupted, SearchSettings, run_search

    lr = csv(lr_range, float, "--lr-range")
    if lr is not None and len(lr) != 2:
        fail(f"--lr-range takes LOW,HIGH, got {lr_range!r}")
    s = SearchSettings(task=task, preset=preset, data=data, samples=samples, epochs=epochs,
                       max_concurrent=max_concurrent, depths=csv(depths, int, "--depths"),
                       inits=csv(inits, str, "--inits"), lr_range=lr,
                       batch_sizes=csv(batch_sizes, int, "--batch-sizes"),
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
        fail(str(e))
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
