"""`xrp models list | show | promote | calibrate`: the zoo, the MLflow model registry, and
temperature scaling of a lattice model."""

from __future__ import annotations

import re
from pathlib import Path

import typer
from rich.table import Table

from xray_platform.cli.common import console, err, fail
from xray_platform.cli.options import MlflowUri

TASKS = ("resolution", "lattice")

models_app = typer.Typer(help="Models: the zoo shipped with xrp and the MLflow registry "
                         "(xrp-resolution, xrp-lattice; @champion is served, else the zoo).",
                         no_args_is_help=True)


def _client(mlflow_uri: str | None):
    """The registry's client (tracking/ speaks to it; this module only passes it on)."""
    from xray_platform.tracking.store import client, tracking_uri

    return client(tracking_uri(mlflow_uri))


def _existing_store(mlflow_uri: str | None) -> str | None:
    """The tracking URI if its store is there (a missing sqlite file is not created)."""
    from xray_platform.tracking.resolve import store_exists
    from xray_platform.tracking.store import tracking_uri

    uri = tracking_uri(mlflow_uri)
    return uri if store_exists(uri) else None


def _registry_rows(task: str | None, mlflow_uri: str | None) -> list[dict]:
    """Registered versions; none (and no store created) when there is no tracking store."""
    from xray_platform.tracking.registry import MODEL_NAMES, list_versions, model_name

    if _existing_store(mlflow_uri) is None:
        return []
    names = [model_name(task)] if task else list(MODEL_NAMES.values())
    return list_versions(_client(mlflow_uri), names)


def _metric_text(m: dict) -> str:
    if "val_mae_A" in m:
        return f"MAE {float(m['val_mae_A']):.3f} Å, r {float(m.get('val_pearson_r', 'nan')):.2f}"
    if "val_accuracy" in m:
        return f"accuracy {float(m['val_accuracy']):.3f}"
    return ""


@models_app.command("list")
def models_list(
    task: str | None = typer.Argument(None, help="resolution or lattice (default: both)."),
    mlflow_uri: MlflowUri = None,
) -> None:
    """The zoo models and the registered versions, with aliases and validation metrics."""
    from xray_platform.core.models import model_metadata, model_preprocessing
    from xray_platform.zoo import zoo_models

    if task is not None and task not in TASKS:
        fail(f"task {task!r}: choose resolution or lattice (or none for both)")
    t = Table(title="models (the registry's @champion answers; without one, the zoo's)")
    for c in ("name", "version", "aliases", "model", "metric", "search", "run"):
        t.add_column(c, no_wrap=c in ("name", "aliases"), overflow="fold")
    for z in zoo_models().values():
        if task and z.task != task:
            continue
        meta = model_metadata(z.file)
        t.add_row(z.name, z.version, "zoo", f"ResNet-{meta['depth']} "
                  f"{model_preprocessing(meta).grid_size}²", _metric_text(meta.get("metrics", {})),
                  "", "")
    for r in _registry_rows(task, mlflow_uri):
        tg = r["tags"]
        m = {k.removeprefix("xrp."): v for k, v in tg.items()}
        t.add_row(r["name"], str(r["version"]), ", ".join(r["aliases"]),
                  f"ResNet-{tg.get('xrp.depth', '?')} {tg.get('xrp.init', '')}", _metric_text(m),
                  tg.get("xrp.search", ""), (r["run_id"] or "")[:12])
    if not t.row_count:
        console.print("no models yet: run `xrp tune resolution` (or lattice)")
        return
    console.print(t)
    if _existing_store(mlflow_uri) is None:
        err.print(f"(no MLflow store at {_uri(mlflow_uri)}: no registered models)",
                  soft_wrap=True, markup=False, highlight=False)


def _uri(mlflow_uri: str | None) -> str:
    from xray_platform.tracking.store import tracking_uri

    return tracking_uri(mlflow_uri)


