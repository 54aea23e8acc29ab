"""The xrp model file: a ``torch.save`` dict that loads with ``weights_only=True``.

    {"format": "xrp-model", "format_version": 1, "state_dict": {name: tensor},
     "metadata": JSON string (task, depth, preprocessing, label, training data, metrics, ...)}

Every file says what it needs to be used (core/models.py builds the network from it) and, since
provenance records, how it was made: metadata["provenance"] holds the code commit (and whether
the checkout was dirty), fingerprints of the training and validation data, the seeds and the
hyperparameters (io/provenance.py; absent from older files). Weights may be stored in float16
(the shipped zoo): loading casts them to the network's float32.
:func:`read_metadata` reads the metadata without materialising the weights (memory-mapped).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch

from xray_platform.io.atomic import atomic_open

MODEL_FORMAT = "xrp-model"
MODEL_FORMAT_VERSION = 1


def write_model_file(path: str | Path, state_dict: dict[str, torch.Tensor], metadata: dict,
                     dtype: torch.dtype | None = None) -> Path:
    """Write a model file atomically (CPU tensors; floating ones cast to ``dtype`` if given)."""
    sd = {}
    for k, v in state_dict.items():
        v = v.detach().to("cpu")
        if dtype is not None and v.is_floating_point():
            v = v.to(dtype)
        sd[k] = v.contiguous()
    payload = {"format": MODEL_FORMAT, "format_version": MODEL_FORMAT_VERSION,
               "state_dict": sd, "metadata": json.dumps(metadata, sort_keys=True)}
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_open(path, "wb") as f:
        torch.save(payload, f)
    return path


def _load(path: Path, map_location: Any, mmap: bool) -> dict:
    if not path.is_file():
        raise FileNotFoundError(f"model file not found: {path}")
    try:
        return torch.load(path, map_location=map_location, weights_only=True, mmap=mmap)
    except Exception as e:
        if mmap:  # files written by torch's legacy (non-zip) serialisation cannot be mapped
            return _load(path, map_location, mmap=False)
        raise ValueError(f"{path} is not an xrp model file (unreadable or corrupt torch file: "
                         f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''})"
                         ) from e


def _validated(path: Path, payload: Any) -> tuple[dict[str, torch.Tensor], dict]:
    if not isinstance(payload, dict) or payload.get("format") != MODEL_FORMAT:
        raise ValueError(f"{path} is not an xrp model file (no format={MODEL_FORMAT!r} tag)")
    version = payload.get("format_version")
    if not isinstance(version, int) or version < 1:
        raise ValueError(f"{path}: bad xrp model format_version {version!r}")
    if version > MODEL_FORMAT_VERSION:
        raise ValueError(f"{path} is xrp model format v{version}; this xrp reads up to "
                         f"v{MODEL_FORMAT_VERSION} (upgrade xray_platform)")
    sd, meta_json = payload.get("state_dict"), payload.get("metadata")
    if not isinstance(sd, dict) or not isinstance(meta_json, str):
        raise ValueError(f"{path}: corrupt xrp model file (state_dict/metadata missing)")
    try:
        meta = json.loads(meta_json)
    except json.JSONDecodeError as e:
        raise ValueError(f"{path}: corrupt xrp model metadata: {e}") from e
    if not isinstance(meta, dict):
        raise ValueError(f"{path}: corrupt xrp model metadata (not a JSON object)")
    return sd, meta


def read_model_file(path: str | Path, map_location: Any = "cpu"
                    ) -> tuple[dict[str, torch.Tensor], dict]:
    """Validated (state_dict, metadata) of a model file."""
    path = Path(path)
    return _validated(path, _load(path, map_location, mmap=False))


def read_metadata(path: str | Path) -> dict:
    """The metadata of a model file, without reading its weights into memory."""
    path = Path(path)
    return _validated(path, _load(path, "cpu", mmap=True))[1]
