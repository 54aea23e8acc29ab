"""`xrp evaluate`: a model on a data set (or freshly simulated preset shots), the poster's plots
and a report, logged to the model's MLflow run."""

from __future__ import annotations

from pathlib import Path

import typer

from xray_platform.cli.common import console, fail, progress, summary
from xray_platform.cli.options import Address, MlflowUri


def _model_file(model: str, mlflow_uri: str | None):
    """(path, source) of a model file, zoo model or registry reference."""
    from xray_platform.tracking.resolve import resolve

    if Path(model).is_file():
        return Path(model), model
    task = model.split("@")[0].split("/")[0].split(":")[-1].removeprefix("xrp-")
    spec = "zoo" if model.startswith("zoo") else (None if model == task else model)
    if task not in ("resolution", "lattice"):
        fail(f"{model} is neither a model file nor a model reference (resolution, lattice, "
             "zoo:TASK, resolution@champion, xrp-lattice/2)")
    try:
        r = resolve(task, spec, mlflow_uri)
    except ValueError as e:
        fail(f"{model}: {e}")
    console.print(f"evaluating {r.source} ({r.path})")
    return r.path, r.source


def _simulated(data: str, n: int | None, seed: int, out: Path, meta: dict,
               address: str | None) -> Path:
    from xray_platform.core.preprocess import Preprocessing, regrid_plan
    from xray_platform.physics.presets import PRESETS

    try:
        p = PRESETS[data] if n is None else PRESETS[data].with_n(n)
    except ValueError as e:
        fail(f"-n {n}: {e}")
    grid = Preprocessing.from_dict(meta["preprocessing"]).grid
    if regrid_plan(p.grid, grid) is None:
        fail(f"preset {data} makes {p.grid.size}² inputs to {p.grid.d_min_A} Å; the model's "
             f"{grid.size}² grid to {grid.d_min_A} Å cannot be derived from them")
    data_path = out / "data"
    from xray_platform.orchestration.env import prepare_ray_env

    prepare_ray_env(address)
    from xray_platform.orchestration.simulate import simulate_dataset

    with progress("simulating evaluation shots", p.n_shots) as update:
        try:
            simulate_dataset(p, data_path, seed, address=address, on_progress=update)
        except ValueError as e:
            fail(str(e))
    return data_path


def _rows(m: dict) -> list[tuple[str, str]]:
    rows = []
    if "lattice" in m:
        lm = m["lattice"]
        rows += [("accuracy", f"{lm['accuracy']:.3f} (majority class "
                              f"{lm['baseline_accuracy']:.3f})"),
                 ("ROC AUC", f"{lm['roc_auc']:.3f}")]
        if "lattice_reliability" in m:
            rel = m["lattice_reliability"]
            t = rel.get("temperature")
            rows.append(("P(multi) calibration", f"ECE {rel['ece']:.3f}"
                         + (f" (temperature {t:.3f})" if t not in (None, 1.0) else "")))
    if "resolution" in m:
        rm = m["resolution"]
        rows += [("Pearson r", f"{rm['pearson_r']:.3f}"),
                 ("MAE", f"{rm['mae_A']:.3f} Å (mean predictor {rm['baseline_mae_A']:.3f} Å)"),
                 ("within 1 / 2 sigma", f"{rm.get('frac_within_1sigma', float('nan')):.2f} / "
                                        f"{rm.get('frac_within_2sigma', float('nan')):.2f}")]
    if "user_sets" in m:
        um = m["user_sets"]
        rows.append(("user sets within 2 sd", f"{um['n_within_2sd']} of {um['n_sets']}"))
    return rows


def evaluate(
    model: str = typer.Argument(..., help="An xrp model file (model.pt from `xrp train`), a "
                                "task (resolution, lattice: the model that answers), zoo:TASK, "
                                "or a registered model: resolution@champion, xrp-lattice/2."),
    data: str = typer.Option(..., "--data", help="An HDF5 shot data set folder, or a preset "
                             "to simulate first (e.g. quick-user-sets, user-sets, resmos2)."),
    n: int | None = typer.Option(None, "-n", "--n-shots", min=1, help="Presets: shots to "
                                 "simulate (per set for user-set presets)."),
    seed: int = typer.Option(12345, "--seed", min=0, help="Presets: data set seed (keep it "
                             "apart from training seeds)."),
    out: Path | None = typer.Option(None, "--out", help="Report folder (default: eval-<data> "
                                    "next to the model, or ./eval-<data> for packaged and "
                                    "registry models)."),
    mlflow_uri: MlflowUri = None,
    address: Address = None,
) -> None:
    """Evaluate a model: accuracy/ROC (lattice) or Pearson r, MAE, calibration, user sets
    (resolution), with the poster's plots, a JSON + markdown report and MLflow logging."""
    from xray_platform.core.evaluate import predict_loaded
    from xray_platform.core.models import load_model, provenance_summary, temperature_of
    from xray_platform.physics.presets import PRESETS
    from xray_platform.reports.evaluation import evaluate_predictions

    path, source = _model_file(model, mlflow_uri)
    try:
        net, meta = load_model(path)  # the one read of the model file
    except (ValueError, OSError) as e:
        fail(str(e))
    name = Path(data).name if data not in PRESETS else data
    local = source == str(path)
    out = out or (path.parent if local else Path.cwd()) / f"eval-{name}"
    if data in PRESETS:
        data_path = _simulated(data, n, seed, out, meta, address)
    elif Path(data).exists():
        data_path = Path(data)
    else:
        fail(f"--data {data!r} is neither a preset nor an existing data set")
    with progress("predicting") as update:
        try:
            preds, table = predict_loaded(net, meta, data_path, progress=update)
        except ValueError as e:
            fail(str(e))
    task, label = meta["task"], meta.get("label")
    res = evaluate_predictions(task, label, preds, table, out,
                               title=f"{task} ResNet-{meta['depth']} on {name}",
                               temperature=temperature_of(meta) if task == "lattice" else None)
    rows = [("model", f"{source} ({task}, ResNet-{meta['depth']}, label {label})"),
            ("made by", provenance_summary(meta)),
            ("data", f"{data_path} ({len(table['seed'])} shots)"), *_rows(res["metrics"]),
            ("report", res["report"])]
    uri = mlflow_uri or meta.get("mlflow_tracking_uri")
    run_id = meta.get("mlflow_run_id")
    if uri and run_id and not source.startswith("zoo:"):  # the zoo's runs are not here
        from xray_platform.tracking.resolve import store_exists
        from xray_platform.tracking.store import check_uri, log_evaluation

        try:
            check_uri(uri, "--mlflow-uri" if mlflow_uri else "the model file's tracking URI")
            if not store_exists(uri):
                raise ValueError(f"tracking store {uri} does not exist")
            log_evaluation(uri, run_id, name, res)
            rows.append(("MLflow", f"logged to run {run_id}"))
        except Exception as e:  # the report is written either way
            rows.append(("MLflow", f"not logged ({type(e).__name__}: {e})"))
    summary("xrp evaluate: summary", rows)