@models_app.command("show")
def models_show(
    spec: str = typer.Argument(..., help="resolution or lattice (the model that answers: the "
                               "champion, else the zoo's), zoo:TASK, or a registry reference "
                               "NAME@ALIAS / NAME/VERSION, e.g. xrp-resolution/3."),
    mlflow_uri: MlflowUri = None,
) -> None:
    """One model: where it comes from and the model file's own metadata."""
    from xray_platform.core.models import model_metadata, model_summary, provenance_summary
    from xray_platform.tracking.registry import get_version, parse_spec
    from xray_platform.tracking.resolve import resolve

    task, ref = spec, None
    if spec.startswith("zoo:"):
        task, ref = spec.removeprefix("zoo:"), "zoo"
    elif "@" in spec or "/" in spec:
        name = parse_spec(spec)[0]
        task, ref = name.removeprefix("xrp-"), spec
    if task not in TASKS:
        fail(f"{spec!r}: name a task (resolution, lattice), zoo:TASK or a registry reference")
    try:
        r = resolve(task, ref, mlflow_uri)
        meta = model_metadata(r.path)
    except ValueError as e:
        fail(str(e))
    rows = [("source", r.source), ("file", str(r.path)), ("model file", model_summary(meta)),
            ("made by", provenance_summary(meta))]
    if r.source.startswith("models:/"):
        mv = get_version(_client(mlflow_uri), f"{r.name}/{r.version}")
        rows += [("aliases", ", ".join(sorted(mv.aliases)) or "-"),
                 ("description", mv.description or "")]
        rows += sorted(mv.tags.items())
    from xray_platform.zoo import zoo_model

    z = zoo_model(task)
    if r.source.startswith("zoo:") and z and z.card:
        rows.append(("model card", str(z.card)))
    t = Table(show_header=False, title=f"{task} model: {r.source}")
    for k, v in rows:
        t.add_row(k, str(v))
    console.print(t)


_ALIAS = re.compile(r"[\w-]{1,255}")  # as MLflow checks it
_RESERVED_ALIAS = re.compile(r"latest|v\d+", re.IGNORECASE)  # MLflow's own names


@models_app.command("promote")
def models_promote(
    spec: str = typer.Argument(..., help="The version to promote: NAME/VERSION, e.g. "
                               "resolution/3 or xrp-lattice/2."),
    alias: str = typer.Option("champion", "--alias", help="The alias to point at it."),
    mlflow_uri: MlflowUri = None,
) -> None:
    """Point an alias (default: champion) at a model version."""
    from xray_platform.tracking.registry import parse_spec, promote

    try:
        version = parse_spec(spec)[2]
    except ValueError as e:
        fail(str(e))
    if version is None:
        fail(f"promote needs an explicit version (NAME/VERSION), got {spec!r}")
    if not _ALIAS.fullmatch(alias) or _RESERVED_ALIAS.fullmatch(alias):
        fail(f"--alias {alias!r}: use letters, digits, - and _ (not latest, not vN)")
    if _existing_store(mlflow_uri) is None:
        fail(f"no MLflow store at {_uri(mlflow_uri)}: nothing registered to promote "
             "(`xrp tune` registers models; --mlflow-uri names another store)")
    try:
        mv = promote(_client(mlflow_uri), spec, alias)
    except ValueError as e:
        fail(str(e))
    console.print(f"{mv.name} version {mv.version} is now @{alias} "
                  f"(aliases: {', '.join(sorted(mv.aliases))})")


@models_app.command("calibrate")
def models_calibrate(
    model: Path = typer.Argument(..., help="A lattice model file (model.pt of `xrp train`)."),
    data: Path = typer.Option(..., "--data", help="Validation shots (an HDF5 shot data set "
                              "the model was not trained on)."),
    out: Path = typer.Option(..., "--out", help="Where to write the calibrated model file."),
) -> None:
    """Temperature-scale a lattice model's P(multi) on validation shots: one T that minimises
    their log-loss (Guo et al. 2017), stored in the model file, applied wherever it answers.
    The ranking (AUC, accuracy at 0.5) does not change; prints the ECE before and after."""
    from xray_platform.cli.common import progress
    from xray_platform.core.calibration import calibrate_lattice_file

    if out.resolve() == model.resolve():
        fail("--out must be a new file (the uncalibrated model stays as it is)")
    with progress("predicting") as update:
        try:
            r = calibrate_lattice_file(model, data, out, progress=update)
        except (ValueError, OSError) as e:
            fail(str(e))
    console.print(f"temperature {r['temperature']:.3f} on {r['n']} shots: ECE "
                  f"{r['ece_before']:.3f} -> {r['ece_after']:.3f}, log-loss "
                  f"{r['nll_before']:.3f} -> {r['nll_after']:.3f}; wrote {out}")
