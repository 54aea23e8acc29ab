"""Provenance of a trained model: the code, the data and the settings that made it.

Pure gathering (no Ray, no MLflow): orchestration/train.py calls :func:`training_provenance`
where it assembles a model file's metadata, so every model file says which commit trained it
on which data with which hyperparameters. Fingerprints are the first 16 hex digits of the
SHA-256 of canonical JSON: equal inputs, equal fingerprints, on any machine.
"""

from __future__ import annotations

import hashlib
import json
import subprocess
from pathlib import Path
from typing import Any

import numpy as np

from xray_platform.io.shots import MANIFEST_NAME, ShotDataset, read_manifest
from xray_platform.physics.presets import DatasetPreset

#: the package's own folder: its git checkout is the code that trains
PACKAGE_DIR = Path(__file__).resolve().parents[1]
UNKNOWN = "unknown"
#: what a preset's shots do not depend on (shot i is a function of (seed, i) alone)
_NOT_SHOT_KEYS = ("name", "description", "n_shots", "shard_size", "task")


def _rounded(obj: Any) -> Any:
    """Floats to 12 significant digits (another libm's last bit does not change a
    fingerprint), recursively."""
    if isinstance(obj, float):
        return float(f"{obj:.12g}")
    if isinstance(obj, dict):
        return {str(k): _rounded(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [_rounded(v) for v in obj]
    return obj


def digest(obj: Any) -> str:
    """Fingerprint of a JSON-able object (dict keys sorted, tuples as lists, floats rounded)."""
    text = json.dumps(_rounded(obj), sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def _git(where: Path, *args: str) -> str:
    return subprocess.run(["git", "-C", str(where), "--no-optional-locks", *args],
                          capture_output=True, text=True, check=True, timeout=10).stdout.strip()


def code_version(where: Path = PACKAGE_DIR) -> dict:
    """{"commit": HEAD or "unknown", "dirty": uncommitted changes to the package (tracked or
    new files; None when unknown)}. Never raises: no git, no checkout -> unknown."""
    try:
        commit = _git(where, "rev-parse", "HEAD")
        # --no-optional-locks: a read; git status does not rewrite the index
        dirty = bool(_git(where, "status", "--porcelain", "--", "."))
    except (OSError, subprocess.SubprocessError):
        return {"commit": UNKNOWN, "dirty": None}
    return {"commit": commit, "dirty": dirty}


def preset_fingerprint(preset: DatasetPreset) -> str:
    """Fingerprint of what determines a preset's shots (distribution, grid, user sets)."""
    return digest({k: v for k, v in preset.to_dict().items() if k not in _NOT_SHOT_KEYS})


def preset_data(preset: DatasetPreset, seed: int, **counts: int | None) -> dict:
    """Fingerprint of training data drawn from a preset: name, version (the zoo release of a
    frozen NAME@RELEASE, else "current"), its parameters, the seed and the shot counts."""
    name, _, release = preset.name.partition("@")
    d = {"kind": "preset", "preset": name, "version": release or "current",
         "parameters": preset_fingerprint(preset), "seed": seed, **counts}
    return {**d, "fingerprint": digest(d)}


def _column_bytes(values: np.ndarray) -> bytes:
    if values.dtype.kind == "O":  # strings
        return json.dumps([v.decode() if isinstance(v, bytes) else v for v in values.tolist()],
                          default=str).encode()
    return np.ascontiguousarray(values).tobytes()


def table_fingerprint(table: dict[str, np.ndarray]) -> str:
    """Fingerprint of a labels table (every column: name, type and values)."""
    h = hashlib.sha256()
    for name in sorted(table):
        values = np.asarray(table[name])
        h.update(f"{name}:{values.dtype.str}:{len(values)};".encode())
        h.update(_column_bytes(values))
    return h.hexdigest()[:16]


def _files(path: Path) -> list[Path]:
    return sorted(path.glob("shard-*.h5")) if path.is_dir() else [path]


def stored_data(path: str | Path) -> dict:
    """Fingerprint of a stored data set: its shards' names and sizes and its labels table, and
    (xrp simulate's manifest) the preset and seed that regenerate it."""
    path = Path(path)
    files = [(f.name, f.stat().st_size) for f in _files(path)]
    with ShotDataset(path) as ds:
        labels = table_fingerprint(ds.table)
        n = len(ds)
    d = {"kind": "stored", "path": str(path.resolve()), "n_shots": n, "shards": len(files),
         "labels": labels, "fingerprint": digest({"files": files, "labels": labels})}
    manifest = read_manifest(path) if (path / MANIFEST_NAME).is_file() else {}
    if manifest.get("preset"):
        d["simulated"] = {"preset": manifest["preset"], "seed": manifest.get("seed"),
                          "parameters": digest({k: v for k, v in manifest.get(
                              "parameters", {}).items() if k not in _NOT_SHOT_KEYS})}
    return d


def training_provenance(hyperparameters: dict, seeds: dict, data: dict,
                        val_data: dict | None = None) -> dict:
    """The model file's "provenance" block: code, data fingerprints, seeds, hyperparameters."""
    out = {"code": code_version(), "data": data, "seeds": seeds,
           "hyperparameters": hyperparameters}
    if val_data is not None:
        out["val_data"] = val_data
    return out
