"""MLflow tracking: where runs go (a local sqlite file by default, a server by URI).

A tracking URI never holds credentials (user:password@host): xrp writes the URI into model
files and runs, so :func:`check_uri` refuses such a URI wherever one comes in (--mlflow-uri,
$MLFLOW_TRACKING_URI, a serve config, a model file); MLflow reads them from the environment."""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from mlflow import MlflowClient

#: Default store: a sqlite file in the working folder (`mlflow ui --backend-store-uri` it).
DEFAULT_DB = "mlflow.db"
#: scheme://userinfo@host...: the userinfo is whatever precedes the first @ before a / ? #
_USERINFO = re.compile(r"^(?P<scheme>[A-Za-z][\w+.-]*)://[^/?#]*@(?P<rest>.*)$", re.DOTALL)


def check_uri(uri: str | None, what: str = "the MLflow tracking URI") -> str | None:
    """``uri`` unchanged when it holds no credentials; otherwise a ValueError that says where
    they go instead and does not repeat them."""
    m = _USERINFO.match(uri or "")
    if m is None:
        return uri
    bare = f"{m['scheme']}://{m['rest']}"
    where = ("MLFLOW_TRACKING_USERNAME / MLFLOW_TRACKING_PASSWORD (or MLFLOW_TRACKING_TOKEN)"
             if m["scheme"].lower().startswith("http") else
             "the database client's own environment (e.g. PGPASSWORD, ~/.pgpass)")
    raise ValueError(f"{what} holds credentials (user:password@): give the URI as {bare} and "
                     f"the credentials in {where} instead")


def tracking_uri(uri: str | None = None) -> str:
    """The tracking URI: explicit, else $MLFLOW_TRACKING_URI, else sqlite:///<cwd>/mlflow.db.
    Credentials for a server come only from the environment (MLFLOW_TRACKING_USERNAME/PASSWORD
    or MLFLOW_TRACKING_TOKEN), never from arguments or files: a URI with them is a ValueError."""
    if uri:
        return check_uri(uri)
    env = os.environ.get("MLFLOW_TRACKING_URI")
    if env:
        return check_uri(env, "$MLFLOW_TRACKING_URI")
    return f"sqlite:///{(Path.cwd() / DEFAULT_DB).resolve()}"


def client(uri: str) -> MlflowClient:
    """An ``mlflow.MlflowClient`` for ``uri``: the one place xrp makes one."""
    import mlflow

    return mlflow.MlflowClient(uri)


def ui_command(uri: str) -> str:
    """The command that shows the runs of ``uri``."""
    if uri.startswith("sqlite:"):
        return f"mlflow ui --backend-store-uri {uri}"
    return f"open {uri} in a browser"


def artifact_root(uri: str) -> str | None:
    """Where a new experiment keeps its artifacts: next to a sqlite file (``mlartifacts/``), so
    the store does not depend on the working folder of whichever process made the experiment
    (a Ray job runs in a temporary folder); a server decides for itself (None)."""
    if uri.startswith("sqlite:///"):
        return (Path(uri.removeprefix("sqlite:///")).resolve().parent / "mlartifacts").as_uri()
    return None


def experiment_id(client, name: str, uri: str | None = None) -> str:
    """Get or create the experiment (in the driver, before workers start: parallel creation
    makes duplicates)."""
    exp = client.get_experiment_by_name(name)
    if exp is not None:
        return exp.experiment_id
    try:
        return client.create_experiment(name, artifact_location=artifact_root(uri or ""))
    except Exception:  # created concurrently
        return client.get_experiment_by_name(name).experiment_id


def log_evaluation(uri: str, run_id: str, name: str, result: dict) -> None:
    """Log an evaluation (report, plots and the numeric metrics) to the model's run."""
    import math

    c = client(uri)
    for f in [result["report"], str(Path(result["report"]).with_suffix(".json")),
              *result["plots"].values()]:
        c.log_artifact(run_id, f, artifact_path=f"eval-{name}")
    for sec, d in result["metrics"].items():
        for k, v in d.items():
            if isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v):
                c.log_metric(run_id, f"eval_{name}_{sec}_{k}"[:250], float(v))
