"""The `xrp` command line: one module per command group, thin over the library.

data.py (presets, simulate, show), train.py, tune.py, models.py (zoo + registry), evaluate.py,
serve.py, predict.py, runs.py (watch, runs); options.py declares the options several commands
share, common.py the consoles, errors, progress bars and summary tables. `-v/--verbose` shows
Ray's own output (otherwise it goes to a log file under the xrp cache folder). Ray's usage
statistics and MLflow's telemetry are off unless the user's environment turns them on
(orchestration/env.py)."""

from __future__ import annotations

import logging
import os

from xray_platform.orchestration.env import privacy_defaults

privacy_defaults()  # Ray's usage stats, MLflow's telemetry: off before either is imported

import typer  # noqa: E402

from xray_platform import __version__  # noqa: E402
from xray_platform.cli import data, evaluate, predict, runs, serve, train, tune  # noqa: E402
from xray_platform.cli.common import console  # noqa: E402
from xray_platform.cli.models import models_app  # noqa: E402

app = typer.Typer(
    help="xrp: is this X-ray diffraction shot a hit, one lattice or several, and to what "
    "resolution (Å) does it diffract? Simulate shots, train, tune and serve models on Ray.",
    no_args_is_help=True,
    add_completion=False,
)


@app.callback()
def _options(verbose: bool = typer.Option(False, "--verbose", "-v", help="Show Ray's own "
                                          "logs and warnings (default: a log file).")) -> None:
    if verbose:
        os.environ["XRP_VERBOSE"] = "1"
    else:  # MLflow's notes on creating and migrating a new sqlite store
        for name in ("mlflow.store.db.utils", "alembic"):
            logging.getLogger(name).setLevel(logging.WARNING)


@app.command()
def version() -> None:
    """Print the xrp version."""
    console.print(f"xrp {__version__}")


app.command()(data.presets)
app.command()(data.simulate)
app.command()(data.show)
app.command()(train.train)
app.command()(tune.tune)
app.add_typer(models_app, name="models")
app.command()(evaluate.evaluate)
app.command()(serve.serve)
app.command()(predict.predict)
app.command()(runs.watch)
app.add_typer(runs.runs_app, name="runs")


def main() -> None:  # pragma: no cover
    app()
