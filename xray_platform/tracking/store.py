"""MLflow tracking: where runs go (a local sqlite file by default, a server by URI)."""

from __future__ import annotations

import os
from pathlib import Path

#: Default store: a sqlite file in the working folder (`mlflow ui --backend-store-uri` it).
DEFAULT_DB = "mlflow.db"


def tracking_uri(uri: str | None = None) -> str:
    """The tracking URI: explicit, else $MLFLOW_TRACKING_URI, else sqlite:///<cwd>/mlflow.db.
    Credentials for a server come only from the environment (MLFLOW_TRACKING_USERNAME/PASSWORD
    or MLFLOW_TRACKING_TOKEN), never from arguments or files."""
    uri = uri or os.environ.get("MLFLOW_TRACKING_URI")
    if uri:
        return uri
    return f"sqlite:///{(Path.cwd() / DEFAULT_DB).resolve()}"


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

    import mlflow

    client = mlflow.MlflowClient(uri)
    for f in [result["report"], str(Path(result["report"]).with_suffix(".json")),
              *result["plots"].values()]:
        client.log_artifact(run_id, f, artifact_path=f"eval-{name}")
    for sec, d in result["metrics"].items():
        for k, v in d.items():
            if isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v):
                client.log_metric(run_id, f"eval_{name}_{sec}_{k}"[:250], float(v))
