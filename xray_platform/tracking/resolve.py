"""Which model answers: a file, the packaged zoo, or the MLflow registry.

A model spec is
- a path to an xrp model file;
- ``zoo``: the model the package ships for the task (xray_platform/zoo);
- ``champion`` (the default): the registry's champion when a registry exists and has one, else
  the zoo model. A missing local sqlite store is not created just to find that out;
- a registry reference: ``xrp-resolution@champion``, ``resolution/3``.
Registry versions are downloaded once into the model cache (``$XRP_CACHE_DIR``, else
``$XDG_CACHE_HOME/xrp`` or ``~/.cache/xrp``): a version never changes.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from xray_platform.zoo import zoo_model


@dataclass(frozen=True)
class Resolved:
    task: str
    path: Path
    source: str  # the file, models:/NAME/VERSION or zoo:NAME/VERSION
    name: str | None = None
    version: str | None = None

    @property
    def pinned(self) -> str:
        """A spec that names exactly this model (for workers started later)."""
        if self.source.startswith("models:/"):
            return f"{self.name}/{self.version}"
        if self.source.startswith("zoo:"):
            return "zoo"
        return str(self.path)


def cache_dir() -> Path:
    if os.environ.get("XRP_CACHE_DIR"):
        return Path(os.environ["XRP_CACHE_DIR"])
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "xrp"


def store_exists(uri: str) -> bool:
    """Whether a tracking store is there to ask (a local sqlite file must exist)."""
    if uri.startswith("sqlite:///"):
        return Path(uri.removeprefix("sqlite:///")).is_file()
    if uri.startswith("file:"):
        return Path(uri.removeprefix("file://").removeprefix("file:")).exists()
    return True


def _zoo(task: str) -> Resolved:
    z = zoo_model(task)
    if z is None or not z.file.is_file():
        raise ValueError(f"this xrp ships no {task} zoo model; train one (`xrp tune {task}`) "
                         "or pass a model file")
    return Resolved(task, z.file, z.source, z.name, z.version)


def _registry(task: str, ref: str, uri: str) -> Resolved:
    from xray_platform.tracking.registry import download, get_version
    from xray_platform.tracking.store import client as make_client

    client = make_client(uri)
    mv = get_version(client, ref)
    dst = cache_dir() / "models" / f"{mv.name}-v{mv.version}"
    path = dst / "model.pt"
    if not path.is_file():
        path = download(client, mv, dst)
    return Resolved(task, path, f"models:/{mv.name}/{mv.version}", mv.name, str(mv.version))


def resolve(task: str, spec: str | None, mlflow_uri: str | None = None) -> Resolved:
    """The model file ``spec`` names for ``task`` (module doc)."""
    from xray_platform.tracking.registry import CHAMPION, model_name
    from xray_platform.tracking.store import check_uri, tracking_uri

    check_uri(mlflow_uri)  # refused even where a model file makes the registry unneeded
    spec = spec or CHAMPION
    path = Path(spec)
    if path.is_file():
        return Resolved(task, path, str(path))
    if spec == "zoo":
        return _zoo(task)
    uri = tracking_uri(mlflow_uri)
    if spec in (CHAMPION, "registry"):
        if not store_exists(uri):
            return _zoo(task)
        try:
            return _registry(task, model_name(task), uri)
        except ValueError:  # no champion registered
            if zoo_model(task) is not None:
                return _zoo(task)
            raise
    if not store_exists(uri):
        raise ValueError(f"{spec!r} is neither a model file nor in a registry: the tracking "
                         f"store {uri} does not exist")
    return _registry(task, spec, uri)


def load(task: str, spec: str | None, mlflow_uri: str | None = None):
    """Resolve and load: a core.answer.LoadedModel naming where it came from."""
    from xray_platform.core.answer import load_file

    r = resolve(task, spec, mlflow_uri)
    return load_file(task, r.path, r.source, r.name, r.version)
