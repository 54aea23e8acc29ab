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


def experiment_id(client, name: str) -> str:
    """Get or create the experiment (in the driver, before workers start: parallel creation
    makes duplicates)."""
    exp = client.get_experiment_by_name(name)
    if exp is not None:
        return exp.experiment_id
    try:
        return client.create_experiment(name)
    except Exception:  # created concurrently
        return client.get_experiment_by_name(name).experiment_id
