"""Calibration of P(multi) (core/calibration.py): the temperature fit, the reliability table,
and a calibrated model file that answers with the scaled probability."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from helpers import xrp_here

from xray_platform.core.calibration import (
    apply_temperature,
    calibrate_lattice_file,
    fit_temperature,
    reliability,
)
from xray_platform.core.evaluate import predict_dataset
from xray_platform.core.models import build_model, load_model, save_model
from xray_platform.core.preprocess import Preprocessing
from xray_platform.io.dataset_writer import (
    finish,
    manifest_info,
    plan_shards,
    prepare_directory,
    write_shard,
)
from xray_platform.physics.presets import preset


def _shots(rng: np.random.Generator, n: int, overconfidence: float
           ) -> tuple[np.ndarray, np.ndarray]:
    """Labels drawn from true probabilities, predictions with logits scaled up."""
    z = rng.normal(0.0, 1.5, n)
    y = rng.uniform(size=n) < 1 / (1 + np.exp(-z))
    return 1 / (1 + np.exp(-overconfidence * z)), y


@pytest.mark.parametrize("factor", [0.5, 1.0, 3.0])
def test_the_fitted_temperature_undoes_over_and_under_confidence(factor) -> None:
    p, y = _shots(np.random.default_rng(0), 20_000, factor)
    t = fit_temperature(p, y)
    assert t == pytest.approx(factor, rel=0.1)
    before, after = reliability(p, y)["ece"], reliability(apply_temperature(p, t), y)["ece"]
    assert after < 0.02 and (factor == 1.0 or after < before)


def test_reliability_table_and_bad_input() -> None:
    p, y = _shots(np.random.default_rng(1), 5000, 1.0)
    rel = reliability(p, y)
    assert rel["n"] == 5000 and sum(b["n"] for b in rel["bins"]) == 5000
    assert all(b["lo"] <= b["mean_p"] <= b["hi"] for b in rel["bins"])
    with pytest.raises(ValueError, match="both classes"):
        fit_temperature(np.full(10, 0.3), np.zeros(10, bool))
    with pytest.raises(ValueError, match="labels"):
        reliability(np.zeros(3), np.zeros(4))


@pytest.fixture(scope="module")
def lattice_shots(tmp_path_factory) -> Path:
    """60 quick-lattice shots (64² grid) written the way `xrp simulate` writes them."""
    out = tmp_path_factory.mktemp("cal") / "val"
    ds = preset("quick-lattice")
    info = manifest_info(ds, 5, 60, False)
    info["n_shots"] = 60
    prepare_directory(out, info)
    for plan in plan_shards(60, 60):
        write_shard(ds, 5, plan, out)
    finish(out, info)
    return out


def test_a_calibrated_model_file_answers_with_the_scaled_probability(lattice_shots,
                                                                     tmp_path) -> None:
    torch.manual_seed(0)
    raw = save_model(tmp_path / "lattice.pt", build_model("lattice", 18),
                     {"preprocessing": Preprocessing(64).to_dict(), "label": "is_multi"},
                     dtype=torch.float16)
    r = calibrate_lattice_file(raw, lattice_shots, tmp_path / "cal.pt")
    assert r["n"] == 60 and r["temperature"] > 0 and r["nll_after"] <= r["nll_before"] + 1e-9
    net, meta = load_model(tmp_path / "cal.pt")
    assert meta["calibration"]["temperature"] == r["temperature"] == net.temperature
    assert next(iter(torch.load(tmp_path / "cal.pt", weights_only=True)["state_dict"]
                     .values())).dtype == torch.float16
    p_raw = predict_dataset(raw, lattice_shots)[0]["p_multi"]
    p_cal = predict_dataset(tmp_path / "cal.pt", lattice_shots)[0]["p_multi"]
    np.testing.assert_allclose(p_cal, apply_temperature(p_raw, r["temperature"]), atol=1e-4)
    assert ((p_cal > 0.5) == (p_raw > 0.5)).all()  # the verdicts do not change


def test_xrp_models_calibrate_refuses_what_it_cannot_do(lattice_shots, tmp_path) -> None:
    res = save_model(tmp_path / "res.pt", build_model("resolution", 18),
                     {"preprocessing": Preprocessing(64).to_dict(), "label": "d_vis"})
    r = xrp_here("models", "calibrate", str(res), "--data", str(lattice_shots), "--out",
                 str(tmp_path / "x.pt"))
    assert r.returncode != 0 and "only lattice models" in r.stdout + r.stderr
    assert not (tmp_path / "x.pt").exists()
    r = xrp_here("models", "calibrate", str(res), "--data", str(lattice_shots), "--out",
                 str(res))
    assert r.returncode != 0 and "new file" in r.stdout + r.stderr


def test_min_confidence_keeps_confident_frames_and_the_unreadable_ones(tmp_path) -> None:
    from helpers import REAL

    from xray_platform.reports.table import confident_rows

    rows = [{"confidence": 0.99}, {"confidence": 0.6}, {"confidence": None},
            {"error": "truncated CBF", "confidence": None}, {"hit": False, "confidence": None}]
    assert confident_rows(rows, 0.9) == [rows[0], rows[3], rows[4]]  # misses: no verdict
    r = xrp_here("predict", str(REAL / "thau_3_2_0002.cbf.bz2"), "--lattice-model", "none",
                 "--resolution-model", "zoo", "--min-confidence", "0.9", "--out",
                 str(tmp_path / "p.csv"))
    assert r.returncode != 0 and "needs a lattice model" in r.stdout + r.stderr
    r = xrp_here("predict", str(REAL), "--min-confidence", "0.3")
    assert r.returncode == 2 and "min-confidence" in r.stdout + r.stderr  # out of [0.5, 1]
