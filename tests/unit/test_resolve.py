"""Which model answers: a file, the packaged zoo, or the registry; nothing created on the way."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

import xray_platform.zoo as zoo
from xray_platform.core.models import build_model, save_model
from xray_platform.core.preprocess import Preprocessing
from xray_platform.tracking.resolve import resolve, store_exists


@pytest.fixture()
def fake_zoo(tmp_path: Path, monkeypatch) -> Path:
    """A zoo folder with one resolution model, in place of the packaged one."""
    d = tmp_path / "zoo"
    d.mkdir()
    save_model(d / "res.pt", build_model("resolution", 18),
               {"preprocessing": Preprocessing(64).to_dict(), "label": "d_vis"},
               dtype=torch.float16)
    (d / "index.json").write_text(json.dumps({"resolution": {
        "name": "xrp-zoo-resolution", "version": "2026.12", "file": "res.pt", "card": None}}))
    monkeypatch.setattr(zoo, "ZOO_DIR", d)
    monkeypatch.setattr(zoo, "INDEX", d / "index.json")
    return d


def test_a_file_is_itself(tmp_path: Path, fake_zoo: Path) -> None:
    r = resolve("resolution", str(fake_zoo / "res.pt"))
    assert r.path == fake_zoo / "res.pt" and r.name is None and r.pinned == str(r.path)


def test_champion_falls_back_to_the_zoo_without_creating_a_store(
        tmp_path: Path, fake_zoo: Path, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    r = resolve("resolution", None)  # default: champion
    assert r.source == "zoo:xrp-zoo-resolution/2026.12" and r.version == "2026.12"
    assert r.pinned == "zoo"
    assert resolve("resolution", "zoo").path == r.path
    assert not (tmp_path / "mlflow.db").exists()  # nothing made in the user's folder
    with pytest.raises(ValueError, match="ships no lattice"):
        resolve("lattice", None)
    with pytest.raises(ValueError, match="does not exist"):
        resolve("resolution", "resolution/3")  # a registry reference needs a registry
    assert not (tmp_path / "mlflow.db").exists()


def test_store_exists() -> None:
    assert not store_exists("sqlite:////no/such/folder/mlflow.db")
    assert store_exists("http://mlflow.example:5000")
