"""Model files: metadata without the weights, compact float16 weights, files of the first
format (written before io/model_file.py existed) still load, provenance records read back."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from xray_platform.core.models import (
    build_model,
    load_model,
    model_metadata,
    provenance_summary,
    save_model,
)
from xray_platform.core.preprocess import Preprocessing
from xray_platform.io.model_file import read_metadata
from xray_platform.io.provenance import preset_data, training_provenance
from xray_platform.physics.presets import preset

META = {"preprocessing": Preprocessing(64).to_dict(), "label": "d_vis", "init": "scratch"}


def test_metadata_is_read_without_loading_the_weights(tmp_path: Path) -> None:
    path = save_model(tmp_path / "m.pt", build_model("resolution", 18), META)
    meta = read_metadata(path)
    assert meta["task"] == "resolution" and meta["depth"] == 18 and meta["label"] == "d_vis"
    assert model_metadata(path) == meta
    with pytest.raises(ValueError, match="not an xrp model file"):
        read_metadata(_garbage(tmp_path))


def _garbage(tmp: Path) -> Path:
    p = tmp / "junk.pt"
    p.write_bytes(b"not a torch file at all")
    return p


def test_float16_weights_are_half_the_size_and_answer_the_same(tmp_path: Path) -> None:
    torch.manual_seed(0)
    model = build_model("resolution", 18).eval()
    full = save_model(tmp_path / "fp32.pt", model, META)
    half = save_model(tmp_path / "fp16.pt", model, META, dtype=torch.float16)
    assert half.stat().st_size < 0.55 * full.stat().st_size
    m16, _ = load_model(half)
    assert next(m16.parameters()).dtype == torch.float32  # cast back on load
    x = torch.rand(2, 1, 64, 64)
    with torch.no_grad():
        assert torch.allclose(model(x), m16(x), rtol=2e-2, atol=2e-2)


def test_a_file_of_the_first_format_still_loads(tmp_path: Path) -> None:
    """The payload as xrp 0.1 (models.py) wrote it: plain torch.save of the tagged dict."""
    torch.manual_seed(1)
    model = build_model("lattice", 18).eval()
    meta = {**META, "label": "is_multi", "task": "lattice", "depth": 18, "xrp_version": "0.1.0"}
    path = tmp_path / "old.pt"
    torch.save({"format": "xrp-model", "format_version": 1,
                "state_dict": {k: v.clone() for k, v in model.state_dict().items()},
                "metadata": json.dumps(meta, sort_keys=True)}, path)
    loaded, got = load_model(path)
    assert got == meta
    x = torch.rand(1, 1, 64, 64)
    with torch.no_grad():
        assert torch.equal(model(x), loaded(x))


def test_the_provenance_block_is_read_back_without_the_weights(tmp_path: Path) -> None:
    """What orchestration/train.py records (io/provenance.py) survives the file as written; a
    file from before provenance records says so instead of failing."""
    data = preset_data(preset("quick-resolution"), 0, shots_per_epoch=256, val_shots=128)
    made = training_provenance({"lr": 1e-3, "batch_size": 8, "epochs": 8, "depth": 18},
                               {"seed": 0, "val_seed": 1}, data)
    path = save_model(tmp_path / "m.pt", build_model("resolution", 18),
                      {**META, "provenance": made})
    got = read_metadata(path)["provenance"]
    assert got == json.loads(json.dumps(made)) and got["data"]["fingerprint"] == data["fingerprint"]
    assert set(got) == {"code", "data", "seeds", "hyperparameters"}
    assert "preset quick-resolution seed 0" in provenance_summary(read_metadata(path))
    old = save_model(tmp_path / "old.pt", build_model("resolution", 18), META)
    assert provenance_summary(model_metadata(old)).startswith("not recorded")
