"""Options several commands take, declared once (typer Annotated aliases)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated

import typer


def _no_credentials(value: str | None) -> str | None:
    """--mlflow-uri, or else $MLFLOW_TRACKING_URI, without user:password@ (tracking/store.py)."""
    from xray_platform.cli.common import fail
    from xray_platform.tracking.store import check_uri

    try:
        if value:
            return check_uri(value, "--mlflow-uri")
        check_uri(os.environ.get("MLFLOW_TRACKING_URI"), "$MLFLOW_TRACKING_URI")
    except ValueError as e:
        fail(str(e))
    return value


MlflowUri = Annotated[str | None, typer.Option(
    "--mlflow-uri", callback=_no_credentials, help="MLflow tracking URI (default: "
    "$MLFLOW_TRACKING_URI or sqlite ./mlflow.db; a server: http://host:5000, credentials only "
    "from the environment: MLFLOW_TRACKING_USERNAME/PASSWORD or MLFLOW_TRACKING_TOKEN).")]
Address = Annotated[str | None, typer.Option(
    "--address", help="Ray cluster address (auto, host:6379, ray://host:10001); default: a "
    "private local Ray.")]
RunsOut = Annotated[Path, typer.Option(
    "--out", help="Folder for runs (model, checkpoints, history); on a cluster: storage every "
    "node reaches.")]
Depth = Annotated[int, typer.Option("--depth", help="ResNet depth: 18, 34 or 50.")]
Label = Annotated[str | None, typer.Option(
    "--label", help="Resolution label: d_vis (default, what a spot finder sees) or d_B.")]
CpusPerWorker = Annotated[float, typer.Option("--cpus-per-worker", help="CPUs per Ray Train "
                                              "worker (torch threads).")]
ImagenetWeights = Annotated[Path | None, typer.Option(
    "--imagenet-weights", help="Local torchvision ResNet weights file (.pth); xrp never "
    "downloads weights.")]
ShotsPerEpoch = Annotated[int | None, typer.Option(
    "--shots-per-epoch", min=1, help="Presets: fresh shots simulated per epoch.")]
ValShots = Annotated[int | None, typer.Option(
    "--val-shots", min=1, help="Presets: fixed, seeded validation shots.")]

GeometryFile = Annotated[Path | None, typer.Option(
    "--geometry", help="A CrystFEL geometry file (.geom) placing the panels of HDF5 files that "
    "hold plain arrays (stacked JUNGFRAU modules, CSPAD slabs); files with their own geometry "
    "(CBF, NeXus) do not need one.")]


def geometry_file(path: Path | None) -> str | None:
    """The checked --geometry file as a string (it travels to Ray workers), or None."""
    if path is None:
        return None
    from xray_platform.cli.common import fail
    from xray_platform.io.crystfel_geom import GeomError, read_geom

    try:
        read_geom(path)
    except GeomError as e:
        fail(str(e))
    return str(Path(path).resolve())


_MODEL_HELP = ("{t} model: a model file, zoo (the packaged model), champion (the registry's "
               "champion if there is one, else the zoo model), a registry reference "
               "(xrp-{t}@champion, {t}/3) or none")
LatticeModel = Annotated[str, typer.Option("--lattice-model",
                                           help=_MODEL_HELP.format(t="lattice") + ".")]
ResolutionModel = Annotated[str, typer.Option("--resolution-model",
                                              help=_MODEL_HELP.format(t="resolution") + ".")]


def model_specs(lattice_model: str | None, resolution_model: str | None) -> dict[str, str]:
    """{task: spec} without the tasks set to 'none'."""
    specs = {"lattice": lattice_model, "resolution": resolution_model}
    return {t: v for t, v in specs.items() if v is not None and v.lower() != "none"}


CellOption = Annotated[str | None, typer.Option(
    "--cell", help="The crystal's unit cell, a,b,c,alpha,beta,gamma (Å, degrees; a,b,c for "
    "90-degree angles): every hit's spots are indexed with it (n_lattices_indexed, lattices, "
    "fraction_indexed; ~0.2-0.7 s per hit, more with several lattices), and the cell is kept "
    "with a --run. Without it each hit is indexed from its spots alone (~0.1-0.5 s); either "
    "way the lattice verdict fuses the lattices found with the CNN.")]


def cell_option(text: str | None) -> tuple[float, ...] | None:
    """The checked --cell as 6 numbers (it travels to Ray workers), or None."""
    if text is None:
        return None
    from xray_platform.cli.common import fail
    from xray_platform.core.indexing import as_cell

    try:
        return as_cell(text).parameters
    except ValueError as e:
        fail(f"--cell {text}: {e}")
