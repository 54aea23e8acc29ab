"""MLflow Model Registry: one registered model per task, the deployed version marked by an alias.

`xrp-resolution` and `xrp-lattice` hold every model a search registered (one version each); the
alias `champion` marks the one to serve. A version's source is its MLflow run's `model/` folder,
which holds the self-describing xrp model file (`model.pt`: architecture, preprocessing, label,
training data, metrics; see models.py), so a version can be used without any other record.
"""

from __future__ import annotations

import re
import tempfile
from pathlib import Path
from typing import Any

CHAMPION = "champion"
MODEL_NAMES = {"resolution": "xrp-resolution", "lattice": "xrp-lattice"}
MODEL_ARTIFACT = "model"  # the run's artifact folder that holds model.pt
_SPEC = re.compile(r"^(?P<name>[^@/]+?)(?:(?:@(?P<alias>[\w-]+))|(?:/(?P<version>\d+)))?$")


def model_name(task_or_name: str) -> str:
    """'resolution' -> 'xrp-resolution'; a registered-model name passes through."""
    return MODEL_NAMES.get(task_or_name, task_or_name)


def parse_spec(spec: str) -> tuple[str, str | None, str | None]:
    """'xrp-resolution@champion' / 'resolution/3' / 'lattice' -> (name, alias, version)."""
    m = _SPEC.match(spec.strip())
    if not m:
        raise ValueError(f"{spec!r} is not a model reference: use NAME, NAME@ALIAS or "
                         "NAME/VERSION (NAME: resolution, lattice or a registered name)")
    return model_name(m["name"]), m["alias"], m["version"]


def _missing(e: Exception) -> bool:
    return "RESOURCE_DOES_NOT_EXIST" in str(getattr(e, "error_code", "")) or \
        "not found" in str(e).lower() or "does not exist" in str(e).lower()


def champion(client, task: str, alias: str = CHAMPION):
    """The model version holding ``alias`` for ``task`` (None if there is none)."""
    try:
        return client.get_model_version_by_alias(model_name(task), alias)
    except Exception as e:  # no registered model, or no such alias
        if _missing(e):
            return None
        raise


def get_version(client, spec: str):
    """A model version from 'NAME', 'NAME@ALIAS' (default alias: champion) or 'NAME/VERSION'."""
    name, alias, version = parse_spec(spec)
    try:
        if version is not None:
            return client.get_model_version(name, version)
        return client.get_model_version_by_alias(name, alias or CHAMPION)
    except Exception as e:
        if _missing(e):
            what = f"version {version}" if version else f"alias @{alias or CHAMPION}"
            raise ValueError(f"{name} has no {what} in the registry (`xrp models list` shows "
                             "what there is)") from None
        raise


def register(client, task: str, run_id: str, *, tags: dict[str, Any], description: str = ""):
    """A new version of the task's registered model from ``run_id``'s model folder."""
    name = model_name(task)
    try:
        client.create_registered_model(
            name, description=f"xrp {task} models; the alias @{CHAMPION} marks the one to serve")
    except Exception as e:
        if "RESOURCE_ALREADY_EXISTS" not in str(getattr(e, "error_code", "")) and \
                "already exists" not in str(e).lower():
            raise
    return client.create_model_version(
        name, source=f"runs:/{run_id}/{MODEL_ARTIFACT}", run_id=run_id,
        tags={k: str(v)[:5000] for k, v in tags.items()}, description=description)


def promote(client, spec: str, alias: str = CHAMPION):
    """Point ``alias`` at the version named by ``spec`` ('NAME/VERSION'); returns the version."""
    mv = get_version(client, spec)
    client.set_registered_model_alias(mv.name, alias, mv.version)
    return client.get_model_version(mv.name, mv.version)


def download(client, mv, dst: str | Path | None = None) -> Path:
    """Fetch a version's model file; returns the path of model.pt."""
    import mlflow

    dst = Path(dst) if dst is not None else Path(tempfile.mkdtemp(prefix="xrp-model-"))
    dst.mkdir(parents=True, exist_ok=True)
    local = mlflow.artifacts.download_artifacts(artifact_uri=mv.source, dst_path=str(dst),
                                                tracking_uri=client.tracking_uri)
    path = Path(local) / "model.pt"
    if not path.is_file():
        raise ValueError(f"{mv.name} version {mv.version}: {mv.source} holds no model.pt")
    return path


def list_versions(client, names: list[str] | None = None) -> list[dict[str, Any]]:
    """Every version of the xrp registered models (newest first) with aliases and tags."""
    rows = []
    for rm in client.search_registered_models():
        if names and rm.name not in names:
            continue
        aliases: dict[str, list[str]] = {}  # search results do not carry aliases
        for alias, version in (rm.aliases or {}).items():
            aliases.setdefault(str(version), []).append(alias)
        for mv in client.search_model_versions(f"name = '{rm.name}'"):
            rows.append({"name": mv.name, "version": int(mv.version),
                         "aliases": sorted(aliases.get(str(mv.version), [])),
                         "run_id": mv.run_id,
                         "created": mv.creation_timestamp, "tags": dict(mv.tags),
                         "source": mv.source})
    rows.sort(key=lambda r: (r["name"], -r["version"]))
    return rows
